//! # respaldo-sink-local
//!
//! A [`Sink`] that keeps a respaldo repository in a local directory (or any
//! mounted filesystem). Objects are files named by their key; a put writes a
//! temporary file, syncs it and renames it into place, so a reader never sees
//! a partial object and a crash leaves only a temporary file that
//! [`Sink::reclaim_incomplete`] removes. Files are created `0600` and
//! directories `0700`, whatever the umask.
#![deny(missing_docs)]

use std::fs::Permissions;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use respaldo_core::error::{Error, Result};
use respaldo_core::sink::{ByteStream, ObjectInfo, Sink};

/// Folder for in-progress writes.
const TMP_DIR: &str = ".tmp";

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    /// A sink rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalSink { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with(".tmp"))
        {
            return Err(Error::Invalid(format!("invalid object key `{key}`")));
        }
        Ok(self.root.join(key))
    }

    fn storage_err(&self, key: &str, e: std::io::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            Error::NotFound {
                key: key.to_string(),
                location: self.location(),
            }
        } else {
            Error::Storage {
                location: self.location(),
                key: key.to_string(),
                source: Box::new(e),
            }
        }
    }
}

fn mkdir_private(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_private(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(0o700)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
}

#[async_trait]
impl Sink for LocalSink {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, mut data: ByteStream) -> Result<()> {
        let path = self.path(key)?;
        let tmp_dir = self.root.join(TMP_DIR);
        let tmp = tmp_dir.join(format!(
            "{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(4);
        let writer = {
            let tmp = tmp.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                mkdir_private(&tmp_dir)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.set_permissions(Permissions::from_mode(0o600))?;
                // `None` marks a complete stream; a closed channel without it
                // means the producer failed, and nothing may be published.
                let mut complete = false;
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Some(b) => f.write_all(&b)?,
                        None => {
                            complete = true;
                            break;
                        }
                    }
                }
                if !complete {
                    drop(f);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(std::io::Error::other("write abandoned"));
                }
                f.sync_all()?;
                drop(f);
                if let Some(parent) = path.parent() {
                    mkdir_private(parent)?;
                }
                std::fs::rename(&tmp, &path)?;
                if let Some(parent) = path.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(())
            })
        };
        let mut read_err = None;
        while let Some(item) = data.next().await {
            match item {
                Ok(b) => {
                    if tx.send(Some(b)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            }
        }
        if read_err.is_none() {
            let _ = tx.send(None).await;
        }
        drop(tx);
        let result = writer.await;
        if let Some(e) = read_err {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.storage_err(key, e));
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(&tmp);
                Err(self.storage_err(key, e))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(Error::from(e))
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| self.storage_err(key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key)?;
        let len = range.end.saturating_sub(range.start) as usize;
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(range.start))?;
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf)?;
            Ok(buf)
        })
        .await?;
        r.map(Bytes::from).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                Error::Storage {
                    location: self.location(),
                    key: key.to_string(),
                    source: "range past the end of the object".into(),
                }
            } else {
                self.storage_err(key, e)
            }
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<ObjectInfo>> {
            let mut out = Vec::new();
            // Only walk the top-level folder the prefix names.
            let top = prefix.split('/').next().unwrap_or("");
            let start = if prefix.contains('/') {
                root.join(top)
            } else {
                root.clone()
            };
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in rd {
                    let entry = entry?;
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with(".tmp") {
                        continue;
                    }
                    let path = entry.path();
                    let ft = match entry.file_type() {
                        Ok(ft) => ft,
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    let key = path
                        .strip_prefix(&root)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if ft.is_dir() {
                        if prefix.starts_with(&format!("{key}/"))
                            || key.starts_with(&prefix)
                            || prefix.is_empty()
                        {
                            stack.push(path);
                        }
                    } else if ft.is_file() && key.starts_with(&prefix) {
                        // Deleted since the directory was read (a concurrent
                        // prune or a released lock): not listed.
                        let (size, modified) = match entry.metadata() {
                            Ok(m) => (m.len(), m.modified().ok().map(chrono::DateTime::from)),
                            Err(e) if e.kind() == ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                        };
                        out.push(ObjectInfo {
                            key,
                            size,
                            modified,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await?;
        r.map_err(|e| self.storage_err(prefix_or_root(&self.root), e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }

    async fn reclaim_incomplete(&self) -> Result<u64> {
        let dir = self.root.join(TMP_DIR);
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut freed = 0;
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            for entry in rd {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid: i32 = name
                    .split('-')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                if pid == 0 || !pid_alive(pid) {
                    freed += entry.metadata()?.len();
                    std::fs::remove_file(entry.path())?;
                }
            }
            Ok(freed)
        })
        .await?;
        r.map_err(|e| self.storage_err(TMP_DIR, e))
    }
}

fn prefix_or_root(root: &Path) -> &str {
    root.to_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::new(dir.path().join("repo"));
        respaldo_testing::conformance::run(&sink).await;
    }

    #[tokio::test]
    async fn files_and_dirs_are_private_whatever_the_umask() {
        // SAFETY: umask is process-wide but harmless here.
        let old = unsafe { libc::umask(0) };
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::new(dir.path().join("repo"));
        sink.put(
            "packs/ab/x",
            respaldo_core::sink::once(Bytes::from_static(b"x")),
        )
        .await
        .unwrap();
        unsafe { libc::umask(old) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("repo/packs/ab/x")), 0o600);
        assert_eq!(mode(&dir.path().join("repo/packs/ab")), 0o700);
        assert_eq!(mode(&dir.path().join("repo")), 0o700);
    }

    #[tokio::test]
    async fn leftovers_of_dead_writers_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::new(dir.path());
        std::fs::create_dir_all(dir.path().join(TMP_DIR)).unwrap();
        std::fs::write(dir.path().join(TMP_DIR).join("999999999-00"), b"partial").unwrap();
        std::fs::write(
            dir.path()
                .join(TMP_DIR)
                .join(format!("{}-01", std::process::id())),
            b"mine",
        )
        .unwrap();
        assert_eq!(sink.reclaim_incomplete().await.unwrap(), 7);
        assert!(sink.list("").await.unwrap().is_empty());
    }
}
