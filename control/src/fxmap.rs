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
    /// The product's top bits are its best mixed; the tables index by the
    /// low bits, so they are rotated down (the low bits of a product depend
    /// only on the low bits of the key, the same for every /24).
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
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

/// Shards of a [`ShardedMap`].
const SHARDS: usize = 64;

/// Slices of the hash space that [`ShardedMap`] deals out to its shards.
const SLICES: usize = 1024;

/// A hash map split by hash into 64 maps that grow on their own, for
/// tables of millions of entries. A single map doubles all at once and
/// holds its old and new arrays together while it moves the entries over
/// (three times the table's size at that moment); here that happens to
/// one shard at a time. The shards take unequal shares of the keys, in
/// proportion to 2^(i/64) for shard i, so their sizes spread over an
/// octave and they double at different moments: the tables' load (between
/// 7/16 and 7/8 for each) averages about 0.63 at any size, where equal
/// shards all sit at 0.44 just after they double together.
pub struct ShardedMap<K, V> {
    shards: Box<[FxMap<K, V>]>,
    /// A second hash's seed, for the shard (independent of the index
    /// bits the shard's own table uses).
    pick: FxBuild,
    len: usize,
}

/// The shard of each slice: shard i gets a run of slices in proportion to
/// 2^(i/64).
fn slices() -> &'static [u8; SLICES] {
    static TABLE: OnceLock<[u8; SLICES]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let w: Vec<f64> = (0..SHARDS)
            .map(|i| (i as f64 / SHARDS as f64).exp2())
            .collect();
        let total: f64 = w.iter().sum();
        let mut t = [0u8; SLICES];
        let mut at = 0f64;
        let mut next = 0usize;
        for (i, wi) in w.iter().enumerate() {
            at += wi / total * SLICES as f64;
            let end = if i + 1 == SHARDS {
                SLICES
            } else {
                (at.round() as usize).min(SLICES)
            };
            for slot in t.iter_mut().take(end).skip(next) {
                *slot = i as u8;
            }
            next = next.max(end);
        }
        t
    })
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| FxMap::default()).collect(),
            pick: FxBuild(FxBuild::default().0 ^ 0x2545_f491_4f6c_dd1d),
            len: 0,
        }
    }
}

impl<K, V> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap")
            .field("len", &self.len)
            .finish()
    }
}

impl<K: std::hash::Hash + Eq, V> ShardedMap<K, V> {
    /// The shard of `k`, from the top bits of a second hash's product
    /// (bits 16–25 once [`FxHasher::finish`] has rotated them).
    #[inline]
    fn shard(&self, k: &K) -> usize {
        usize::from(slices()[(self.pick.hash_one(k) >> 16) as usize & (SLICES - 1)])
    }

    /// The value at `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.shards[self.shard(k)].get(k)
    }

    /// The value at `k`, to change.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let s = self.shard(k);
        self.shards[s].get_mut(k)
    }

    /// The value at `k`, inserted as the default if absent.
    pub fn get_or_default(&mut self, k: K) -> &mut V
    where
        V: Default,
    {
        let s = self.shard(&k);
        match self.shards[s].entry(k) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.len += 1;
                e.insert(V::default())
            }
        }
    }

    /// Remove `k`; its value.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let s = self.shard(k);
        let v = self.shards[s].remove(k);
        if v.is_some() {
            self.len -= 1;
        }
        v
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|m| m.iter())
    }

    /// Every entry, to change values.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.shards.iter_mut().flat_map(|m| m.iter_mut())
    }
}

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

    #[test]
    fn a_sharded_map_spreads_its_keys_and_behaves_as_one_map() {
        let mut m: ShardedMap<u64, u64> = ShardedMap::default();
        for i in 0..10_000u64 {
            *m.get_or_default(i << 8 | 24) += i;
        }
        assert_eq!(m.len(), 10_000);
        let used = m.shards.iter().filter(|s| !s.is_empty()).count();
        assert_eq!(used, SHARDS, "every shard gets keys");
        // Shares grow from the first shard to the last over about an octave.
        let (first, last) = (m.shards[0].len(), m.shards[SHARDS - 1].len());
        assert!(
            last > first * 3 / 2 && last < first * 3,
            "first {first}, last {last}"
        );
        assert_eq!(m.get(&(7 << 8 | 24)), Some(&7));
        *m.get_or_default(7 << 8 | 24) += 1;
        assert_eq!(m.len(), 10_000, "an existing key is not added again");
        assert_eq!(m.remove(&(7 << 8 | 24)), Some(8));
        assert_eq!(m.remove(&(7 << 8 | 24)), None);
        assert_eq!(m.len(), 9_999);
        if let Some(v) = m.get_mut(&(8 << 8 | 24)) {
            *v = 0;
        }
        assert_eq!(
            m.iter().map(|(_, v)| *v).sum::<u64>(),
            (0..10_000).sum::<u64>() - 7 - 8
        );
        for (_, v) in m.iter_mut() {
            *v = 1;
        }
        assert_eq!(m.iter().count(), 9_999);
        assert!(m.iter().all(|(_, v)| *v == 1));
    }
}
