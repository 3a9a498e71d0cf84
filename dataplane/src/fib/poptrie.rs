//! Immutable poptrie chunks: the compressed building block of the LPM.
//!
//! A chunk maps a `W`-bit key slice (`W` is 14 or 16) to a 32-bit value. It
//! is a poptrie (Asai & Ohara, SIGCOMM 2015): three levels of 6-bit strides
//! over the key shifted left to 18 bits. Each node holds a 64-bit `vector`
//! (which slots descend to a child node) and a 64-bit `leafvec` (which slots
//! start a new run of equal leaf values), so leaves are stored once per run
//! and found with one popcount; children of a node are contiguous.
//!
//! A chunk is one allocation of 64-bit words, referenced by a thin pointer to
//! its first word:
//!
//! ```text
//!  [0] length in words   [1] offset of the child array (0: none)
//!  [2] the value of the routes covering the whole chunk (updated in place)
//!  [2..] nodes, three words each: vector, leafvec, base_leaf << 32 | base_child
//!  then the leaves, two u32 per word
//!  then the child array, two words per child: pointer (updated in place), default
//! ```
//!
//! The root node and the first leaves share the chunk's first cache lines, so
//! a key answered at the root costs one or two misses.
//!
//! Values: [`NO_ROUTE`] (no route of this chunk covers the key), a nexthop
//! id, or [`CHILD`]`| i` (descend to child chunk `i`). Building costs time in
//! proportion to the chunk's routes and children, not to its key space.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The value meaning "no route of this chunk covers the key".
pub const NO_ROUTE: u32 = u32::MAX;
/// Flag on a value that names a child chunk.
pub const CHILD: u32 = 0x8000_0000;

const HDR: usize = 3;
const NODE: usize = 3;

/// A route owned by a chunk: `start` is the first key slice it covers, `len`
/// its length within the chunk (1..=W bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRoute {
    pub start: u16,
    pub len: u8,
    pub value: u32,
}

/// Words of a chunk, as published.
pub(crate) type Words = [AtomicU64];

/// The value for an 18-bit key (the chunk's `W`-bit slice shifted left by
/// `18 - W`), every read bounds-checked: the reference the tests hold
/// [`lookup_raw`] to.
#[cfg(test)]
pub(crate) fn lookup(d: &Words, key18: u32) -> u32 {
    let mut at = HDR;
    let mut shift = 12u32;
    loop {
        let (Some(v), Some(lv), Some(b)) = (d.get(at), d.get(at + 1), d.get(at + 2)) else {
            return NO_ROUTE;
        };
        let vector = v.load(Ordering::Relaxed);
        let bases = b.load(Ordering::Relaxed);
        let j = (key18 >> shift) & 63;
        let bit = 1u64 << j;
        if vector & bit != 0 && shift > 0 {
            let idx = (bases as u32 as usize) + (vector & (bit - 1)).count_ones() as usize;
            at = HDR + NODE * idx;
            shift -= 6;
        } else {
            let rank = (lv.load(Ordering::Relaxed) & (bit | (bit - 1))).count_ones() as usize;
            let pos = ((bases >> 32) as usize + rank).wrapping_sub(1);
            return d.get(pos / 2).map_or(NO_ROUTE, |w| {
                (w.load(Ordering::Relaxed) >> ((pos & 1) * 32)) as u32
            });
        }
    }
}

/// As [`lookup`] on a chunk known only by its first word, without bounds
/// checks: every index is derived from node fields that [`build`] wrote.
///
/// # Safety
/// `first` must point to the first word of a live chunk made by [`build`].
#[inline(always)]
pub(crate) unsafe fn lookup_raw(first: *const AtomicU64, key18: u32) -> u32 {
    let word = |i: usize| {
        // SAFETY: `build` lays out HDR words, then nodes whose `base_child`
        // indexes existing nodes (children are contiguous, counted by the
        // vector's popcount) and whose `base_leaf` + rank − 1 indexes an
        // existing leaf (every non-child slot belongs to a run whose start is
        // marked in `leafvec`); the depth is at most three (`shift` reaches
        // 0). So every `i` passed here is inside the chunk.
        unsafe { (*first.add(i)).load(Ordering::Relaxed) }
    };
    let mut at = HDR;
    let mut shift = 12u32;
    loop {
        let vector = word(at);
        let bases = word(at + 2);
        let j = (key18 >> shift) & 63;
        let bit = 1u64 << j;
        if vector & bit != 0 && shift > 0 {
            at =
                HDR + NODE * ((bases as u32 as usize) + (vector & (bit - 1)).count_ones() as usize);
            shift -= 6;
        } else {
            // SAFETY: the node at `at` answers slot j with a leaf (as above).
            return unsafe { leaf_raw(first, word(at + 1), bases, j) };
        }
    }
}

