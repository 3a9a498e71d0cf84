//! Longest-prefix match for one address family of one VRF.
//!
//! Layout (readers' view), for a key left-aligned in 128 bits:
//!
//! ```text
//!  root[256]  ── bits 0..8 ──▶ leaf(nexthop) | Segment
//!  Segment    ── bits 8..16 ─▶ leaf(nexthop) | ChunkNode   (+ per-slot default)
//!  ChunkNode  ── next 16 bits ▶ poptrie chunk value: nexthop | none | child i
//!  child i    ── next 16 bits ▶ ChunkNode … (IPv6 only: up to 7 levels)
//! ```
//!
//! Routes of length ≤ 16 live in the root and segments (painted as leaves or
//! as a segment slot's default); longer routes live in the chunk that owns
//! their length range. A chunk answers "none" where none of its own routes
//! cover the key, and the lookup falls back to the best covering route seen
//! on the way down, so a change to a short route never rebuilds a chunk.
//!
//! Updates are incremental: the writer rebuilds only the chunk that owns the
//! changed route (and its parent when a child chunk appears or disappears),
//! publishes it with one atomic store, and retires the old one through QSBR
//! ([`crate::rcu`]). A lookup reads each word once, so it sees every
//! published pointer whole: the answer is the one from before or after an
//! update, never a torn one. Memory is proportional to the routes held: an
//! empty table is a 2 KiB root.
#![allow(unsafe_code)]

use super::poptrie::{Chunk, ChunkRoute, CHILD, NO_ROUTE};
use crate::rcu::{Domain, Guard};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a route could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// Prefix length beyond the address width.
    #[error("prefix length {len} exceeds {max}")]
    BadLength {
        /// The length given.
        len: u8,
        /// The family's maximum.
        max: u8,
    },
    /// Bits set beyond the prefix length.
    #[error("prefix has host bits set beyond /{len}")]
    HostBits {
        /// The length given.
        len: u8,
    },
    /// Nexthop id not below 2^31.
    #[error("nexthop id {0} out of range")]
    Nexthop(u32),
}

/// Sizes of a table's reader-side structure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LpmStats {
    /// Segments (second level) allocated.
    pub segments: usize,
    /// Poptrie chunks.
    pub chunks: usize,
    /// Poptrie nodes over all chunks.
    pub nodes: usize,
    /// Leaves over all chunks.
    pub leaves: usize,
}

/// Largest nexthop id a table can hold.
pub const MAX_NEXTHOP: u32 = CHILD - 1;

#[inline(always)]
fn leaf(v: u32) -> usize {
    ((v as usize) << 1) | 1
}

