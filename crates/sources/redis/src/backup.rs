//! Backup: `BGSAVE` followed to its end, then the RDB taken from the
//! server's own file or over the replication protocol (`SYNC`), streamed
//! into the repository with the key counts recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use respaldo_core::source::BackupContext;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::ARTIFACT;
use crate::rdb::{Item, RdbError, RdbReader};
use crate::resp::{info_fields, Conn, EOF_MARK_LEN};
use crate::server::channel_reader;
use crate::server::config_get;
use crate::server::lastsave;
use crate::RedisError;
use crate::RedisSource;

impl RedisSource {
    /// `BGSAVE` (or the one in progress), followed until it finished.
    pub(crate) async fn bgsave(&self, c: &mut Conn) -> Result<(), RedisError> {
        let deadline = Instant::now() + Duration::from_secs(self.config.timeout);
        let failed = |c: &Conn| {
            RedisError::Bgsave {
            addr: c.addr.clone(),
            message: "the server reports rdb_last_bgsave_status:err (is its `dir` writable, is the disk full? its log has the reason)".into(),
        }
        };
        let mut wait = Duration::from_millis(5);
        // `started`: our BGSAVE forked (it runs from its reply on).
        let mut started = false;
        loop {
            let p = info_fields(&c.text(&["INFO", "persistence"]).await?);
            let busy = p.get("rdb_bgsave_in_progress").map(String::as_str) == Some("1");
            let ok = p.get("rdb_last_bgsave_status").map(String::as_str) == Some("ok");
            if started && !busy {
                return if ok { Ok(()) } else { Err(failed(c)) };
            }
            if !started && !busy {
                // A save that was running (another backup's, or a replica's,
                // possibly diskless) was waited for; an AOF rewrite is waited
                // for too (BGSAVE is retried); then ours starts.
                match c.cmd(&["BGSAVE"]).await {
                    Ok(_) => {
                        started = true;
                        continue;
                    }
                    Err(RedisError::Command { message, .. })
                        if message.contains("in progress") || message.contains("child process") => {
                    }
                    Err(RedisError::Command { addr, message, .. }) => {
                        return Err(RedisError::Bgsave { addr, message })
                    }
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() > deadline {
                return Err(RedisError::Bgsave {
                    addr: c.addr.clone(),
                    message: format!("not finished after {} s", self.config.timeout),
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }

    /// The server's dump file, opened, when it is on this host, readable,
    /// and written when the server's last save finished (so a file of
    /// another server at the same path, e.g. one in a container, is not
    /// taken for it).
    pub(crate) async fn local_dump(c: &mut Conn) -> Option<(PathBuf, std::fs::File)> {
        let dir = config_get(c, "dir").await.ok()??;
        let name = config_get(c, "dbfilename").await.ok()??;
        let last = lastsave(c).await.ok()?;
        let p = PathBuf::from(dir).join(name);
        let f = std::fs::File::open(&p).ok()?;
        let mtime = f
            .metadata()
            .and_then(|m| m.modified())
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        ((mtime - last).abs() <= 2).then_some((p, f))
    }

    /// Stores `reader` as the artifact while walking it (structure,
    /// checksum, keys per db). Returns the keys per db and the RDB version.
    pub(crate) async fn store(
        &self,
        ctx: &mut BackupContext,
        addr: &str,
        mut reader: impl AsyncRead + Unpin + Send,
    ) -> Result<(BTreeMap<String, u64>, u16), RedisError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let (ptx, prx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let parser = tokio::spawn(async move {
            let mut r = RdbReader::new(channel_reader(prx), false).await?;
            let mut keys = BTreeMap::new();
            while let Some(item) = r.next().await? {
                if let Item::Key { db, .. } = item {
                    *keys.entry(format!("db{db}")).or_insert(0u64) += 1;
                }
            }
            Ok::<_, RdbError>((keys, r.version))
        });
        let pump = async move {
            loop {
                let mut buf = bytes::BytesMut::with_capacity(1 << 20);
                match reader.read_buf(&mut buf).await {
                    Ok(0) => return,
                    Ok(_) => {
                        let b = buf.freeze();
                        if ptx.send(Ok(b.clone())).await.is_err() {
                            let _ = tx
                                .send(Err(std::io::Error::other("the RDB is invalid")))
                                .await;
                            return;
                        }
                        if tx.send(Ok(b)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(std::io::Error::new(e.kind(), e.to_string())))
                            .await;
                        let _ = ptx.send(Err(e)).await;
                        return;
                    }
                }
            }
        };
        let (stored, ()) = tokio::join!(ctx.add_stream(ARTIFACT, channel_reader(rx)), pump);
        let parsed = parser.await.map_err(|e| RedisError::Io {
            addr: addr.to_string(),
            message: format!("RDB check task failed: {e}"),
        })?;
        let parsed = parsed.map_err(|source| RedisError::Rdb {
            addr: addr.to_string(),
            source,
        });
        match (stored, parsed) {
            (
                Err(e),
                Err(RedisError::Rdb {
                    source: RdbError::Io(_),
                    ..
                }),
            ) => Err(e.into()),
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(_), Ok(v)) => Ok(v),
        }
    }
}

/// The bytes of a diskless snapshot: everything up to the server's 40-byte
/// end mark (held back until it is clear they are not the mark); a stream
/// that ends before the mark is an error.
pub(crate) struct UntilMark<R> {
    pub(crate) inner: R,
    pub(crate) mark: [u8; EOF_MARK_LEN],
    /// Received, not yet returned; the mark is searched here.
    pub(crate) held: Vec<u8>,
    /// The mark was found: `held` is the rest of the snapshot.
    pub(crate) done: bool,
}

impl<R> UntilMark<R> {
    pub(crate) fn new(inner: R, mark: [u8; EOF_MARK_LEN]) -> Self {
        UntilMark {
            inner,
            mark,
            held: Vec::with_capacity(64 * 1024 + EOF_MARK_LEN),
            done: false,
        }
    }

    /// Moves up to `n` held bytes into `buf`.
    fn emit(&mut self, buf: &mut tokio::io::ReadBuf<'_>, n: usize) {
        let n = n.min(buf.remaining());
        buf.put_slice(&self.held[..n]);
        self.held.drain(..n);
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for UntilMark<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                let n = this.held.len();
                this.emit(buf, n);
                return Poll::Ready(Ok(()));
            }
            // Bytes that cannot be the start of the mark go out first.
            let safe = this.held.len().saturating_sub(EOF_MARK_LEN - 1);
            if safe > 0 {
                this.emit(buf, safe);
                return Poll::Ready(Ok(()));
            }
            let before = this.held.len();
            this.held.resize(before + 64 * 1024, 0);
            let mut rb = tokio::io::ReadBuf::new(&mut this.held[before..]);
            let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.held.truncate(before + n);
            match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if n == 0 => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the replication stream before its end mark",
                    )))
                }
                Poll::Ready(Ok(())) => {
                    let from = before.saturating_sub(EOF_MARK_LEN - 1);
                    if let Some(at) = this.held[from..]
                        .windows(EOF_MARK_LEN)
                        .position(|w| w == this.mark)
                    {
                        this.held.truncate(from + at);
                        this.done = true;
                    }
                }
            }
        }
    }
}

/// A reader that fails when fewer than the announced bytes arrive.
pub(crate) struct ExactLen<R> {
    pub(crate) inner: R,
    pub(crate) left: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for ExactLen<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            if n == 0 && self.left > 0 {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the server closed the replication stream {} bytes early",
                        self.left
                    ),
                )));
            }
            self.left -= n;
        }
        r
    }
}