/// The leaf a node answers slot `j` with, from its `leafvec` and `bases`
/// words.
///
/// # Safety
/// `first` must point to the first word of a live chunk made by [`build`],
/// and the node whose words these are must not descend at slot `j`: then
/// `base_leaf` + rank − 1 indexes one of the chunk's leaves.
#[inline(always)]
unsafe fn leaf_raw(first: *const AtomicU64, leafvec: u64, bases: u64, j: u32) -> u32 {
    // The runs starting at or before slot j: the last holds it.
    let rank = (leafvec << (63 - j)).count_ones() as usize;
    let pos = (bases >> 32) as usize + rank - 1;
    // Leaf `pos` is the low half of word pos / 2 when pos is even: the u32
    // at index pos on a little-endian machine.
    let half = if cfg!(target_endian = "big") {
        pos ^ 1
    } else {
        pos
    };
    // SAFETY: caller's contract: that u32 lies inside the chunk; leaves are
    // never written once the chunk is published.
    unsafe { first.cast::<u32>().add(half).read() }
}

/// A chunk that answers [`NO_ROUTE`] everywhere, default included, as
/// [`build`] makes it for no routes: lookups walk it in place of a chunk
/// where a slot holds none, so that their path does not branch on what the
/// slot holds.
#[repr(align(64))]
pub(crate) struct EmptyChunk([AtomicU64; 7]);

/// The one [`EmptyChunk`].
pub(crate) static EMPTY: EmptyChunk = EmptyChunk([
    AtomicU64::new(7),
    AtomicU64::new(0),
    AtomicU64::new(NO_ROUTE as u64),
    // The root node: no child, one run from slot 0, whose leaf is the
    // u32 at index 12 (word 6).
    AtomicU64::new(0),
    AtomicU64::new(1),
    AtomicU64::new((12 << 32) | 1),
    AtomicU64::new(u64::MAX),
]);

impl EmptyChunk {
    /// Its first word, as a chunk pointer.
    #[inline(always)]
    pub(crate) fn first(&'static self) -> *const AtomicU64 {
        self.0.as_ptr()
    }
}

/// As [`lookup_raw`] for an IPv4 chunk (14 key bits, `low14` below 2^14),
/// with the usual case, an answer at the root node (routes up to /24),
/// straight through and the walk down to a child node out of line.
///
/// # Safety
/// As for [`lookup_raw`].
#[inline(always)]
pub(crate) unsafe fn lookup14_raw(first: *const AtomicU64, low14: u32) -> u32 {
    // SAFETY: as in `lookup_raw`: the header and root node exist.
    let word = |i: usize| unsafe { (*first.add(i)).load(Ordering::Relaxed) };
    let j = (low14 >> 8) & 63;
    if (word(HDR) >> j) & 1 != 0 {
        // SAFETY: caller's contract.
        return unsafe { lookup_deep(first, low14 << 4) };
    }
    // SAFETY: the root node does not descend at slot j.
    unsafe { leaf_raw(first, word(HDR + 1), word(HDR + 2), j) }
}

/// [`lookup_raw`], out of line.
///
/// # Safety
/// As for [`lookup_raw`].
#[cold]
#[inline(never)]
unsafe fn lookup_deep(first: *const AtomicU64, key18: u32) -> u32 {
    // SAFETY: caller's contract.
    unsafe { lookup_raw(first, key18) }
}

/// The value of the routes covering the whole chunk (what a lookup answers
/// where the chunk's own routes do not cover the key), for a chunk known
/// by its first word.
///
/// # Safety
/// `first` must point to the first word of a live chunk made by [`build`].
#[inline(always)]
pub(crate) unsafe fn default_raw(first: *const AtomicU64) -> u32 {
    // SAFETY: every chunk has its HDR words; word 2 is the default.
    unsafe { (*first.add(2)).load(Ordering::Acquire) as u32 }
}

