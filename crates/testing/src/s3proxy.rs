//! A fault-injecting HTTP proxy to put between respaldo and an S3-compatible
//! server: per request, a rule decides to pass it on, answer with an error
//! status (500, 503, 403 AccessDenied), hang until the client times out, or
//! drop the connection in the middle of the upload. Each connection carries
//! one request (`Connection: close` both ways), so every request is seen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFault {
    /// Forward it.
    Pass,
    /// Answer with this status and an S3 error body, without forwarding.
    Status(u16),
    /// Read the request, answer nothing for this long, then close.
    Hang(Duration),
    /// Read half of the request body, then close the connection.
    DropMidBody,
}

/// What the rule sees of a request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `GET`, `PUT`, `POST`, `DELETE`, …
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Body length.
    pub content_length: u64,
    /// 0 for the first request through the proxy, then 1, 2, …
    pub seq: u64,
    /// The `Authorization` header (the SigV4 credential scope names the
    /// access key id).
    pub authorization: Option<String>,
}

type Rule = dyn Fn(&RequestInfo) -> HttpFault + Send + Sync;

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    injected: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream` applying `rule` to every request.
    pub fn start(
        upstream: u16,
        rule: impl Fn(&RequestInfo) -> HttpFault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicU64::new(0));
        let rule: Arc<Rule> = Arc::new(rule);
        let seq = Arc::new(AtomicU64::new(0));
        {
            let stop = stop.clone();
            let injected = injected.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (rule, seq, injected) = (rule.clone(), seq.clone(), injected.clone());
                    std::thread::spawn(move || {
                        let _ = handle(conn, upstream, &*rule, &seq, &injected);
                    });
                }
            });
        }
        FaultProxy {
            port,
            stop,
            injected,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests got a fault.
    pub fn faults_injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

/// Reads an HTTP head (request or response) up to the blank line.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn closing(head: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in head
        .iter()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
    {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

fn handle(
    client: TcpStream,
    upstream: u16,
    rule: &Rule,
    seq: &AtomicU64,
    injected: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let content_length = head
        .iter()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0u64);
    let authorization = head.iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    let info = RequestInfo {
        authorization,
        method,
        target,
        content_length,
        seq: seq.fetch_add(1, Ordering::SeqCst),
    };
    let fault = rule(&info);
    if fault != HttpFault::Pass {
        injected.fetch_add(1, Ordering::SeqCst);
    }
    let mut client = client;
    match fault {
        HttpFault::Pass => {
            let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
            up.write_all(&closing(&head))?;
            std::io::copy(&mut (&mut reader).take(content_length), &mut up)?;
            let mut up_reader = BufReader::new(up);
            let resp = read_head(&mut up_reader)?;
            client.write_all(&closing(&resp))?;
            std::io::copy(&mut up_reader, &mut client)?;
        }
        HttpFault::Status(code) => {
            std::io::copy(
                &mut (&mut reader).take(content_length),
                &mut std::io::sink(),
            )?;
            let (reason, s3code) = match code {
                403 => ("Forbidden", "AccessDenied"),
                503 => ("Service Unavailable", "SlowDown"),
                _ => ("Internal Server Error", "InternalError"),
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3code}</Code>\
                 <Message>injected by the test proxy</Message></Error>"
            );
            write!(
                client,
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        HttpFault::Hang(d) => {
            std::io::copy(
                &mut (&mut reader).take(content_length),
                &mut std::io::sink(),
            )?;
            std::thread::sleep(d);
        }
        HttpFault::DropMidBody => {
            std::io::copy(
                &mut (&mut reader).take(content_length / 2),
                &mut std::io::sink(),
            )?;
        }
    }
    client.flush()?;
    client.shutdown(Shutdown::Both)
}
