//! `mount`: every snapshot as a read-only folder through real FUSE
//! (`/dev/fuse`; its absence fails the test). Checked with the file system
//! itself — `stat`, reading, `readlink`, seeking — against the source
//! folder, never against respaldo's own listing; unmounted cleanly on
//! SIGTERM and SIGINT. The 1 GiB bounded-memory read is in
//! `files_roundtrip::a_gib_file_backs_up_and_restores_within_the_memory_budget`.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{
    assert_same_tree, fails, fingerprint, is_mounted, random_bytes, stderr, MountedView, Project,
};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn mount_shows_every_snapshot_as_the_source_was_and_unmounts_cleanly() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: this test needs FUSE"
    );
    let p = Project::new(
        "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n\n\
         [sources.dump]\ntype = \"command\"\ncommand = [\"cat\", \"payload\"]\nartifact = \"dump.sql\"\n",
    );
    let d = p.path().join("data");
    std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
    std::fs::write(d.join("a.txt"), "first\n").unwrap();
    let big = random_bytes(7, 3 << 20);
    std::fs::write(d.join("sub/big.bin"), &big).unwrap();
    std::fs::hard_link(d.join("sub/big.bin"), d.join("sub/hard")).unwrap();
    std::fs::write(d.join("sub/deeper/private"), "secret\n").unwrap();
    std::fs::set_permissions(
        d.join("sub/deeper/private"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(d.join("sub/empty"), "").unwrap();
    symlink("../a.txt", d.join("sub/link")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(d.join("pipe"))
        .status()
        .unwrap()
        .success());
    assert!(Command::new("setfattr")
        .args(["-n", "user.comment", "-v", "annual"])
        .arg(d.join("a.txt"))
        .status()
        .unwrap()
        .success());
    let payload = "INSERT INTO t VALUES (1);\n".repeat(5000);
    std::fs::write(p.path().join("payload"), &payload).unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    let first = fingerprint(&d);
    std::fs::write(d.join("a.txt"), "second version\n").unwrap();
    std::fs::remove_file(d.join("sub/empty")).unwrap();
    p.backup(&[]);

    let mnt = p.path().join("mnt");
    let m = MountedView::start(&p, &mnt);
    // One folder per snapshot, named by its time (UTC) and short id.
    let list: serde_json::Value = serde_json::from_str(&p.ok(&["--json", "snapshots"])).unwrap();
    let mut snaps: Vec<(String, String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let (t, id) = (s["time"].as_str().unwrap(), s["id"].as_str().unwrap());
            (
                t.to_string(),
                id.to_string(),
                s["host"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    snaps.sort();
    let expected: Vec<String> = snaps
        .iter()
        .map(|(t, id, _)| format!("{}Z-{}", &t[..19], &id[..8]))
        .collect();
    // (Two backups in one second sort by id.)
    let mut by_name = expected.clone();
    by_name.sort();
    assert_eq!(names(&mnt.join("snapshots")), by_name);
    assert_eq!(names(&mnt), ["hosts", "latest", "snapshots"]);
    let latest = PathBuf::from(format!("snapshots/{}", expected[1]));
    assert_eq!(std::fs::read_link(mnt.join("latest")).unwrap(), latest);
    let host = &snaps[0].2;
    assert_eq!(names(&mnt.join("hosts")), std::slice::from_ref(host));
    let h = mnt.join("hosts").join(host);
    by_name.push("latest".into());
    assert_eq!(names(&h), by_name);
    assert_eq!(
        std::fs::read_link(h.join("latest")).unwrap(),
        Path::new("../..").join(&latest)
    );
    assert_eq!(names(&mnt.join("latest")), ["dump", "files"]);

    // Trees: every type, mode, owner, mtime, size, content and link target
    // as the source was at each backup.
    assert_same_tree(&d, &mnt.join("latest/files/data"));
    let old = mnt.join("snapshots").join(&expected[0]).join("files/data");
    assert_eq!(fingerprint(&old), first);
    // Extended attributes, as `getfattr` reads them.
    let xattrs = |f: &Path| {
        let o = Command::new("getfattr")
            .args(["--absolute-names", "-d", "-m", "-"])
            .arg(f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let seen = xattrs(&mnt.join("latest/files/data/a.txt"));
    assert_eq!(seen, xattrs(&d.join("a.txt")));
    assert!(seen.contains("user.comment=\"annual\""), "{seen}");
    // A hard link's second name reads its first name's content.
    assert_eq!(std::fs::read(old.join("sub/hard")).unwrap(), big);
    // Reading from the middle of a multi-chunk file.
    let mut f = std::fs::File::open(mnt.join("latest/files/data/sub/big.bin")).unwrap();
    let at = (2 << 20) + 12_345;
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    let mut part = vec![0; 70_000];
    f.read_exact(&mut part).unwrap();
    assert_eq!(part, big[at..at + 70_000]);
    // A stream artifact is one file.
    assert_eq!(
        std::fs::read_to_string(mnt.join("latest/dump/dump.sql")).unwrap(),
        payload
    );
    // Read-only.
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("latest/files/data/a.txt"));
    assert_eq!(w.unwrap_err().raw_os_error(), Some(libc::EROFS));
    let c = std::fs::write(mnt.join("latest/files/data/new"), "x");
    assert_eq!(c.unwrap_err().raw_os_error(), Some(libc::EROFS));

    // SIGTERM unmounts and ends the process successfully.
    let o = m.stop(libc::SIGTERM);
    assert!(o.status.success(), "{}: {}", o.status, stderr(&o));
    assert!(stderr(&o).contains("unmounted"), "{}", stderr(&o));
    assert!(!is_mounted(&mnt));
    assert!(names(&mnt).is_empty());
    // So does SIGINT, with a file open inside.
    let m = MountedView::start(&p, &mnt);
    let held = std::fs::File::open(mnt.join("latest/files/data/a.txt")).unwrap();
    let o = m.stop(libc::SIGINT);
    assert!(o.status.success(), "{}: {}", o.status, stderr(&o));
    assert!(!is_mounted(&mnt));
    drop(held);

    // Mounting on nothing is a usage error.
    let e = fails(&p, &["mount", "nowhere"], 2);
    assert!(e.contains("nowhere is not a folder"), "{e}");
}
