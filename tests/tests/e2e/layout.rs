//! The workspace's shape: no import circle between the modules of any
//! crate (scripts/import-cycles.py), a thin command line, and crates that
//! package for publishing.

use std::path::Path;
use std::process::Command;

#[test]
fn no_crate_has_an_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("python3")
        .arg(root.join("scripts/import-cycles.py"))
        .current_dir(root)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lines of a Rust file.
fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The binary stays thin: the application lives in respaldo-app, and the
/// command line only parses, calls one operation and renders its report.
#[test]
fn the_command_line_stays_thin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let src = root.join("crates/cli/src");
    let files = rust_files(&src);
    let total: usize = files.iter().map(|f| lines(f)).sum();
    assert!(
        total <= 2000,
        "crates/cli has {total} lines (at most 2,000)"
    );
    for f in rust_files(&src.join("cmd")) {
        let n = lines(&f);
        assert!(
            n <= 250,
            "{} has {n} lines (a command file: at most 250)",
            f.display()
        );
    }
}

/// Every published crate packages (licence, description, repository,
/// versions on its path dependencies): what `cargo publish` checks before
/// it compiles (`cargo publish --workspace --dry-run` also compiles each
/// packaged crate, which is too slow for every CI run).
#[test]
fn every_published_crate_packages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "package",
            "--workspace",
            "--no-verify",
            "--offline",
            "--allow-dirty",
            "--quiet",
        ])
        .current_dir(root)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
