//! Encrypted repositories: a host with only the public recipient backs up,
//! deduplicates, lists and forgets but cannot read; nothing stored shows the
//! data or the file names; with the identity (or a passphrase) everything
//! restores identically.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{assert_same_tree, stderr, Project};

const CANARY: &str = "PLAINTEXT-CANARY-4f2a91";
const NAME_CANARY: &str = "canary-name-7d1e";

/// Source data: text with a canary, a large random file, a file whose
/// name is a canary.
fn make_data(root: &Path) -> Vec<u8> {
    std::fs::create_dir_all(root.join("notes")).unwrap();
    let text = format!("{CANARY} quarterly numbers\n").repeat(20_000);
    std::fs::write(root.join("notes/plan.txt"), text).unwrap();
    let random = common::random_bytes(11, 6 << 20);
    std::fs::write(root.join("blob.bin"), &random).unwrap();
    std::fs::write(root.join(format!("{NAME_CANARY}.txt")), b"small").unwrap();
    random
}

/// The content inside a stored document (index fragment, snapshot), if
/// `bytes` is one: magic, version, flags, then a zstd frame (JSON, or the
/// binary records of an index fragment).
fn document_json(bytes: &[u8]) -> Option<Vec<u8>> {
    (bytes.len() > 12 && &bytes[..8] == b"RSPDOBJ1")
        .then(|| zstd::stream::decode_all(&bytes[12..]).expect("a document's zstd frame"))
}

/// Asserts that no object in the repository contains any of `needles`, in
/// its stored bytes or, for documents, in their decompressed content.
fn assert_nothing_readable(repo: &Path, needles: &[&[u8]]) {
    let files = common::walk(repo);
    assert!(files.len() > 3, "repository looks empty");
    for f in files.iter().filter(|f| f.is_file()) {
        let bytes = std::fs::read(f).unwrap();
        let json = document_json(&bytes).unwrap_or_default();
        for n in needles {
            for (what, hay) in [("stored bytes", &bytes), ("document JSON", &json)] {
                assert!(
                    !hay.windows(n.len()).any(|w| w == *n),
                    "{} ({what}) contains plaintext {:?}",
                    f.display(),
                    String::from_utf8_lossy(&n[..n.len().min(24)])
                );
            }
        }
    }
}

/// Asserts that every index fragment keeps the blobs' kinds and plaintext
/// lengths sealed: visible entries say `data` and 0.
fn assert_index_details_sealed(repo: &Path) {
    let fragments: Vec<_> = common::walk(&repo.join("index"))
        .into_iter()
        .filter(|f| f.is_file())
        .collect();
    assert!(!fragments.is_empty());
    for f in fragments {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_str().unwrap();
        let id: respaldo_core::ObjectId = name.parse().unwrap();
        let frag =
            respaldo_core::repo::index::IndexFragment::open("fragment", &id, &bytes).unwrap();
        let doc = serde_json::to_value(&frag).unwrap();
        assert!(doc["sealed"].is_string(), "{}: {doc}", f.display());
        for pack in doc["packs"].as_array().unwrap() {
            for b in pack["blobs"].as_array().unwrap() {
                assert_eq!(b["raw_len"], 0, "{}: {b}", f.display());
                assert_eq!(b["kind"], "data", "{}: {b}", f.display());
            }
        }
    }
}

fn sources() -> &'static str {
    "[sources.docs]\ntype = \"files\"\npaths = [\"data\"]\n\n[retention]\nkeep_last = 1\n"
}

