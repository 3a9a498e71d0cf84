//! A fast hash map for the control thread's tables (routes, nexthops), keyed
//! by small fixed-size values: a multiply-rotate hash over 8-byte words
//! with a per-process random seed, several times cheaper than SipHash on
//! these keys. The seed keeps a peer from precomputing colliding keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// The hasher.
#[derive(Clone, Copy)]
pub struct FxHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FxHasher {
    #[inline(always)]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut it = bytes.chunks_exact(8);
        for c in &mut it {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = it.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
}

/// Builds [`FxHasher`]s from the process's seed.
#[derive(Clone, Copy)]
pub struct FxBuild(u64);

impl Default for FxBuild {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FxBuild(*SEED.get_or_init(|| {
            std::collections::hash_map::RandomState::new().hash_one(0x7670_6e66u64)
        }))
    }
}

impl BuildHasher for FxBuild {
    type Hasher = FxHasher;
    #[inline]
    fn build_hasher(&self) -> FxHasher {
        FxHasher(self.0)
    }
}

/// A hash map with [`FxHasher`].
pub type FxMap<K, V> = HashMap<K, V, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_alike_and_maps_work() {
        let b = FxBuild::default();
        assert_eq!(
            b.hash_one((1u32, [1u8, 2, 3])),
            b.hash_one((1u32, [1u8, 2, 3]))
        );
        assert_ne!(b.hash_one((1u32, 2u8)), b.hash_one((2u32, 1u8)));
        let mut m: FxMap<(u32, std::net::IpAddr), u32> = FxMap::default();
        for i in 0..1000u32 {
            m.insert((i, std::net::IpAddr::from([10, 0, 0, i as u8])), i);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m[&(7, std::net::IpAddr::from([10, 0, 0, 7]))], 7);
    }
}
