//! A streaming RDB reader. It does not decode values: it walks each value's
//! structure and copies its bytes exactly as they are in the file, which is
//! what a `DUMP` payload carries. It checks the magic, the version and the
//! trailing CRC-64 of the whole file.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::crc64::{self, Crc64};

/// Highest RDB version understood (Redis 7.4 writes 12).
pub const MAX_VERSION: u16 = 12;

/// A malformed or unsupported RDB.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    /// Reading failed.
    #[error("reading the RDB: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid RDB.
    #[error("invalid RDB at byte {offset}: {message}")]
    Format {
        /// Where.
        offset: u64,
        /// What.
        message: String,
    },
    /// A key of a module type, which cannot be restored without the module.
    #[error("key `{key}` in db {db} is a module value ({what}); it can only be restored into a server with that module, and old-style module values cannot be copied")]
    Module {
        /// The key.
        key: String,
        /// Its db.
        db: u64,
        /// Which module encoding.
        what: String,
    },
}

/// One thing read from the file.
#[derive(Debug)]
pub enum Item {
    /// A key and its value's encoding (type byte first).
    Key {
        /// Its database.
        db: u64,
        /// The key.
        key: Vec<u8>,
        /// Absolute expiry, ms since the epoch.
        expire_ms: Option<i64>,
        /// Type byte + value bytes, as in the file (empty when not captured).
        value: Vec<u8>,
    },
    /// A function library (`FUNCTION2` opcode + its code string, as in the file).
    Function(Vec<u8>),
    /// Module auxiliary data that was skipped.
    ModuleAux,
}

enum Len {
    Len(u64),
    Enc(u8),
}

/// The reader.
pub struct RdbReader<R> {
    r: BufReader<R>,
    crc: Crc64,
    offset: u64,
    capture: bool,
    buf: Vec<u8>,
    /// The file's RDB version.
    pub version: u16,
    db: u64,
    done: bool,
}

impl<R: AsyncRead + Unpin> RdbReader<R> {
    /// Reads the header. With `capture`, values are copied into items;
    /// without, they are only walked (counting, checking).
    pub async fn new(r: R, capture: bool) -> Result<Self, RdbError> {
        let mut s = RdbReader {
            r: BufReader::with_capacity(1 << 20, r),
            crc: Crc64::new(),
            offset: 0,
            capture: false,
            buf: Vec::new(),
            version: 0,
            db: 0,
            done: false,
        };
        let mut head = [0u8; 9];
        s.take_into(&mut head).await?;
        if &head[..5] != b"REDIS" {
            return Err(s.bad("not an RDB file (no REDIS magic)".into()));
        }
        let v = std::str::from_utf8(&head[5..])
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or_else(|| s.bad("bad RDB version field".into()))?;
        if v == 0 || v > MAX_VERSION {
            return Err(s.bad(format!(
                "RDB version {v} is not supported (at most {MAX_VERSION})"
            )));
        }
        s.version = v;
        s.capture = capture;
        Ok(s)
    }

    fn bad(&self, message: String) -> RdbError {
        RdbError::Format {
            offset: self.offset,
            message,
        }
    }

