//! Restoring line protocol: an artifact read as a stream, split into lines
//! (a newline inside a quoted string field does not end a line), sent in
//! gzip'd batches of a bounded number of lines, a bounded number of requests
//! in flight, each retried on transient errors ([`Http::write`]).

use std::io::Write;

use tokio::io::AsyncReadExt;

use crate::http::Http;
use crate::lp;
use crate::InfluxError;

/// Writes still in flight at once during a restore.
const WRITES_IN_FLIGHT: usize = 2;

/// Where the lines go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// 1.x: database `db`, each line to the retention policy its
    /// `# CONTEXT-RETENTION-POLICY:` section names (`/write`).
    V1 {
        /// The database.
        db: String,
    },
    /// 2.x: one bucket of one organization (`/api/v2/write`).
    V2 {
        /// The organization's id.
        org_id: String,
        /// The bucket's name.
        bucket: String,
    },
}

impl Destination {
    /// Sends one gzip'd batch; `rp` is the current retention policy (1.x).
    async fn send(&self, http: &Http, rp: &str, gz: bytes::Bytes) -> Result<(), InfluxError> {
        match self {
            Destination::V1 { db } => {
                let what = format!("{db}.{rp}");
                http.write(
                    "/write",
                    &[("db", db), ("rp", rp), ("precision", "ns")],
                    gz,
                    &what,
                )
                .await
            }
            Destination::V2 { org_id, bucket } => {
                let what = format!("bucket {bucket}");
                http.write(
                    "/api/v2/write",
                    &[("orgID", org_id), ("bucket", bucket), ("precision", "ns")],
                    gz,
                    &what,
                )
                .await
            }
        }
    }
}

/// Reads line protocol from `reader` and writes it to `dest` in gzip'd
/// batches of `batch` lines. Returns the number of lines written.
pub async fn write_lines(
    http: &Http,
    dest: &Destination,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    batch: usize,
    artifact: &str,
) -> Result<u64, InfluxError> {
    const RP_PREFIX: &[u8] = b"# CONTEXT-RETENTION-POLICY: ";
    let needs_rp = matches!(dest, Destination::V1 { .. });
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut scanned = 0;
    let mut scanner = lp::LineScanner::default();
    let mut rp = String::new();
    let mut batcher = Batcher::new(http, dest);
    let mut total = 0u64;
    let mut eof = false;
    loop {
        // Take every complete line from the buffer.
        let mut start = 0;
        loop {
            let end = match scanner.next_end(&buf, scanned.max(start)) {
                Some(e) => Some(e),
                None if eof && start < buf.len() => {
                    // A last line without a newline.
                    Some(buf.len())
                }
                None => None,
            };
            let Some(end) = end else {
                scanned = buf.len();
                break;
            };
            let line = &buf[start..end];
            start = end;
            scanned = end;
            if line.starts_with(b"#") {
                if let Some(name) = line.strip_prefix(RP_PREFIX) {
                    batcher.flush(&rp).await?;
                    rp = String::from_utf8_lossy(name).trim_end().to_string();
                }
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if needs_rp && rp.is_empty() {
                return Err(InfluxError::Metadata(format!(
                    "artifact `{artifact}`: points before any retention policy section"
                )));
            }
            batcher.push(line);
            total += 1;
            if batcher.lines >= batch {
                batcher.flush(&rp).await?;
            }
        }
        buf.drain(..start);
        scanned -= start;
        if eof {
            break;
        }
        let len = buf.len();
        buf.resize(len + (1 << 20), 0);
        let n = reader
            .read(&mut buf[len..])
            .await
            .map_err(|source| InfluxError::Read {
                artifact: artifact.to_string(),
                source,
            })?;
        buf.truncate(len + n);
        eof = n == 0;
    }
    batcher.flush(&rp).await?;
    batcher.finish().await?;
    Ok(total)
}

/// Gathers lines into gzip'd batches and sends them, a bounded number at once.
struct Batcher {
    http: Http,
    dest: Destination,
    gz: flate2::write::GzEncoder<Vec<u8>>,
    lines: usize,
    writes: tokio::task::JoinSet<Result<(), InfluxError>>,
}

impl Batcher {
    fn new(http: &Http, dest: &Destination) -> Self {
        Batcher {
            http: http.clone(),
            dest: dest.clone(),
            gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            lines: 0,
            writes: tokio::task::JoinSet::new(),
        }
    }

    fn push(&mut self, line: &[u8]) {
        self.gz.write_all(line).expect("writing to memory");
        if !line.ends_with(b"\n") {
            self.gz.write_all(b"\n").expect("writing to memory");
        }
        self.lines += 1;
    }

    /// Sends the gathered lines (to retention policy `rp`, 1.x).
    async fn flush(&mut self, rp: &str) -> Result<(), InfluxError> {
        if self.lines == 0 {
            return Ok(());
        }
        self.lines = 0;
        let full = std::mem::replace(
            &mut self.gz,
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
        );
        let body = full.finish().expect("writing to memory");
        while self.writes.len() >= WRITES_IN_FLIGHT {
            self.wait_one().await?;
        }
        let (http, dest, rp) = (self.http.clone(), self.dest.clone(), rp.to_string());
        self.writes
            .spawn(async move { dest.send(&http, &rp, body.into()).await });
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), InfluxError> {
        match self.writes.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(InfluxError::Protocol {
                url: self.http.url.clone(),
                message: format!("write task failed: {e}"),
            }),
            None => Ok(()),
        }
    }

    /// Waits for every write in flight.
    async fn finish(mut self) -> Result<(), InfluxError> {
        while !self.writes.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }
}