/// Number of words (read from the header).
#[inline(always)]
pub(crate) fn len_words(first: &AtomicU64) -> usize {
    first.load(Ordering::Relaxed) as usize
}

/// Change the chunk's covering value in place.
pub(crate) fn set_default(d: &Words, v: u32) {
    if let Some(w) = d.get(2) {
        w.store(u64::from(v), Ordering::Release);
    }
}

/// The child array: (pointer word, default) of child `i`.
#[inline(always)]
pub(crate) fn kid(d: &Words, i: usize) -> Option<(&AtomicU64, u32)> {
    let off = d.get(1)?.load(Ordering::Relaxed) as usize;
    if off == 0 {
        return None;
    }
    let p = d.get(off + 2 * i)?;
    let def = d.get(off + 2 * i + 1)?.load(Ordering::Relaxed) as u32;
    Some((p, def))
}

/// As [`kid`] on a chunk known only by its first word, without bounds
/// checks: the child's pointer word (read with acquire ordering: the
/// writer publishes it in place) and default.
///
/// # Safety
/// `first` must point to the first word of a live chunk made by [`build`],
/// and `i` must be the index of a [`CHILD`] value a lookup in it returned:
/// [`build`] writes a child array with an entry for each.
#[inline(always)]
pub(crate) unsafe fn kid_raw(first: *const AtomicU64, i: usize) -> (u64, u32) {
    // SAFETY: caller's contract: word 1 is the child array's offset, and
    // entry `i` lies inside the chunk.
    unsafe {
        let off = (*first.add(1)).load(Ordering::Relaxed) as usize;
        (
            (*first.add(off + 2 * i)).load(Ordering::Acquire),
            (*first.add(off + 2 * i + 1)).load(Ordering::Relaxed) as u32,
        )
    }
}

/// Node and leaf counts of a chunk.
pub(crate) fn counts(d: &Words) -> (usize, usize) {
    // The leaves start where the first node's base_leaf points.
    let base_leaf = d
        .get(HDR + 2)
        .map_or(0, |b| (b.load(Ordering::Relaxed) >> 32) as usize);
    let nodes = (base_leaf / 2 - HDR) / NODE;
    let off = d.get(1).map_or(0, |o| o.load(Ordering::Relaxed) as usize);
    let end = if off == 0 { d.len() } else { off };
    (nodes, (end * 2).saturating_sub(base_leaf))
}

struct Builder<'a> {
    width: u32,
    nodes: Vec<[u64; 3]>,
    leaves: Vec<u32>,
    kid_defaults: &'a mut Vec<u32>,
}

/// Build a chunk over `width`-bit keys. `routes` must be sorted by (start,
/// len), each aligned to its length; `kids` sorted by key, each with the
/// current pointer word of that child chunk. Returns the words.
pub(crate) fn build(
    width: u32,
    routes: &[ChunkRoute],
    kids: &[(u16, u64)],
    kid_defaults: &mut Vec<u32>,
    default: u32,
) -> Box<Words> {
    debug_assert!(width == 14 || width == 16);
    kid_defaults.clear();
    kid_defaults.resize(kids.len(), NO_ROUTE);
    let keys: Vec<u16> = kids.iter().map(|k| k.0).collect();
    let mut b = Builder {
        width,
        nodes: vec![[0; 3]],
        leaves: Vec::new(),
        kid_defaults,
    };
    b.node(0, 0, 0, routes, &keys, 0, NO_ROUTE);
    let leaves_at = HDR + NODE * b.nodes.len();
    let leaf_words = b.leaves.len().div_ceil(2);
    let kids_at = if kids.is_empty() {
        0
    } else {
        leaves_at + leaf_words
    };
    let total = leaves_at + leaf_words + 2 * kids.len();
    let mut w: Vec<u64> = Vec::with_capacity(total);
    w.push(total as u64);
    w.push(kids_at as u64);
    w.push(u64::from(default));
    let leaf_pos0 = (2 * leaves_at) as u64;
    for n in &b.nodes {
        w.extend([n[0], n[1], n[2] + (leaf_pos0 << 32)]);
    }
    for pair in b.leaves.chunks(2) {
        let hi = pair.get(1).copied().unwrap_or(NO_ROUTE);
        w.push(u64::from(pair[0]) | (u64::from(hi) << 32));
    }
    for (i, (_, ptr)) in kids.iter().enumerate() {
        w.extend([*ptr, u64::from(b.kid_defaults[i])]);
    }
    debug_assert_eq!(w.len(), total);
    w.into_iter().map(AtomicU64::new).collect()
}