    /// Consumes `n` bytes, into the value buffer when capturing.
    async fn skip(&mut self, mut n: u64, keep: bool) -> Result<(), RdbError> {
        while n > 0 {
            let b = self.r.fill_buf().await?;
            if b.is_empty() {
                return Err(self.bad("the file ends too early".into()));
            }
            let k = (b.len() as u64).min(n) as usize;
            self.crc.update(&b[..k]);
            if keep {
                self.buf.extend_from_slice(&b[..k]);
            }
            self.r.consume(k);
            self.offset += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    async fn take_into(&mut self, out: &mut [u8]) -> Result<(), RdbError> {
        if self.take_buffered(out) {
            return Ok(());
        }
        let mut at = 0;
        while at < out.len() {
            let b = self.r.fill_buf().await?;
            if b.is_empty() {
                return Err(self.bad("the file ends too early".into()));
            }
            let k = b.len().min(out.len() - at);
            out[at..at + k].copy_from_slice(&b[..k]);
            self.crc.update(&b[..k]);
            if self.capture {
                self.buf.extend_from_slice(&b[..k]);
            }
            self.r.consume(k);
            self.offset += k as u64;
            at += k;
        }
        Ok(())
    }

    async fn u8(&mut self) -> Result<u8, RdbError> {
        let mut b = [0u8; 1];
        self.take_into(&mut b).await?;
        Ok(b[0])
    }

    /// Takes `out.len()` bytes from what is already buffered, without
    /// awaiting (the common case); false when the buffer is too short.
    fn take_buffered(&mut self, out: &mut [u8]) -> bool {
        let b = self.r.buffer();
        if b.len() < out.len() {
            return false;
        }
        let n = out.len();
        out.copy_from_slice(&b[..n]);
        self.crc.update(&b[..n]);
        if self.capture {
            self.buf.extend_from_slice(&b[..n]);
        }
        self.r.consume(n);
        self.offset += n as u64;
        true
    }

    async fn len_or_enc(&mut self) -> Result<Len, RdbError> {
        let b = self.u8().await?;
        Ok(match b >> 6 {
            0 => Len::Len((b & 0x3f) as u64),
            1 => Len::Len((((b & 0x3f) as u64) << 8) | self.u8().await? as u64),
            2 => match b {
                0x80 => {
                    let mut x = [0u8; 4];
                    self.take_into(&mut x).await?;
                    Len::Len(u32::from_be_bytes(x) as u64)
                }
                0x81 => {
                    let mut x = [0u8; 8];
                    self.take_into(&mut x).await?;
                    Len::Len(u64::from_be_bytes(x))
                }
                _ => return Err(self.bad(format!("bad length byte {b:#04x}"))),
            },
            _ => Len::Enc(b & 0x3f),
        })
    }

    async fn len(&mut self) -> Result<u64, RdbError> {
        match self.len_or_enc().await? {
            Len::Len(n) => Ok(n),
            Len::Enc(_) => Err(self.bad("an encoded string where a length was expected".into())),
        }
    }

    /// Walks a string (raw, integer or LZF), copying it when capturing.
    async fn string(&mut self) -> Result<(), RdbError> {
        match self.len_or_enc().await? {
            Len::Len(n) => self.skip(n, self.capture).await,
            Len::Enc(0) => self.skip(1, self.capture).await,
            Len::Enc(1) => self.skip(2, self.capture).await,
            Len::Enc(2) => self.skip(4, self.capture).await,
            Len::Enc(3) => {
                let clen = self.len().await?;
                self.len().await?;
                self.skip(clen, self.capture).await
            }
            Len::Enc(e) => Err(self.bad(format!("unknown string encoding {e}"))),
        }
    }

    /// Decodes a string (keys, aux fields). Not captured.
    async fn read_string(&mut self) -> Result<Vec<u8>, RdbError> {
        let cap = std::mem::replace(&mut self.capture, false);
        let r = self.read_string_inner().await;
        self.capture = cap;
        r
    }

    async fn read_string_inner(&mut self) -> Result<Vec<u8>, RdbError> {
        let int = |v: i64| v.to_string().into_bytes();
        match self.len_or_enc().await? {
            Len::Len(n) => {
                let mut v = vec![0u8; n as usize];
                self.take_into(&mut v).await?;
                Ok(v)
            }
            Len::Enc(0) => Ok(int(self.u8().await? as i8 as i64)),
            Len::Enc(1) => {
                let mut x = [0u8; 2];
                self.take_into(&mut x).await?;
                Ok(int(i16::from_le_bytes(x) as i64))
            }
            Len::Enc(2) => {
                let mut x = [0u8; 4];
                self.take_into(&mut x).await?;
                Ok(int(i32::from_le_bytes(x) as i64))
            }
            Len::Enc(3) => {
                let clen = self.len().await?;
                let ulen = self.len().await?;
                let mut c = vec![0u8; clen as usize];
                self.take_into(&mut c).await?;
                lzf_decompress(&c, ulen as usize)
                    .ok_or_else(|| self.bad("corrupt LZF-compressed string".into()))
            }
            Len::Enc(e) => Err(self.bad(format!("unknown string encoding {e}"))),
        }
    }

    /// Walks module opcodes up to their EOF marker.
    async fn module_opcodes(&mut self) -> Result<(), RdbError> {
        loop {
            match self.len().await? {
                0 => return Ok(()),
                1 | 2 => {
                    self.len().await?;
                }
                3 => self.skip(4, self.capture).await?,
                4 => self.skip(8, self.capture).await?,
                5 => self.string().await?,
                op => return Err(self.bad(format!("unknown module opcode {op}"))),
            }
        }
    }

    /// Walks a stream (`v` = 1, 2 or 3 for the type): listpacks, metadata,
    /// consumer groups with their pending entries and consumers.
    async fn stream(&mut self, v: u8) -> Result<(), RdbError> {
        let nodes = self.len().await?;
        for _ in 0..nodes {
            self.string().await?;
            self.string().await?;
        }
        // length, last id; v2+: first id, max deleted id, entries added
        let n = if v >= 2 { 8 } else { 3 };
        for _ in 0..n {
            self.len().await?;
        }
        let groups = self.len().await?;
        for _ in 0..groups {
            self.string().await?;
            self.len().await?;
            self.len().await?;
            if v >= 2 {
                self.len().await?;
            }
            let pel = self.len().await?;
            for _ in 0..pel {
                self.skip(16 + 8, self.capture).await?;
                self.len().await?;
            }
            let consumers = self.len().await?;
            for _ in 0..consumers {
                self.string().await?;
                self.skip(if v >= 3 { 16 } else { 8 }, self.capture).await?;
                let pel = self.len().await?;
                self.skip(pel * 16, self.capture).await?;
            }
        }
        Ok(())
    }

    /// Walks one value of type `t` (the type byte already read).
    async fn value(&mut self, t: u8, key: &[u8]) -> Result<(), RdbError> {
        match t {
            0 | 9..=13 | 16 | 17 | 20 => self.string().await,
            1 | 2 | 14 => {
                for _ in 0..self.len().await? {
                    self.string().await?;
                }
                Ok(())
            }
            3 => {
                for _ in 0..self.len().await? {
                    self.string().await?;
                    let l = self.u8().await?;
                    if l < 253 {
                        self.skip(l as u64, self.capture).await?;
                    }
                }
                Ok(())
            }
            4 => {
                for _ in 0..self.len().await? {
                    self.string().await?;
                    self.string().await?;
                }
                Ok(())
            }
            5 => {
                for _ in 0..self.len().await? {
                    self.string().await?;
                    self.skip(8, self.capture).await?;
                }
                Ok(())
            }
            18 => {
                for _ in 0..self.len().await? {
                    self.len().await?;
                    self.string().await?;
                }
                Ok(())
            }
            15 => self.stream(1).await,
            19 => self.stream(2).await,
            21 => self.stream(3).await,
            6 | 7 => {
                let id = self.len().await?;
                let name = module_name(id);
                if t == 6 {
                    return Err(RdbError::Module {
                        key: String::from_utf8_lossy(key).into_owned(),
                        db: self.db,
                        what: format!("module `{name}`, old encoding"),
                    });
                }
                self.module_opcodes().await
            }
            _ => Err(self.bad(format!(
                "value type {t} of key `{}` is not supported",
                String::from_utf8_lossy(key)
            ))),
        }
    }

    /// The next key (or function, or skipped module data); `None` at the end
    /// of the file, after its checksum was checked.
    pub async fn next(&mut self) -> Result<Option<Item>, RdbError> {
        if self.done {
            return Ok(None);
        }
        let cap = self.capture;
        let mut expire_ms = None;
        loop {
            self.capture = false;
            let op = self.u8().await?;
            match op {
                0xff => {
                    let expect = self.crc.value();
                    let mut sum = [0u8; 8];
                    if self.version >= 5 {
                        self.take_into(&mut sum).await?;
                    }
                    let sum = u64::from_le_bytes(sum);
                    if sum != 0 && sum != expect {
                        return Err(self.bad(format!(
                            "checksum mismatch: file says {sum:016x}, content gives {expect:016x}"
                        )));
                    }
                    if !self.r.fill_buf().await?.is_empty() {
                        return Err(self.bad("bytes after the end of the RDB".into()));
                    }
                    self.done = true;
                    self.capture = cap;
                    return Ok(None);
                }
                0xfe => self.db = self.len().await?,
                0xfd => {
                    let mut x = [0u8; 4];
                    self.take_into(&mut x).await?;
                    expire_ms = Some(u32::from_le_bytes(x) as i64 * 1000);
                }
                0xfc => {
                    let mut x = [0u8; 8];
                    self.take_into(&mut x).await?;
                    expire_ms = Some(i64::from_le_bytes(x));
                }
                0xfb => {
                    self.len().await?;
                    self.len().await?;
                }
                0xfa => {
                    self.read_string().await?;
                    self.read_string().await?;
                }
                0xf9 => {
                    self.u8().await?;
                }
                0xf8 => {
                    self.len().await?;
                }
                0xf7 => {
                    self.len().await?;
                    self.len().await?;
                    self.len().await?;
                    self.module_opcodes().await?;
                    self.capture = cap;
                    return Ok(Some(Item::ModuleAux));
                }
                0xf5 => {
                    self.capture = cap;
                    self.buf.clear();
                    if cap {
                        self.buf.push(op);
                    }
                    self.string().await?;
                    return Ok(Some(Item::Function(std::mem::take(&mut self.buf))));
                }
                0xf4 => {
                    for _ in 0..3 {
                        self.len().await?;
                    }
                }
                t if t < 0xf4 => {
                    let key = self.read_string().await?;
                    self.capture = cap;
                    self.buf.clear();
                    if cap {
                        self.buf.push(t);
                    }
                    self.value(t, &key).await?;
                    return Ok(Some(Item::Key {
                        db: self.db,
                        key,
                        expire_ms,
                        value: std::mem::take(&mut self.buf),
                    }));
                }
                _ => return Err(self.bad(format!("unknown opcode {op:#04x}"))),
            }
        }
    }

    /// A `DUMP` payload for a captured value: value bytes, RDB version and
    /// CRC-64, both little endian.
    pub fn payload(&self, mut value: Vec<u8>) -> Vec<u8> {
        value.extend_from_slice(&self.version.to_le_bytes());
        let crc = crc64::checksum(&value);
        value.extend_from_slice(&crc.to_le_bytes());
        value
    }
}

/// A module type id's 9-character name (Redis packs it in 6-bit symbols).
fn module_name(id: u64) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = id >> 10;
    let mut name = [0u8; 9];
    for c in name.iter_mut().rev() {
        *c = CHARS[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// LZF decompression (as Redis uses it for long strings).
fn lzf_decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(out_len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(input.get(i..i + n)?);
            i += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += *input.get(i)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *input.get(i)? as usize + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            for k in 0..n + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    (out.len() == out_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzf_literal_and_backref() {
        // "abcabcabc": literal "abc" then a back-reference of 6 bytes, distance 3.
        let c = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(lzf_decompress(&c, 9).unwrap(), b"abcabcabc");
        assert!(lzf_decompress(&c, 8).is_none());
    }

    #[tokio::test]
    async fn minimal_file_and_checksum() {
        let mut f = b"REDIS0010".to_vec();
        f.extend_from_slice(&[0xfe, 0x00, 0x00, 0x01, b'k', 0x01, b'v', 0xff]);
        let sum = crc64::checksum(&f);
        let mut good = f.clone();
        good.extend_from_slice(&sum.to_le_bytes());
        let mut r = RdbReader::new(&good[..], true).await.unwrap();
        match r.next().await.unwrap() {
            Some(Item::Key { db, key, value, .. }) => {
                assert_eq!(
                    (db, &key[..], &value[..]),
                    (0, &b"k"[..], &[0, 1, b'v'][..])
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(r.next().await.unwrap().is_none());
        let mut bad = f;
        bad.extend_from_slice(&(sum ^ 1).to_le_bytes());
        let mut r = RdbReader::new(&bad[..], false).await.unwrap();
        r.next().await.unwrap();
        assert!(r.next().await.unwrap_err().to_string().contains("checksum"));
    }
}
