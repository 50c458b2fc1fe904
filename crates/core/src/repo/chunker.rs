//! Streaming content-defined chunking (FastCDC 2020) over pushed buffers.

use bytes::{Bytes, BytesMut};

use crate::repo::format::ChunkerParams;

/// Cuts a byte stream into content-defined chunks. Push buffers in with
/// [`Chunker::push`]; complete chunks come out as soon as they are determined,
/// so at most about `2 × max` bytes are held.
#[derive(Debug)]
pub struct Chunker {
    params: ChunkerParams,
    buf: BytesMut,
}

impl Chunker {
    /// A chunker with the repository's parameters.
    pub fn new(params: ChunkerParams) -> Self {
        Chunker {
            params,
            buf: BytesMut::new(),
        }
    }

    /// Adds data and returns the chunks that are now complete.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(data);
        self.cut(false)
    }

    /// Ends the stream and returns the remaining chunks.
    pub fn finish(&mut self) -> Vec<Bytes> {
        self.cut(true)
    }

    fn cut(&mut self, eof: bool) -> Vec<Bytes> {
        let max = self.params.max as usize;
        let mut out: Vec<usize> = Vec::new();
        if !eof && self.buf.len() < max {
            return Vec::new();
        }
        let mut taken = 0usize;
        {
            let cdc = fastcdc::v2020::FastCDC::new(
                &self.buf,
                self.params.min,
                self.params.avg,
                self.params.max,
            );
            for chunk in cdc {
                // A chunk is final once the data it could have extended into
                // (up to `max` bytes from its start) is all present.
                if !eof && chunk.offset + max > self.buf.len() {
                    break;
                }
                taken = chunk.offset + chunk.length;
                out.push(chunk.length);
            }
        }
        debug_assert!(taken <= self.buf.len());
        let mut region = self.buf.split_to(taken);
        out.into_iter()
            .map(|len| region.split_to(len).freeze())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        }
    }

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn same_cuts_whatever_the_push_sizes() {
        let d = data(1_000_000, 7);
        let whole: Vec<usize> = {
            let mut c = Chunker::new(params());
            let mut v: Vec<usize> = c.push(&d).iter().map(|b| b.len()).collect();
            v.extend(c.finish().iter().map(|b| b.len()));
            v
        };
        for step in [1usize, 1000, 4096, 65537, 300_000] {
            let mut c = Chunker::new(params());
            let mut v = Vec::new();
            for piece in d.chunks(step) {
                v.extend(c.push(piece).iter().map(|b| b.len()));
            }
            v.extend(c.finish().iter().map(|b| b.len()));
            assert_eq!(v, whole, "push size {step}");
        }
        assert_eq!(whole.iter().sum::<usize>(), d.len());
        assert!(whole.len() > 20);
    }

    #[test]
    fn an_insertion_changes_few_chunks() {
        let a = data(2_000_000, 9);
        let mut b = a.clone();
        b.insert(1_000_000, 0x55);
        let cuts = |d: &[u8]| {
            let mut c = Chunker::new(params());
            let mut v = c.push(d);
            v.extend(c.finish());
            v
        };
        let ca = cuts(&a);
        let cb = cuts(&b);
        let set: std::collections::HashSet<_> = ca.iter().collect();
        let new = cb.iter().filter(|c| !set.contains(c)).count();
        assert!(new <= 3, "{new} new chunks");
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        let mut c = Chunker::new(params());
        assert!(c.push(&[]).is_empty());
        assert!(c.finish().is_empty());
    }
}
