//! A small InfluxDB 1.x client: InfluxQL queries, whole or chunked, over
//! the shared [`Http`] plumbing.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::http::Http;
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

/// A connection to one 1.x server.
#[derive(Debug, Clone)]
pub struct Client {
    /// The server.
    pub http: Http,
}

/// Quotes an identifier for InfluxQL.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Client {
    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.http.url
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
        self.http.request(Method::POST, "/query").form(&params)
    }

    /// Runs one statement and returns its series (small results only).
    pub async fn query(&self, db: Option<&str>, q: &str) -> Result<Vec<Series>, InfluxError> {
        let resp = self.http.send(self.query_request(db, q, false)).await?;
        let bytes = resp.bytes().await.map_err(|e| self.http.transport(e))?;
        let r: Response = serde_json::from_slice(&bytes).map_err(|e| self.bad(q, e))?;
        self.statement(q, r).map(|s| s.series)
    }

    fn bad(&self, q: &str, e: serde_json::Error) -> InfluxError {
        InfluxError::Protocol {
            url: self.http.url.clone(),
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
                url: self.http.url.clone(),
                message: format!("no result for `{q}`"),
            })?;
        match s.error {
            Some(e) => Err(self.query_error(q, e)),
            None => Ok(s),
        }
    }

    fn query_error(&self, q: &str, message: String) -> InfluxError {
        InfluxError::Query {
            url: self.http.url.clone(),
            query: q.to_string(),
            message,
        }
    }

    /// Runs one statement with a chunked response; the series arrive one
    /// chunk at a time from [`Chunks::next`].
    pub async fn query_chunks(&self, db: &str, q: &str) -> Result<Chunks<'_>, InfluxError> {
        let resp = self
            .http
            .send(self.query_request(Some(db), q, true))
            .await?;
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
                    let piece = piece.map_err(|e| self.client.http.transport(e))?;
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