/// Multiplicative hasher for the writer's small integer keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);
impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.0 = (self.0 ^ u64::from(v)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0 ^ u64::from(v)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

struct Segment {
    slots: [AtomicUsize; 256],
    defaults: [AtomicU32; 256],
}

struct Kid {
    ptr: AtomicUsize,
    default: u32,
}

struct ChunkNode {
    trie: Chunk,
    kids: Box<[Kid]>,
}

/// The part of a table readers see. Owned by an `Arc`; freed (with
/// everything reachable from it) when the last owner drops it.
pub struct LpmShared {
    root: Box<[AtomicUsize]>,
    domain: Domain,
}

impl LpmShared {
    fn new(domain: &Domain) -> LpmShared {
        LpmShared {
            root: (0..256).map(|_| AtomicUsize::new(leaf(NO_ROUTE))).collect(),
            domain: domain.clone(),
        }
    }

    /// The domain whose guards may read this table.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Look up an IPv4 address; [`NO_ROUTE`] when nothing matches.
    ///
    /// # Panics
    /// Panics if `g` belongs to another domain.
    #[inline]
    pub fn lookup_v4(&self, g: &Guard<'_>, ip: u32) -> u32 {
        assert!(self.domain.owns(g), "guard from another domain");
        self.lookup_v4_trusted(ip)
    }

    /// Look up an IPv6 address; [`NO_ROUTE`] when nothing matches.
    ///
    /// # Panics
    /// Panics if `g` belongs to another domain.
    #[inline]
    pub fn lookup_v6(&self, g: &Guard<'_>, ip: u128) -> u32 {
        assert!(self.domain.owns(g), "guard from another domain");
        self.lookup_v6_trusted(ip)
    }

    /// Look up a batch of IPv4 addresses, stage by stage so that the memory
    /// accesses of different keys overlap.
    ///
    /// # Panics
    /// Panics if `g` belongs to another domain or `out` is shorter than `ips`.
    pub fn lookup_v4_batch(&self, g: &Guard<'_>, ips: &[u32], out: &mut [u32]) {
        assert!(self.domain.owns(g), "guard from another domain");
        let out = &mut out[..ips.len()];
        for (keys, outs) in ips.chunks(16).zip(out.chunks_mut(16)) {
            let mut words = [0usize; 16];
            let mut segs = [0usize; 16];
            for (w, ip) in words.iter_mut().zip(keys) {
                *w = self.root[(ip >> 24) as usize].load(Ordering::Acquire);
            }
            // Stage 2: segment slots; prefetch the chunk headers they name.
            for ((w, s), ip) in words.iter_mut().zip(segs.iter_mut()).zip(keys) {
                if *w & 1 == 0 {
                    *s = *w;
                    // SAFETY: see `lookup_v4_trusted`.
                    let seg = unsafe { &*(*w as *const Segment) };
                    *w = seg.slots[((ip >> 16) & 255) as usize].load(Ordering::Acquire);
                    if *w & 1 == 0 {
                        prefetch(*w as *const u8);
                    }
                }
            }
            // Stage 3: prefetch each chunk's root node.
            for w in words.iter() {
                if w & 1 == 0 {
                    // SAFETY: see `lookup_v4_trusted`.
                    let c = unsafe { &*(*w as *const ChunkNode) };
                    prefetch(c.trie.root_ptr());
                }
            }
            for (((w, s), ip), o) in words.iter().zip(&segs).zip(keys).zip(outs.iter_mut()) {
                *o = if w & 1 == 1 {
                    (w >> 1) as u32
                } else {
                    // SAFETY: see `lookup_v4_trusted`.
                    let c = unsafe { &*(*w as *const ChunkNode) };
                    let v = c.trie.lookup(*ip as u16);
                    if v == NO_ROUTE {
                        // SAFETY: `s` is the segment `w` was read from.
                        let seg = unsafe { &*(*s as *const Segment) };
                        seg.defaults[((ip >> 16) & 255) as usize].load(Ordering::Acquire)
                    } else {
                        v
                    }
                };
            }
        }
    }

    /// Start fetching the cache lines a lookup of `ip` will touch (root,
    /// segment slot, chunk header and root node), without waiting for them.
    #[inline]
    pub(crate) fn prefetch_v4(&self, ip: u32) {
        let r = self.root[(ip >> 24) as usize].load(Ordering::Acquire);
        if r & 1 == 1 {
            return;
        }
        // SAFETY: see `lookup_v4_trusted`.
        let seg = unsafe { &*(r as *const Segment) };
        let s = seg.slots[((ip >> 16) & 255) as usize].load(Ordering::Acquire);
        if s & 1 == 0 {
            prefetch(s as *const u8);
        }
    }

    /// Lookup for a caller that checked the guard's domain once.
    #[inline(always)]
    pub(crate) fn lookup_v4_trusted(&self, ip: u32) -> u32 {
        let r = self.root[(ip >> 24) as usize].load(Ordering::Acquire);
        if r & 1 == 1 {
            return (r >> 1) as u32;
        }
        // SAFETY: an even root word is a pointer to a live Segment: segments
        // are freed only after being unlinked and a grace period, and the
        // caller is inside a read-side section of this table's domain.
        let seg = unsafe { &*(r as *const Segment) };
        let b = ((ip >> 16) & 255) as usize;
        let s = seg.slots[b].load(Ordering::Acquire);
        if s & 1 == 1 {
            return (s >> 1) as u32;
        }
        // SAFETY: as above, for a ChunkNode published in a segment slot.
        let c = unsafe { &*(s as *const ChunkNode) };
        let v = c.trie.lookup(ip as u16);
        if v == NO_ROUTE {
            seg.defaults[b].load(Ordering::Acquire)
        } else {
            v
        }
    }

    #[inline]
    pub(crate) fn lookup_v6_trusted(&self, ip: u128) -> u32 {
        let r = self.root[(ip >> 120) as usize].load(Ordering::Acquire);
        if r & 1 == 1 {
            return (r >> 1) as u32;
        }
        // SAFETY: see `lookup_v4_trusted`.
        let seg = unsafe { &*(r as *const Segment) };
        let b = ((ip >> 112) & 255) as usize;
        let s = seg.slots[b].load(Ordering::Acquire);
        if s & 1 == 1 {
            return (s >> 1) as u32;
        }
        let mut best = seg.defaults[b].load(Ordering::Acquire);
        // SAFETY: see `lookup_v4_trusted`.
        let mut c = unsafe { &*(s as *const ChunkNode) };
        let mut shift = 96u32;
        loop {
            let v = c.trie.lookup((ip >> shift) as u16);
            if v == NO_ROUTE {
                return best;
            }
            if v & CHILD == 0 {
                return v;
            }
            let Some(kid) = c.kids.get((v & !CHILD) as usize) else {
                return best;
            };
            if kid.default != NO_ROUTE {
                best = kid.default;
            }
            let p = kid.ptr.load(Ordering::Acquire);
            if p == 0 || shift == 0 {
                return best;
            }
            // SAFETY: kid pointers are published and retired like segment slots.
            c = unsafe { &*(p as *const ChunkNode) };
            shift -= 16;
        }
    }
}

/// Hint the CPU to fetch the cache line at `p`.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and has no architectural effect, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn free_chunk(p: usize) {
    // SAFETY: called only from `LpmShared::drop` on pointers reachable from
    // the root, each reachable once, from Box::into_raw.
    let node = unsafe { Box::from_raw(p as *mut ChunkNode) };
    for k in node.kids.iter() {
        let kp = k.ptr.load(Ordering::Acquire);
        if kp != 0 {
            free_chunk(kp);
        }
    }
}

