//! A minimal RESP2 client on a TCP connection, plain or TLS: commands
//! (pipelined or one at a time), replies, and the raw byte stream the
//! replication protocol sends after `SYNC`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::RedisError;

/// The largest bulk reply accepted (4 GiB): far above any value Redis
/// sends (strings are at most 512 MiB), far below what an announced length
/// alone could make respaldo allocate.
const MAX_BULK: i64 = 4 << 30;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR …`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$…` (None for a null bulk).
    Bulk(Option<Vec<u8>>),
    /// `*…` (None for a null array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (status or bulk).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// TLS for a connection: the client settings and the name the server's
/// certificate must carry.
#[derive(Clone)]
pub struct Tls {
    /// Client settings (roots, client certificate).
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The name checked against the server's certificate.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({})", self.name.to_str())
    }
}

/// The read half of a connection, plain or TLS.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection to one server. `addr` (`redis://host:port` or
/// `rediss://host:port`) names it in messages.
pub struct Conn {
    pub(crate) addr: String,
    pub(crate) r: BufReader<ReadHalf>,
    w: BufWriter<WriteHalf>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.addr)
    }
}

impl Conn {
    /// Connects to `hostport` (`host:port`), with TLS when `tls` is given;
    /// `name` is how messages call the server.
    pub async fn connect(
        name: &str,
        hostport: &str,
        tls: Option<&Tls>,
    ) -> Result<Conn, RedisError> {
        let fail = |message: String| RedisError::Connect {
            addr: name.to_string(),
            message,
        };
        let connect = async {
            let s = TcpStream::connect(hostport)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let _ = s.set_nodelay(true);
            let (r, w): (ReadHalf, WriteHalf) = match tls {
                None => {
                    let (r, w) = s.into_split();
                    (Box::new(r), Box::new(w))
                }
                Some(t) => {
                    let s = TlsConnector::from(t.config.clone())
                        .connect(t.name.clone(), s)
                        .await
                        .map_err(|e| fail(format!("TLS handshake failed: {}", tls_message(&e))))?;
                    let (r, w) = tokio::io::split(s);
                    (Box::new(r), Box::new(w))
                }
            };
            Ok::<_, RedisError>((r, w))
        };
        let (r, w) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| fail("timed out".into()))??;
        Ok(Conn {
            addr: name.to_string(),
            r: BufReader::with_capacity(256 * 1024, r),
            w: BufWriter::with_capacity(256 * 1024, w),
        })
    }

    fn io_err(&self, e: std::io::Error) -> RedisError {
        RedisError::Io {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    /// Queues a command (sent on [`Conn::flush`]).
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), RedisError> {
        let mut head = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            head.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            if a.len() < 4096 {
                head.extend_from_slice(a);
                head.extend_from_slice(b"\r\n");
            } else {
                self.w.write_all(&head).await.map_err(|e| self.io_err(e))?;
                self.w.write_all(a).await.map_err(|e| self.io_err(e))?;
                head.clear();
                head.extend_from_slice(b"\r\n");
            }
        }
        self.w.write_all(&head).await.map_err(|e| self.io_err(e))
    }

    /// Sends what was queued.
    pub async fn flush(&mut self) -> Result<(), RedisError> {
        self.w.flush().await.map_err(|e| self.io_err(e))
    }

    async fn line(&mut self) -> Result<String, RedisError> {
        let mut l = Vec::new();
        let n = self
            .r
            .read_until(b'\n', &mut l)
            .await
            .map_err(|e| self.io_err(e))?;
        if n == 0 {
            return Err(RedisError::Io {
                addr: self.addr.clone(),
                message: "connection closed by the server".into(),
            });
        }
        while l.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            l.pop();
        }
        Ok(String::from_utf8_lossy(&l).into_owned())
    }

    fn protocol(&self, what: String) -> RedisError {
        RedisError::Protocol {
            addr: self.addr.clone(),
            message: what,
        }
    }

    /// Reads one reply (errors are returned as [`Reply::Error`]).
    pub async fn read(&mut self) -> Result<Reply, RedisError> {
        let l = self.line().await?;
        let (t, rest) = l.split_at(l.len().min(1));
        let num = |c: &Conn| {
            rest.parse::<i64>()
                .map_err(|_| c.protocol(format!("bad reply line `{l}`")))
        };
        Ok(match t {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(num(self)?),
            "$" => {
                let n = num(self)?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    if n > MAX_BULK {
                        return Err(self.protocol(format!(
                            "the server announced a reply of {n} bytes (at most {MAX_BULK} are accepted)"
                        )));
                    }
                    // Memory grows with the bytes that arrive, not with
                    // what the server announced.
                    let want = n as u64 + 2;
                    let mut b = Vec::with_capacity(want.min(1 << 20) as usize);
                    (&mut self.r)
                        .take(want)
                        .read_to_end(&mut b)
                        .await
                        .map_err(|e| self.io_err(e))?;
                    if (b.len() as u64) < want {
                        return Err(self.io_err(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            "*" => {
                let n = num(self)?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut v = Vec::with_capacity(n.min(1024) as usize);
                    for _ in 0..n {
                        v.push(Box::pin(self.read()).await?);
                    }
                    Reply::Array(Some(v))
                }
            }
            _ => return Err(self.protocol(format!("unexpected reply `{l}`"))),
        })
    }

    /// Runs one command; a server error becomes [`RedisError::Command`].
    pub async fn cmd(&mut self, args: &[&str]) -> Result<Reply, RedisError> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send(&a).await?;
        self.flush().await?;
        match self.read().await? {
            Reply::Error(e) => Err(RedisError::Command {
                addr: self.addr.clone(),
                command: args.first().copied().unwrap_or("").to_uppercase(),
                message: e,
            }),
            r => Ok(r),
        }
    }

    /// Runs a command whose reply is text (`INFO`, `CONFIG GET` values).
    pub async fn text(&mut self, args: &[&str]) -> Result<String, RedisError> {
        let r = self.cmd(args).await?;
        r.text()
            .ok_or_else(|| self.protocol(format!("unexpected reply to {}: {r:?}", args[0])))
    }

    /// After `SYNC`: skips the keep-alive newlines and reads the `$<len>`
    /// header of the RDB payload.
    pub async fn rdb_header(&mut self) -> Result<RdbLength, RedisError> {
        loop {
            let l = self.line().await?;
            if l.is_empty() {
                continue;
            }
            if let Some(e) = l.strip_prefix('-') {
                return Err(RedisError::Command {
                    addr: self.addr.clone(),
                    command: "SYNC".into(),
                    message: e.to_string(),
                });
            }
            if let Some(mark) = l.strip_prefix("$EOF:") {
                return <[u8; EOF_MARK_LEN]>::try_from(mark.as_bytes())
                    .map(RdbLength::UntilMark)
                    .map_err(|_| self.protocol(format!("unexpected SYNC reply `{l}`")));
            }
            return l
                .strip_prefix('$')
                .and_then(|n| n.parse::<u64>().ok())
                .map(RdbLength::Exact)
                .ok_or_else(|| self.protocol(format!("unexpected SYNC reply `{l}`")));
        }
    }
}

/// Length of the end mark of a diskless (`$EOF:`) replication snapshot.
pub const EOF_MARK_LEN: usize = 40;

/// How the server delimits the snapshot that follows `SYNC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdbLength {
    /// `$<len>`: exactly this many bytes (a snapshot saved to disk first).
    Exact(u64),
    /// `$EOF:<mark>`: streamed while it is produced (diskless), up to this
    /// 40-byte mark.
    UntilMark([u8; EOF_MARK_LEN]),
}

