//! A read-only FUSE view of a respaldo repository.
//!
//! ```text
//! DIR/
//!   snapshots/<time>-<id>/<source>/…   a source with one tree: the tree itself;
//!                                      else one entry per artifact (a tree as a
//!                                      folder, a stream as one file)
//!   hosts/<host>/<time>-<id>           links to ../../snapshots/…, and `latest`
//!   latest                             link to the current host's newest snapshot
//! ```
//!
//! The view is of the snapshots listed when it was mounted. A tree is read
//! (its listing only) the first time something looks inside it; file
//! content is read from the repository as it is read from the mount, a few
//! chunks at a time per open file, so memory stays bounded whatever the
//! size of the files. Everything is read-only: opening for writing answers
//! `EROFS`.

mod content;
mod fs;
mod namespace;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use respaldo_core::Repository;

pub use namespace::{snapshot_dir_name, View};

/// Why a mount failed, or why a read from it did.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The kernel refused the mount (no FUSE device, no permission, …).
    #[error("cannot mount on {dir}: {source}")]
    Mount {
        /// The mount point.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Unmounting failed.
    #[error("cannot unmount {dir}: {source}")]
    Unmount {
        /// The mount point.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Reading a tree's listing failed.
    #[error("reading tree `{tree}`: {source}")]
    Tree {
        /// The tree artifact.
        tree: String,
        /// The error.
        source: respaldo_core::Error,
    },
    /// The repository failed.
    #[error(transparent)]
    Repository(respaldo_core::Error),
    /// A file's chunk is in no index.
    #[error("chunk {0} is missing from the index")]
    MissingChunk(String),
    /// A chunk could not be read.
    #[error("reading chunk {chunk}: {detail}")]
    Chunk {
        /// The chunk.
        chunk: String,
        /// What went wrong.
        detail: String,
    },
    /// A chunk is shorter than the index says.
    #[error("chunk {0} is shorter than the index says")]
    ShortChunk(String),
}

impl MountError {
    fn tree(tree: &str, source: respaldo_core::Error) -> Self {
        MountError::Tree {
            tree: tree.to_string(),
            source,
        }
    }
}

/// A mounted view; dropping it unmounts too.
#[derive(Debug)]
pub struct Mounted {
    dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

/// Mounts `view` of `repo` on `dir` (an existing folder). Must be called
/// inside a tokio runtime, which runs the reads.
pub fn mount(repo: Arc<Repository>, view: &View, dir: &Path) -> Result<Mounted, MountError> {
    let rt = tokio::runtime::Handle::current();
    let ns = namespace::Namespace::new(view);
    let fs = fs::RepoFs::new(repo, ns, rt);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::FSName("respaldo".into()),
        fuser::MountOption::Subtype("respaldo".into()),
    ];
    let session = fuser::spawn_mount(fs, dir, &config).map_err(|source| MountError::Mount {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(Mounted {
        dir: dir.to_path_buf(),
        session: Some(session),
    })
}

impl Mounted {
    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the session ended on its own (someone ran `umount`).
    pub fn ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts: detaches the folder at once (lazily, as `umount -l`, so a
    /// busy mount point does not refuse), then gives the session up to two
    /// seconds to end. A program still holding a file open inside after
    /// that gets errors from it once this process ends.
    pub fn unmount(mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if !session.guard.is_finished() {
            detach(&self.dir).map_err(|source| MountError::Unmount {
                dir: self.dir.clone(),
                source,
            })?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !session.guard.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !session.guard.is_finished() {
            tracing::info!(
                "{}: files still open inside are cut off when respaldo ends",
                self.dir.display()
            );
            return Ok(());
        }
        session.join().map_err(|source| MountError::Unmount {
            dir: self.dir.clone(),
            source,
        })
    }
}

/// Detaches the mount on `dir`: `umount2(MNT_DETACH)` when allowed (root),
/// else the setuid helper `fusermount3 -u -z` (`fusermount` for FUSE 2).
fn detach(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Not mounted (any more): someone unmounted it meanwhile.
        Some(libc::EINVAL) => Ok(()),
        Some(libc::EPERM) => {
            for helper in ["fusermount3", "fusermount"] {
                match std::process::Command::new(helper)
                    .args(["-u", "-z", "--"])
                    .arg(dir)
                    .output()
                {
                    Ok(o) if o.status.success() => return Ok(()),
                    Ok(o) => {
                        return Err(std::io::Error::other(format!(
                            "{helper} -u: {}",
                            String::from_utf8_lossy(&o.stderr).trim()
                        )))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(err)
        }
        _ => Err(err),
    }
}
