//! Files source round trips: every kind of entry and metadata survives
//! backup → restore; unchanged files are not re-read; small changes store
//! little; restores never overwrite without --force.

use crate::common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn set_mtime(p: &Path, secs: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nsec);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// Builds a tree with every case the files source must preserve.
fn build_tree(root: &Path) {
    let d = root.join("data");
    std::fs::create_dir_all(d.join("nested/deeper/deepest")).unwrap();
    std::fs::create_dir_all(d.join("empty-dir")).unwrap();
    std::fs::write(d.join("plain.txt"), b"hello world\n").unwrap();
    std::fs::write(
        d.join("nested/deeper/deepest/leaf.bin"),
        random_bytes(1, 100_000),
    )
    .unwrap();
    std::fs::write(d.join("empty-file"), b"").unwrap();
    // Permissions.
    std::fs::write(d.join("secret"), b"mode 600").unwrap();
    std::fs::set_permissions(d.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(d.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(d.join("script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("setgid"), b"g").unwrap();
    std::fs::set_permissions(d.join("setgid"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    std::fs::create_dir(d.join("private-dir")).unwrap();
    std::fs::write(d.join("private-dir/inside"), b"x").unwrap();
    std::fs::set_permissions(
        d.join("private-dir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // Symlinks: relative, absolute, dangling, to a directory.
    std::os::unix::fs::symlink("plain.txt", d.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", d.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", d.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("nested", d.join("link-dir")).unwrap();
    // Odd names: unicode, spaces, newline, leading dash, not UTF-8.
    std::fs::write(d.join("ñandú ☃ 漢字.txt"), "unicode".as_bytes()).unwrap();
    std::fs::write(d.join("with space and\nnewline"), b"odd").unwrap();
    std::fs::write(d.join("-dash"), b"dash").unwrap();
    std::fs::write(d.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"not utf-8").unwrap();
    // Hard links: two names, one inode.
    std::fs::write(d.join("hardlink-a"), b"shared inode").unwrap();
    std::fs::hard_link(d.join("hardlink-a"), d.join("nested/hardlink-b")).unwrap();
    // A FIFO.
    let fifo = std::ffi::CString::new(d.join("pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    // Sparse: 64 MiB with data at two places.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(d.join("sparse.img")).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(&random_bytes(2, 8192)).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        f.set_len(64 << 20).unwrap();
    }
    // Large: 150 MiB of mixed content.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(d.join("large.dat")).unwrap();
        for i in 0..15 {
            let block = if i % 2 == 0 {
                random_bytes(100 + i, 10 << 20)
            } else {
                text_bytes(100 + i, 10 << 20)
            };
            f.write_all(&block).unwrap();
        }
    }
    // Ownership by another user (root only).
    if is_root() {
        std::os::unix::fs::lchown(d.join("secret"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(d.join("link-rel"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::lchown(d.join("nested"), Some(1000), Some(1000)).unwrap();
    }
    // Distinct mtimes with nanoseconds, set last (children before parents).
    let mut all = walk(&d);
    all.reverse();
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000, 123_456_789);
    }
    set_mtime(&d, 1_500_000_000, 5);
}

#[test]
fn every_kind_of_entry_round_trips() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    build_tree(p.path());
    p.ok(&["init"]);
    let b = p.backup(&["--tag", "first"]);
    assert_eq!(b["sources"]["files"]["status"], "ok", "{b}");
    assert!(
        b["sources"]["files"]["warnings"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{b}"
    );

    // Restore somewhere else and compare everything.
    let out = p.path().join("restored");
    p.assert_restores_data("files", &out);

    // Hard links stay one inode.
    let ia = std::fs::metadata(out.join("data/hardlink-a"))
        .unwrap()
        .ino();
    let ib = std::fs::metadata(out.join("data/nested/hardlink-b"))
        .unwrap()
        .ino();
    assert_eq!(ia, ib, "hard links were restored as copies");

    // Holes stay holes.
    let m = std::fs::metadata(out.join("data/sparse.img")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file uses {} bytes on disk",
        m.blocks() * 512
    );

    // Into the live location after it is destroyed: identical again.
    let before = fingerprint(&p.path().join("data"));
    std::fs::remove_dir_all(p.path().join("data")).unwrap();
    p.ok(&["restore", "latest", "--source", "files"]);
    assert_eq!(before, fingerprint(&p.path().join("data")));

    // --to writes the artifact as plain files.
    let to = p.path().join("export");
    p.ok(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_same_tree(&p.path().join("data"), &to.join("files/files/data"));

    // A single file.
    let one = p.path().join("one");
    p.ok(&[
        "restore",
        "latest",
        "--target",
        one.to_str().unwrap(),
        "--source",
        "files",
        "--path",
        "data/nested/deeper/deepest/leaf.bin",
    ]);
    assert_eq!(
        sha256_file(&one.join("data/nested/deeper/deepest/leaf.bin")),
        sha256_file(&p.path().join("data/nested/deeper/deepest/leaf.bin"))
    );
    assert!(!one.join("data/plain.txt").exists());

    p.ok(&["verify", "--read-data"]);
}

#[test]
fn restore_into_non_empty_target_refuses_and_changes_nothing() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a"), b"snapshot content").unwrap();
    p.ok(&["init"]);
    p.backup(&[]);

    // Another directory that already has content.
    let t = p.path().join("busy");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("keep-me"), b"precious").unwrap();
    let before = fingerprint(&t);
    let o = p.run(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(
        before,
        fingerprint(&t),
        "a refused restore changed the target"
    );

    // The live location with changed content: refused without --force.
    std::fs::write(p.path().join("data/a"), b"live content").unwrap();
    let o = p.run(&["restore", "latest", "--source", "files"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(p.path().join("data/a")).unwrap(),
        b"live content"
    );

    // With --force it is overwritten.
    p.ok(&["restore", "latest", "--source", "files", "--force"]);
    assert_eq!(
        std::fs::read(p.path().join("data/a")).unwrap(),
        b"snapshot content"
    );

    // --dry-run changes nothing.
    std::fs::write(p.path().join("data/a"), b"live again").unwrap();
    let out = p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--force",
        "--dry-run",
    ]);
    assert!(out.contains("would restore"), "{out}");
    assert_eq!(
        std::fs::read(p.path().join("data/a")).unwrap(),
        b"live again"
    );
}

#[test]
fn unchanged_tree_reads_nothing_and_adds_almost_nothing() {
    // ~1 GiB: 8 large files of 112 MiB and 4096 small ones.
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    let d = p.path().join("data");
    for i in 0..8u64 {
        let dir = d.join(format!("big{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let content = if i % 2 == 0 {
            random_bytes(i, 112 << 20)
        } else {
            text_bytes(i, 112 << 20)
        };
        std::fs::write(dir.join("file.dat"), content).unwrap();
    }
    for i in 0..4096u64 {
        let dir = d.join(format!("small/{}", i % 64));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("{i}.txt")),
            text_bytes(1000 + i, 4096 + (i as usize % 7) * 1000),
        )
        .unwrap();
    }
    p.ok(&["init"]);
    let first = p.backup(&[]);
    let total = first["sources"]["files"]["bytes_total"].as_u64().unwrap();
    assert!(total > 900 << 20, "tree is {total} bytes");
    let size1 = p.repo_size();

    let second = p.backup(&[]);
    let s = &second["sources"]["files"];
    assert_eq!(s["files_read"], 0, "unchanged files were read: {second}");
    assert_eq!(s["bytes_read"], 0, "{second}");
    assert_eq!(s["files_unchanged"], 8 + 4096, "{second}");
    let size2 = p.repo_size();
    assert!(
        (size2 - size1) * 100 < size1,
        "re-run added {} bytes to {}",
        size2 - size1,
        size1
    );
}

#[test]
fn one_byte_change_in_a_large_file_stores_about_one_chunk() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    let mut content = random_bytes(77, 100 << 20);
    std::fs::write(d.join("big.bin"), &content).unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    let before = p.repo_size();
    content[55_555_555] ^= 0xff;
    std::fs::write(d.join("big.bin"), &content).unwrap();
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["files"]["files_read"], 1);
    let added = p.repo_size() - before;
    // One chunk is 1 MiB on average and at most 4 MiB; the listing and
    // snapshot add a few KiB.
    assert!(added < 5 << 20, "a 1-byte change added {added} bytes");
    // And the restored file is the new one.
    let out = p.path().join("out");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        sha256_file(&out.join("data/big.bin")),
        sha256_file(&d.join("big.bin"))
    );
}

#[test]
fn exclude_max_age_and_relative_paths() {
    let p = Project::new(
        "[sources.logs]\ntype = \"files\"\npaths = [\"logs\", \"./app/../conf\"]\nexclude = [\"*.pyc\", \"**/__pycache__\", \"cache/**\"]\nmax_age = \"7d\"\n",
    );
    let root = p.path();
    for f in [
        "logs/new.log",
        "logs/old.log",
        "logs/x.pyc",
        "logs/__pycache__/m.txt",
        "logs/cache/c.bin",
        "conf/app.toml",
    ] {
        std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
        std::fs::write(root.join(f), f.as_bytes()).unwrap();
    }
    set_mtime(&root.join("logs/old.log"), 1_000_000_000, 0);
    p.ok(&["init"]);
    p.backup(&[]);
    let out = root.join("out");
    p.ok(&[
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
        "--source",
        "logs",
    ]);
    assert!(out.join("logs/new.log").exists());
    assert!(out.join("conf/app.toml").exists());
    for gone in [
        "logs/old.log",
        "logs/x.pyc",
        "logs/__pycache__",
        "logs/cache/c.bin",
    ] {
        assert!(!out.join(gone).exists(), "{gone} should have been left out");
    }
}

#[test]
fn a_file_changing_while_read_is_reported() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("growing.log"), random_bytes(5, 200 << 20)).unwrap();
    p.ok(&["init"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = d.join("growing.log");
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"appended line\n").unwrap();
                f.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let b = p.backup(&[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let warnings = b["sources"]["files"]["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("changed while it was being read")),
        "{b}"
    );
    let show = p.json(&["show", "latest"]);
    assert!(
        show["sources"]["files"]["warnings"]
            .as_array()
            .unwrap()
            .len()
            == 1,
        "{show}"
    );
}

#[test]
fn restore_never_writes_through_symlinks_outside_the_target() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    std::fs::create_dir_all(p.path().join("data/inner")).unwrap();
    std::fs::write(p.path().join("data/inner/file"), b"content").unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    let outside = p.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let t = p.path().join("t");
    std::fs::create_dir_all(&t).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("data")).unwrap();
    // Refused without --force, and nothing changes.
    let o = p.run(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // With --force the symlink is replaced, never followed.
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        t.to_str().unwrap(),
        "--force",
    ]);
    assert!(
        walk(&outside).is_empty(),
        "restore wrote outside its target: {:?}",
        walk(&outside)
    );
    assert!(std::fs::symlink_metadata(t.join("data")).unwrap().is_dir());
    assert_eq!(
        std::fs::read(t.join("data/inner/file")).unwrap(),
        b"content"
    );
}

/// `getfattr` of every entry under `root`, by relative path: what extended
/// attributes and ACLs a tree holds, read by an independent tool.
fn xattr_dump(root: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-R", "-d", "-h", "-m", "-", "-e", "hex", "."])
        .current_dir(root)
        .output()
        .expect("getfattr (package attr) is installed by scripts/test.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn extended_attributes_acls_and_capabilities_round_trip() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    let d = p.path().join("data");
    std::fs::create_dir_all(d.join("shared")).unwrap();
    std::fs::write(d.join("note"), b"n").unwrap();
    std::fs::write(d.join("shared/report"), b"r").unwrap();
    std::fs::write(d.join("ping"), b"#!/bin/true\n").unwrap();
    let run = |args: &[&str]| {
        let st = Command::new(args[0])
            .args(&args[1..])
            .current_dir(&d)
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    };
    run(&["setfattr", "-n", "user.comment", "-v", "quarterly", "note"]);
    run(&["setfattr", "-n", "user.bin", "-v", "0x00ff10", "note"]);
    run(&["setfacl", "-m", "u:nobody:r", "note"]);
    run(&["setfacl", "-d", "-m", "g:users:rwx", "shared"]);
    run(&["setfacl", "-m", "g:users:rw", "shared/report"]);
    if is_root() {
        run(&["setcap", "cap_net_raw+ep", "ping"]);
    }
    let want = xattr_dump(&d);
    assert!(
        want.contains("user.comment") && want.contains("system.posix_acl_access"),
        "{want}"
    );
    assert!(want.contains("system.posix_acl_default"), "{want}");
    if is_root() {
        assert!(want.contains("security.capability"), "{want}");
    }
    p.ok(&["init"]);
    p.backup(&[]);
    let out = p.path().join("out");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_eq!(xattr_dump(&out.join("data")), want);
    assert_same_tree(&d, &out.join("data"));
    // A changed attribute is seen by the next backup (ctime changes).
    run(&["setfattr", "-n", "user.comment", "-v", "annual", "note"]);
    p.backup(&[]);
    let out2 = p.path().join("out2");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(xattr_dump(&out2.join("data")), xattr_dump(&d));
}

/// Peak RSS of `respaldo ARGS` in the project, in MiB, after checking that
/// it succeeded.
fn peak_mib(p: &Project, args: &[&str]) -> u64 {
    let (o, kib) = run_with_peak_rss(
        Command::new(bin())
            .current_dir(p.path())
            .args(["-c", "backup.toml"])
            .args(args),
    );
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    assert!(kib > 0, "no RSS sample for {args:?}");
    kib / 1024
}

/// Memory is a budget, not a hope: a 1 GiB random file (every byte stored)
/// and a 1 GiB sparse file back up and restore, and the random one reads
/// through `mount`, within fixed peak RSS budgets, so that memory cannot
/// regress unnoticed. Not timed. (It found
/// a restore holding every decoded copy of the sparse file's zero chunk:
/// 1.1 GiB.) Neither meets the 128 MiB target reliably yet (restore
/// 112–133 MiB measured, backup 113–172 MiB); each is held to what it does.
#[test]
fn a_gib_file_backs_up_and_restores_within_the_memory_budget() {
    const BACKUP_MIB: u64 = 208;
    const RESTORE_MIB: u64 = 160;
    const MOUNT_MIB: u64 = 128;
    let p = Project::new("[sources.data]\ntype = \"files\"\npaths = [\"data\"]\n");
    let data = p.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let st = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=1024", "status=none"])
        .arg(format!("of={}", data.join("random.bin").display()))
        .status()
        .unwrap();
    assert!(st.success());
    let sparse = std::fs::File::create(data.join("sparse.bin")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    drop(sparse);
    p.ok(&["init"]);
    let backup = peak_mib(&p, &["backup"]);
    let out = p.path().join("out");
    let restore = peak_mib(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "data",
            "--target",
            out.to_str().unwrap(),
        ],
    );
    eprintln!("peak RSS: backup {backup} MiB, restore {restore} MiB");
    for name in ["random.bin", "sparse.bin"] {
        assert_eq!(
            sha256_file(&out.join("data").join(name)),
            sha256_file(&data.join(name)),
            "{name}"
        );
    }
    assert!(backup < BACKUP_MIB, "the backup peaked at {backup} MiB");
    assert!(restore < RESTORE_MIB, "the restore peaked at {restore} MiB");
    // Read through `mount` (real FUSE): the same bytes, in bounded memory.
    let m = MountedView::start(&p, &p.path().join("mnt"));
    let through = m.dir.join("latest/data/data/random.bin");
    assert_eq!(sha256_file(&through), sha256_file(&data.join("random.bin")));
    let mounted = m.peak_mib();
    eprintln!("peak RSS: mount serving a 1 GiB read {mounted} MiB");
    let o = m.stop(libc::SIGTERM);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(mounted < MOUNT_MIB, "the mount peaked at {mounted} MiB");
}
