//! The FUSE side: kernel requests answered from the [`Namespace`] and open
//! files. Requests that may read the repository run as tasks on the
//! runtime and reply when done, so the session thread never waits on
//! storage and reads proceed concurrently.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyXattr, Request,
};
use respaldo_core::Repository;

use crate::content::OpenFile;
use crate::namespace::{shown, Content, Kind, Namespace, Node, ROOT};
use crate::MountError;

/// How long the kernel may keep what it was told: a snapshot never changes.
const TTL: Duration = Duration::from_secs(3600);

pub(crate) struct RepoFs {
    repo: Arc<Repository>,
    ns: Arc<Namespace>,
    open: Arc<Mutex<HashMap<u64, Arc<OpenFile>>>>,
    next_fh: AtomicU64,
    rt: tokio::runtime::Handle,
}

impl RepoFs {
    pub(crate) fn new(repo: Arc<Repository>, ns: Namespace, rt: tokio::runtime::Handle) -> Self {
        RepoFs {
            repo,
            ns: Arc::new(ns),
            open: Arc::new(Mutex::new(HashMap::new())),
            next_fh: AtomicU64::new(1),
            rt,
        }
    }

    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(f);
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
    }
}

fn attr(ino: u64, n: &Node) -> FileAttr {
    let a = &n.attr;
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// Logs a failure (with what failed) and answers EIO.
fn failed(what: String, e: &MountError) -> Errno {
    tracing::warn!("{what}: {e}");
    Errno::EIO
}

/// An extended attribute's value (or the list of names): its size when
/// asked with `size` 0, the bytes when they fit, else `ERANGE`.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
    }
}

impl Filesystem for RepoFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (ns, repo, name) = (self.ns.clone(), self.repo.clone(), name.to_os_string());
        self.spawn(async move {
            match ns.lookup(&repo, parent.0, &name).await {
                Ok(Some(ino)) => match ns.get(ino) {
                    Some(n) => reply.entry(&TTL, &attr(ino, &n), Generation(0)),
                    None => reply.error(Errno::ENOENT),
                },
                Ok(None) => reply.error(Errno::ENOENT),
                Err(e) => reply.error(failed(format!("looking up {}", shown(&name)), &e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.ns.get(ino.0) {
            Some(n) => reply.attr(&TTL, &attr(ino.0, &n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.ns.get(ino.0).map(|n| n.content) {
            Some(Content::Link(target)) => reply.data(&target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let chunks = match self.ns.get(ino.0).map(|n| n.content) {
            Some(Content::Bytes(c)) => c,
            Some(Content::Dir(_) | Content::Tree(_)) => return reply.error(Errno::EISDIR),
            Some(_) => return reply.error(Errno::EACCES),
            None => return reply.error(Errno::ENOENT),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let (repo, open) = (self.repo.clone(), self.open.clone());
        self.spawn(async move {
            match OpenFile::open(&repo, chunks).await {
                Ok(f) => {
                    open.lock().expect("open files").insert(fh, Arc::new(f));
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
                }
                Err(e) => reply.error(failed(format!("opening inode {}", ino.0), &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.open.lock().expect("open files").get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        self.spawn(async move {
            match file.read(offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(failed(format!("reading inode {} at {offset}", ino.0), &e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open.lock().expect("open files").remove(&fh.0);
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(n) = self.ns.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let found = n.attr.xattrs.iter().find(|x| OsStr::new(&x.name) == name);
        match found {
            None => reply.error(Errno::NO_XATTR),
            Some(x) => xattr_reply(reply, size, &x.value),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(n) = self.ns.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        for x in n.attr.xattrs.iter() {
            names.extend_from_slice(x.name.as_bytes());
            names.push(0);
        }
        xattr_reply(reply, size, &names);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (ns, repo) = (self.ns.clone(), self.repo.clone());
        self.spawn(async move {
            let children = match ns.children(&repo, ino.0).await {
                Ok(Some(c)) => c,
                Ok(None) => return reply.error(Errno::ENOTDIR),
                Err(e) => {
                    return reply.error(failed(format!("listing inode {}", ino.0), &e));
                }
            };
            let parent = ns.get(ino.0).map_or(ino.0, |n| n.parent.max(ROOT));
            let dots: [(std::ffi::OsString, u64); 2] = [(".".into(), ino.0), ("..".into(), parent)];
            let all = dots.iter().chain(children.iter());
            for (i, (name, child)) in all.enumerate().skip(offset as usize) {
                let kind = match ns.get(*child) {
                    Some(n) => file_type(n.attr.kind),
                    None => continue,
                };
                if reply.add(INodeNo(*child), i as u64 + 1, kind, name) {
                    break;
                }
            }
            reply.ok();
        });
    }
}