impl Drop for LpmShared {
    fn drop(&mut self) {
        for r in self.root.iter() {
            let r = r.load(Ordering::Acquire);
            if r & 1 == 1 {
                continue;
            }
            // SAFETY: last owner; the segment is reachable only from here.
            let seg = unsafe { Box::from_raw(r as *mut Segment) };
            for s in seg.slots.iter() {
                let s = s.load(Ordering::Acquire);
                if s & 1 == 0 {
                    free_chunk(s);
                }
            }
        }
    }
}

#[derive(Default)]
struct ChunkW {
    routes: BTreeMap<(u16, u8), u32>,
    kids: BTreeMap<u16, ChunkW>,
    published: usize,
    rank: u32,
}

enum Change {
    Unchanged,
    Published { new: usize, fresh: bool },
    Removed,
}

/// The writer of one family's table: owns the route set and publishes changes.
pub struct Lpm {
    shared: Arc<LpmShared>,
    max_len: u8,
    short: Vec<IntMap<u16, u32>>,
    blocks: IntMap<u16, ChunkW>,
    seg_users: Box<[u32; 256]>,
    routes: usize,
    retire: Vec<usize>,
    kid_defaults: Vec<u32>,
}

// SAFETY: the raw pointers in `ChunkW` and `retire` are owned by this writer
// (or by the shared structure it publishes to); moving the writer to another
// thread moves that ownership with it.
unsafe impl Send for Lpm {}

impl core::fmt::Debug for Lpm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lpm")
            .field("max_len", &self.max_len)
            .field("routes", &self.routes)
            .finish()
    }
}

fn mask16(len: u32) -> u16 {
    if len == 0 {
        0
    } else {
        (u16::MAX) << (16 - len)
    }
}

impl Lpm {
    /// An empty IPv4 table.
    pub fn new_v4(domain: &Domain) -> Lpm {
        Lpm::new(domain, 32)
    }

    /// An empty IPv6 table.
    pub fn new_v6(domain: &Domain) -> Lpm {
        Lpm::new(domain, 128)
    }

    fn new(domain: &Domain, max_len: u8) -> Lpm {
        Lpm {
            shared: Arc::new(LpmShared::new(domain)),
            max_len,
            short: (0..=16).map(|_| IntMap::default()).collect(),
            blocks: IntMap::default(),
            seg_users: Box::new([0; 256]),
            routes: 0,
            retire: Vec::new(),
            kid_defaults: Vec::new(),
        }
    }

