//! Reading InfluxDB 2.x query answers: annotated CSV (RFC 4180 records, a
//! block of `#datatype`, `#group` and `#default` annotation rows and a header
//! before each table whose columns differ from the previous one), one record
//! at a time as the answer arrives, so memory holds one record, not the
//! answer.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::http::Http;
use crate::InfluxError;

/// One column of the current table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    /// Its label (`_time`, `_measurement`, a tag key, a field key…).
    pub name: String,
    /// Its `#datatype` (`double`, `long`, `unsignedLong`, `string`,
    /// `boolean`, `dateTime:RFC3339`…).
    pub datatype: String,
    /// Whether it is part of the group key (`#group`).
    pub group: bool,
    /// The value an empty cell stands for (`#default`).
    pub default: String,
}

/// Splits bytes arriving in pieces into CSV records.
#[derive(Debug, Default)]
struct Splitter {
    buf: Vec<u8>,
    /// Where the next record starts.
    start: usize,
    /// How far the next record's end has been looked for.
    scanned: usize,
    /// Inside a quoted field at `scanned`.
    quoted: bool,
}

impl Splitter {
    /// Appends a piece of the answer.
    fn feed(&mut self, piece: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(piece);
    }

    /// Parses the next complete record into `out`; false if `buf` holds no
    /// complete record (at `eof`, the rest is the last record).
    fn next_into(&mut self, eof: bool, out: &mut Vec<String>) -> bool {
        let from = self.scanned.max(self.start);
        let mut end = None;
        for (i, &b) in self.buf.iter().enumerate().skip(from) {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = match end {
            Some(e) => e,
            None if eof && self.start < self.buf.len() => self.buf.len(),
            None => {
                self.scanned = self.buf.len();
                return false;
            }
        };
        let mut line = &self.buf[self.start..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        parse_record(line, out);
        self.start = (end + 1).min(self.buf.len());
        self.scanned = self.start;
        self.quoted = false;
        true
    }
}

/// Parses one RFC 4180 record (without its line end) into `out`, reusing
/// its strings.
fn parse_record(line: &[u8], out: &mut Vec<String>) {
    let mut n = 0;
    let mut i = 0;
    loop {
        if out.len() == n {
            out.push(String::new());
        }
        let cell = &mut out[n];
        cell.clear();
        n += 1;
        if line.get(i) == Some(&b'"') {
            i += 1;
            loop {
                let rest = &line[i.min(line.len())..];
                let q = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
                cell.push_str(&String::from_utf8_lossy(&rest[..q]));
                i += q + 1;
                if line.get(i) == Some(&b'"') {
                    cell.push('"');
                    i += 1;
                } else {
                    break;
                }
            }
            // Anything between the closing quote and the comma is kept.
            let rest = &line[i.min(line.len())..];
            let c = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            cell.push_str(&String::from_utf8_lossy(&rest[..c]));
            i += c;
        } else {
            let rest = &line[i.min(line.len())..];
            let c = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            cell.push_str(&String::from_utf8_lossy(&rest[..c]));
            i += c;
        }
        if i >= line.len() {
            break;
        }
        i += 1; // the comma
    }
    out.truncate(n);
}

/// An annotated CSV answer being read.
pub struct AnnotatedCsv {
    http: Http,
    query: String,
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    splitter: Splitter,
    eof: bool,
    /// The current table's columns; index 0 is the annotation column.
    columns: Vec<Column>,
    /// Annotations read since the last header.
    pending: Vec<Column>,
    expect_header: bool,
    /// Changes whenever a new header is read.
    schema: u64,
}

impl AnnotatedCsv {
    /// Reads the answer `resp` to `query` (named in errors).
    pub fn new(http: &Http, query: &str, resp: reqwest::Response) -> Self {
        AnnotatedCsv {
            http: http.clone(),
            query: query.to_string(),
            stream: Box::pin(resp.bytes_stream()),
            splitter: Splitter::default(),
            eof: false,
            columns: Vec::new(),
            pending: Vec::new(),
            expect_header: true,
            schema: 0,
        }
    }

    /// The current table's columns (index 0 is the annotation column, so a
    /// row's cell `i` belongs to column `i`).
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// A number that changes whenever the columns change.
    pub fn schema(&self) -> u64 {
        self.schema
    }

    async fn record(&mut self, out: &mut Vec<String>) -> Result<bool, InfluxError> {
        loop {
            if self.splitter.next_into(self.eof, out) {
                return Ok(true);
            }
            if self.eof {
                return Ok(false);
            }
            match self.stream.next().await {
                Some(piece) => {
                    let piece = piece.map_err(|e| self.http.transport(e))?;
                    self.splitter.feed(&piece);
                }
                None => self.eof = true,
            }
        }
    }

    fn annotation(&mut self, r: &[String]) {
        if self.pending.len() < r.len() {
            self.pending.resize(r.len(), Column::default());
        }
        for (c, v) in self.pending.iter_mut().zip(r).skip(1) {
            match r[0].as_str() {
                "#datatype" => c.datatype = v.clone(),
                "#group" => c.group = v == "true",
                "#default" => c.default = v.clone(),
                _ => {}
            }
        }
        self.expect_header = true;
    }

    /// Reads the next data row into `r` (cells with `#default` applied;
    /// cell `i` belongs to column `i`); false at the end of the answer. An
    /// error table in the answer is returned as an error.
    pub async fn next_row(&mut self, r: &mut Vec<String>) -> Result<bool, InfluxError> {
        loop {
            if !self.record(r).await? {
                return Ok(false);
            }
            if r.len() == 1 && r[0].is_empty() {
                // A blank line: a new table (annotations, header) follows.
                self.pending.clear();
                self.expect_header = true;
                continue;
            }
            if r[0].starts_with('#') {
                self.annotation(r);
                continue;
            }
            if self.expect_header {
                self.pending.resize(r.len(), Column::default());
                for (c, name) in self.pending.iter_mut().zip(r.iter()) {
                    c.name.clone_from(name);
                }
                self.columns = std::mem::take(&mut self.pending);
                self.expect_header = false;
                self.schema += 1;
                continue;
            }
            if self.columns.len() != r.len() {
                return Err(InfluxError::Protocol {
                    url: self.http.url.clone(),
                    message: format!(
                        "answer to `{}`: a row has {} cells, its header {}",
                        self.query,
                        r.len(),
                        self.columns.len()
                    ),
                });
            }
            for (cell, c) in r.iter_mut().zip(&self.columns) {
                if cell.is_empty() && !c.default.is_empty() {
                    cell.clone_from(&c.default);
                }
            }
            let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            if names == ["", "error", "reference"] {
                return Err(InfluxError::Query {
                    url: self.http.url.clone(),
                    query: self.query.clone(),
                    message: r[1].clone(),
                });
            }
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_and_parse() {
        let mut s = Splitter::default();
        let mut r = Vec::new();
        s.feed(b",a,\"b,\"\"c\"\"\nd\",e\r\n,x");
        assert!(s.next_into(false, &mut r));
        assert_eq!(r, ["", "a", "b,\"c\"\nd", "e"]);
        assert!(!s.next_into(false, &mut r));
        s.feed(b"y\n\n");
        assert!(s.next_into(false, &mut r));
        assert_eq!(r, ["", "xy"]);
        assert!(s.next_into(false, &mut r));
        assert_eq!(r, [""]);
        assert!(!s.next_into(true, &mut r));
        s.feed(b"la");
        assert!(!s.next_into(false, &mut r));
        s.feed(b"st,\"q\"");
        assert!(s.next_into(true, &mut r));
        assert_eq!(r, ["last", "q"]);
        parse_record(b"\"\"", &mut r);
        assert_eq!(r, [""]);
        parse_record(b"a,,", &mut r);
        assert_eq!(r, ["a", "", ""]);
        parse_record(b"\"\"\"\",\"\xc3\xbc\"", &mut r);
        assert_eq!(r, ["\"", "\u{fc}"]);
    }
}