#[test]
fn write_only_host_backs_up_but_cannot_read() {
    let p = Project::new("");
    let key = p.path().join("restore.key");
    let recipient = p.ok(&["key", "generate", "--output", key.to_str().unwrap()]);
    let recipient = recipient.trim();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = p.run(&["key", "generate", "--output", key.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    let random = make_data(&p.path().join("data"));
    let writer = format!("recipients = [\"{recipient}\"]\n\n{}", sources());
    let reader = format!(
        "recipients = [\"{recipient}\"]\nidentity_file = \"restore.key\"\n\n{}",
        sources()
    );
    p.write_config(&writer);
    let init = p.json(&["init"]);
    assert_eq!(init["encryption"], "age-x25519");
    let first = p.backup(&[]);
    let first_id = first["id"].as_str().unwrap().to_string();

    let window = &random[3 << 20..(3 << 20) + 32];
    assert_nothing_readable(
        &p.repo(),
        &[
            CANARY.as_bytes(),
            NAME_CANARY.as_bytes(),
            b"notes/plan",
            window,
        ],
    );
    assert_index_details_sealed(&p.repo());

    // Listing works without the identity; reading does not.
    let snaps = p.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let out = p.path().join("out");
    for args in [
        vec![
            "restore",
            "latest",
            "--source",
            "docs",
            "--target",
            out.to_str().unwrap(),
        ],
        vec!["dump", "latest", "docs"],
        vec!["verify", "--read-data"],
        vec!["prune"],
    ] {
        let o = p.run(&args);
        assert_eq!(o.status.code(), Some(12), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("identity"), "{args:?}: {}", stderr(&o));
        assert!(!out.exists());
    }

    // The structural verify works without the identity and says what it
    // could not follow.
    let v = p.ok(&["verify"]);
    assert!(v.contains("repository OK"), "{v}");
    assert!(v.contains("1 snapshot(s) are sealed"), "{v}");

    // A second backup deduplicates without the identity.
    std::fs::write(p.path().join("data/notes/new.txt"), b"new file").unwrap();
    let second = p.backup(&[]);
    let added = second["bytes_added"].as_u64().unwrap();
    assert!(added < 64 * 1024, "second backup added {added} bytes");
    // Retention applies without the identity.
    p.ok(&["forget"]);
    let snaps = p.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_ne!(snaps[0]["id"].as_str().unwrap(), first_id);

    // With the identity: prune, verify and restore identically.
    p.write_config(&reader);
    p.ok(&["prune"]);
    p.ok(&["verify", "--read-data"]);
    p.assert_restores_data("docs", &out);
    let dumped = p.run(&["show", "latest", "--json"]);
    assert!(dumped.status.success(), "{}", stderr(&dumped));

    // $RESPALDO_IDENTITY_FILE works as well as identity_file.
    p.write_config(&writer);
    let o = std::process::Command::new(common::bin())
        .current_dir(p.path())
        .args(["-c", "backup.toml", "verify", "--read-data"])
        .env("RESPALDO_IDENTITY_FILE", &key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // Other recipients are refused, not silently undeduplicated.
    let other = p.path().join("other.key");
    let other_recipient = p.ok(&["key", "generate", "--output", other.to_str().unwrap()]);
    p.write_config(&format!(
        "recipients = [\"{}\"]\n\n{}",
        other_recipient.trim(),
        sources()
    ));
    let o = p.run(&["backup"]);
    assert_eq!(o.status.code(), Some(12), "{}", stderr(&o));
    assert!(stderr(&o).contains("recipients"), "{}", stderr(&o));
}

#[test]
fn passphrase_repository_round_trip() {
    let p = Project::new("");
    make_data(&p.path().join("data"));
    std::fs::write(p.path().join("pass.txt"), "correct horse battery staple\n").unwrap();
    p.write_config(&format!(
        "passphrase = {{ file = \"pass.txt\" }}\n\n{}",
        sources()
    ));
    p.ok(&["init"]);
    p.backup(&[]);
    assert_nothing_readable(&p.repo(), &[CANARY.as_bytes(), NAME_CANARY.as_bytes()]);
    let out = p.path().join("out");
    p.assert_restores_data("docs", &out);
    std::fs::write(p.path().join("pass.txt"), "wrong\n").unwrap();
    let o = p.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(12), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("correct horse"));
}

/// A host with only the public recipients replicates off-site: the stored
/// objects travel as they are, snapshot ids are kept, a second copy sends
/// nothing, and the copy restores identically with the identity.
#[test]
fn write_only_host_copies_stored_objects_keeping_ids() {
    let p = Project::new("");
    let key = p.path().join("restore.key");
    let recipient = p.ok(&["key", "generate", "--output", key.to_str().unwrap()]);
    let recipient = recipient.trim().to_string();
    make_data(&p.path().join("data"));
    let offsite = "[repositories.offsite]\nurl = \"offsite\"\n\n";
    let writer = format!("recipients = [\"{recipient}\"]\n\n{offsite}{}", sources());
    let reader = format!(
        "recipients = [\"{recipient}\"]\nidentity_file = \"restore.key\"\n\n{offsite}{}",
        sources()
    );
    p.write_config(&writer);
    p.ok(&["init"]);
    p.ok(&["init", "--repository", "offsite"]);
    p.backup(&[]);
    std::fs::write(p.path().join("data/notes/later.txt"), b"written later").unwrap();
    p.backup(&[]);

    let first = p.json(&["copy", "--to", "offsite"]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 2, "{first}");
    assert!(first["chunks_copied"].as_u64().unwrap() > 0, "{first}");
    let ids = |extra: &[&str]| {
        let mut a = extra.to_vec();
        a.push("snapshots");
        let mut v: Vec<String> = p
            .json(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&[]),
        ids(&["--repository", "offsite"]),
        "snapshot ids differ"
    );
    let again = p.json(&["copy", "--to", "offsite"]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["chunks_copied"], 0, "{again}");
    assert_eq!(again["already_present"], 2, "{again}");
    // The off-site copy holds nothing readable either.
    assert_nothing_readable(
        &p.path().join("offsite"),
        &[CANARY.as_bytes(), b"notes/plan"],
    );

    // With the identity: the copy is sound and restores identically.
    p.write_config(&reader);
    p.ok(&["--repository", "offsite", "verify", "--read-data"]);
    let out = p.path().join("out");
    p.ok(&[
        "--repository",
        "offsite",
        "restore",
        "latest",
        "--source",
        "docs",
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&p.path().join("data"), &out.join("data"));
}
