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
//! its root node, one word in (word offsets below are from that pointer):
//!
//! ```text
//!  [-1] u32 index of the root node's first leaf << 44 | offset of the
//!       children's index (0: no children) << 24 | length in words
//!  [0] the root node: vector, leafvec,
//!      the value of the routes covering the whole chunk << 32 (updated in
//!      place) | skipped key bits << 21 | 18 less their count << 16 |
//!      offset of the root's first child node
//!  IPv4 (14 bits): [3..] the root node's leaves, two u32 per word (u32
//!      index 6 onwards), then the other nodes, then their leaves
//!  IPv6 (16 bits): [3..] the first level's nodes, the root's leaves; then
//!      per node of the first level: its child nodes, their leaves and
//!      its own, the entries of the child chunks those leaves name
//!  a node other than the root: vector, leafvec,
//!      u32 index of its first leaf << 32 | offset of its first child node
//!  a child chunk's entry, two words: pointer (updated in place), default
//!  then the children's index: the word offset of each one's entry (u32,
//!      in key order), which only the writer reads
//! ```
//!
//! What an IPv4 lookup answered at the root reads — nearly all of them:
//! the root node, the covering value and the root's leaves — starts at the
//! pointer, in as few cache lines as the root's leaves allow (ten leaves
//! fit the first 64 bytes). IPv6 walks go down two or three nodes more
//! often than not, and from a leaf on to a child chunk's entry, so an
//! IPv6 chunk keeps each node of the second level beside the leaves it
//! holds and the entries they name: the last three reads of a walk lie in
//! a line or two (see [`place_v6`]; a chunk whose entries would put a node
//! beyond the offsets a node can name has them at the end instead). The
//! words only the writer and deep walks need lie before the pointer or
//! after.
//!
//! An IPv6 chunk whose routes and children all lie under one prefix of
//! its key slice (a /32's block in its /18, a run of /48s in their /34)
//! *skips* that prefix: the trie is built over the bits after it, six or
//! twelve wide (one node, or two levels, instead of three), and a lookup
//! ([`lookup_slice`]) first checks the key's skipped bits against the
//! chunk's, answering [`NO_ROUTE`] where they differ. Only those two
//! widths shorten a walk, so only they are used; IPv4 chunks never skip,
//! as the flat array's lists copy their root's leaves.
//!
//! Values: [`NO_ROUTE`] (no route of this chunk covers the key), a nexthop
//! id, or [`CHILD`]`| o` (descend to the child chunk whose entry lies `o`
//! words from the root: a lookup reads it without first reading where
//! the entries start). Building costs time in
//! proportion to the chunk's routes and children, not to its key space.

#![allow(unsafe_code)]

use super::arena;
use super::lpm::{scratch, unscratch};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The value meaning "no route of this chunk covers the key".
pub const NO_ROUTE: u32 = u32::MAX;
/// Flag on a value that names a child chunk.
pub const CHILD: u32 = 0x8000_0000;
/// The leaf an IPv4 chunk's root holds for a slot that descends to a
/// child node: each such slot is a run of its own, so that a reader that
/// ranks the root's `leafvec` without its `vector` (the flat array's
/// lookups) finds this value there and walks the chunk instead.
pub const DEEP: u32 = NO_ROUTE - 1;

