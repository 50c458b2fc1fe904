//! Repository integrity through the binary: prune that rewrites partly used
//! packs keeps every kept snapshot whole (the reported data-loss bug), prunes
//! killed at random moments lose nothing, every kind of damage to every kind
//! of object is detected and named, the repairs, verify-after-backup, locks
//! that cannot be read, and hosts that share a repository.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

const FILES: &str = "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n";

fn verify_json(p: &Project) -> (i32, serde_json::Value) {
    let o = p.run(&["--json", "verify", "--read-data"]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}: {}", stderr(&o)));
    (o.status.code().unwrap_or(-1), v)
}

fn restore_to(p: &Project, id: &str, out: &Path) {
    p.ok(&[
        "restore",
        id,
        "--source",
        "files",
        "--target",
        out.to_str().unwrap(),
    ]);
}

/// Restores every recorded snapshot and compares it with the fingerprint
/// taken of the data when it was backed up.
fn assert_all_restore(p: &Project, want: &BTreeMap<String, BTreeMap<PathBuf, String>>) {
    for (id, fp) in want {
        let out = p.path().join(format!("check-{}", &id[..12]));
        restore_to(p, id, &out);
        assert_eq!(
            &fingerprint(&out.join("data")),
            fp,
            "snapshot {id} does not restore identical"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}

fn ids(p: &Project) -> Vec<String> {
    p.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The reproduction of the data-loss bug: after a forget, prune rewrites a
/// partly used pack; before the fix it wrote nothing and deleted the pack.
#[test]
fn prune_rewriting_a_partly_used_pack_keeps_the_kept_snapshot_whole() {
    let p = Project::new(&format!("{FILES}\n[retention]\nkeep_last = 1\n"));
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..4u64 {
        std::fs::write(d.join(format!("big{i}.bin")), random_bytes(i, 10 << 20)).unwrap();
    }
    p.ok(&["init"]);
    p.backup(&[]);
    for i in 0..2u64 {
        std::fs::write(
            d.join(format!("big{i}.bin")),
            random_bytes(10 + i, 10 << 20),
        )
        .unwrap();
    }
    let kept = p.backup(&[])["id"].as_str().unwrap().to_string();
    let want = BTreeMap::from([(kept.clone(), fingerprint(&d))]);
    p.ok(&["verify", "--read-data"]);
    p.ok(&["forget"]);
    let r = p.json(&["prune"]);
    assert!(
        r["packs_repacked"].as_u64().unwrap() > 0 && r["blobs_rewritten"].as_u64().unwrap() > 0,
        "the scenario must rewrite a partly used pack: {r}"
    );
    assert!(r["bytes_rewritten"].as_u64().unwrap() > 0, "{r}");
    p.ok(&["verify", "--read-data"]);
    assert_all_restore(&p, &want);
    // The next backup reuses the unchanged files' chunks, which must exist.
    let next = p.backup(&[])["id"].as_str().unwrap().to_string();
    p.ok(&["verify", "--read-data"]);
    assert_all_restore(&p, &BTreeMap::from([(next, fingerprint(&d))]));
}

/// `prune` and `forget --prune` SIGKILLed at random moments: after each,
/// verify --read-data passes and every snapshot restores identical.
#[test]
fn prunes_killed_at_random_moments_lose_nothing() {
    let p = Project::new(&format!("{FILES}\n[retention]\nkeep_last = 3\n"));
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..6u64 {
        std::fs::write(d.join(format!("f{i}")), random_bytes(i, 6 << 20)).unwrap();
    }
    p.ok(&["init"]);
    let seed: u64 = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    eprintln!("KILL_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut want: BTreeMap<String, BTreeMap<PathBuf, String>> = BTreeMap::new();
    let mut took = Duration::from_millis(300);
    let (mut killed, mut finished) = (0, 0);
    for trial in 0..18u64 {
        // Change two files (one in the middle only), then back up.
        let a = rng.gen_range(0..6);
        std::fs::write(d.join(format!("f{a}")), random_bytes(100 + trial, 6 << 20)).unwrap();
        let b = rng.gen_range(0..6);
        let mut data = std::fs::read(d.join(format!("f{b}"))).unwrap();
        let mid = data.len() / 2;
        data[mid..mid + 300_000].copy_from_slice(&random_bytes(500 + trial, 300_000));
        std::fs::write(d.join(format!("f{b}")), data).unwrap();
        let id = p.backup(&[])["id"].as_str().unwrap().to_string();
        want.insert(id, fingerprint(&d));

        let args: &[&str] = if trial % 2 == 0 {
            &[
                "-q",
                "-c",
                "backup.toml",
                "forget",
                "--prune",
                "--max-unused",
                "0%",
            ]
        } else {
            &["-q", "-c", "backup.toml", "prune", "--max-unused", "0%"]
        };
        let started = Instant::now();
        let mut child = Command::new(bin())
            .current_dir(p.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Every third run is left alone, to measure how long one takes.
        let kill_at = (trial % 3 != 0).then(|| took.mul_f64(rng.gen_range(0.0..1.0)));
        if let Some(at) = kill_at {
            std::thread::sleep(at);
        }
        match child.try_wait().unwrap() {
            Some(_) => finished += 1,
            None if kill_at.is_some() => {
                child.kill().unwrap(); // SIGKILL
                killed += 1;
            }
            None => {}
        }
        let status = child.wait().unwrap();
        if kill_at.is_none() {
            assert!(status.success(), "an uninterrupted {args:?} failed");
            took = started.elapsed();
        }
        // What exists now must be whole; forgotten ones leave the model.
        let present = ids(&p);
        want.retain(|id, _| present.contains(id));
        assert_eq!(present.len(), want.len(), "snapshots appeared");
        let (code, report) = verify_json(&p);
        assert_eq!(code, 0, "after trial {trial} (seed {seed}): {report}");
        assert_all_restore(&p, &want);
    }
    assert!(
        killed >= 6,
        "only {killed} runs were killed mid-way ({finished} finished)"
    );
    // The next prune finishes whatever was interrupted.
    p.ok(&["prune", "--max-unused", "0%"]);
    p.ok(&["verify", "--read-data"]);
    assert_all_restore(&p, &want);
}

/// A pristine repository with three snapshots, copied for each damage.
struct Pristine {
    p: Project,
    want: BTreeMap<String, BTreeMap<PathBuf, String>>,
    ids: Vec<String>,
}

fn pristine() -> Pristine {
    let p = Project::new(FILES);
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    p.ok(&["init"]);
    let mut want = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        std::fs::write(d.join(format!("f{i}")), random_bytes(i, 3 << 20)).unwrap();
        let id = p.backup(&[])["id"].as_str().unwrap().to_string();
        want.insert(id.clone(), fingerprint(&d));
        ids.push(id);
    }
    Pristine { p, want, ids }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip,
    Truncate,
    Delete,
}

fn damage(path: &Path, how: Damage) {
    match how {
        Damage::Flip => {
            let mut b = std::fs::read(path).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x20;
            std::fs::write(path, b).unwrap();
        }
        Damage::Truncate => {
            let b = std::fs::read(path).unwrap();
            std::fs::write(path, &b[..b.len() / 2]).unwrap();
        }
        Damage::Delete => std::fs::remove_file(path).unwrap(),
    }
}

fn first_file(dir: &Path) -> PathBuf {
    walk(dir)
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no file under {}", dir.display()))
}

/// Every kind of damage to every kind of object: detected by verify, named
/// as what it is, and every snapshot the report does not call damaged still
/// restores identical.
#[test]
fn every_damage_to_every_object_is_detected_named_and_the_rest_restores() {
    let base = pristine();
    let repo = base.p.repo();
    let packs: Vec<PathBuf> = walk(&repo.join("packs"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(packs.len() >= 3, "{packs:?}");
    for what in ["pack", "index", "snapshot", "config", "config.copy"] {
        for how in [Damage::Flip, Damage::Truncate, Damage::Delete] {
            if what == "snapshot" && matches!(how, Damage::Delete) {
                // A deleted snapshot object is a forgotten snapshot: no
                // repository can tell them apart; the others must restore.
                continue;
            }
            let cell = format!("{what} {how:?}");
            let saved = base.p.path().join("saved-repo");
            copy_dir(&repo, &saved);
            let (target, name) = match what {
                "pack" => {
                    let t = packs[1].clone();
                    let n = t.file_name().unwrap().to_string_lossy().into_owned();
                    (t, n)
                }
                "index" => {
                    let t = first_file(&repo.join("index"));
                    let n = t.file_name().unwrap().to_string_lossy().into_owned();
                    (t, n)
                }
                "snapshot" => {
                    let t = repo.join("snapshots").join(&base.ids[1]);
                    (t, base.ids[1].clone())
                }
                other => (repo.join(other), format!("`{other}`")),
            };
            damage(&target, how);
            let (code, report) = verify_json(&base.p);
            let text = report.to_string();
            assert_eq!(code, 1, "{cell}: not detected: {text}");
            let named = match (what, how) {
                // The fragment is gone: what is detected is the incomplete index.
                ("index", Damage::Delete) => text.contains("no index fragment describes"),
                ("config" | "config.copy", _) => {
                    text.contains("repository config object") && text.contains(&name)
                }
                _ => text.contains(&name),
            };
            assert!(
                named,
                "{cell}: the report does not name it ({name}): {text}"
            );
            assert!(
                report["suggestions"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty()),
                "{cell}: no repair suggested: {text}"
            );
            let damaged: Vec<String> = report["damaged_snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            for (id, fp) in &base.want {
                if damaged.contains(id) || (what == "snapshot" && *id == base.ids[1]) {
                    continue;
                }
                let out = base.p.path().join("out");
                restore_to(&base.p, id, &out);
                assert_eq!(&fingerprint(&out.join("data")), fp, "{cell}: {id} differs");
                std::fs::remove_dir_all(&out).unwrap();
            }
            std::fs::remove_dir_all(&repo).unwrap();
            std::fs::rename(&saved, &repo).unwrap();
        }
    }
    base.p.ok(&["verify", "--read-data"]);
}

/// The config edited by hand (a chunker parameter): every command that opens
/// the repository says the config is damaged; the copy keeps it usable, and
/// `repair config` rewrites it.
#[test]
fn an_edited_config_is_named_and_repair_config_rewrites_it() {
    let base = pristine();
    let cfg = base.p.repo().join("config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let edited = text.replacen("\"avg\": 1048576", "\"avg\": 2097152", 1);
    assert_ne!(text, edited, "{text}");
    std::fs::write(&cfg, &edited).unwrap();
    let o = base.p.run(&["snapshots"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("repository config `config` is damaged")
            && stderr(&o).contains("integrity check failed"),
        "{}",
        stderr(&o)
    );
    let (code, report) = verify_json(&base.p);
    assert_eq!(code, 1);
    assert!(
        report
            .to_string()
            .contains("repository config object `config`"),
        "{report}"
    );
    assert!(
        !report.to_string().contains("pack ")
            && report["damaged_snapshots"].as_array().unwrap().is_empty(),
        "the config's damage is not blamed on packs or snapshots: {report}"
    );
    assert_all_restore(&base.p, &base.want);
    base.p.ok(&["repair", "config"]);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);
    base.p.ok(&["verify", "--read-data"]);
    // Both copies edited the same way: nothing can be trusted, nothing opens.
    for f in ["config", "config.copy"] {
        std::fs::write(base.p.repo().join(f), &edited).unwrap();
    }
    let o = base.p.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("repository config"), "{}", stderr(&o));
    // No config at all, but data: not "no repository".
    for f in ["config", "config.copy"] {
        std::fs::remove_file(base.p.repo().join(f)).unwrap();
    }
    let o = base.p.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`config` object is missing"),
        "{}",
        stderr(&o)
    );
}

/// A lock object that cannot be read: held for prune and repair until it
/// is older than the lease by its storage time, reported by verify, removed
/// by `unlock` once expired or by `unlock --remove-all`.
#[test]
fn unreadable_locks_are_held_for_prune_reported_and_unlocked_on_request() {
    let base = pristine();
    let p = &base.p;
    std::fs::write(
        p.path().join("backup.toml"),
        format!("[repository]\nurl = \"repo\"\n\n[backup]\nlock_wait_secs = 1\n\n{FILES}"),
    )
    .unwrap();
    let locks = p.repo().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    // Valid locks of a live process on this host (this test's own): a
    // backup's does not stop prune, another prune's does.
    let lock = locks.join("0123456789abcdef0123456789abcdef");
    let me = std::process::id();
    let write_lock = |command: &str, prune: bool| {
        std::fs::write(
            &lock,
            format!(
                r#"{{"host":"{}","pid":{me},"command":"{command}","exclusive":false,"prune":{prune},"time":"{}"}}"#,
                String::from_utf8_lossy(&Command::new("hostname").output().unwrap().stdout).trim(),
                chrono::Utc::now().to_rfc3339()
            ),
        )
        .unwrap()
    };
    write_lock("backup", false);
    p.ok(&["prune"]);
    write_lock("prune", true);
    let o = p.run(&["prune"]);
    assert_eq!(o.status.code(), Some(11), "a running prune stops another");
    assert!(
        stderr(&o).contains("a prune lock held by `prune`"),
        "{}",
        stderr(&o)
    );
    // Damaged: no longer readable.
    let full = std::fs::read(&lock).unwrap();
    std::fs::write(&lock, &full[..full.len() / 2]).unwrap();
    // Prune (it deletes): refused, naming the object.
    let o = p.run(&["prune"]);
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unreadable lock object `locks/0123456789abcdef"),
        "{}",
        stderr(&o)
    );
    // Shared: goes on, with a warning.
    let o = p.run(&["backup"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("unreadable"), "{}", stderr(&o));
    // verify reports it and says what to do.
    let (code, report) = verify_json(p);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.to_string().contains("unreadable lock object"),
        "{report}"
    );
    assert!(report.to_string().contains("respaldo unlock"), "{report}");
    // `unlock` keeps it while it is young; --remove-all removes it.
    let r = p.json(&["unlock"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 0, "{r}");
    assert!(lock.exists());
    let r = p.json(&["unlock", "--remove-all"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 1, "{r}");
    assert!(!lock.exists());
    p.ok(&["prune"]);
    // An unreadable lock older than the lease by its storage time: expired.
    std::fs::write(&lock, b"\x00garbage").unwrap();
    let old = filetime::FileTime::from_system_time(
        std::time::SystemTime::now() - Duration::from_secs(3600),
    );
    filetime::set_file_mtime(&lock, old).unwrap();
    let r = p.json(&["unlock"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 1, "{r}");
    std::fs::write(&lock, b"\x00garbage").unwrap();
    filetime::set_file_mtime(&lock, old).unwrap();
    p.ok(&["prune"]); // removes it itself, with a warning
    assert!(!lock.exists());
    p.ok(&["verify", "--read-data"]);
}

/// `repair index` after every index fragment is deleted: the repository
/// verifies and every snapshot restores.
#[test]
fn repair_index_rebuilds_a_deleted_index() {
    let base = pristine();
    let p = &base.p;
    for f in walk(&p.repo().join("index")) {
        if f.is_file() {
            std::fs::remove_file(f).unwrap();
        }
    }
    let (code, _) = verify_json(p);
    assert_eq!(code, 1);
    let r = p.json(&["repair", "index"]);
    assert!(r["fragments_written"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["damaged_packs"].as_array().unwrap().is_empty(), "{r}");
    p.ok(&["verify", "--read-data"]);
    assert_all_restore(p, &base.want);
    // A damaged pack: its intact chunks are kept, the damaged one dropped.
    let pack = walk(&p.repo().join("packs"))
        .into_iter()
        .find(|x| x.is_file())
        .unwrap();
    damage(&pack, Damage::Flip);
    let r = p.json(&["repair", "index"]);
    assert_eq!(r["damaged_packs"].as_array().unwrap().len(), 1, "{r}");
    assert!(!pack.exists(), "the damaged pack is replaced");
    p.ok(&["repair", "snapshots"]);
    p.ok(&["verify", "--read-data"]);
}

/// `repair snapshots` after a pack is deleted: replacements keep what
/// survived and restore it; the originals stay tagged `damaged` until
/// forgotten by id.
#[test]
fn repair_snapshots_keeps_what_survived_a_deleted_pack() {
    let p = Project::new(FILES);
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    p.ok(&["init"]);
    // Two backups: the second adds one file in a pack of its own.
    std::fs::write(d.join("keep"), random_bytes(1, 2 << 20)).unwrap();
    let first = p.backup(&[])["id"].as_str().unwrap().to_string();
    let first_fp = fingerprint(&d);
    let packs = |p: &Project| -> Vec<PathBuf> {
        walk(&p.repo().join("packs"))
            .into_iter()
            .filter(|x| x.is_file())
            .collect()
    };
    let before = packs(&p);
    std::fs::write(d.join("lost"), random_bytes(2, 2 << 20)).unwrap();
    let second = p.backup(&[])["id"].as_str().unwrap().to_string();
    // The second run's data pack (its listing is in a pack of its own).
    let data_pack = packs(&p)
        .into_iter()
        .filter(|x| !before.contains(x))
        .max_by_key(|x| std::fs::metadata(x).unwrap().len())
        .unwrap();
    std::fs::remove_file(&data_pack).unwrap();
    let (code, report) = verify_json(&p);
    assert_eq!(code, 1, "{report}");
    assert!(report.to_string().contains("repair snapshots"), "{report}");
    let dry = p.json(&["repair", "snapshots", "--dry-run"]);
    assert_eq!(dry["replaced"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(ids(&p).len(), 2, "a dry run changes nothing");
    let r = p.json(&["repair", "snapshots"]);
    let replaced = &r["replaced"][0];
    assert_eq!(replaced["original"].as_str().unwrap(), second, "{r}");
    assert!(
        replaced["lost"].to_string().contains("data/lost"),
        "names the dropped file: {r}"
    );
    p.ok(&["verify", "--read-data"]);
    // latest is the replacement, which holds everything that survived.
    let out = p.path().join("out");
    restore_to(&p, "latest", &out);
    let mut got = fingerprint(&out.join("data"));
    assert!(!got.contains_key(Path::new("lost")));
    // The folder's own mtime changed when `lost` was added; compare files.
    got.remove(Path::new(""));
    let mut want_first = first_fp.clone();
    want_first.remove(Path::new(""));
    assert_eq!(got, want_first);
    std::fs::remove_dir_all(&out).unwrap();
    assert_all_restore(&p, &BTreeMap::from([(first.clone(), first_fp.clone())]));
    // The original stays, tagged damaged, until forgotten by id.
    let snaps = p.json(&["snapshots"]);
    let kept = replaced["kept_as"].as_str().unwrap();
    let orig = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == kept)
        .expect("original kept");
    assert!(orig["tags"].to_string().contains("damaged"), "{orig}");
    std::fs::write(
        p.path().join("backup.toml"),
        format!("[repository]\nurl = \"repo\"\n\n[retention]\nkeep_last = 1\n\n{FILES}"),
    )
    .unwrap();
    p.ok(&["forget"]);
    assert!(ids(&p).contains(&kept.to_string()), "retention keeps it");
    p.ok(&["forget", kept]);
    assert!(!ids(&p).contains(&kept.to_string()));
    p.ok(&["prune"]);
    p.ok(&["verify", "--read-data"]);
}

/// With verify_after_backup, a backup whose unchanged files point at a pack
/// that is gone is recorded as failed with what is missing, is never latest,
/// and status shows it. Without the index entry, the files are read again.
#[test]
fn verify_after_backup_never_leaves_a_damaged_snapshot_looking_good() {
    let cfg = "[repository]\nurl = \"repo\"\nverify_after_backup = true\n\n\
        [sources.files]\ntype = \"files\"\npaths = [\"data\"]\n\n\
        [sources.other]\ntype = \"files\"\npaths = [\"other\"]\n";
    let p = Project::new("");
    std::fs::write(p.path().join("backup.toml"), cfg).unwrap();
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(p.path().join("other")).unwrap();
    std::fs::write(d.join("a"), random_bytes(1, 1 << 20)).unwrap();
    p.ok(&["init"]);
    let first = p.backup(&[])["id"].as_str().unwrap().to_string();
    // The pack goes, its index entries stay.
    for f in walk(&p.repo().join("packs")) {
        if f.is_file() {
            std::fs::remove_file(f).unwrap();
        }
    }
    std::fs::write(p.path().join("other/c"), random_bytes(3, 1000)).unwrap();
    let o = p.run(&["--json", "backup"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let err = v["sources"]["files"]["error"].as_str().unwrap().to_string();
    assert_eq!(v["sources"]["files"]["status"], "failed", "{v}");
    assert!(
        err.contains("verification after backup failed") && err.contains("missing"),
        "{err}"
    );
    // `latest` of the damaged source is still the old one (damaged too, but
    // known to verify); status shows the failed run with its reason.
    let st = p.run(&["--json", "status"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let files = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "files")
        .unwrap_or_else(|| panic!("{st}"));
    assert!(
        files
            .to_string()
            .contains("verification after backup failed"),
        "{files}"
    );
    let shown = p.json(&["show", "latest"]);
    assert_ne!(shown["id"].as_str().unwrap(), first);
    assert_eq!(shown["sources"]["files"]["status"], "failed");
    // Once the index no longer lists the lost chunks, unchanged files are
    // read again and the next backup is whole.
    p.ok(&["repair", "index"]);
    let o = p.run(&["--json", "backup"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("read again") || stderr(&o).contains("reading every file"),
        "{}",
        stderr(&o)
    );
    let out = p.path().join("out");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&d, &out.join("data"));
}

/// Two hosts with a source of the same name in one repository: each host's
/// latest, listing and retention are its own.
#[test]
fn hosts_sharing_a_repository_keep_their_own_history() {
    let p = Project::new(&format!("{FILES}\n[retention]\nkeep_last = 1\n"));
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    p.ok(&["init"]);
    let run = |host: &str, args: &[&str]| -> std::process::Output {
        Command::new(bin())
            .current_dir(p.path())
            .env("RESPALDO_HOST", host)
            .arg("-c")
            .arg(p.path().join("backup.toml"))
            .args(args)
            .output()
            .unwrap()
    };
    let mut last = BTreeMap::new();
    for round in 0..3u64 {
        for host in ["alpha", "beta"] {
            std::fs::write(d.join("f"), format!("{host} {round}")).unwrap();
            let o = run(host, &["--json", "backup"]);
            assert!(o.status.success(), "{}", stderr(&o));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["host"], host);
            last.insert(host, v["id"].as_str().unwrap().to_string());
        }
    }
    let count = |host: &str, filter: &str| -> usize {
        let o = run(host, &["--json", "--host", filter, "snapshots"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count("alpha", "alpha"), 3);
    assert_eq!(count("alpha", "*"), 6);
    // alpha's forget touches alpha's snapshots only.
    let o = run("alpha", &["forget"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count("alpha", "alpha"), 1);
    assert_eq!(count("alpha", "beta"), 3);
    // Each host's latest is its own.
    for host in ["alpha", "beta"] {
        let out = p.path().join(format!("out-{host}"));
        let o = run(
            host,
            &[
                "restore",
                "latest",
                "--source",
                "files",
                "--target",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(out.join("data/f")).unwrap(),
            format!("{host} 2")
        );
    }
    let o = run(
        "gamma",
        &["restore", "latest", "--source", "files", "--to", "x"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("other hosts have some"),
        "{}",
        stderr(&o)
    );
    p.ok(&["--host", "*", "verify", "--read-data"]);
}