impl Builder<'_> {
    /// Build node `at` at `depth` whose slots cover key slices from `base`.
    /// `routes` lie inside the node without covering all of it; `kids` too;
    /// `kid_index` is the index of `kids[0]` among all kids.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        at: usize,
        depth: u32,
        base: u32,
        routes: &[ChunkRoute],
        kids: &[u16],
        kid_index: u32,
        inherited: u32,
    ) {
        let w = self.width;
        let mut vals = [inherited; 64];
        let size = |r: &ChunkRoute| 1u32 << (w - u32::from(r.len));
        let start = |r: &ChunkRoute| u32::from(r.start);
        let consumed = 6 * (depth + 1);
        if consumed < w {
            let span_bits = w - consumed;
            let span = 1u32 << span_bits;
            // Sorted by (start, len), a covering route comes before every
            // route nested in it, so painting in order leaves the longest.
            for r in routes.iter().filter(|r| size(r) >= span) {
                let first = ((start(r) - base) >> span_bits) as usize;
                let n = (size(r) >> span_bits) as usize;
                vals[first..first + n].fill(r.value);
            }
            let mut child = 0u64;
            for r in routes.iter().filter(|r| size(r) < span) {
                child |= 1 << ((start(r) - base) >> span_bits);
            }
            for k in kids {
                child |= 1 << ((u32::from(*k) - base) >> span_bits);
            }
            let base_child = self.nodes.len();
            self.nodes
                .resize(base_child + child.count_ones() as usize, [0; 3]);
            self.finish_node(at, child, &vals, base_child as u32);
            let (mut ri, mut ki, mut ci) = (0usize, 0usize, 0usize);
            let mut bits = child;
            while bits != 0 {
                let j = bits.trailing_zeros();
                bits &= bits - 1;
                let lo = base + (j << span_bits);
                let hi = lo + span;
                while ri < routes.len() && (start(&routes[ri]) < lo || size(&routes[ri]) >= span) {
                    ri += 1;
                }
                let r0 = ri;
                while ri < routes.len() && start(&routes[ri]) < hi {
                    ri += 1;
                }
                while ki < kids.len() && u32::from(kids[ki]) < lo {
                    ki += 1;
                }
                let k0 = ki;
                while ki < kids.len() && u32::from(kids[ki]) < hi {
                    ki += 1;
                }
                // A route covering the whole slot starts at `lo` and sorts
                // first, so it was skipped above: only nested routes remain.
                self.node(
                    base_child + ci,
                    depth + 1,
                    lo,
                    &routes[r0..ri],
                    &kids[k0..ki],
                    kid_index + k0 as u32,
                    vals[j as usize],
                );
                ci += 1;
            }
        } else {
            // Last level: each key slice owns `per` slots (the padding bits).
            let per = 1usize << (consumed - w);
            for r in routes {
                let first = (start(r) - base) as usize * per;
                vals[first..first + size(r) as usize * per].fill(r.value);
            }
            for (i, k) in kids.iter().enumerate() {
                let first = (u32::from(*k) - base) as usize * per;
                let idx = kid_index + i as u32;
                self.kid_defaults[idx as usize] = vals[first];
                vals[first..first + per].fill(CHILD | idx);
            }
            self.finish_node(at, 0, &vals, 0);
        }
    }

    fn finish_node(&mut self, at: usize, vector: u64, vals: &[u32; 64], base_child: u32) {
        let base_leaf = self.leaves.len() as u64;
        let mut leafvec = 0u64;
        let mut prev: Option<u32> = None;
        for (j, v) in vals.iter().enumerate() {
            if vector & (1 << j) != 0 {
                continue;
            }
            if prev != Some(*v) {
                leafvec |= 1 << j;
                self.leaves.push(*v);
                prev = Some(*v);
            }
        }
        self.nodes[at] = [vector, leafvec, (base_leaf << 32) | u64::from(base_child)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_chunk_is_what_build_makes_of_no_routes() {
        let built = build(14, &[], &[], &mut Vec::new(), NO_ROUTE);
        let words = |d: &Words| {
            d.iter()
                .map(|w| w.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(words(&built), words(&EMPTY.0));
        for k in [0, 1, 0x3fff, 0x2a5c] {
            // SAFETY: EMPTY is a static, well-formed chunk.
            let v = unsafe { lookup_raw(EMPTY.first(), k << 4) };
            assert_eq!(v, NO_ROUTE);
        }
    }

    fn model(w: u32, routes: &[ChunkRoute], k: u32) -> u32 {
        routes
            .iter()
            .filter(|r| {
                k >= u32::from(r.start) && k < u32::from(r.start) + (1 << (w - u32::from(r.len)))
            })
            .max_by_key(|r| r.len)
            .map_or(NO_ROUTE, |r| r.value)
    }

    fn check(w: u32, mut routes: Vec<ChunkRoute>) {
        routes.sort_by_key(|r| (r.start, r.len));
        let mut d = Vec::new();
        let c = build(w, &routes, &[], &mut d, NO_ROUTE);
        for k in 0..(1u32 << w) {
            let want = model(w, &routes, k);
            assert_eq!(lookup(&c, k << (18 - w)), want, "width {w} key {k:#06x}");
            // SAFETY: `c` is a chunk made by `build`.
            assert_eq!(unsafe { lookup_raw(c.as_ptr(), k << (18 - w)) }, want);
            if w == 14 {
                // SAFETY: as above; k is below 2^14.
                assert_eq!(unsafe { lookup14_raw(c.as_ptr(), k) }, want, "key {k:#06x}");
            }
        }
    }

    #[test]
    fn every_key_matches_the_longest_covering_route() {
        let r = |start, len, value| ChunkRoute { start, len, value };
        check(
            16,
            vec![
                r(0x0000, 1, 1),
                r(0x1200, 8, 2),
                r(0x1234, 16, 3),
                r(0x1230, 12, 4),
                r(0x8000, 2, 5),
                r(0xfff0, 12, 6),
                r(0x1238, 13, 7),
            ],
        );
        check(
            14,
            vec![
                r(0x0000, 1, 1),
                r(0x1200, 6, 2),
                r(0x1234, 14, 3),
                r(0x1230, 12, 4),
                r(0x2000, 2, 5),
                r(0x3ff0, 10, 6),
                r(0x1238, 13, 7),
            ],
        );
    }

    #[test]
    fn kids_take_precedence_and_record_their_covering_default() {
        let routes = vec![ChunkRoute {
            start: 0x4000,
            len: 2,
            value: 9,
        }];
        let kids = [(0x0001u16, 0xaa0), (0x4005, 0xbb0), (0xffff, 0xcc0)];
        let mut d = Vec::new();
        let c = build(16, &routes, &kids, &mut d, NO_ROUTE);
        assert_eq!(lookup(&c, 0x0001 << 2), CHILD);
        assert_eq!(lookup(&c, 0x4005 << 2), CHILD | 1);
        assert_eq!(lookup(&c, 0xffff << 2), CHILD | 2);
        assert_eq!(lookup(&c, 0x4006 << 2), 9);
        assert_eq!(lookup(&c, 0x0002 << 2), NO_ROUTE);
        assert_eq!(d, vec![NO_ROUTE, 9, NO_ROUTE]);
        let (p, def) = kid(&c, 1).expect("kid 1");
        assert_eq!((p.load(Ordering::Relaxed), def), (0xbb0, 9));
        for (i, want) in [
            (0, (0xaa0, NO_ROUTE)),
            (1, (0xbb0, 9)),
            (2, (0xcc0, NO_ROUTE)),
        ] {
            // SAFETY: `c` is a chunk made by `build` with three children.
            assert_eq!(unsafe { kid_raw(c.as_ptr(), i) }, want);
        }
        assert_eq!(len_words(&c[0]), c.len());
    }

    #[test]
    fn counts_report_nodes_and_leaves() {
        let routes = vec![ChunkRoute {
            start: 0x0100,
            len: 6,
            value: 1,
        }];
        let mut d = Vec::new();
        let c = build(14, &routes, &[], &mut d, NO_ROUTE);
        let (nodes, leaves) = counts(&c);
        assert_eq!(nodes, 1);
        assert!((3..=4).contains(&leaves), "{leaves}");
    }
}