/// Words of the allocation before the root node: one, holding the
/// chunk's length, its children's index's offset and its root's first leaf
/// (see the module doc; [`LEN_BITS`], [`KIDS_AT`], [`ROOT_AT`]).
const PRE: usize = 1;
/// Bits of the word before the root that hold the chunk's length in words.
const LEN_BITS: u64 = (1 << 24) - 1;
/// Shift of the children's index's offset (20 bits) in the word before
/// the root.
const KIDS_AT: u32 = 24;
/// Shift of the root's first leaf's u32 index (20 bits) in the word before
/// the root.
const ROOT_AT: u32 = 44;
/// Words of a node.
const NODE: usize = 3;
/// Bits of a node's third word that hold its first child's offset (nodes
/// lie before the leaves of all but the last group of an IPv6 chunk;
/// see [`place_v6`]).
const CHILD_OFF: u64 = 0xffff;
/// Shift, in the root node's third word, of 18 less the number of key
/// bits a skipping chunk leaves out (five bits, 18: none), and of the key
/// bits they must equal (eleven bits): a lookup shifts its 18-bit key
/// right by the first to compare it with the second, and left by its
/// negation (mod 32) to drop them.
const KEEP_AT: u32 = 16;
const SKIP_KEY_AT: u32 = 21;
/// u32 index (from the root node) of the root node's first leaf.
pub(crate) const ROOT_LEAF: usize = 2 * NODE;

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
    let mut at = 0;
    let mut shift = 12u32;
    loop {
        let (Some(v), Some(lv), Some(b)) =
            (d.get(PRE + at), d.get(PRE + at + 1), d.get(PRE + at + 2))
        else {
            return NO_ROUTE;
        };
        let vector = v.load(Ordering::Relaxed);
        let bases = b.load(Ordering::Relaxed);
        let j = (key18 >> shift) & 63;
        let bit = 1u64 << j;
        if vector & bit != 0 && shift > 0 {
            at = (bases & CHILD_OFF) as usize + NODE * (vector & (bit - 1)).count_ones() as usize;
            shift -= 6;
        } else {
            let rank = (lv.load(Ordering::Relaxed) & (bit | (bit - 1))).count_ones() as usize;
            // The root's first leaf is named in the word before it, the
            // other nodes' in their third word.
            let base_leaf = if at == 0 {
                d.first()
                    .map_or(0, |w| (w.load(Ordering::Relaxed) >> ROOT_AT) as usize)
            } else {
                (bases >> 32) as usize
            };
            let pos = (2 * PRE + base_leaf + rank).wrapping_sub(1);
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
    // SAFETY: caller's contract.
    unsafe { lookup_raw_at(first, third_word(first), key18) }
}

/// [`lookup_raw`] given the root node's third word, `third`, which the
/// caller has read (for the chunk's default or skipped bits).
///
/// # Safety
/// As for [`lookup_raw`]; `third` read from the chunk.
#[inline(always)]
unsafe fn lookup_raw_at(first: *const AtomicU64, third: u64, key18: u32) -> u32 {
    let word = |i: usize| {
        // SAFETY: `build` lays out the root node at the pointer, then
        // nodes whose first-child offset names an existing node (children
        // are contiguous, counted by the vector's popcount) and whose first
        // leaf + rank − 1 indexes an existing leaf (every non-child slot
        // belongs to a run whose start is marked in `leafvec`); the depth is
        // at most three (`shift` reaches 0). So every `i` passed here is
        // inside the chunk.
        unsafe { (*first.add(i)).load(Ordering::Relaxed) }
    };
    let vector = word(0);
    let j = (key18 >> 12) & 63;
    if (vector >> j) & 1 == 0 {
        // The root's first leaf is named in the word before it.
        // SAFETY: every chunk has its PRE word before the root.
        let base_leaf = unsafe { (*first.sub(1)).load(Ordering::Relaxed) } >> ROOT_AT;
        // SAFETY: the root answers slot j with a leaf (as above).
        return unsafe { leaf_raw(first, word(1), base_leaf as usize, j) };
    }
    let mut at = (third & CHILD_OFF) as usize + NODE * below(vector, j).count_ones() as usize;
    let mut shift = 6u32;
    loop {
        let vector = word(at);
        let bases = word(at + 2);
        let j = (key18 >> shift) & 63;
        if (vector >> j) & 1 != 0 && shift > 0 {
            at = (bases & CHILD_OFF) as usize + NODE * below(vector, j).count_ones() as usize;
            shift -= 6;
        } else {
            // A node's first leaf is named in its third word.
            // SAFETY: the node at `at` answers slot j with a leaf (as above).
            return unsafe { leaf_raw(first, word(at + 1), (bases >> 32) as usize, j) };
        }
    }
}

/// The root node's third word: the chunk's default (high half), skipped
/// bits and the offset of the root's first child.
///
/// # Safety
/// `first` must be the pointer of a live chunk made by [`build`].
#[inline(always)]
pub(crate) unsafe fn third_word(first: *const AtomicU64) -> u64 {
    // SAFETY: every chunk has its root node; the default in its third
    // word changes in place.
    unsafe { (*first.add(2)).load(Ordering::Acquire) }
}

/// The bits of `v` below bit `j` (below 64): one BMI2 instruction where
/// the build has it (x86-64-v3, the default), three without.
#[inline(always)]
fn below(v: u64, j: u32) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "bmi2"))]
    // SAFETY: the build targets BMI2 (the cfg above), so the instruction
    // exists; it reads nothing but its operands.
    unsafe {
        core::arch::x86_64::_bzhi_u64(v, j)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "bmi2")))]
    {
        v & ((1u64 << j) - 1)
    }
}

/// Where slot `j` (below 64) of a chunk's node leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Down to the node at this word offset from the chunk's pointer.
    Node(usize),
    /// To this leaf value.
    Leaf(u32),
}

/// Where slot `j` of the node at word offset `at` (0: the root) of a chunk
/// leads, for a node `level` steps below the root (0..=2): nodes two
/// below the root answer every slot with a leaf.
///
/// # Safety
/// `first` must be the pointer of a live chunk made by [`build`], and `at`
/// a node of it `level` steps below the root (the root, or an offset a
/// [`Step::Node`] of its parent gave).
pub(crate) unsafe fn step(first: *const AtomicU64, at: usize, level: u32, j: u32) -> Step {
    debug_assert!(j < 64 && level <= 2);
    // SAFETY: caller's contract: the node's three words lie inside the
    // chunk, as do (see `lookup_raw`) the child and leaf they name.
    unsafe {
        let word = |i: usize| (*first.add(i)).load(Ordering::Relaxed);
        let vector = word(at);
        let bases = word(at + 2);
        let bit = 1u64 << j;
        if vector & bit != 0 && level < 2 {
            return Step::Node(
                (bases & CHILD_OFF) as usize + NODE * (vector & (bit - 1)).count_ones() as usize,
            );
        }
        let base_leaf = if at == 0 {
            (*first.sub(1)).load(Ordering::Relaxed) >> ROOT_AT
        } else {
            bases >> 32
        };
        Step::Leaf(leaf_raw(first, word(at + 1), base_leaf as usize, j))
    }
}

