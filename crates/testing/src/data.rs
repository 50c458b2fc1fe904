//! Deterministic test data: the same seed gives the same bytes on every
//! machine, so a failure reproduces.

use rand::{Rng, RngCore, SeedableRng};

/// Deterministic random bytes.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Compressible text.
pub fn text_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let words = [
        "alpha", "beta", "gamma", "delta", "respaldo", "backup", "restore", "chunk", "pack",
        "index",
    ];
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(words[rng.gen_range(0..words.len())].as_bytes());
        v.push(if rng.gen_ratio(1, 8) { b'\n' } else { b' ' });
    }
    v.truncate(n);
    v
}