    /// The readers' side.
    pub fn shared(&self) -> &Arc<LpmShared> {
        &self.shared
    }

    /// Routes held.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// True if no route is held.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// Insert or replace an IPv4 route; returns the previous nexthop.
    ///
    /// # Errors
    /// [`LpmError`] for a bad length, host bits or nexthop id.
    pub fn insert_v4(&mut self, addr: u32, len: u8, nexthop: u32) -> Result<Option<u32>, LpmError> {
        self.check(32, len)?;
        self.set(u128::from(addr) << 96, len, Some(nexthop))
    }

    /// Remove an IPv4 route; returns its nexthop.
    ///
    /// # Errors
    /// [`LpmError`] for a bad length or host bits.
    pub fn remove_v4(&mut self, addr: u32, len: u8) -> Result<Option<u32>, LpmError> {
        self.check(32, len)?;
        self.set(u128::from(addr) << 96, len, None)
    }

    /// Insert or replace an IPv6 route; returns the previous nexthop.
    ///
    /// # Errors
    /// [`LpmError`] for a bad length, host bits or nexthop id.
    pub fn insert_v6(
        &mut self,
        addr: u128,
        len: u8,
        nexthop: u32,
    ) -> Result<Option<u32>, LpmError> {
        self.check(128, len)?;
        self.set(addr, len, Some(nexthop))
    }

    /// Remove an IPv6 route; returns its nexthop.
    ///
    /// # Errors
    /// [`LpmError`] for a bad length or host bits.
    pub fn remove_v6(&mut self, addr: u128, len: u8) -> Result<Option<u32>, LpmError> {
        self.check(128, len)?;
        self.set(addr, len, None)
    }

    fn check(&self, family_len: u8, len: u8) -> Result<(), LpmError> {
        assert_eq!(
            family_len, self.max_len,
            "IPv4 call on an IPv6 table or the reverse"
        );
        if len > self.max_len {
            return Err(LpmError::BadLength {
                len,
                max: self.max_len,
            });
        }
        Ok(())
    }

    /// Lookup from the writer's side (no guard needed: only the writer frees).
    pub fn lookup_v4(&self, ip: u32) -> u32 {
        self.shared.lookup_v4_trusted(ip)
    }

    /// Lookup from the writer's side.
    pub fn lookup_v6(&self, ip: u128) -> u32 {
        self.shared.lookup_v6_trusted(ip)
    }

    fn set(&mut self, p: u128, len: u8, v: Option<u32>) -> Result<Option<u32>, LpmError> {
        let host = match len {
            0 => p,
            128.. => 0,
            l => p << l,
        };
        if host != 0 {
            return Err(LpmError::HostBits { len });
        }
        if let Some(nh) = v {
            if nh > MAX_NEXTHOP {
                return Err(LpmError::Nexthop(nh));
            }
        }
        let old = if len <= 16 {
            self.set_short(p, len, v)
        } else {
            self.set_deep(p, len, v)
        };
        match (old, v) {
            (None, Some(_)) => self.routes += 1,
            (Some(_), None) => self.routes -= 1,
            _ => {}
        }
        for p in self.retire.drain(..) {
            // SAFETY: every pointer in `retire` was unlinked by the publish
            // that preceded this loop and is retired once.
            unsafe { self.shared.domain.retire(p as *mut ChunkNode) };
        }
        Ok(old)
    }

    fn best_le(&self, blk: u16, max: u32) -> u32 {
        for l in (0..=max).rev() {
            if let Some(v) = self.short[l as usize].get(&(blk & mask16(l))) {
                return *v;
            }
        }
        NO_ROUTE
    }

    fn segment(&self, a: usize) -> Option<&Segment> {
        let r = self.shared.root[a].load(Ordering::Acquire);
        // SAFETY: the writer is the only one that frees segments.
        (r & 1 == 0).then(|| unsafe { &*(r as *const Segment) })
    }