/// The leaf a node answers slot `j` with, from its `leafvec` and the u32
/// index of its first leaf.
///
/// # Safety
/// `first` must be the pointer of a live chunk made by [`build`], and the
/// node whose words these are must not descend at slot `j`: then
/// `base_leaf` + rank − 1 indexes one of the chunk's leaves.
#[inline(always)]
unsafe fn leaf_raw(first: *const AtomicU64, leafvec: u64, base_leaf: usize, j: u32) -> u32 {
    // The runs starting at or before slot j: the last holds it.
    let rank = (leafvec << (63 - j)).count_ones() as usize;
    let pos = base_leaf + rank - 1;
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
pub(crate) struct EmptyChunk([AtomicU64; 5]);

/// The one [`EmptyChunk`].
pub(crate) static EMPTY: EmptyChunk = EmptyChunk([
    AtomicU64::new(5 | (ROOT_LEAF as u64) << ROOT_AT),
    // The root node: no child, one run from slot 0, whose leaf (the first
    // u32 after the node) is "none", as is the covering value; no bits
    // skipped.
    AtomicU64::new(0),
    AtomicU64::new(1),
    AtomicU64::new((NO_ROUTE as u64) << 32 | 18 << KEEP_AT),
    AtomicU64::new(u64::MAX),
]);

impl EmptyChunk {
    /// Its chunk pointer (its root node).
    #[inline(always)]
    pub(crate) fn first(&'static self) -> *const AtomicU64 {
        self.0[PRE..].as_ptr()
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
    // SAFETY: as in `lookup_raw`: the root node exists.
    let word = |i: usize| unsafe { (*first.add(i)).load(Ordering::Relaxed) };
    let j = (low14 >> 8) & 63;
    if (word(0) >> j) & 1 != 0 {
        // SAFETY: caller's contract.
        return unsafe { lookup_deep(first, low14 << 4) };
    }
    // SAFETY: the root node does not descend at slot j.
    unsafe { leaf_raw(first, word(1), ROOT_LEAF, j) }
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
/// by its pointer.
///
/// # Safety
/// `first` must be the pointer of a live chunk made by [`build`].
#[inline(always)]
pub(crate) unsafe fn default_raw(first: *const AtomicU64) -> u32 {
    // SAFETY: caller's contract.
    (unsafe { third_word(first) } >> 32) as u32
}

/// The whole chunk (its words from the length on) whose pointer is `first`.
///
/// # Safety
/// `first` must be the pointer of a live chunk from [`build_raw`].
#[inline(always)]
pub(crate) unsafe fn words<'a>(first: *const AtomicU64) -> &'a Words {
    // SAFETY: caller's contract: the allocation starts PRE words (one) before
    // the pointer, the first holding its length in words.
    unsafe {
        let start = first.sub(PRE);
        let len = ((*start).load(Ordering::Relaxed) & LEN_BITS) as usize;
        std::slice::from_raw_parts(start, len)
    }
}

/// Free a chunk (not its children).
///
/// # Safety
/// `first` must be the pointer of a chunk from [`build_raw`], unreachable by
/// any reader, freed once.
pub(crate) unsafe fn free(first: *const AtomicU64) {
    // SAFETY: caller's contract: a live chunk, given up here.
    let d = unsafe { words(first) };
    // SAFETY: the block came from `arena::alloc` for d.len() words.
    unsafe { arena::free(d.as_ptr().cast_mut(), d.len()) };
}

/// Change the chunk's covering value in place.
pub(crate) fn set_default(d: &Words, v: u32) {
    if let Some(w) = d.get(PRE + 2) {
        // The low half (the root's first child) never changes, and only
        // the writer stores here.
        let low = w.load(Ordering::Relaxed) & 0xffff_ffff;
        w.store((u64::from(v) << 32) | low, Ordering::Release);
    }
}

/// The pointer word and default of child `i` (in key order), found
/// through the writer's index of the children's entries.
#[inline(always)]
pub(crate) fn kid(d: &Words, i: usize) -> Option<(&AtomicU64, u32)> {
    let index = ((d.first()?.load(Ordering::Relaxed) >> KIDS_AT) & 0xf_ffff) as usize;
    if index == 0 {
        return None;
    }
    let word = d.get(PRE + index + i / 2)?.load(Ordering::Relaxed);
    let at = (word >> (32 * (i % 2))) as u32 as usize;
    // 0: the half after an odd number of children (no entry lies at the
    // root); past the index, the chunk ends.
    if at == 0 {
        return None;
    }
    let p = d.get(PRE + at)?;
    let def = d.get(PRE + at + 1)?.load(Ordering::Relaxed) as u32;
    Some((p, def))
}

/// As [`kid`] on a chunk known only by its first word, without bounds
/// checks: the child's pointer word (read with acquire ordering: the
/// writer publishes it in place) and default, from its entry `at` words
/// from the root.
///
/// # Safety
/// `first` must point to the first word of a live chunk made by [`build`],
/// and `at` must be the offset of a [`CHILD`] value a lookup in it
/// returned: [`build`] writes the child's entry there.
#[inline(always)]
pub(crate) unsafe fn kid_raw(first: *const AtomicU64, at: usize) -> (u64, u32) {
    // SAFETY: caller's contract: the entry's two words lie inside the
    // chunk.
    unsafe {
        (
            (*first.add(at)).load(Ordering::Acquire),
            (*first.add(at + 1)).load(Ordering::Relaxed) as u32,
        )
    }
}

/// Node and leaf counts of a chunk: nodes reached from the root, and the
/// runs their `leafvec`s mark.
pub(crate) fn counts(d: &Words) -> (usize, usize) {
    fn walk(d: &Words, at: usize, depth: u32, acc: &mut (usize, usize)) {
        let w = |i: usize| d.get(PRE + at + i).map_or(0, |w| w.load(Ordering::Relaxed));
        let (vector, leafvec, bases) = (w(0), w(1), w(2));
        acc.0 += 1;
        acc.1 += leafvec.count_ones() as usize;
        if depth < 2 {
            for c in 0..vector.count_ones() as usize {
                walk(d, (bases & CHILD_OFF) as usize + NODE * c, depth + 1, acc);
            }
        }
    }
    let mut acc = (0, 0);
    if d.len() >= PRE + NODE {
        walk(d, 0, 0, &mut acc);
    }
    acc
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
#[cfg(test)]
pub(crate) fn build(
    width: u32,
    may_skip: bool,
    routes: &[ChunkRoute],
    kids: &[(u16, u64)],
    kid_defaults: &mut Vec<u32>,
    default: u32,
) -> Box<Words> {
    let mut w = Vec::new();
    build_words(width, may_skip, routes, kids, kid_defaults, default, &mut w);
    w.into_iter().map(AtomicU64::new).collect()
}

/// [`build`] into an [`arena`] block, the words laid out in `w` first (a
/// buffer the caller keeps between builds): the chunk's pointer, for the
/// readers' structure. Freed by [`free`].
pub(crate) fn build_raw(
    width: u32,
    may_skip: bool,
    routes: &[ChunkRoute],
    kids: &[(u16, u64)],
    kid_defaults: &mut Vec<u32>,
    default: u32,
    w: &mut Vec<u64>,
) -> *const AtomicU64 {
    build_words(width, may_skip, routes, kids, kid_defaults, default, w);
    let p = arena::alloc(w.len());
    // Readers take the word before the root to share the root's line.
    debug_assert_eq!(p as usize % 16, 0, "blocks are 16-byte aligned");
    for (i, v) in w.iter().enumerate() {
        // SAFETY: the block holds at least w.len() words, is ours and is
        // not yet shared.
        unsafe { p.add(i).write(AtomicU64::new(*v)) };
    }
    // SAFETY: `build_words` makes at least PRE words before the root node.
    unsafe { p.cast_const().add(PRE) }
}

thread_local! {
    /// A chunk's child keys, nodes and leaves while it is built: kept
    /// between builds, as the writer builds a chunk or two per change.
    static KEYS: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
    static NODES: Cell<Vec<[u64; 3]>> = const { Cell::new(Vec::new()) };
    static LEAVES: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// A skipping chunk's routes, their shared bits left out.
    static MOVED: Cell<Vec<ChunkRoute>> = const { Cell::new(Vec::new()) };
    /// Where each node and its leaves go in the chunk being built, and
    /// each child's entry.
    static PLACE: Cell<Vec<(u32, u32)>> = const { Cell::new(Vec::new()) };
    static KID_AT: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// The key bits a chunk of `width`-bit keys may leave out (skip) and the
/// value all its routes and children have there: the most of `width - 6`
/// and `width - 12` (a trie of one node, or of two levels) that every
/// route and child shares, each route keeping at least one bit of its
/// own; 0 where neither holds. Only those two counts shorten a walk.
fn skip_of(width: u32, routes: &[ChunkRoute], kids: &[(u16, u64)]) -> (u32, u32) {
    let first = match (routes.first(), kids.first()) {
        (Some(r), _) => u32::from(r.start),
        (None, Some(k)) => u32::from(k.0),
        (None, None) => return (0, 0),
    };
    let shortest = routes
        .iter()
        .map(|r| u32::from(r.len))
        .min()
        .unwrap_or(width);
    for inner in [6, 12] {
        let skip = width - inner;
        let key = first >> inner;
        if shortest > skip
            && routes.iter().all(|r| u32::from(r.start) >> inner == key)
            && kids.iter().all(|k| u32::from(k.0) >> inner == key)
        {
            return (skip, key);
        }
    }
    (0, 0)
}

/// The value a chunk of `width`-bit keys (built with `may_skip` or not)
/// holds for key slice `k`: [`lookup_raw`] after the chunk's skipped bits,
/// if any, are checked and left out; [`NO_ROUTE`] where they differ.
///
/// # Safety
/// As for [`lookup_raw`]; `k` below 2^`width`.
#[cfg(test)]
pub(crate) unsafe fn lookup_slice(first: *const AtomicU64, width: u32, k: u32) -> u32 {
    // SAFETY: caller's contract.
    unsafe { lookup_slice_at(first, third_word(first), width, k) }
}

/// [`lookup_slice`] given the root node's third word (see
/// [`lookup_raw_at`]).
///
/// # Safety
/// As for [`lookup_slice`]; `third` read from the chunk.
#[inline(always)]
pub(crate) unsafe fn lookup_slice_at(
    first: *const AtomicU64,
    third: u64,
    width: u32,
    k: u32,
) -> u32 {
    let b = third as u32;
    // The slice at the top of 18 bits: its first bits, 18 less `keep`
    // (none: 18 >> 18 = 0), are the ones skipped, the rest, moved up, the
    // trie's key. A shift by `keep` (five bits) takes the word's bits
    // above as a u32 shift's count ignores them.
    let key18 = k << (18 - width);
    let keep = b >> KEEP_AT;
    if key18.wrapping_shr(keep) != b >> SKIP_KEY_AT {
        return NO_ROUTE;
    }
    // Up by 32 - keep, down by 14: the skipped bits fall out on top.
    let key = key18.wrapping_shl(keep.wrapping_neg()) >> 14;
    // SAFETY: caller's contract; the trie is `width - skip` bits wide.
    unsafe { lookup_raw_at(first, third, key) }
}

/// [`build`]'s words, into `w` (cleared first).
fn build_words(
    width: u32,
    may_skip: bool,
    routes: &[ChunkRoute],
    kids: &[(u16, u64)],
    kid_defaults: &mut Vec<u32>,
    default: u32,
    w: &mut Vec<u64>,
) {
    debug_assert!(width == 14 || width == 16);
    kid_defaults.clear();
    kid_defaults.resize(kids.len(), NO_ROUTE);
    // A skipping chunk builds its trie over the key bits after the ones
    // all its routes and children share, `inner` bits wide.
    let (skipped, skip_key) = if may_skip {
        skip_of(width, routes, kids)
    } else {
        (0, 0)
    };
    let inner = width - skipped;
    let low = |k: u16| u32::from(k) & ((1 << inner) - 1);
    let mut keys = scratch(&KEYS);
    keys.extend(kids.iter().map(|k| low(k.0) as u16));
    let mut moved = scratch(&MOVED);
    let routes = if skipped == 0 {
        routes
    } else {
        moved.extend(routes.iter().map(|r| ChunkRoute {
            start: low(r.start) as u16,
            len: r.len - skipped as u8,
            value: r.value,
        }));
        &moved[..]
    };
    let v4 = width == 14;
    let width = inner;
    let mut nodes = scratch(&NODES);
    nodes.push([0; 3]);
    let mut b = Builder {
        width,
        nodes,
        leaves: scratch(&LEAVES),
        kid_defaults,
    };
    b.node(0, 0, 0, routes, &keys, 0, NO_ROUTE);
    unscratch(&MOVED, moved);
    // Where each node, its leaves and each child's entry go.
    let mut place = scratch(&PLACE);
    let mut kid_at = scratch(&KID_AT);
    kid_at.resize(kids.len(), 0);
    let body = if v4 {
        place_apart(&b.nodes, true, &mut place, &mut kid_at)
    } else {
        place_v6(&b.nodes, &keys, width, &mut place, &mut kid_at)
            .unwrap_or_else(|| place_apart(&b.nodes, false, &mut place, &mut kid_at))
    };
    // The writer's index of the children's entries (u32 word offsets, two
    // to a word), in key order: readers go by the offset a leaf names.
    let kids_at = if kids.is_empty() { 0 } else { body };
    let total = PRE + body + kids.len().div_ceil(2);
    let root_leaf = place[0].1 as usize;
    w.clear();
    // Padding halves after an odd number of leaves read as "none".
    w.resize(total, (u64::from(NO_ROUTE) << 32) | u64::from(NO_ROUTE));
    debug_assert!(total as u64 <= LEN_BITS && kids_at < 1 << 20 && root_leaf < 1 << 20);
    w[0] = ((root_leaf as u64) << ROOT_AT) | ((kids_at as u64) << KIDS_AT) | total as u64;
    // A node's third word: its first child's offset (where it has one)
    // and, above, the u32 index of its first leaf (the root's is in the
    // word before it).
    let child_of = |n: &[u64; 3]| {
        if n[0] == 0 {
            0
        } else {
            u64::from(place[(n[2] & 0xffff_ffff) as usize].0)
        }
    };
    for (i, n) in b.nodes.iter().enumerate() {
        let (at, _) = place[i];
        debug_assert!(child_of(n) <= CHILD_OFF);
        let third = if i == 0 {
            (u64::from(default) << 32)
                | u64::from(skip_key) << SKIP_KEY_AT
                | u64::from(18 - skipped) << KEEP_AT
                | child_of(n)
        } else {
            (u64::from(place[i].1) << 32) | child_of(n)
        };
        let at = PRE + at as usize;
        w[at..at + NODE].copy_from_slice(&[n[0], n[1], third]);
    }
    {
        // The leaves, as u32s in the order readers index them.
        // SAFETY: u32 has no stricter alignment than u64 and no invalid
        // values; the view covers exactly the words' bytes and is the
        // only access to them while it lives.
        let halves =
            unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u32>(), 2 * w.len()) };
        for (i, n) in b.nodes.iter().enumerate() {
            let first = (n[2] >> 32) as usize;
            let leaves = &b.leaves[first..first + n[1].count_ones() as usize];
            let at = 2 * PRE + place[i].1 as usize;
            for (k, &v) in leaves.iter().enumerate() {
                // A child's leaf names its entry's offset, not its index.
                let v = if v & CHILD != 0 && v < DEEP {
                    CHILD | kid_at[(v & !CHILD) as usize]
                } else {
                    v
                };
                halves[half(at + k)] = v;
            }
        }
        for (i, &k) in kid_at.iter().enumerate() {
            halves[half(2 * (PRE + kids_at) + i)] = k;
        }
        if kid_at.len() % 2 == 1 {
            // The index's last half past its children: no entry (`kid`).
            halves[half(2 * (PRE + kids_at) + kid_at.len())] = 0;
        }
    }
    unscratch(&PLACE, place);
    for (i, (_, ptr)) in kids.iter().enumerate() {
        let at = PRE + kid_at[i] as usize;
        w[at..at + 2].copy_from_slice(&[*ptr, u64::from(b.kid_defaults[i])]);
    }
    unscratch(&KID_AT, kid_at);
    unscratch(&KEYS, keys);
    unscratch(&NODES, b.nodes);
    unscratch(&LEAVES, b.leaves);
}

/// Where u32 number `u` of a chunk's words lies in a view of them as
/// u32s: leaf `u` is the low half of word `u / 2` when `u` is even.
#[inline(always)]
fn half(u: usize) -> usize {
    if cfg!(target_endian = "big") {
        u ^ 1
    } else {
        u
    }
}

/// Lay a chunk out as nodes, then leaves, then its children's entries:
/// `place[i]` gets node i's word offset from the root and the u32 index
/// of its first leaf, `kid_at[k]` the word offset of child k's entry.
/// With `root_first` (IPv4 chunks) the root's leaves come right after the
/// root node, in its lines: nearly every IPv4 lookup is answered there.
/// Returns the words used from the root on.
fn place_apart(
    nodes: &[[u64; 3]],
    root_first: bool,
    place: &mut Vec<(u32, u32)>,
    kid_at: &mut [u32],
) -> usize {
    place.clear();
    let count = |n: &[u64; 3]| n[1].count_ones() as usize;
    let root_leaves = if root_first { count(&nodes[0]) } else { 0 };
    let nodes_at = NODE + root_leaves.div_ceil(2);
    let leaves_at = nodes_at + NODE * (nodes.len() - 1);
    // Leaves go in the order their nodes were finished, the root's first.
    let after = |n: &[u64; 3]| 2 * leaves_at + (n[2] >> 32) as usize - root_leaves;
    place.push((
        0,
        if root_first {
            ROOT_LEAF
        } else {
            after(&nodes[0])
        } as u32,
    ));
    for (i, n) in nodes.iter().enumerate().skip(1) {
        place.push(((nodes_at + NODE * (i - 1)) as u32, after(n) as u32));
    }
    let rest: usize = nodes.iter().map(count).sum::<usize>() - root_leaves;
    let kids = leaves_at + rest.div_ceil(2);
    for (k, at) in kid_at.iter_mut().enumerate() {
        *at = (kids + 2 * k) as u32;
    }
    kids + 2 * kid_at.len()
}

/// Lay an IPv6 chunk out (as [`place_apart`] says) along its walks, or
/// None where a node's offset would not fit its parent's word (a chunk
/// of many thousand leaves: [`place_apart`] then).
///
/// A walk to a leaf two levels down reads the root, a node of the first
/// level, one of the second, a leaf, and where the leaf names a child,
/// the child's entry. The root and the first level's nodes come first,
/// then the root's leaves; then, for each node of the first level, its
/// children and right after them their leaves and its own; after each
/// group of leaves, the entries of the children they name. A node of the
/// second level, the leaf a walk reads from it and a child's entry then
/// lie in the same line or the next, where all leaves after all nodes
/// put them lines apart in a large chunk.
fn place_v6(
    nodes: &[[u64; 3]],
    keys: &[u16],
    width: u32,
    place: &mut Vec<(u32, u32)>,
    kid_at: &mut [u32],
) -> Option<usize> {
    place.clear();
    place.resize(nodes.len(), (0, 0));
    let count = |i: usize| nodes[i][1].count_ones() as usize;
    // The children of node i.
    let kids = |i: usize| {
        let n = &nodes[i];
        let first = (n[2] & 0xffff_ffff) as usize;
        first..first + n[0].count_ones() as usize
    };
    // Child chunks are keyed by the whole slice, so their leaves lie at
    // the last level: the root's where the trie is one node, else under
    // the first level's node of their top six bits. Keys are sorted, so
    // each group's children are the next ones.
    let mut next_kid = 0;
    let mut entries = |top: Option<u32>, at: &mut usize| {
        while let Some(&k) = keys.get(next_kid) {
            if top.is_some_and(|j| u32::from(k) >> (width - 6) != j) {
                break;
            }
            kid_at[next_kid] = *at as u32;
            *at += 2;
            next_kid += 1;
        }
    };
    let mut at = NODE;
    for i in kids(0) {
        place[i].0 = at as u32;
        at += NODE;
    }
    place[0].1 = (2 * at) as u32;
    at += count(0).div_ceil(2);
    if width <= 6 {
        entries(None, &mut at);
    }
    let mut slots = nodes[0][0];
    for l1 in kids(0) {
        let j = slots.trailing_zeros();
        slots &= slots - 1;
        for i in kids(l1) {
            if at > CHILD_OFF as usize {
                return None;
            }
            place[i].0 = at as u32;
            at += NODE;
        }
        let mut u = 2 * at;
        for i in kids(l1).chain([l1]) {
            place[i].1 = u as u32;
            u += count(i);
        }
        at = u.div_ceil(2);
        entries(Some(j), &mut at);
    }
    debug_assert_eq!(next_kid, keys.len(), "every child has its entry");
    debug_assert!(
        kids(0).all(|l1| kids(l1).all(|l2| kids(l2).is_empty())),
        "an IPv6 chunk has three levels"
    );
    Some(at)
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
            let mark_deep = w == 14 && depth == 0;
            self.finish_node(at, child, &vals, base_child as u32, mark_deep);
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
            self.finish_node(at, 0, &vals, 0, false);
        }
    }

    /// Record node `at`: its leaves are the runs of equal values over the
    /// slots that do not descend; with `mark_deep`, a descending slot is
    /// a run of its own whose leaf is [`DEEP`].
    fn finish_node(
        &mut self,
        at: usize,
        vector: u64,
        vals: &[u32; 64],
        base_child: u32,
        mark_deep: bool,
    ) {
        let base_leaf = self.leaves.len() as u64;
        let mut leafvec = 0u64;
        let mut prev: Option<u32> = None;
        for (j, v) in vals.iter().enumerate() {
            if vector & (1 << j) != 0 {
                if mark_deep {
                    leafvec |= 1 << j;
                    self.leaves.push(DEEP);
                    prev = Some(DEEP);
                }
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

    /// The pointer of a chunk `build` made.
    fn root(d: &Words) -> *const AtomicU64 {
        d[PRE..].as_ptr()
    }

    /// A chunk's words, as values.
    fn values(d: &Words) -> Vec<u64> {
        d.iter().map(|w| w.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn empty_chunk_is_what_build_makes_of_no_routes() {
        let built = build(14, false, &[], &[], &mut Vec::new(), NO_ROUTE);
        assert_eq!(values(&built), values(&EMPTY.0));
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
        let c = build(w, false, &routes, &[], &mut d, NO_ROUTE);
        for k in 0..(1u32 << w) {
            let want = model(w, &routes, k);
            assert_eq!(lookup(&c, k << (18 - w)), want, "width {w} key {k:#06x}");
            // SAFETY: `c` is a chunk made by `build`.
            assert_eq!(unsafe { lookup_raw(root(&c), k << (18 - w)) }, want);
            if w == 14 {
                // SAFETY: as above; k is below 2^14.
                assert_eq!(unsafe { lookup14_raw(root(&c), k) }, want, "key {k:#06x}");
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

    /// Chunks with thousands of children: each child's leaf names its
    /// entry, the writer's index finds the same entries in key order, and
    /// the unchecked walk answers as the checked one. With a child under
    /// every key the entries outgrow the offsets a node can name beside
    /// the leaves, and the chunk is laid out with its entries at the end.
    #[test]
    fn a_chunk_of_many_children_names_every_entry() {
        let r = |start, len, value| ChunkRoute { start, len, value };
        let routes = [r(0x0000, 1, 1), r(0x8000, 4, 2), r(0x8100, 9, 3)];
        let default = |k: u32| match k {
            0x8100..=0x817f => 3,
            0x8000..=0x8fff => 2,
            0..=0x7fff => 1,
            _ => NO_ROUTE,
        };
        for every in [1u32, 7, 61] {
            let keys: Vec<u16> = (0..1u32 << 16)
                .step_by(every as usize)
                .map(|k| k as u16)
                .collect();
            let kids: Vec<(u16, u64)> = keys
                .iter()
                .map(|&k| (k, 0x10 * (u64::from(k) + 1)))
                .collect();
            let mut d = Vec::new();
            let c = build(16, false, &routes, &kids, &mut d, NO_ROUTE);
            for (i, &k) in keys.iter().enumerate() {
                let v = lookup(&c, u32::from(k) << 2);
                assert_ne!(v & CHILD, 0, "key {k:#x} of every {every}");
                // SAFETY: `c` is a chunk `build` made.
                assert_eq!(unsafe { lookup_raw(root(&c), u32::from(k) << 2) }, v);
                let at = (v & !CHILD) as usize;
                let want = (kids[i].1, default(u32::from(k)));
                // SAFETY: `at` is a child value a lookup in `c` returned.
                assert_eq!(unsafe { kid_raw(root(&c), at) }, want, "key {k:#x}");
                let (p, def) = kid(&c, i).expect("a child's entry in the index");
                assert!(
                    core::ptr::eq(p, &c[PRE + at]),
                    "key {k:#x} of every {every}"
                );
                assert_eq!(def, want.1);
            }
            assert!(kid(&c, keys.len()).is_none());
            if every > 1 {
                let k = 1u32;
                // SAFETY: as above.
                assert_eq!(unsafe { lookup_raw(root(&c), k << 2) }, default(k));
            }
        }
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
        let c = build(16, false, &routes, &kids, &mut d, NO_ROUTE);
        // A child's value names its entry's offset from the root; the
        // writer finds the entries in key order through its index.
        assert_eq!(lookup(&c, 0x4006 << 2), 9);
        assert_eq!(lookup(&c, 0x0002 << 2), NO_ROUTE);
        assert_eq!(d, vec![NO_ROUTE, 9, NO_ROUTE]);
        for (i, (key, want)) in [
            (0x0001, (0xaa0, NO_ROUTE)),
            (0x4005, (0xbb0, 9)),
            (0xffff, (0xcc0, NO_ROUTE)),
        ]
        .into_iter()
        .enumerate()
        {
            let v = lookup(&c, key << 2);
            assert_ne!(v & CHILD, 0, "key {key:#x}");
            let at = (v & !CHILD) as usize;
            // SAFETY: `c` is a chunk made by `build` with three children,
            // and `at` a child value its lookup returned.
            assert_eq!(unsafe { kid_raw(root(&c), at) }, want);
            let (p, def) = kid(&c, i).expect("a child's entry in the index");
            assert_eq!((p.load(Ordering::Relaxed), def), want);
            assert!(core::ptr::eq(p, &c[PRE + at]));
        }
        assert!(kid(&c, 3).is_none());
        assert_eq!((c[0].load(Ordering::Relaxed) & LEN_BITS) as usize, c.len());
    }

    #[test]
    fn a_published_chunk_holds_the_words_build_makes() {
        let r = |start, len, value| ChunkRoute { start, len, value };
        let routes = vec![r(0x0100, 6, 1), r(0x0140, 10, 2), r(0x0141, 14, 3)];
        let kids = [(0x2000u16, 0xaa0)];
        for width in [14, 16] {
            let mut d = Vec::new();
            let want = build(width, false, &routes, &kids, &mut d, 7);
            let p = build_raw(width, false, &routes, &kids, &mut d, 7, &mut Vec::new());
            // SAFETY: `p` is a chunk build_raw just made, ours alone.
            let got = unsafe { words(p) };
            assert_eq!(values(got), values(&want), "width {width}");
            // SAFETY: as above; freed once.
            unsafe {
                assert_eq!(default_raw(p), 7);
                free(p);
            }
        }
    }

    #[test]
    fn counts_report_nodes_and_leaves() {
        let routes = vec![ChunkRoute {
            start: 0x0100,
            len: 6,
            value: 1,
        }];
        let mut d = Vec::new();
        let c = build(14, false, &routes, &[], &mut d, NO_ROUTE);
        let (nodes, leaves) = counts(&c);
        assert_eq!(nodes, 1);
        assert!((3..=4).contains(&leaves), "{leaves}");
    }

    /// Clustered routes and children, as a /32's block or a /34's routes
    /// are in an IPv6 table: every key answers alike whether the chunk
    /// skips their shared bits or not, the children's defaults agree, and
    /// chunks that can skip take fewer nodes.
    #[test]
    fn a_skipping_chunk_answers_every_key_as_a_plain_one() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        };
        let mut smaller = [0usize; 2];
        for case in 0..300 {
            let width = if case % 3 == 0 { 14 } else { 16 };
            // The bits shared: none, the two counts a chunk skips, or one
            // more or fewer.
            let shared = [0, width - 12, width - 6, width - 5, width - 13][case % 5];
            let prefix = next(1 << shared) << (width - shared);
            let mut routes: Vec<ChunkRoute> = Vec::new();
            for _ in 0..1 + next(12) {
                let len = (shared + 1 + next(width - shared)).min(width);
                let start =
                    (prefix | next(1 << (width - shared))) >> (width - len) << (width - len);
                if !routes
                    .iter()
                    .any(|r| u32::from(r.start) == start && u32::from(r.len) == len)
                {
                    routes.push(ChunkRoute {
                        start: start as u16,
                        len: len as u8,
                        value: next(1000),
                    });
                }
            }
            // Now and then a route shorter than the shared bits.
            if case % 7 == 0 && shared > 1 {
                routes.push(ChunkRoute {
                    start: (prefix >> (width - 1) << (width - 1)) as u16,
                    len: 1,
                    value: 5000,
                });
            }
            routes.sort_by_key(|r| (r.start, r.len));
            let mut kids: Vec<(u16, u64)> = (0..next(4))
                .map(|i| {
                    (
                        (prefix | next(1 << (width - shared))) as u16,
                        0x1000 + 16 * u64::from(i),
                    )
                })
                .collect();
            kids.sort_by_key(|k| k.0);
            kids.dedup_by_key(|k| k.0);
            let (mut d1, mut d2) = (Vec::new(), Vec::new());
            let plain = build(width, false, &routes, &kids, &mut d1, 7);
            let skip = build(width, true, &routes, &kids, &mut d2, 7);
            assert_eq!(d1, d2, "case {case}: children's defaults");
            // A child's value names its entry's offset, which the two
            // layouts place apart: compare the entries it names.
            let answer = |c: &Words, v: u32| {
                if v & CHILD != 0 && v < DEEP {
                    // SAFETY: `c` is a chunk `build` made and `v` a child
                    // value its lookup returned.
                    let (p, def) = unsafe { kid_raw(root(c), (v & !CHILD) as usize) };
                    (v & CHILD, p, def)
                } else {
                    (v, 0, 0)
                }
            };
            for k in 0..(1u32 << width) {
                // SAFETY: both are chunks `build` made; k is below 2^width.
                let (a, b) = unsafe {
                    (
                        lookup_slice(root(&plain), width, k),
                        lookup_slice(root(&skip), width, k),
                    )
                };
                assert_eq!(
                    answer(&plain, a),
                    answer(&skip, b),
                    "case {case}: width {width} key {k:#06x}"
                );
                if kids.is_empty() {
                    assert_eq!(a, model(width, &routes, k), "case {case}: key {k:#06x}");
                }
            }
            let (n1, n2) = (counts(&plain).0, counts(&skip).0);
            assert!(n2 <= n1, "case {case}: {n2} nodes skipping, {n1} not");
            smaller[usize::from(n2 < n1)] += 1;
        }
        assert!(smaller[1] > 50, "chunks that skip: {smaller:?}");
    }
}
