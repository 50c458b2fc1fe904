//! The files driver in-process, through the test harness: backup → restore
//! somewhere new and in place, compared by content hashes.

use std::collections::BTreeMap;
use std::path::Path;

use respaldo_core::source::RestoreTarget;
use respaldo_testing::data::{random_bytes, text_bytes};
use respaldo_testing::harness::{runtime, Harness, RestoreOptions};
use sha2::{Digest, Sha256};

fn hashes(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, hex::encode(Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    out
}

#[test]
fn backup_then_restore_somewhere_new_and_in_place() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("nested/deeper")).unwrap();
    std::fs::write(data.join("big.bin"), random_bytes(1, 3 << 20)).unwrap();
    std::fs::write(data.join("nested/notes.txt"), text_bytes(2, 100_000)).unwrap();
    std::fs::write(data.join("nested/deeper/empty"), b"").unwrap();
    let want = hashes(&data);

    let h = rt.block_on(Harness::new()).with_base(dir.path());
    let source = h
        .source(&respaldo_source_files::DRIVER, "paths = [\"data\"]")
        .unwrap();
    let backup = rt.block_on(h.backup_with("files", source.clone())).unwrap();

    // Somewhere new.
    let out = dir.path().join("out");
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Other(out.display().to_string()),
        RestoreOptions::default(),
    ))
    .unwrap();
    let restored = out.join("data");
    assert_eq!(hashes(&restored), want);

    // In place over a changed tree: refused without force (nothing changed),
    // identical with it.
    std::fs::write(data.join("nested/notes.txt"), b"changed").unwrap();
    let changed = hashes(&data);
    let refused = rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ));
    assert!(
        refused.is_err(),
        "an overwrite without force was not refused"
    );
    assert_eq!(hashes(&data), changed, "a refused restore changed the tree");
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions {
            force: true,
            ..Default::default()
        },
    ))
    .unwrap();
    assert_eq!(hashes(&data), want);
    rt.block_on(h.verify());
}