    fn refresh_block(&self, seg: &Segment, blk: u16) {
        let b = usize::from(blk & 255);
        let d = self.best_le(blk, 16);
        seg.defaults[b].store(d, Ordering::Release);
        if seg.slots[b].load(Ordering::Acquire) & 1 == 1 {
            seg.slots[b].store(leaf(d), Ordering::Release);
        }
    }

    fn ensure_segment(&mut self, a: usize) {
        if self.segment(a).is_some() {
            return;
        }
        let seg = Box::new(Segment {
            slots: core::array::from_fn(|_| AtomicUsize::new(0)),
            defaults: core::array::from_fn(|_| AtomicU32::new(NO_ROUTE)),
        });
        for b in 0..256 {
            let d = self.best_le(((a << 8) | b) as u16, 16);
            seg.slots[b].store(leaf(d), Ordering::Relaxed);
            seg.defaults[b].store(d, Ordering::Relaxed);
        }
        self.shared.root[a].store(Box::into_raw(seg) as usize, Ordering::Release);
    }

    fn drop_segment_if_unused(&mut self, a: usize) {
        if self.seg_users[a] != 0 {
            return;
        }
        let d = self.best_le((a << 8) as u16, 8);
        let old = self.shared.root[a].swap(leaf(d), Ordering::AcqRel);
        if old & 1 == 0 {
            // SAFETY: just unlinked from its only parent; holds only leaves.
            unsafe { self.shared.domain.retire(old as *mut Segment) };
        }
    }

    fn set_short(&mut self, p: u128, len: u8, v: Option<u32>) -> Option<u32> {
        let key = (p >> 112) as u16;
        let old = match v {
            Some(nh) => self.short[usize::from(len)].insert(key, nh),
            None => self.short[usize::from(len)].remove(&key),
        };
        if old == v {
            return old;
        }
        if len <= 8 {
            let a0 = usize::from(key >> 8);
            for a in a0..a0 + (1usize << (8 - len)) {
                match self.segment(a) {
                    None => self.shared.root[a]
                        .store(leaf(self.best_le((a << 8) as u16, 8)), Ordering::Release),
                    Some(seg) => {
                        for b in 0..256u16 {
                            self.refresh_block(seg, ((a as u16) << 8) | b);
                        }
                    }
                }
            }
        } else {
            let a = usize::from(key >> 8);
            if old.is_none() {
                self.seg_users[a] += 1;
                self.ensure_segment(a);
            }
            if let Some(seg) = self.segment(a) {
                for blk in key..=key | !mask16(u32::from(len)) {
                    self.refresh_block(seg, blk);
                }
            }
            if v.is_none() {
                self.seg_users[a] -= 1;
                self.drop_segment_if_unused(a);
            }
        }
        old
    }

    fn set_deep(&mut self, p: u128, len: u8, v: Option<u32>) -> Option<u32> {
        let blk = (p >> 112) as u16;
        let a = usize::from(blk >> 8);
        let b = usize::from(blk & 255);
        let mut cw = match self.blocks.remove(&blk) {
            Some(cw) => cw,
            None if v.is_none() => return None,
            None => ChunkW::default(),
        };
        let (old, change) = self.apply(&mut cw, p, u32::from(len), 0, v);
        match change {
            Change::Unchanged => {
                self.blocks.insert(blk, cw);
            }
            Change::Published { new, fresh } => {
                if fresh {
                    self.seg_users[a] += 1;
                    self.ensure_segment(a);
                }
                let seg = self.segment(a).expect("segment exists while it has users");
                seg.slots[b].store(new, Ordering::Release);
                self.blocks.insert(blk, cw);
            }
            Change::Removed => {
                if let Some(seg) = self.segment(a) {
                    let d = seg.defaults[b].load(Ordering::Acquire);
                    seg.slots[b].store(leaf(d), Ordering::Release);
                }
                self.seg_users[a] -= 1;
                self.drop_segment_if_unused(a);
            }
        }
        old
    }

