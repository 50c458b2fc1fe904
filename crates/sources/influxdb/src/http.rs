//! The HTTP plumbing both API versions share: one client per server with its
//! credentials, answers mapped to typed errors (the server's own message,
//! never a secret), and writes retried with backoff on transient failures.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use respaldo_core::kit::secret::SecretValue;
use serde::Deserialize;

use crate::InfluxError;

/// How many times a write is tried before giving up.
const WRITE_TRIES: u32 = 6;

/// How requests authenticate.
#[derive(Debug)]
pub enum Auth {
    /// No credentials.
    None,
    /// 1.x: HTTP basic authentication.
    Basic(String, Option<SecretValue>),
    /// 2.x: `Authorization: Token …`.
    Token(SecretValue),
}

/// A connection to one server.
#[derive(Debug, Clone)]
pub struct Http {
    /// Base URL without a trailing slash (`http://host:8086`).
    pub url: String,
    client: reqwest::Client,
    auth: Arc<Auth>,
}

/// The error bodies of both versions: `{"error": …}` (1.x) or
/// `{"code": …, "message": …}` (2.x).
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl Http {
    /// A client for `url`.
    pub fn new(url: &str, auth: Auth) -> Result<Self, InfluxError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| InfluxError::Config(format!("HTTP client: {e}")))?;
        Ok(Http {
            url: url.trim_end_matches('/').to_string(),
            client,
            auth: Arc::new(auth),
        })
    }

    /// A request to `path` (which starts with `/`) with the credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.url));
        match &*self.auth {
            Auth::None => rb,
            Auth::Basic(u, p) => rb.basic_auth(u, p.as_ref().map(SecretValue::expose)),
            Auth::Token(t) => rb.header("Authorization", format!("Token {}", t.expose())),
        }
    }

    /// A transport error (connection refused, timeout, reset).
    pub fn transport(&self, e: reqwest::Error) -> InfluxError {
        InfluxError::Unreachable {
            url: self.url.clone(),
            message: error_chain(&e),
        }
    }

    /// Sends a request; an answer that is not 2xx becomes an error carrying
    /// the server's message.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response, InfluxError> {
        let resp = rb.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body)
            .ok()
            .and_then(|r| r.error.or(r.message))
            .unwrap_or_else(|| body.trim().chars().take(300).collect());
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
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

    /// Sends a JSON request and parses the JSON answer.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        rb: RequestBuilder,
        what: &str,
    ) -> Result<T, InfluxError> {
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| InfluxError::Protocol {
            url: self.url.clone(),
            message: format!("unreadable answer to {what}: {e}"),
        })
    }

    /// POSTs a gzip'd batch of line protocol to `path` with `query`,
    /// retrying with exponential backoff on 5xx and 429 answers, timeouts
    /// and connection errors; other errors are returned at once.
    pub async fn write(
        &self,
        path: &str,
        query: &[(&str, &str)],
        gz: Bytes,
        what: &str,
    ) -> Result<(), InfluxError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let rb = self
                .request(Method::POST, path)
                .query(query)
                .header("Content-Encoding", "gzip")
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(gz.clone());
            let retry = match self.send(rb).await {
                Ok(_) => return Ok(()),
                Err(e @ InfluxError::Server { status, .. }) if status >= 500 || status == 429 => e,
                Err(e @ InfluxError::Unreachable { .. }) => e,
                Err(e) => return Err(e),
            };
            if attempt == WRITE_TRIES {
                return Err(retry);
            }
            tracing::warn!("write to {what} failed (attempt {attempt}): {retry}; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
            attempt += 1;
        }
    }
}

/// An error with its causes (`error sending request: connection refused`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
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
    async fn writes_retry_server_errors_and_throttling_but_not_client_errors() {
        let (url, seen) = fake(vec![503, 429, 500, 204]).await;
        let c = Http::new(&url, Auth::None).unwrap();
        c.write("/write", &[], Bytes::from_static(b"x"), "db.rp")
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 4);

        let (url, seen) = fake(vec![400]).await;
        let c = Http::new(&url, Auth::None).unwrap();
        let e = c
            .write("/write", &[], Bytes::from_static(b"x"), "db.rp")
            .await
            .unwrap_err();
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(e.to_string().contains("HTTP 400: boom"), "{e}");

        let (url, _) = fake(vec![401]).await;
        let c = Http::new(&url, Auth::None).unwrap();
        let e = c.send(c.request(Method::POST, "/query")).await.unwrap_err();
        assert!(matches!(e, InfluxError::Auth { .. }), "{e}");
    }
}
