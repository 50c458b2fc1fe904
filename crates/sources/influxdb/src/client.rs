//! A small InfluxDB 1.x HTTP client: InfluxQL queries (whole or chunked) and
//! line protocol writes with retries.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use respaldo_core::secret::SecretValue;
use serde::Deserialize;
use serde_json::Value;

use crate::InfluxError;

/// One series of a query result.
#[derive(Debug, Default, Deserialize)]
pub struct Series {
    /// Measurement (or `databases`, `cqs`, …).
    #[serde(default)]
    pub name: String,
    /// Column names.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Rows.
    #[serde(default)]
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// The index of a column.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

#[derive(Debug, Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

/// How many times a write is tried before giving up.
const WRITE_TRIES: u32 = 6;

/// A connection to one server.
#[derive(Debug, Clone)]
pub struct Client {
    /// Base URL without a trailing slash (`http://host:8086`).
    pub url: String,
    http: reqwest::Client,
    auth: Option<(String, Option<SecretValue>)>,
}

/// Quotes an identifier for InfluxQL.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Client {
    /// A client for `url` with optional user and password.
    pub fn new(
        url: &str,
        auth: Option<(String, Option<SecretValue>)>,
    ) -> Result<Self, InfluxError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| InfluxError::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            url: url.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.post(format!("{}{path}", self.url));
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, p.as_ref().map(SecretValue::expose)),
            None => rb,
        }
    }

    fn transport(&self, e: reqwest::Error) -> InfluxError {
        InfluxError::Unreachable {
            url: self.url.clone(),
            message: error_chain(&e),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, InfluxError> {
        let resp = rb.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Response>(&body)
            .ok()
            .and_then(|r| r.error)
            .unwrap_or_else(|| body.trim().chars().take(300).collect());
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(InfluxError::Auth {
                url: self.url.clone(),
                message,
            });
        }
        Err(InfluxError::Server {
            url: self.url.clone(),
            status: status.as_u16(),
            message,
        })
    }

    fn query_request(&self, db: Option<&str>, q: &str, chunked: bool) -> reqwest::RequestBuilder {
        let mut params = vec![("q", q), ("epoch", "ns")];
        if let Some(db) = db {
            params.push(("db", db));
        }
        if chunked {
            params.push(("chunked", "true"));
            params.push(("chunk_size", "10000"));
        }
        self.post("/query").form(&params)
    }

    /// Runs one statement and returns its series (small results only).
    pub async fn query(&self, db: Option<&str>, q: &str) -> Result<Vec<Series>, InfluxError> {
        let resp = self.send(self.query_request(db, q, false)).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        let r: Response = serde_json::from_slice(&bytes).map_err(|e| self.bad(q, e))?;
        self.statement(q, r).map(|s| s.series)
    }

    fn bad(&self, q: &str, e: serde_json::Error) -> InfluxError {
        InfluxError::Protocol {
            url: self.url.clone(),
            message: format!("unreadable answer to `{q}`: {e}"),
        }
    }

    fn statement(&self, q: &str, r: Response) -> Result<StatementResult, InfluxError> {
        if let Some(e) = r.error {
            return Err(self.query_error(q, e));
        }
        let s = r
            .results
            .into_iter()
            .next()
            .ok_or_else(|| InfluxError::Protocol {
                url: self.url.clone(),
                message: format!("no result for `{q}`"),
            })?;
        match s.error {
            Some(e) => Err(self.query_error(q, e)),
            None => Ok(s),
        }
    }

    fn query_error(&self, q: &str, message: String) -> InfluxError {
        InfluxError::Query {
            url: self.url.clone(),
            query: q.to_string(),
            message,
        }
    }

    /// Runs one statement with a chunked response; the series arrive one
    /// chunk at a time from [`Chunks::next`].
    pub async fn query_chunks(&self, db: &str, q: &str) -> Result<Chunks<'_>, InfluxError> {
        let resp = self.send(self.query_request(Some(db), q, true)).await?;
        Ok(Chunks {
            client: self,
            query: q.to_string(),
            stream: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            scanned: 0,
            ready: VecDeque::new(),
            done: false,
        })
    }

    /// Writes a gzip'd batch of line protocol, retrying with backoff on
    /// server errors and timeouts.
    pub async fn write(&self, db: &str, rp: &str, gz: Bytes) -> Result<(), InfluxError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let rb = self
                .post("/write")
                .query(&[("db", db), ("rp", rp), ("precision", "ns")])
                .header("Content-Encoding", "gzip")
                .body(gz.clone());
            let retry = match self.send(rb).await {
                Ok(_) => return Ok(()),
                Err(e @ InfluxError::Server { status, .. }) if status >= 500 => e,
                Err(e @ InfluxError::Unreachable { .. }) => e,
                Err(e) => return Err(e),
            };
            if attempt == WRITE_TRIES {
                return Err(retry);
            }
            tracing::warn!("write to {db}.{rp} failed (attempt {attempt}): {retry}; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
            attempt += 1;
        }
    }
}

/// An error with its causes (`error sending request: connection refused`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// A chunked query response being read.
pub struct Chunks<'a> {
    client: &'a Client,
    query: String,
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    ready: VecDeque<Series>,
    done: bool,
}

impl Chunks<'_> {
    /// The next series chunk, or `None` at the end of the response. At most
    /// one chunk of the response is held in memory.
    pub async fn next(&mut self) -> Result<Option<Series>, InfluxError> {
        loop {
            if let Some(s) = self.ready.pop_front() {
                return Ok(Some(s));
            }
            if let Some(nl) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=self.scanned + nl).collect();
                self.scanned = 0;
                self.parse(&line)?;
                continue;
            }
            self.scanned = self.buf.len();
            if self.done {
                let line = std::mem::take(&mut self.buf);
                self.parse(&line)?;
                return Ok(self.ready.pop_front());
            }
            match self.stream.next().await {
                Some(piece) => {
                    let piece = piece.map_err(|e| self.client.transport(e))?;
                    self.buf.extend_from_slice(&piece);
                }
                None => self.done = true,
            }
        }
    }

    fn parse(&mut self, line: &[u8]) -> Result<(), InfluxError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let r: Response =
            serde_json::from_slice(line).map_err(|e| self.client.bad(&self.query, e))?;
        self.ready
            .extend(self.client.statement(&self.query, r)?.series);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering each request with the next status of `statuses`
    /// (the last one repeats); returns its URL and the request counter.
    async fn fake(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let n = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let i = n.fetch_add(1, Ordering::SeqCst);
                let status = statuses[i.min(statuses.len() - 1)];
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body by Content-Length.
                let body_start = loop {
                    let k = s.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..k]);
                    if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&req[..body_start]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while req.len() < body_start + len {
                    let k = s.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..k]);
                }
                let body = r#"{"error":"boom"}"#;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn writes_retry_server_errors_but_not_client_errors() {
        let (url, seen) = fake(vec![503, 500, 204]).await;
        let c = Client::new(&url, None).unwrap();
        c.write("db", "rp", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 3);

        let (url, seen) = fake(vec![400]).await;
        let c = Client::new(&url, None).unwrap();
        let e = c
            .write("db", "rp", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(e.to_string().contains("HTTP 400: boom"), "{e}");

        let (url, _) = fake(vec![401]).await;
        let c = Client::new(&url, None).unwrap();
        let e = c.query(None, "SHOW DATABASES").await.unwrap_err();
        assert!(matches!(e, InfluxError::Auth { .. }), "{e}");
    }
}