    /// Apply a change inside chunk `cw` at `level` (0 covers bits 16..32).
    fn apply(
        &mut self,
        cw: &mut ChunkW,
        p: u128,
        len: u32,
        level: u32,
        v: Option<u32>,
    ) -> (Option<u32>, Change) {
        let shift = 96 - 16 * level;
        let k = (p >> shift) as u16;
        let old;
        if len <= 16 * (level + 2) {
            let lw = len - 16 * (level + 1);
            let key = (k & mask16(lw), lw as u8);
            old = match v {
                Some(nh) => cw.routes.insert(key, nh),
                None => cw.routes.remove(&key),
            };
            if old == v {
                return (old, Change::Unchanged);
            }
        } else {
            let mut kid = match cw.kids.remove(&k) {
                Some(kid) => kid,
                None if v.is_none() => return (None, Change::Unchanged),
                None => ChunkW::default(),
            };
            let (o, ch) = self.apply(&mut kid, p, len, level + 1, v);
            old = o;
            match ch {
                Change::Unchanged => {
                    cw.kids.insert(k, kid);
                    return (old, Change::Unchanged);
                }
                Change::Published { new, fresh: false } => {
                    // SAFETY: `cw.published` is live: the writer owns it.
                    let node = unsafe { &*(cw.published as *const ChunkNode) };
                    node.kids[kid.rank as usize]
                        .ptr
                        .store(new, Ordering::Release);
                    cw.kids.insert(k, kid);
                    return (old, Change::Unchanged);
                }
                Change::Published { fresh: true, .. } => {
                    cw.kids.insert(k, kid);
                }
                Change::Removed => {}
            }
        }
        if cw.published != 0 {
            self.retire.push(cw.published);
        }
        if cw.routes.is_empty() && cw.kids.is_empty() {
            cw.published = 0;
            return (old, Change::Removed);
        }
        let routes: Vec<ChunkRoute> = cw
            .routes
            .iter()
            .map(|(&(start, len), &value)| ChunkRoute { start, len, value })
            .collect();
        let keys: Vec<u16> = cw.kids.keys().copied().collect();
        let trie = Chunk::build(&routes, &keys, &mut self.kid_defaults);
        let kids: Box<[Kid]> = cw
            .kids
            .values_mut()
            .enumerate()
            .map(|(i, kid)| {
                kid.rank = i as u32;
                Kid {
                    ptr: AtomicUsize::new(kid.published),
                    default: self.kid_defaults[i],
                }
            })
            .collect();
        let fresh = cw.published == 0;
        cw.published = Box::into_raw(Box::new(ChunkNode { trie, kids })) as usize;
        (
            old,
            Change::Published {
                new: cw.published,
                fresh,
            },
        )
    }

    /// Counts of the readers' structure, for sizing and benchmarks.
    pub fn stats(&self) -> LpmStats {
        fn walk(cw: &ChunkW, st: &mut LpmStats) {
            // SAFETY: the writer owns the published chunk.
            let node = unsafe { &*(cw.published as *const ChunkNode) };
            st.chunks += 1;
            st.nodes += node.trie.node_count();
            st.leaves += node.trie.leaf_count();
            for k in cw.kids.values() {
                walk(k, st);
            }
        }
        let mut st = LpmStats {
            segments: (0..256).filter(|a| self.segment(*a).is_some()).count(),
            ..LpmStats::default()
        };
        for cw in self.blocks.values() {
            walk(cw, &mut st);
        }
        st
    }

    /// Bytes of memory the readers' structure occupies.
    pub fn fib_bytes(&self) -> usize {
        fn chunk_bytes(cw: &ChunkW) -> usize {
            // SAFETY: the writer owns the published chunk.
            let node = unsafe { &*(cw.published as *const ChunkNode) };
            core::mem::size_of::<ChunkNode>()
                + node.trie.heap_bytes()
                + node.kids.len() * core::mem::size_of::<Kid>()
                + cw.kids.values().map(chunk_bytes).sum::<usize>()
        }
        let segs = (0..256).filter(|a| self.segment(*a).is_some()).count();
        256 * 8
            + segs * core::mem::size_of::<Segment>()
            + self.blocks.values().map(chunk_bytes).sum::<usize>()
    }
}

impl Drop for Lpm {
    fn drop(&mut self) {
        for p in self.retire.drain(..) {
            // SAFETY: unlinked, retired once.
            unsafe { self.shared.domain.retire(p as *mut ChunkNode) };
        }
        // Published chunks stay reachable from `shared`, whose Drop frees them.
    }
}