/// A handshake error with its cause (`invalid peer certificate: UnknownIssuer`).
fn tls_message(e: &std::io::Error) -> String {
    let mut m = e.to_string();
    if let Some(inner) = e.get_ref() {
        let i = inner.to_string();
        if !m.contains(&i) {
            m = format!("{m}: {i}");
        }
    }
    if [
        "UnknownIssuer",
        "NotValidForName",
        "BadSignature",
        "Expired",
    ]
    .iter()
    .any(|k| m.contains(k))
    {
        m.push_str(" (check `tls_ca_file` and `tls_server_name`)");
    } else if m.contains("CertificateRequired") || m.contains("HandshakeFailure") {
        m.push_str(
            " (does the server require a client certificate? `tls_cert_file`, `tls_key_file`)",
        );
    }
    m
}

/// `INFO` text as `field → value`.
pub fn info_fields(info: &str) -> std::collections::BTreeMap<String, String> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that sends `reply` to whatever it is asked, then closes
    /// the connection when `close`, else keeps it open.
    async fn conn_to(reply: &'static [u8], close: bool) -> Conn {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(reply).await.unwrap();
            if !close {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            }
        });
        Conn::connect("test", &addr, None).await.unwrap()
    }

    #[tokio::test]
    async fn an_announced_length_beyond_the_bound_is_a_protocol_error() {
        let mut c = conn_to(b"$99999999999999\r\n", false).await;
        let e = c.read().await.unwrap_err().to_string();
        assert!(
            e.contains("announced a reply of 99999999999999 bytes"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_bulk_cut_short_by_the_server_is_an_error() {
        let mut c = conn_to(b"$1000000\r\nabc", true).await;
        assert!(c.read().await.is_err());
    }

    #[tokio::test]
    async fn bulk_and_array_replies_parse() {
        let mut c = conn_to(b"$5\r\nhello\r\n*2\r\n:1\r\n$-1\r\n", false).await;
        assert_eq!(
            c.read().await.unwrap(),
            Reply::Bulk(Some(b"hello".to_vec()))
        );
        assert_eq!(
            c.read().await.unwrap(),
            Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(None)]))
        );
    }
}
