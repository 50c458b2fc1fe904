//! CRC-64/Jones as Redis computes it (the `crc` crate's `CRC_64_REDIS`):
//! the trailing checksum of an RDB file and of a DUMP payload.

use crc::{Crc, Digest, CRC_64_REDIS};

static REDIS: Crc<u64> = Crc::<u64>::new(&CRC_64_REDIS);

/// A running checksum over a stream of bytes.
#[derive(Clone)]
pub struct Crc64(Digest<'static, u64>);

impl Crc64 {
    /// The checksum of nothing yet.
    pub fn new() -> Self {
        Crc64(REDIS.digest())
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The checksum of everything added so far.
    pub fn value(&self) -> u64 {
        self.0.clone().finalize()
    }
}

/// The checksum of `data`.
pub fn checksum(data: &[u8]) -> u64 {
    REDIS.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_check_value() {
        // The value Redis's own crc64 self-test expects.
        assert_eq!(checksum(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let mut running = Crc64::new();
        running.update(b"hello ");
        running.update(b"world");
        assert_eq!(running.value(), checksum(b"hello world"));
    }
}
