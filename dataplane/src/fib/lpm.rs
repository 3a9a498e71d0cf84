//! Longest-prefix match for one address family of one VRF.
//!
//! Layout (readers' view), for a key left-aligned in 128 bits:
//!
//! ```text
//!  root[256]     bits 0..8   ─▶ leaf(nexthop) | Segment | Sparse
//!  Segment[1024] bits 8..18  ─▶ leaf(nexthop) | chunk | solo (+ per-slot default)
//!  Sparse        bits 8..18  ─▶ runs of blocks: leaf(nexthop) | chunk | solo
//!  chunk         next 14 (IPv4) or 16 (IPv6) bits ─▶ nexthop | none | child i
//!  child i       next 16 bits ─▶ chunk …                      (IPv6 only)
//! ```
//!
//! (An IPv6 chunk may skip the first 4 or 10 bits of its 16 where all its
//! routes and children share them: see the `poptrie` module.)
//!
//! As in Poptrie, the first 18 bits are direct-indexed, so an IPv4 /24 is a
//! leaf of a chunk's root node. Routes of length ≤ 18 live in the root and
//! segments (painted as leaves or as a segment slot's default); longer routes
//! live in the chunk that owns their length range (see the `poptrie` module). A
//! chunk answers "none" where none of its own routes cover the key and the
//! lookup falls back to the best covering route seen on the way down, so a
//! change to a short route never rebuilds a chunk.
//!
//! An IPv4 block whose only longer route fits one word (nexthop and the
//! block's default below 2^22 - 1) keeps it in its slot word, *solo*,
//! with no chunk: a VRF's scattered /24s cost no chunk each, and their
//! lookups one memory access less.
//!
//! A /8 whose 1024 blocks fall into at most [`SPARSE_MAX`] runs (a run:
//! consecutive blocks with the same leaf, or one block with a chunk) gets a
//! *sparse* segment instead of a dense one: the runs' first blocks, sorted,
//! and their words (a binary search). Small VRFs with scattered prefixes (a
//! tenant's few subnets, VPN routes spread over thousands of VRFs) then
//! cost tens of bytes per /8 instead of 8 KiB. A /8 turns dense when its
//! runs outgrow the list.
//!
//! A large IPv4 table (at least [`FLAT_AT`] dense segments: a full table
//! has 221) also gives readers a *flat* array: one 32-bit word per /18
//! block (1 MB in a huge page), each naming the block's *leaf list* by its
//! offset in the lists' address range, a compact copy
//! of what the block answers per /24 slot: the chunk root's `leafvec` (a
//! bit where a run of equal answers starts), the block's default, and a
//! 16-bit leaf per run, an index into the array's *dictionary* of values
//! (the default's where no route of the block's own covers the slot; or a
//! *sub-list*: the /24 holds longer
//! routes, and a list of the same form after the block's maps its 64
//! /30s, and where a /30 holds longer routes still, one more its four
//! addresses). A lookup is then one load from the array and one list,
//! whose head and leaf share a line or two, and the lists of a full table
//! lie packed in 4 MB of their own; a batch finds the table's mode once,
//! not per key, and finishes the few keys that go down to a sub-list
//! last. Only where the dictionary is full does a leaf say "deep": the
//! chunk the list names answers.
//! The writer keeps root, segments and chunks as the source and makes a
//! block's list again whenever its slot word or default changes. A leaf's
//! blocks share one list per value. The array goes again when the table
//! shrinks below half that.
//!
//! Updates are incremental: the writer rebuilds only the chunk that owns the
//! changed route (and its parent when a child chunk appears or disappears),
//! publishes it with one atomic store, and retires the old one through QSBR
//! ([`crate::rcu`]). A lookup reads each published word once, so the answer
//! is the one from before or after an update, never a torn one. Memory is
//! proportional to the routes held: an empty table is a 2 KiB root.
#![allow(unsafe_code)]

use super::arena;
use super::poptrie::{self, ChunkRoute, Words, CHILD, NO_ROUTE};
use super::sparse::{
    build_sparse, free_sparse, push_keys, push_maps, set_run, sparse_counts, sparse_entries,
    sparse_key, sparse_lower, sparse_runs_into, sparse_runs_of, sparse_slot, sparse_storage,
    sparse_words,
};
use crate::rcu::{Domain, Guard, WeakDomain};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::LocalKey;

/// Check a route change as a table of `max_len`-bit keys (32 or 128)
/// would, changing nothing: the prefix `p` left-aligned in 128 bits, its
/// length, and the nexthop to insert (None: a removal).
///
/// # Errors
/// [`LpmError`] for a bad length, host bits or nexthop id.
pub fn validate(max_len: u8, p: u128, len: u8, v: Option<u32>) -> Result<(), LpmError> {
    if len > max_len {
        return Err(LpmError::BadLength { len, max: max_len });
    }
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
    Ok(())
}

/// At most this many unlinked objects wait while an LPM holds its
/// retirements ([`Lpm::hold_retired`]).
pub const HOLD_MAX: usize = 32;

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
    /// Dense segments (second level) allocated.
    pub segments: usize,
    /// Sparse segments (second level of /8s with few blocks).
    pub sparse_segments: usize,
    /// Poptrie chunks.
    pub chunks: usize,
    /// Poptrie nodes over all chunks.
    pub nodes: usize,
    /// Leaves over all chunks.
    pub leaves: usize,
    /// Blocks whose only long route is held in their slot word, without a
    /// chunk.
    pub solos: usize,
    /// Whether readers have the flat array.
    pub flat: bool,
}

/// Largest nexthop id a table can hold.
pub const MAX_NEXTHOP: u32 = CHILD - 1;

const TOP_BITS: u32 = 18;
const SEG_BITS: u32 = 10;
pub(super) const SEG_LEN: usize = 1 << SEG_BITS;

/// Words (u32) of an IPv4 table's flat array: one per /18 block.
const FLAT_LEN: usize = 1 << TOP_BITS;
/// Values a flat array's dictionary holds: list leaves name values by a
/// 16-bit index below [`L_SUB`]; the indexes from there on are markers.
const DICT_LEN: usize = 1 << 16;
const _: () = assert!(
    (FLAT_LEN + DICT_LEN) * 4 <= arena::REGION,
    "a flat array's words and dictionary fill part of a region"
);

/// Dense segments at which an IPv4 table gets its flat array, unless
/// [`Lpm::set_flat_at`] says otherwise: half the /8s, 1 MiB of segments,
/// where the array (1.25 MiB with its dictionary) and its lists are a
/// modest share of the table.
pub const FLAT_AT: usize = 128;

/// A list leaf: the slot holds longer routes that no sub-list maps (or a
/// value the dictionary had no room for): the chunk the list names
/// answers, or where it names none, root and segments.
const L_DEEP: u16 = u16::MAX - 1;
/// List leaves `L_SUB + k` (k below 64): the slot holds longer routes,
/// mapped by the list's sub-list `k`, over the slot's 64 next-longer
/// slots (a /24's /30s, a /30's addresses). The dictionary's indexes stop
/// below.
const L_SUB: u16 = 0xff80;
/// Bits of a list's trailer word (after its leaves, where one is deep or
/// names a sub-list) that hold the chunk's pointer; the bits above hold
/// the words of the list with its sub-lists.
const TRAILER_CHUNK: u64 = (1 << 48) - 1;

/// A list's trailer word: the block's chunk `chunk` (0: none) and the
/// words of the list with its sub-lists.
fn trailer(chunk: usize, words: usize) -> u64 {
    debug_assert!(chunk as u64 <= TRAILER_CHUNK && words <= arena::MAX_WORDS);
    chunk as u64 | (words as u64) << 48
}

/// Tag on a flat word whose list is its block's own (made from the block's
/// chunk or solo word), not one shared by blocks that answer alike. The
/// low 31 bits are the list's offset from [`arena::lists`] in 16-byte
/// units (below 2^30: the lists' address space is 16 GiB).
const OWN_LIST: u32 = 1 << 31;

/// The flat word naming the list every table may name and none frees, at
/// offset 0: one run, "deep", no chunk: root and segments answer. A block
/// gets it when no list can be had.
const FALLBACK: u32 = 0;

/// The words of the [`FALLBACK`] list.
const FALLBACK_LIST: [u64; 3] = [1, (L_DEEP as u64) << 16, 0];

/// The address of the list flat word `w` names, lists starting at `base`.
#[inline(always)]
fn list_of(base: usize, w: u32) -> usize {
    // The u32 shift drops the tag: two instructions (a shift, and an
    // address computation that scales by 8) instead of a mask, a shift
    // and an add.
    base + 8 * (w << 1) as usize
}

/// Bytes of a leaf list before its leaves: its `leafvec` (bit j: a run of
/// equal answers starts at slot j; bit 0 always) and its default's
/// dictionary index.
///
/// A block's list has a slot per /24. Where a leaf is [`L_DEEP`] or names
/// a sub-list, a trailer word follows the leaves: the block's chunk (0:
/// none) and the words of the whole list ([`TRAILER_CHUNK`]); then, where
/// leaves name sub-lists, their offsets (u16 each, in words from the
/// block's list), then the sub-lists. A sub-list has the same head and
/// leaves, a slot per /30 of its /24 (or per address of its /30), and the
/// block's default; where its leaves name sub-lists, their offsets follow
/// its leaves.
const LIST_HEAD: usize = 10;

/// Words of a leaf list of `n` leaves.
fn list_words(n: usize) -> usize {
    (LIST_HEAD + 2 * n).div_ceil(8)
}

/// Append to `buf` a list's head and leaves: `leafvec`, the default's
/// index and as many leaves as `leafvec` marks runs (at most 64).
fn put_list(buf: &mut impl Extend<u64>, leafvec: u64, default: u16, leaves: &[u16]) {
    debug_assert_eq!(leafvec.count_ones() as usize, leaves.len());
    debug_assert!(leafvec & 1 == 1);
    let mut words = [0u64; 19];
    words[0] = leafvec;
    words[1] = u64::from(default);
    for (i, l) in leaves.iter().enumerate() {
        let at = LIST_HEAD / 2 + i;
        words[at / 4] |= u64::from(*l) << (16 * (at % 4));
    }
    buf.extend(words[..list_words(leaves.len())].iter().copied());
}

/// The leaf of the list at `l` for slot `j` (below 64).
///
/// # Safety
/// `l` must be a live list (see [`list_answer`]).
#[inline(always)]
unsafe fn list_leaf(l: usize, j: u32) -> u16 {
    // SAFETY: caller's contract: a published list, never written again:
    // its leafvec, default and popcount(leafvec) leaves; the runs
    // starting at or before slot j number at least one (slot 0 starts
    // one), the last of them holds the slot.
    unsafe {
        let lv = *(l as *const u64);
        let rank = (lv << (63 - j)).count_ones() as usize;
        *((l + LIST_HEAD - 2 + 2 * rank) as *const u16)
    }
}

/// The answer of the leaf list at `l` (a flat word, its tag cleared) for
/// `ip`, its leaves' values in `dict`; for a slot with longer routes, its
/// sub-list's, the block's chunk's, or where the list names none,
/// `deep`'s.
///
/// # Safety
/// `l` must be a list named by a flat array whose dictionary is `dict`,
/// read in a read-side section still in force (or by the writer).
#[inline(always)]
unsafe fn list_answer(dict: *const u32, ip: u32, l: usize, deep: impl FnOnce() -> u32) -> u32 {
    // SAFETY: caller's contract (see `list_leaf`).
    unsafe {
        let leaf = list_leaf(l, (ip >> 8) & 63);
        if leaf < L_SUB {
            // Every index a published list names is set, and stays while
            // the array lives.
            *dict.add(usize::from(leaf))
        } else {
            list_deep(dict, ip, l, leaf, deep)
        }
    }
}

/// The flat word of `ip`'s block in the flat array `f`.
///
/// # Safety
/// `f` must be a live flat array read inside a read-side section of its
/// table's domain (or by the writer).
#[inline(always)]
unsafe fn flat_word(f: *const AtomicU32, ip: u32) -> u32 {
    // SAFETY: caller's contract; ip >> 14 is below FLAT_LEN.
    unsafe { (*f.add((ip >> (32 - TOP_BITS)) as usize)).load(Ordering::Acquire) }
}

/// [`list_answer`] for a key whose leaf in the block's list `l` is
/// `leaf`, [`L_DEEP`] or a sub-list's: down the sub-lists to a leaf of a
/// value; where that is [`L_DEEP`], the chunk the list names walked, or
/// where it names none, `deep`'s answer.
///
/// # Safety
/// As for [`list_answer`].
#[cold]
#[inline(never)]
unsafe fn list_deep(
    dict: *const u32,
    ip: u32,
    l: usize,
    leaf: u16,
    deep: impl FnOnce() -> u32,
) -> u32 {
    // SAFETY: caller's contract: a list with an L_DEEP or sub-list leaf
    // has its trailer word after its leaves, naming its block's chunk,
    // live as long as the list is (retired together: a new chunk gets a
    // new list), and after it the offsets of its sub-lists, which lie
    // inside the list's block; a sub-list's offsets follow its leaves.
    // Sub-lists are two levels deep at most, the second's leaves name
    // none, so the walk ends.
    unsafe {
        let n = (*(l as *const u64)).count_ones() as usize;
        let t = l + 8 * list_words(n);
        let key18 = (ip & 0x3fff) << 4;
        let (mut leaf, mut offs, mut shift) = (leaf, t + 8, 12);
        while (L_SUB..L_SUB + 64).contains(&leaf) && shift > 0 {
            let k = usize::from(leaf - L_SUB);
            let at = l + 8 * usize::from(*((offs + 2 * k) as *const u16));
            shift -= 6;
            leaf = list_leaf(at, (key18 >> shift) & 63);
            offs = at + 8 * list_words((*(at as *const u64)).count_ones() as usize);
        }
        if leaf < L_SUB {
            return *dict.add(usize::from(leaf));
        }
        let c = (*(t as *const u64) & TRAILER_CHUNK) as usize;
        if c == 0 {
            deep()
        } else {
            chunk_answer(ip, c as *const AtomicU64)
        }
    }
}

/// Start fetching the list at `l`: the line of its head, which holds the
/// leaf a key needs for nearly every key (the lists' pool keeps a list's
/// head and leaves in one line where they fit one). Asking for the next
/// line too where the leaves reach it, on every key, cost more than the
/// few misses it saved (see BENCHMARKS.md).
#[inline(always)]
fn prefetch_list(l: usize) {
    prefetch(l as *const u8);
}

/// Unmap a flat array (words and dictionary).
///
/// # Safety
/// `p` must be a flat array unreachable by any reader, freed once.
unsafe fn free_flat(p: *mut ()) {
    // SAFETY: caller's contract: a region from `arena::own_region`.
    unsafe { arena::unmap_region(p.cast()) };
}

/// Free a leaf list.
///
/// # Safety
/// `p` must be a list from `Lpm::new_list`, unreachable by any reader,
/// freed once.
unsafe fn free_list(p: *mut ()) {
    // SAFETY: caller's contract.
    unsafe { arena::free_list(p.cast(), list_size(p as usize)) };
}

/// Words of the live list at `l`: its head and leaves, and where a leaf
/// is [`L_DEEP`] or names a sub-list, its trailer (which counts its words
/// with the sub-lists').
///
/// # Safety
/// `l` must be a live list.
unsafe fn list_size(l: usize) -> usize {
    // SAFETY: caller's contract: its leafvec counts its leaves; a trailer
    // follows them where one is deep or names a sub-list.
    unsafe {
        let n = (*(l as *const u64)).count_ones() as usize;
        let leaves = std::slice::from_raw_parts((l + LIST_HEAD) as *const u16, n);
        let w = list_words(n);
        if leaves.iter().any(|x| *x >= L_SUB) {
            (*((l + 8 * w) as *const u64) >> 48) as usize
        } else {
            w
        }
    }
}

/// Shared leaf lists a flat array keeps at least before a fresh array
/// trims those not in use.
const LISTS_MIN: usize = 4096;

thread_local! {
    /// A sparse /8's runs while they are rebuilt.
    static RUNS: Cell<Vec<(u16, usize)>> = const { Cell::new(Vec::new()) };
    /// A sparse /8's runs while they are copied to the flat array (inside
    /// changes that hold `RUNS`).
    static FLAT_RUNS: Cell<Vec<(u16, usize)>> = const { Cell::new(Vec::new()) };
    /// The chunks a sparse /8 lists, while their defaults are refreshed.
    static LISTED: Cell<Vec<(u16, usize)>> = const { Cell::new(Vec::new()) };
    /// The chunks a sparse /8 lists, while its runs are recomputed.
    static CHUNKS: Cell<Vec<(u16, usize)>> = const { Cell::new(Vec::new()) };
    /// The blocks where a sparse /8's word may change.
    static POINTS: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
    /// Spare run lists for sparse /8s' drafts while changes are held.
    static DRAFTS: Cell<Vec<Vec<(u16, usize)>>> = const { Cell::new(Vec::new()) };
    /// The words of a chunk while it is built.
    static WORDS: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    /// A chunk's children (key, published word) while it is built.
    static KIDS: Cell<Vec<(u16, u64)>> = const { Cell::new(Vec::new()) };
}

/// An empty run list for a draft: a spare one of this thread's if it has
/// one. A run of changes drafts dozens of /8s, each list growing to a few
/// dozen runs; growing fresh ones took more of the writer's time than it
/// saved.
fn draft_list() -> Vec<(u16, usize)> {
    DRAFTS
        .try_with(|c| {
            let mut spare = c.take();
            let v = spare.pop();
            c.set(spare);
            v
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(32))
}

/// Give back a draft's run list (up to 256 kept per thread, one per /8).
fn spare_draft_list(mut v: Vec<(u16, usize)>) {
    v.clear();
    let _ = DRAFTS.try_with(|c| {
        let mut spare = c.take();
        if spare.len() < 256 {
            spare.push(v);
        }
        c.set(spare);
    });
}

/// Borrow one of the writer's per-thread scratch vectors (empty). A writer
/// recomputes a sparse /8's runs for many changes; with vectors of their
/// own, those were half of a route install's malloc and free calls. Per
/// thread rather than per table, so that thousands of small tables do not
/// each keep one.
pub(super) fn scratch<T>(key: &'static LocalKey<Cell<Vec<T>>>) -> Vec<T> {
    let mut v = key.try_with(Cell::take).unwrap_or_default();
    v.clear();
    v
}

/// Give back what [`scratch`] lent.
pub(super) fn unscratch<T>(key: &'static LocalKey<Cell<Vec<T>>>, v: Vec<T>) {
    let _ = key.try_with(|c| c.set(v));
}

#[inline(always)]
pub(super) fn leaf(v: u32) -> usize {
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

/// The writer's map from values to their dictionary indexes, with a small
/// direct-mapped front: a block's list asks for the index of each of its
/// runs' values, on every change, and most of a table's values are a few
/// thousand nexthops whose entries then stay in the first-level cache.
struct DictIx {
    map: IntMap<u32, u16>,
    /// (value, index) by the value's low bits. An empty entry holds a
    /// value whose low bits name another entry, so it matches no lookup.
    hot: Box<[(u32, u16)]>,
}

/// Entries of [`DictIx`]'s front (32 KiB).
const DICT_HOT: usize = 1 << 12;

impl Default for DictIx {
    fn default() -> Self {
        DictIx {
            map: IntMap::default(),
            hot: (0..DICT_HOT).map(|h| ((h ^ 1) as u32, 0)).collect(),
        }
    }
}

impl DictIx {
    #[inline(always)]
    fn hot_slot(v: u32) -> usize {
        v as usize & (DICT_HOT - 1)
    }

    fn get(&self, v: &u32) -> Option<u16> {
        self.map.get(v).copied()
    }

    fn insert(&mut self, v: u32, i: u16) {
        self.map.insert(v, i);
        self.hot[Self::hot_slot(v)] = (v, i);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (&u32, &u16)> {
        self.map.iter()
    }
}

/// A dense /8's slots, in an [`super::arena`] block of [`SEG_LEN`] words.
#[repr(C)]
struct Segment {
    slots: [AtomicUsize; SEG_LEN],
}

impl Segment {
    /// A new segment, slot b holding `slot(b)`, not yet shared.
    fn alloc(mut slot: impl FnMut(usize) -> usize) -> *mut Segment {
        let p = super::arena::alloc(SEG_LEN);
        for b in 0..SEG_LEN {
            // SAFETY: the block holds SEG_LEN words and is ours.
            unsafe { p.add(b).write(AtomicU64::new(slot(b) as u64)) };
        }
        // A segment is SEG_LEN words (repr(C), one array of usize, which
        // is 64 bits: see the assertion by SOLO_TAG).
        p.cast()
    }
}

const _: () = assert!(
    core::mem::size_of::<Segment>() == SEG_LEN * 8,
    "a segment is the arena block of SEG_LEN words it is made in"
);

/// Free a segment (not its chunks).
///
/// # Safety
/// `p` must come from [`Segment::alloc`], be unreachable by any reader,
/// and be freed once.
unsafe fn free_segment(p: *mut ()) {
    // SAFETY: caller's contract.
    unsafe { super::arena::free(p.cast(), SEG_LEN) };
}

/// Most runs a sparse segment lists before its /8 turns dense.
pub const SPARSE_MAX: usize = 128;

/// Keys a batch lookup takes through its passes at a time (a burst).
const BATCH: usize = 64;

/// Tag of a root word pointing at a sparse segment (pointers are 8-aligned;
/// leaves have bit 0 set).
const SPARSE_TAG: usize = 2;

/// Tag of a *solo* slot word: an IPv4 block whose only route longer than
/// /18 is held in the word itself instead of a chunk of its own (a VRF's
/// scattered /24s each fill a block alone). Bits 2–15: the route's start in
/// the block's 14 bits; 16–19: its length beyond /18; 20–41: its nexthop;
/// 42–63: the block's default (the best route of length ≤ 18 over it), or
/// [`SOLO_NONE`]. A route or default whose nexthop does not fit gets a
/// chunk.
const SOLO_TAG: usize = 2;

/// A solo word's "no default"; nexthops below it fit a solo word.
const SOLO_NONE: u32 = (1 << 22) - 1;

const _: () = assert!(usize::BITS == 64, "slot words hold 64 bits");

/// The solo word for the route (start, length beyond /18, nexthop) over a
/// block whose default is `default`, if they fit one.
fn solo_word(start: u16, lw: u8, nh: u32, default: u32) -> Option<usize> {
    if nh >= SOLO_NONE || lw == 0 || lw > 14 {
        return None;
    }
    let d = match default {
        NO_ROUTE => SOLO_NONE,
        d if d < SOLO_NONE => d,
        _ => return None,
    };
    Some(
        SOLO_TAG
            | (usize::from(start) & 0x3fff) << 2
            | usize::from(lw) << 16
            | (nh as usize) << 20
            | (d as usize) << 42,
    )
}

/// The default (the value of the routes of length ≤ 18 over the block)
/// that block word `w` carries: a chunk's or a solo word's; none for a
/// leaf or no word.
fn word_default(w: usize) -> Option<u32> {
    if is_chunk(w) {
        // SAFETY: only the writer calls this, on a word it published and
        // has not freed.
        Some(unsafe { poptrie::default_raw(w as *const AtomicU64) })
    } else if is_solo(w) {
        Some(match (w >> 42) as u32 {
            SOLO_NONE => NO_ROUTE,
            d => d,
        })
    } else {
        None
    }
}

/// Look up the low 14 bits of an IPv4 address in solo word `w`.
#[inline(always)]
fn solo_lookup(w: usize, low14: u32) -> u32 {
    let start = (w >> 2) & 0x3fff;
    let lw = (w >> 16) & 0xf;
    if ((low14 as usize ^ start) >> (14 - lw)) == 0 {
        ((w >> 20) & SOLO_NONE as usize) as u32
    } else {
        match (w >> 42) as u32 {
            SOLO_NONE => NO_ROUTE,
            d => d,
        }
    }
}

/// True for a slot word that points at a chunk (not a leaf, not solo).
#[inline(always)]
fn is_chunk(w: usize) -> bool {
    w & 3 == 0 && w != 0
}

/// True for a solo slot word.
#[inline(always)]
fn is_solo(w: usize) -> bool {
    w & 3 == SOLO_TAG
}

/// The slot word for block `b` under a non-leaf root word `r`.
///
/// # Safety
/// `r` must be a root word of a live table read inside a read-side section
/// (or by the writer), not a leaf.
#[inline(always)]
unsafe fn slot_of(r: usize, b: usize) -> usize {
    if r & SPARSE_TAG == 0 {
        // SAFETY: caller's contract: a live dense segment.
        unsafe { &*(r as *const Segment) }.slots[b].load(Ordering::Acquire)
    } else {
        // SAFETY: caller's contract: a live sparse segment.
        unsafe { sparse_slot(r & !SPARSE_TAG, b) }
    }
}

/// View the chunk whose pointer is `p` (all its words).
///
/// # Safety
/// `p` must be the pointer of a live chunk from [`poptrie::build_raw`]
/// (published and not yet freed).
#[inline(always)]
unsafe fn chunk<'a>(p: usize) -> &'a Words {
    // SAFETY: caller's contract.
    unsafe { poptrie::words(p as *const AtomicU64) }
}

/// Start fetching the first three lines (root node and covering value, the
/// root's leaves) of the chunk slot word `s` names, without a branch: a word that
/// names none has the empty chunk's line asked for instead (a cache hit).
/// A tenth of a full table's slot words are leaves, at random.
#[inline(always)]
fn prefetch_chunk(s: usize) {
    let c = core::hint::select_unpredictable(s & 3 == 0, s, poptrie::EMPTY.first() as usize);
    prefetch(c as *const u8);
    prefetch((c + 64) as *const u8);
    prefetch((c + 128) as *const u8);
}

/// Ask for the lines an IPv6 walk reads in the chunk whose pointer is
/// `c`: the first `lines` lines from the root, where its nodes, leaves
/// and children lie for most chunks. (The word before the root, where the
/// root's leaves start, shares the root's line: blocks are 16-byte
/// aligned and the root lies one word in.) An IPv6 chunk's walk reads up
/// to three nodes, a leaf and often a child's word, each depending on the
/// one before: asking for all of them at once turns four dependent misses
/// into one wait.
#[inline(always)]
fn prefetch_chunk_v6(c: usize, lines: usize) {
    for i in 0..lines {
        prefetch(c.wrapping_add(64 * i) as *const u8);
    }
}

/// Free a chunk (not its children).
///
/// # Safety
/// `p` must be the pointer of a chunk from [`poptrie::build_raw`],
/// unreachable by any reader, freed once.
unsafe fn free_chunk_words(p: *mut ()) {
    // SAFETY: caller's contract.
    unsafe { poptrie::free(p as *const AtomicU64) };
}

use crate::rcu::prefetch;

/// The slot word an IPv4 lookup goes on from ([`crate::fib::VrfFib::slot_v4`]),
/// good for the read-side section it was read in (its lifetime).
///
/// From a table with the flat array: the key's leaf list and the array's
/// dictionary (never 0); else the slot word and 0.
#[derive(Clone, Copy, Debug)]
pub struct SlotWord<'s>(usize, usize, core::marker::PhantomData<&'s ()>);

impl Default for SlotWord<'_> {
    /// A word that answers "no route".
    fn default() -> Self {
        SlotWord(leaf(NO_ROUTE), 0, core::marker::PhantomData)
    }
}

/// The rest of an IPv4 lookup of `ip` from its block's slot word `s`: a
/// leaf, a solo word or a chunk.
///
/// # Safety
/// `s` must be a slot (or leaf root) word read from a live table inside
/// the read-side section still in force.
#[inline(always)]
unsafe fn resolve_word(ip: u32, s: usize) -> u32 {
    if s & 3 == SOLO_TAG {
        return solo_lookup(s, ip & 0x3fff);
    }
    // A leaf's answer or a chunk's, without a branch between them: a leaf
    // walks the empty chunk, and the answer is picked after. (A tenth of
    // a full table's lookups end at a leaf, unpredictably.)
    let first =
        core::hint::select_unpredictable(s & 1 == 0, s as *const AtomicU64, poptrie::EMPTY.first());
    // SAFETY: caller's contract: a chunk published in a live segment, or
    // the static empty chunk.
    let v = unsafe { chunk_answer(ip, first) };
    core::hint::select_unpredictable(s & 1 == 1, (s >> 1) as u32, v)
}

/// An IPv4 chunk's answer for `ip`: its own routes', else its covering
/// value.
///
/// # Safety
/// `first` must be the pointer of a live IPv4 chunk, read inside the
/// read-side section still in force (or the static empty chunk).
#[inline(always)]
unsafe fn chunk_answer(ip: u32, first: *const AtomicU64) -> u32 {
    // SAFETY: caller's contract.
    let (v, d) = unsafe {
        (
            poptrie::lookup14_raw(first, ip & 0x3fff),
            poptrie::default_raw(first),
        )
    };
    core::hint::select_unpredictable(v == NO_ROUTE, d, v)
}

/// The part of a table readers see. Owned by an `Arc`; freed (with
/// everything reachable from it) when the last owner drops it.
pub struct LpmShared {
    root: Box<[AtomicUsize; 256]>,
    /// A large IPv4 table's flat array: [`FLAT_LEN`] words, each naming
    /// its block's leaf list, then the dictionary of the values the lists'
    /// leaves name (null: none).
    flat: AtomicPtr<AtomicU32>,
    /// The flat array's shared leaf lists, for blocks a leaf answers, by
    /// its value. Only the writer uses it (the mutex is
    /// never contended); here because they must live as long as readers
    /// may hold the table, which may outlive its writer.
    values: std::sync::Mutex<IntMap<u32, u32>>,
    /// The domain whose guards may read this table, named weakly: the
    /// domain may hold this table (retired with its VRF), and a strong
    /// reference back would keep both alive for ever.
    domain: WeakDomain,
}

impl LpmShared {
    fn new(domain: &Domain) -> LpmShared {
        LpmShared {
            root: Box::new(std::array::from_fn(|_| AtomicUsize::new(leaf(NO_ROUTE)))),
            flat: AtomicPtr::new(core::ptr::null_mut()),
            values: std::sync::Mutex::default(),
            domain: domain.downgrade(),
        }
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

    /// Look up a batch of IPv4 addresses, 64 at a time, in two passes over
    /// each 64: read every key's flat word and ask for the list it names
    /// (without the flat array: its segment slot, and the chunk it names);
    /// answer every key from its list (walk every chunk), the few whose
    /// /24 holds longer routes in a third pass. The cache misses of
    /// different keys overlap instead of adding up (the reads of the first
    /// pass are independent, so the processor has dozens in flight), and
    /// each pass is a short loop without the bookkeeping of a pipeline.
    ///
    /// # Panics
    /// Panics if `g` belongs to another domain or `out` is shorter than `ips`.
    pub fn lookup_v4_batch(&self, g: &Guard<'_>, ips: &[u32], out: &mut [u32]) {
        assert!(self.domain.owns(g), "guard from another domain");
        let out = &mut out[..ips.len()];
        for (ks, os) in ips.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            self.batch_v4(ks, os);
        }
    }

    /// [`LpmShared::lookup_v4_batch`] for at most [`BATCH`] keys.
    #[inline(always)]
    fn batch_v4(&self, ks: &[u32], os: &mut [u32]) {
        // Per key: its slot word (for a /8 without a segment, its root
        // word).
        let mut at = [0usize; BATCH];
        let flat = self.flat.load(Ordering::Acquire);
        if !flat.is_null() {
            let base = arena::lists();
            for (&ip, a) in ks.iter().zip(at.iter_mut()) {
                // SAFETY: a published flat array, read inside the caller's
                // read-side section: retired only after being unlinked.
                let w = unsafe { flat_word(flat, ip) };
                let l = list_of(base, w);
                prefetch_list(l);
                *a = l;
            }
            let dict = flat.wrapping_add(FLAT_LEN).cast::<u32>();
            // Keys whose slot holds longer routes (a leaf of a sub-list or
            // L_DEEP), finished last, the line of their sub-list's offset
            // asked for first, so that the misses of their walks overlap
            // the other keys' work. The leaf waits in the key's answer.
            let mut later = [0u8; BATCH];
            let mut n = 0;
            for (i, ((&ip, &l), o)) in ks.iter().zip(at.iter()).zip(os.iter_mut()).enumerate() {
                // SAFETY: a list the array named, read in the caller's
                // read-side section, still in force.
                unsafe {
                    let leaf = list_leaf(l, (ip >> 8) & 63);
                    if leaf < L_SUB {
                        *o = *dict.add(usize::from(leaf));
                    } else {
                        let lw = list_words((*(l as *const u64)).count_ones() as usize);
                        let k = usize::from(leaf.wrapping_sub(L_SUB) & 63);
                        prefetch((l + 8 * lw + 8 + 2 * k) as *const u8);
                        *o = u32::from(leaf);
                        later[n] = i as u8;
                        n += 1;
                    }
                }
            }
            for &i in &later[..n] {
                let i = usize::from(i);
                let ip = ks[i];
                // SAFETY: as above; the leaf is the list's for the key.
                os[i] = unsafe { list_deep(dict, ip, at[i], os[i] as u16, || self.deep_v4(ip)) };
            }
            return;
        }
        let root = &*self.root;
        for (&ip, a) in ks.iter().zip(at.iter_mut()) {
            let r = root[(ip >> 24) as usize].load(Ordering::Acquire);
            let s = if r & 1 == 1 {
                r
            } else {
                // SAFETY: see `lookup_v4_trusted`.
                unsafe { slot_of(r, ((ip >> 14) as usize) & (SEG_LEN - 1)) }
            };
            prefetch_chunk(s);
            *a = s;
        }
        for ((&ip, &s), o) in ks.iter().zip(at.iter()).zip(os.iter_mut()) {
            // SAFETY: `s` is the word the pass above read for this key
            // inside the caller's read-side section.
            *o = unsafe { resolve_word(ip, s) };
        }
    }

    /// Start fetching the segment slot a lookup of `ip` will read (for a
    /// sparse /8, its segment's first line).
    #[inline(always)]
    pub(crate) fn prefetch_slot_v4(&self, ip: u32) {
        let flat = self.flat.load(Ordering::Acquire);
        if !flat.is_null() {
            prefetch(flat.wrapping_add((ip >> (32 - TOP_BITS)) as usize).cast());
            return;
        }
        let r = self.root[(ip >> 24) as usize].load(Ordering::Acquire);
        if r & 1 == 1 {
            return;
        }
        if r & SPARSE_TAG != 0 {
            prefetch((r & !SPARSE_TAG) as *const u8);
            return;
        }
        // SAFETY: see `lookup_v4_trusted`.
        let seg = unsafe { &*(r as *const Segment) };
        prefetch(core::ptr::from_ref(&seg.slots[((ip >> 14) as usize) & (SEG_LEN - 1)]).cast());
    }

    /// The slot word a lookup of `ip` goes on from (a leaf root word for a
    /// /8 without a segment), having started to fetch the chunk it names:
    /// the first half of a lookup, finished by [`LpmShared::resolve_v4`]
    /// once the chunk is likely cached.
    #[inline(always)]
    pub(crate) fn slot_v4(&self, ip: u32) -> SlotWord<'_> {
        let flat = self.flat.load(Ordering::Acquire);
        if !flat.is_null() {
            // SAFETY: see `lookup_v4_trusted`.
            let w = unsafe { flat_word(flat, ip) };
            let l = list_of(arena::lists(), w);
            prefetch_list(l);
            let dict = flat.wrapping_add(FLAT_LEN) as usize;
            return SlotWord(l, dict, core::marker::PhantomData);
        }
        let r = self.root[(ip >> 24) as usize].load(Ordering::Acquire);
        if r & 1 == 1 {
            return SlotWord(r, 0, core::marker::PhantomData);
        }
        // SAFETY: see `lookup_v4_trusted`.
        let s = unsafe { slot_of(r, ((ip >> 14) as usize) & (SEG_LEN - 1)) };
        prefetch_chunk(s);
        SlotWord(s, 0, core::marker::PhantomData)
    }

    /// The rest of a lookup of `ip` from its slot word, as
    /// [`LpmShared::slot_v4`] returned it (for `ip`, or another address
    /// of any table of the same domain: the answer is then that word's).
    #[inline(always)]
    pub(crate) fn resolve_v4(&self, ip: u32, s: SlotWord<'_>) -> u32 {
        // SAFETY: a SlotWord is made only by `slot_v4`, from a live table
        // inside a read-side section its lifetime keeps in force (from its
        // flat array when the second field is not 0).
        unsafe {
            if s.1 != 0 {
                list_answer(s.1 as *const u32, ip, s.0, || self.deep_v4(ip))
            } else {
                resolve_word(ip, s.0)
            }
        }
    }

    /// Lookup for a caller that checked the guard's domain once.
    #[inline(always)]
    pub(crate) fn lookup_v4_trusted(&self, ip: u32) -> u32 {
        let flat = self.flat.load(Ordering::Acquire);
        if !flat.is_null() {
            // SAFETY: a published flat array names only leaves readers may
            // read, and is unmapped only after being unlinked and a grace
            // period; the caller is inside a read-side section.
            return unsafe {
                let l = list_of(arena::lists(), flat_word(flat, ip));
                list_answer(flat.add(FLAT_LEN).cast(), ip, l, || self.deep_v4(ip))
            };
        }
        self.lookup_v4_segments(ip)
    }

    /// A flat lookup whose leaf is [`L_DEEP`] in a list that names no
    /// chunk (a solo word's block, the fallback list): through root and
    /// segments, which the flat array mirrors.
    #[cold]
    #[inline(never)]
    fn deep_v4(&self, ip: u32) -> u32 {
        self.lookup_v4_segments(ip)
    }

    /// Lookup through root and segments (without the flat array).
    #[inline(always)]
    fn lookup_v4_segments(&self, ip: u32) -> u32 {
        let r = self.root[(ip >> 24) as usize].load(Ordering::Acquire);
        if r & 1 == 1 {
            return (r >> 1) as u32;
        }
        // SAFETY: an even root word points at a live (dense or sparse)
        // segment: segments are freed only after being unlinked and a grace
        // period, and the caller is inside a read-side section of this
        // table's domain.
        let s = unsafe { slot_of(r, ((ip >> 14) as usize) & (SEG_LEN - 1)) };
        // SAFETY: as above, for the word just read.
        unsafe { resolve_word(ip, s) }
    }

    #[inline]
    pub(crate) fn lookup_v6_trusted(&self, ip: u128) -> u32 {
        let r = self.root[(ip >> 120) as usize].load(Ordering::Acquire);
        if r & 1 == 1 {
            return (r >> 1) as u32;
        }
        // SAFETY: see `lookup_v4_trusted`.
        let s = unsafe { slot_of(r, ((ip >> 110) as usize) & (SEG_LEN - 1)) };
        self.walk_v6(ip, s)
    }

    /// The rest of an IPv6 lookup from the slot word `s` of its block.
    #[inline(always)]
    fn walk_v6(&self, ip: u128, s: usize) -> u32 {
        match Self::first_v6(ip, s) {
            V6Walk::Done(v) => v,
            // SAFETY: a child chunk named by a live chunk (see `step_v6`).
            V6Walk::Child(at) => unsafe { Self::walk_second_v6(ip, at.p, at.best) },
        }
    }

    /// The first chunk of an IPv6 lookup from the slot word `s` of its
    /// block: the answer, or the child chunk where the walk goes on.
    #[inline(always)]
    fn first_v6(ip: u128, s: usize) -> V6Walk {
        if s & 1 == 1 {
            return V6Walk::Done((s >> 1) as u32);
        }
        let p = s as *const AtomicU64;
        // SAFETY: as in `lookup_v4_trusted`; chunk pointers (segment slots
        // and child words) are published and retired like segments, so
        // every chunk walked is live.
        unsafe {
            // One read of the root's third word gives the default and the
            // walk's first step.
            let third = poptrie::third_word(p);
            let at = V6At {
                p,
                best: (third >> 32) as u32,
                start: TOP_BITS,
            };
            Self::step_v6_at(ip, at, third)
        }
    }

    /// Walk an IPv6 lookup on from `at` to its answer: out of line, as
    /// only keys past a /50 come here (see `walk_second_v6`).
    ///
    /// # Safety
    /// `at.p` is a live chunk of this table, read inside a read-side
    /// section.
    #[cold]
    #[inline(never)]
    unsafe fn walk_v6_from(ip: u128, mut at: V6At) -> u32 {
        loop {
            // SAFETY: caller's contract, and each child named by a live
            // chunk is live.
            match unsafe { Self::step_v6(ip, at) } {
                V6Walk::Done(v) => return v,
                V6Walk::Child(next) => at = next,
            }
        }
    }

    /// One chunk of an IPv6 walk.
    ///
    /// # Safety
    /// As [`LpmShared::walk_v6_from`].
    #[inline(always)]
    unsafe fn step_v6(ip: u128, at: V6At) -> V6Walk {
        // SAFETY: caller's contract.
        unsafe { Self::step_v6_at(ip, at, poptrie::third_word(at.p)) }
    }

    /// [`LpmShared::step_v6`] given the chunk's root's third word.
    ///
    /// # Safety
    /// As [`LpmShared::walk_v6_from`]; `third` read from `at.p`.
    #[inline(always)]
    unsafe fn step_v6_at(ip: u128, at: V6At, third: u64) -> V6Walk {
        // The first chunks (bits 18..34 and 34..50, where a /48 lies) take
        // their 16-bit slice from the key's high half, without a 128-bit
        // shift.
        let (w, k) = if at.start <= 48 {
            (16, (((ip >> 64) as u64) << at.start >> 48) as u32)
        } else {
            let w = width(at.start, 128);
            (w, ((ip << at.start) >> (128 - w)) as u32)
        };
        // SAFETY: caller's contract; an IPv6 chunk may skip.
        let v = unsafe { poptrie::lookup_slice_at(at.p, third, w, k) };
        if v == NO_ROUTE {
            return V6Walk::Done(at.best);
        }
        if v & CHILD == 0 {
            return V6Walk::Done(v);
        }
        // SAFETY: `v` names a child of the live chunk `at.p`.
        let (kp, def) = unsafe { poptrie::kid_raw(at.p, (v & !CHILD) as usize) };
        let best = if def == NO_ROUTE { at.best } else { def };
        let p = kp as usize as *const AtomicU64;
        let start = at.start + w;
        if p.is_null() || start >= 128 {
            return V6Walk::Done(best);
        }
        V6Walk::Child(V6At { p, best, start })
    }

    /// Look up a batch of IPv6 addresses, software-pipelined like
    /// [`LpmShared::lookup_v4_batch`]: the root word and segment slot of a
    /// key are fetched a few keys ahead of its walk, and its first chunk's
    /// lines prefetched, so the misses of different keys overlap. A key
    /// whose walk goes on below its first chunk (a /48 lies in the second)
    /// waits with that child chunk asked for, and is finished once sixteen
    /// keys wait: 40 % more lookups than walking each key to its end at
    /// once with eight waiting, and some 4 % more again with sixteen (the
    /// child's deeper lines have longer to arrive).
    ///
    /// # Panics
    /// Panics if `g` belongs to another domain or `out` is shorter than `ips`.
    pub fn lookup_v6_batch(&self, g: &Guard<'_>, ips: &[u128], out: &mut [u32]) {
        const AHEAD: usize = 8;
        const RING: usize = 4 * AHEAD;
        const LAG: usize = 16;
        assert!(self.domain.owns(g), "guard from another domain");
        let n = ips.len();
        let out = &mut out[..n];
        let mut slot_at = [0usize; RING];
        let mut word = [0usize; RING];
        let stage_a = |i: usize, slot_at: &mut [usize; RING], word: &mut [usize; RING]| {
            let ip = ips[i];
            let r = self.root[(ip >> 120) as usize].load(Ordering::Acquire);
            let b = ((ip >> 110) as usize) & (SEG_LEN - 1);
            if r & 1 == 1 {
                word[i % RING] = r;
                slot_at[i % RING] = 0;
            } else if r & SPARSE_TAG != 0 {
                // SAFETY: see `lookup_v4_trusted`.
                let s = unsafe { sparse_slot(r & !SPARSE_TAG, b) };
                if s & 1 == 0 {
                    prefetch_chunk_v6(s, 4);
                }
                word[i % RING] = s;
                slot_at[i % RING] = 0;
            } else {
                // SAFETY: see `lookup_v4_trusted`.
                let seg = unsafe { &*(r as *const Segment) };
                let at = core::ptr::from_ref(&seg.slots[b]);
                prefetch(at.cast());
                slot_at[i % RING] = at as usize;
            }
        };
        let stage_b = |i: usize, slot_at: &[usize; RING], word: &mut [usize; RING]| {
            let at = slot_at[i % RING];
            if at != 0 {
                // SAFETY: `at` is a slot of a live segment (stage A).
                let s = unsafe { &*(at as *const AtomicUsize) }.load(Ordering::Acquire);
                if s & 3 == 0 {
                    prefetch_chunk_v6(s, 4);
                }
                word[i % RING] = s;
            }
        };
        for i in 0..n.min(2 * AHEAD) {
            stage_a(i, &mut slot_at, &mut word);
        }
        for i in 0..n.min(AHEAD) {
            stage_b(i, &slot_at, &mut word);
        }
        // Keys whose walk goes on below their first chunk wait here, their
        // next chunk asked for, and are finished a few keys later: the
        // key's index, the child chunk and the best answer above it.
        let mut waiting = [(0usize, core::ptr::null::<AtomicU64>(), NO_ROUTE); LAG];
        let mut held = 0;
        for i in 0..n {
            if i + 2 * AHEAD < n {
                stage_a(i + 2 * AHEAD, &mut slot_at, &mut word);
            }
            if i + AHEAD < n {
                stage_b(i + AHEAD, &slot_at, &mut word);
            }
            match Self::first_v6(ips[i], word[i % RING]) {
                V6Walk::Done(v) => out[i] = v,
                V6Walk::Child(at) => {
                    debug_assert_eq!(at.start, SECOND_V6);
                    // Four lines, as for a first chunk: measured faster
                    // than three, and than fewer for either (see
                    // BENCHMARKS.md).
                    prefetch_chunk_v6(at.p as usize, 4);
                    waiting[held] = (i, at.p, at.best);
                    held += 1;
                    if held == LAG {
                        for &(j, p, best) in &waiting {
                            // SAFETY: a live child chunk (`step_v6`).
                            out[j] = unsafe { Self::walk_second_v6(ips[j], p, best) };
                        }
                        held = 0;
                    }
                }
            }
        }
        for &(j, p, best) in &waiting[..held] {
            // SAFETY: as above.
            out[j] = unsafe { Self::walk_second_v6(ips[j], p, best) };
        }
    }

    /// An IPv6 walk from its second chunk, `p`, on, `best` the first
    /// chunk's answer: the step through the second chunk (where a /48
    /// ends) with its start known, the rare deeper steps out of line.
    ///
    /// # Safety
    /// `p` is a live chunk of this table, a child of a first chunk, read
    /// inside a read-side section.
    #[inline(always)]
    unsafe fn walk_second_v6(ip: u128, p: *const AtomicU64, best: u32) -> u32 {
        let at = V6At {
            p,
            best,
            start: SECOND_V6,
        };
        // SAFETY: caller's contract.
        match unsafe { Self::step_v6(ip, at) } {
            V6Walk::Done(v) => v,
            // SAFETY: a child of a live chunk.
            V6Walk::Child(next) => unsafe { Self::walk_v6_from(ip, next) },
        }
    }
}

/// The bit an IPv6 walk's second chunk starts at: the first covers 16
/// bits after the segments' 18.
const SECOND_V6: u32 = TOP_BITS + 16;

/// Where an IPv6 walk stands: the chunk to read next, the best answer of
/// the chunks above it, and the bit the chunk starts at.
#[derive(Clone, Copy)]
struct V6At {
    p: *const AtomicU64,
    best: u32,
    start: u32,
}

/// One step of an IPv6 walk.
enum V6Walk {
    Done(u32),
    Child(V6At),
}

/// Bits a chunk starting at bit `start` covers in a family of `max` bits.
#[inline(always)]
fn width(start: u32, max: u32) -> u32 {
    (max - start).min(16)
}

/// Free a chunk and its children, recursively.
///
/// # Safety
/// Only for `LpmShared::drop`: `p` reachable from the root, reachable once.
unsafe fn free_tree(p: usize) {
    // SAFETY: caller's contract.
    let d = unsafe { chunk(p) };
    let mut i = 0;
    while let Some((kp, _)) = poptrie::kid(d, i) {
        let kp = kp.load(Ordering::Acquire) as usize;
        if kp != 0 {
            // SAFETY: children are reachable only through their parent.
            unsafe { free_tree(kp) };
        }
        i += 1;
    }
    // SAFETY: caller's contract.
    unsafe { free_chunk_words(p as *mut ()) };
}

impl Drop for LpmShared {
    fn drop(&mut self) {
        let flat = self.flat.load(Ordering::Acquire);
        if !flat.is_null() {
            // SAFETY: last owner; the array's words name its blocks' own
            // lists and shared ones (in the map), freed here; chunks are
            // freed below through the segments.
            unsafe {
                for i in 0..FLAT_LEN {
                    let w = (*flat.add(i)).load(Ordering::Relaxed);
                    if w & OWN_LIST != 0 {
                        free_list(list_of(arena::lists(), w) as *mut ());
                    }
                }
                free_flat(flat.cast());
                for (_, l) in self
                    .values
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain()
                {
                    free_list(list_of(arena::lists(), l) as *mut ());
                }
            }
        }
        for r in self.root.iter() {
            let r = r.load(Ordering::Acquire);
            if r & 1 == 1 {
                continue;
            }
            if r & SPARSE_TAG != 0 {
                let p = r & !SPARSE_TAG;
                // SAFETY: last owner; a live sparse segment reachable only
                // from here, listing chunks reachable only through it.
                unsafe {
                    let (nl, ns) = sparse_counts(p as *const usize);
                    for i in 0..ns {
                        let c = *(p as *const usize).add(1 + nl + i);
                        if is_chunk(c) {
                            free_tree(c);
                        }
                    }
                    free_sparse(p as *mut ());
                }
                continue;
            }
            // SAFETY: last owner; the segment is reachable only from here.
            let seg = unsafe { &*(r as *const Segment) };
            for s in seg.slots.iter() {
                let s = s.load(Ordering::Acquire);
                if is_chunk(s) {
                    // SAFETY: reachable from this segment only.
                    unsafe { free_tree(s) };
                }
            }
            // SAFETY: as above; its chunks are freed.
            unsafe { free_segment(r as *mut ()) };
        }
    }
}

/// The writer's shadow of one chunk: 24 bytes, for there is one per chunk
/// and a VRF's scattered routes each get a chunk of their own.
#[derive(Default)]
struct ChunkW {
    routes: ChunkRoutes,
    published: usize,
    /// Children and rank in the parent (IPv6 only).
    sub: Option<Box<Sub>>,
}

#[derive(Default)]
struct Sub {
    kids: BTreeMap<u16, ChunkW>,
    rank: u32,
}

impl ChunkW {
    /// The shadow of a block published as solo word `w`: the writer keeps
    /// no shadow for those, the word holds the route.
    fn from_solo(w: usize) -> ChunkW {
        let start = ((w >> 2) & 0x3fff) as u16;
        let lw = ((w >> 16) & 0xf) as u8;
        let nh = ((w >> 20) & SOLO_NONE as usize) as u32;
        ChunkW {
            routes: ChunkRoutes::One(pack(((start, lw), nh))),
            published: w,
            sub: None,
        }
    }

    fn kids_remove(&mut self, k: &u16) -> Option<ChunkW> {
        self.sub.as_mut()?.kids.remove(k)
    }
    fn kids_insert(&mut self, k: u16, v: ChunkW) {
        self.sub
            .get_or_insert_with(Default::default)
            .kids
            .insert(k, v);
    }
    fn kids_is_empty(&self) -> bool {
        self.sub.as_ref().is_none_or(|s| s.kids.is_empty())
    }
    fn kids(&self) -> impl Iterator<Item = &ChunkW> {
        self.sub.iter().flat_map(|s| s.kids.values())
    }
    fn kids_mut(&mut self) -> impl Iterator<Item = (&u16, &mut ChunkW)> {
        self.sub.iter_mut().flat_map(|s| s.kids.iter_mut())
    }
    fn rank(&self) -> u32 {
        self.sub.as_ref().map_or(0, |s| s.rank)
    }
    fn set_rank(&mut self, r: u32) {
        if r != self.rank() {
            self.sub.get_or_insert_with(Default::default).rank = r;
        }
    }
}

/// A chunk route: ((start, length) inside the chunk, nexthop).
type ChunkEntry = ((u16, u8), u32);

/// A chunk's own routes, sorted by (start, length), in 8 bytes. Most
/// chunks hold one (a VRF's scattered /24s), kept inline (start, length,
/// nexthop as bytes); more go to a sorted list in the table's list slab
/// ([`Lists`]), a few bytes per route where a B-tree costs a node per chunk.
#[derive(Default, Clone, Copy)]
enum ChunkRoutes {
    #[default]
    None,
    One([u8; 7]),
    Many(u32),
}

fn pack(e: ChunkEntry) -> [u8; 7] {
    let ((start, len), nh) = e;
    let [s0, s1] = start.to_le_bytes();
    let [n0, n1, n2, n3] = nh.to_le_bytes();
    [s0, s1, len, n0, n1, n2, n3]
}

fn unpack(b: [u8; 7]) -> ChunkEntry {
    (
        (u16::from_le_bytes([b[0], b[1]]), b[2]),
        u32::from_le_bytes([b[3], b[4], b[5], b[6]]),
    )
}

/// Route lists of chunks with several routes, by index.
type Lists = crate::slab::Slab<Vec<ChunkEntry>>;

impl ChunkRoutes {
    /// The routes, into `out` (cleared first).
    fn collect(&self, lists: &Lists, out: &mut Vec<ChunkEntry>) {
        out.clear();
        match self {
            ChunkRoutes::None => {}
            ChunkRoutes::One(b) => out.push(unpack(*b)),
            ChunkRoutes::Many(i) => out.extend_from_slice(&lists[*i]),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, ChunkRoutes::None)
    }

    /// Set (Some) or remove (None) the route at `key`; the old nexthop.
    fn set(&mut self, lists: &mut Lists, key: (u16, u8), v: Option<u32>) -> Option<u32> {
        match (*self, v) {
            (ChunkRoutes::None, None) => None,
            (ChunkRoutes::None, Some(nh)) => {
                *self = ChunkRoutes::One(pack((key, nh)));
                None
            }
            (ChunkRoutes::One(b), v) => {
                let e = unpack(b);
                match v {
                    Some(nh) if e.0 == key => {
                        *self = ChunkRoutes::One(pack((key, nh)));
                        Some(e.1)
                    }
                    None if e.0 == key => {
                        *self = ChunkRoutes::None;
                        Some(e.1)
                    }
                    None => None,
                    Some(nh) => {
                        let list = if e.0 < key {
                            vec![e, (key, nh)]
                        } else {
                            vec![(key, nh), e]
                        };
                        *self = ChunkRoutes::Many(lists.add(list));
                        None
                    }
                }
            }
            (ChunkRoutes::Many(i), v) => {
                let list = &mut lists[i];
                let old = match (list.binary_search_by_key(&key, |r| r.0), v) {
                    (Ok(j), Some(nh)) => Some(std::mem::replace(&mut list[j].1, nh)),
                    (Err(j), Some(nh)) => {
                        list.insert(j, (key, nh));
                        None
                    }
                    (Ok(j), None) => Some(list.remove(j).1),
                    (Err(_), None) => None,
                };
                if list.len() <= 1 {
                    let mut list = lists.take(i);
                    *self = match list.pop() {
                        Some(e) => ChunkRoutes::One(pack(e)),
                        None => ChunkRoutes::None,
                    };
                }
                old
            }
        }
    }
}

enum Change {
    Unchanged,
    Published { new: usize, fresh: bool },
    Removed,
}

/// Per /8, the runs of its draft (see [`Lpm::hold_retired`]).
type Drafts = [Option<Vec<(u16, usize)>>; 256];

/// The writer of one family's table: owns the route set and publishes changes.
pub struct Lpm {
    shared: Arc<LpmShared>,
    /// Where unlinked objects are retired.
    domain: Domain,
    max_len: u8,
    short: Vec<IntMap<u32, u32>>,
    /// Bit `l` set when `short[l]` holds a route.
    short_lens: u32,
    blocks: IntMap<u32, ChunkW>,
    seg_users: Box<[u32; 256]>,
    /// Dense segments published.
    dense: usize,
    /// Dense segments at which readers get the flat array (IPv4).
    flat_at: usize,
    /// Shared leaf lists at which a fresh flat array trims those not in
    /// use.
    lists_at: usize,
    /// Dictionary values at which a fresh flat array trims those not in
    /// use.
    dict_at: usize,
    /// The flat array's dictionary indexes by value (the writer's side).
    dict_ix: DictIx,
    /// Per block, the slot word its flat word was made from (0: none yet).
    src: Vec<usize>,
    /// The words of a list while it is made.
    list_buf: Vec<u64>,
    /// Routes of length 9–18 per /8: (18-bit block, length).
    mids: IntMap<u32, std::collections::BTreeSet<(u32, u8)>>,
    routes: usize,
    /// Unlinked by the change under way, retired when it completes.
    retire: Vec<crate::rcu::Retiree>,
    kid_defaults: Vec<u32>,
    scratch: Vec<ChunkRoute>,
    /// Route lists of chunks with several routes.
    lists: Lists,
    /// Solo words re-encoded for a new default, not yet republished in
    /// their sparse segment (during one change).
    pending: IntMap<u32, usize>,
    /// `retire` is flushed by [`Lpm::flush_retired`] only.
    hold_retired: bool,
    /// While changes are held: the runs of each sparse /8 changed in the
    /// run, changed in place and not yet published (None: unchanged). A
    /// /8's segment is built and published once, when the run ends.
    drafts: Option<Box<Drafts>>,
    entries: Vec<ChunkEntry>,
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

/// The top `len` of `bits` bits set.
fn top_mask(len: u32, bits: u32) -> u32 {
    if len == 0 {
        0
    } else {
        (u32::MAX >> (32 - bits)) & !((1u32 << (bits - len)) - 1)
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
            domain: domain.clone(),
            max_len,
            short: (0..=TOP_BITS).map(|_| IntMap::default()).collect(),
            short_lens: 0,
            blocks: IntMap::default(),
            seg_users: Box::new([0; 256]),
            dense: 0,
            flat_at: FLAT_AT,
            lists_at: LISTS_MIN,
            dict_at: 1024,
            dict_ix: DictIx::default(),
            src: Vec::new(),
            list_buf: Vec::new(),
            mids: IntMap::default(),
            routes: 0,
            retire: Vec::new(),
            kid_defaults: Vec::new(),
            scratch: Vec::new(),
            lists: Lists::default(),
            pending: IntMap::default(),
            hold_retired: false,
            drafts: None,
            entries: Vec::new(),
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
        self.check(32)?;
        self.set(u128::from(addr) << 96, len, Some(nexthop))
    }

    /// Remove an IPv4 route; returns its nexthop.
    ///
    /// # Errors
    /// [`LpmError`] for a bad length or host bits.
    pub fn remove_v4(&mut self, addr: u32, len: u8) -> Result<Option<u32>, LpmError> {
        self.check(32)?;
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
        self.check(128)?;
        self.set(addr, len, Some(nexthop))
    }

    /// Remove an IPv6 route; returns its nexthop.
    ///
    /// # Errors
    /// [`LpmError`] for a bad length or host bits.
    pub fn remove_v6(&mut self, addr: u128, len: u8) -> Result<Option<u32>, LpmError> {
        self.check(128)?;
        self.set(addr, len, None)
    }

    fn check(&self, family_len: u8) -> Result<(), LpmError> {
        assert_eq!(
            family_len, self.max_len,
            "IPv4 call on an IPv6 table or the reverse"
        );
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
        validate(self.max_len, p, len, v)?;
        Ok(self.set_checked(p, len, v))
    }

    /// Insert (`Some` nexthop) or remove the route `p`/`len`, `p`
    /// left-aligned in 128 bits, already checked with [`validate`] for
    /// this table's family; the previous nexthop.
    pub(crate) fn set_checked(&mut self, p: u128, len: u8, v: Option<u32>) -> Option<u32> {
        debug_assert!(validate(self.max_len, p, len, v).is_ok());
        let old = if u32::from(len) <= TOP_BITS {
            self.set_short(p, len, v)
        } else {
            self.set_deep(p, len, v)
        };
        match (old, v) {
            (None, Some(_)) => self.routes += 1,
            (Some(_), None) => self.routes -= 1,
            _ => {}
        }
        self.trim_values();
        if !self.hold_retired || self.retire.len() >= HOLD_MAX {
            self.publish_drafts();
            // SAFETY: every pointer in `retire` was unlinked by a publish
            // that has happened, is retired once, with its free function.
            unsafe { self.domain.retire_all(&mut self.retire) };
        }
        old
    }

    /// Keep what changes unlink until [`Lpm::flush_retired`] or until
    /// [`HOLD_MAX`] objects wait (one retire for many changes instead of
    /// one each, with the garbage held bounded). Until then, too, a sparse
    /// /8's changes go to a draft of its runs, changed in place; its
    /// segment is built once from the draft when the draft is published.
    /// Readers see the changes to such /8s then, each /8 all at once
    /// (changes to dense /8s they see as they are made, as before).
    pub fn hold_retired(&mut self) {
        self.hold_retired = true;
        if self.drafts.is_none() {
            self.drafts = Some(Box::new([const { None }; 256]));
        }
    }

    /// Retire what changes unlinked, and stop holding.
    pub fn flush_retired(&mut self) {
        self.hold_retired = false;
        self.publish_drafts();
        self.drafts = None;
        // SAFETY: every pointer in `retire` was unlinked by a publish that
        // has happened, is retired once, and comes with its free function.
        unsafe { self.domain.retire_all(&mut self.retire) };
    }

    /// Build and publish a segment for every draft, retiring what each
    /// replaces. Done before anything in `retire` goes to the domain: a
    /// chunk a draft replaced is still listed by the published segment
    /// until then.
    fn publish_drafts(&mut self) {
        let Some(mut d) = self.drafts.take() else {
            return;
        };
        for (a, runs) in d.iter_mut().enumerate() {
            if let Some(runs) = runs.take() {
                let old = self.publish_root(a, build_sparse(&runs) | SPARSE_TAG);
                if old & 1 == 0 && old & SPARSE_TAG != 0 {
                    self.retire
                        .push(((old & !SPARSE_TAG) as *mut (), free_sparse));
                }
                spare_draft_list(runs);
            }
        }
        self.drafts = Some(d);
    }

    /// Drop /8 `a`'s draft, if any: a root word is about to replace it.
    fn discard_draft(&mut self, a: usize) {
        if let Some(runs) = self.drafts.as_mut().and_then(|d| d[a].take()) {
            spare_draft_list(runs);
        }
    }

    /// /8 `a`'s draft runs, if it has one.
    fn draft(&self, a: usize) -> Option<&Vec<(u16, usize)>> {
        self.drafts.as_ref()?[a].as_ref()
    }

    /// /8 `a`'s draft runs while changes are held, made from its published
    /// segment on its first change in the run. None when changes are not
    /// held, or when the /8 has neither a draft nor a sparse segment.
    fn draft_mut(&mut self, a: usize) -> Option<&mut Vec<(u16, usize)>> {
        let p = self.published_sparse(a);
        let slot = &mut self.drafts.as_mut()?[a];
        if slot.is_none() {
            let mut runs = draft_list();
            // SAFETY: the writer is the only one that frees segments.
            unsafe { sparse_runs_into(p?, &mut runs) };
            *slot = Some(runs);
        }
        slot.as_mut()
    }

    /// The sparse segment readers see for /8 `a` (untagged), if any.
    fn published_sparse(&self, a: usize) -> Option<usize> {
        let r = self.shared.root[a].load(Ordering::Acquire);
        (r & 1 == 0 && r & SPARSE_TAG != 0).then_some(r & !SPARSE_TAG)
    }

    /// True if /8 `a` is sparse as the writer sees it: it has a draft or
    /// a published sparse segment.
    fn is_sparse(&self, a: usize) -> bool {
        self.draft(a).is_some() || self.published_sparse(a).is_some()
    }

    /// The best route of length ≤ `max` covering the 18-bit block `blk`.
    fn best_le(&self, blk: u32, max: u32) -> u32 {
        // Lengths 9–18: from the /8's own list when it is short (a VRF's
        // few routes), else one probe per length that has routes.
        if max > 8 {
            if let Some(m) = self.mids.get(&(blk >> SEG_BITS)) {
                if m.len() <= 8 {
                    let best = m
                        .iter()
                        .filter(|(k, l)| {
                            u32::from(*l) <= max && blk & top_mask(u32::from(*l), TOP_BITS) == *k
                        })
                        .max_by_key(|(_, l)| *l);
                    if let Some(v) = best.and_then(|(k, l)| self.short[usize::from(*l)].get(k)) {
                        return *v;
                    }
                } else if let Some(v) = self.best_of_lengths(blk, 9, max) {
                    return v;
                }
            }
        }
        self.best_of_lengths(blk, 0, max.min(8)).unwrap_or(NO_ROUTE)
    }

    /// The longest route of length `lo..=hi` covering block `blk`, probing
    /// only lengths that have routes.
    fn best_of_lengths(&self, blk: u32, lo: u32, hi: u32) -> Option<u32> {
        // Lengths lo..=hi (hi ≤ 18) that hold routes, longest first.
        let mut lens = self.short_lens & ((2u32 << hi) - 1) & !((1u32 << lo) - 1);
        while lens != 0 {
            let l = 31 - lens.leading_zeros();
            lens &= !(1 << l);
            if let Some(v) = self.short[l as usize].get(&(blk & top_mask(l, TOP_BITS))) {
                return Some(*v);
            }
        }
        None
    }

    /// The dense segment of /8 `a`, if it has one.
    fn segment(&self, a: usize) -> Option<&Segment> {
        let r = self.shared.root[a].load(Ordering::Acquire);
        // SAFETY: the writer is the only one that frees segments.
        (r & (1 | SPARSE_TAG) == 0).then(|| unsafe { &*(r as *const Segment) })
    }

    /// The runs of sparse /8 `a`: its draft's while changes are held, else
    /// read back from its segment (the one readers use) rather than kept
    /// in a second copy.
    fn published_runs(&self, a: usize) -> Vec<(u16, usize)> {
        if let Some(runs) = self.draft(a) {
            return runs.clone();
        }
        let Some(p) = self.published_sparse(a) else {
            return Vec::new();
        };
        // SAFETY: the writer is the only one that frees segments.
        unsafe { sparse_runs_of(p) }
    }

    /// The chunks of sparse /8 `a` into `out` (cleared first): (block, chunk).
    fn sparse_chunks_into(&self, a: usize, out: &mut Vec<(u16, usize)>) {
        out.clear();
        if let Some(runs) = self.draft(a) {
            out.extend(runs.iter().filter(|(_, w)| w & 1 == 0));
        } else if let Some(p) = self.published_sparse(a) {
            // SAFETY: the writer is the only one that frees segments.
            unsafe { sparse_runs_into(p, out) };
            out.retain(|(_, w)| w & 1 == 0);
        }
    }

    /// The runs of /8 `a` in sparse form into `runs` (cleared first): where
    /// the word changes (route ranges of length 9–18, chunk blocks) and the
    /// word from there on.
    fn sparse_runs(&self, a: usize, runs: &mut Vec<(u16, usize)>) {
        runs.clear();
        // A /8 with no route of length 9–18 and no chunk yet (its first
        // long route is arriving): one run of its covering route.
        if !self.is_sparse(a) && self.mids.get(&(a as u32)).is_none_or(|m| m.is_empty()) {
            runs.push((0, leaf(self.best_le((a << SEG_BITS) as u32, TOP_BITS))));
            return;
        }
        // The blocks' words as the writer holds them now (a solo word
        // changes with its block's default before it is republished),
        // sorted by block as the segment lists them.
        let mut chunks = scratch(&CHUNKS);
        self.sparse_chunks_into(a, &mut chunks);
        for (b, w) in chunks.iter_mut() {
            let blk = ((a << SEG_BITS) | usize::from(*b)) as u32;
            if let Some(p) = self.pending.get(&blk) {
                *w = *p;
            } else if let Some(cw) = self.blocks.get(&blk) {
                *w = cw.published;
            }
        }
        let mut points = scratch(&POINTS);
        points.push(0);
        if let Some(m) = self.mids.get(&(a as u32)) {
            for (key, len) in m {
                let b0 = (*key as usize) & (SEG_LEN - 1);
                let end = b0 + (1usize << (TOP_BITS - u32::from(*len)));
                points.push(b0 as u16);
                if end < SEG_LEN {
                    points.push(end as u16);
                }
            }
        }
        for (b, _) in &chunks {
            points.push(*b);
            if usize::from(*b) + 1 < SEG_LEN {
                points.push(*b + 1);
            }
        }
        points.sort_unstable();
        points.dedup();
        let mut next_chunk = chunks.iter().peekable();
        for &p in points.iter() {
            while next_chunk.peek().is_some_and(|(b, _)| *b < p) {
                next_chunk.next();
            }
            let blk = ((a << SEG_BITS) | usize::from(p)) as u32;
            let w = match next_chunk.peek() {
                Some((b, c)) if *b == p => *c,
                _ => leaf(self.best_le(blk, TOP_BITS)),
            };
            if w & 1 == 0 || runs.last().is_none_or(|(_, lw)| *lw != w) {
                runs.push((p, w));
            }
        }
        unscratch(&CHUNKS, chunks);
        unscratch(&POINTS, points);
    }

    /// Publish /8 `a`'s sparse segment afresh, its runs recomputed from the
    /// writer's state (after a change of a route of length ≤ 18).
    fn publish_sparse(&mut self, a: usize) {
        if !self.is_sparse(a) {
            return;
        }
        let mut runs = scratch(&RUNS);
        self.sparse_runs(a, &mut runs);
        self.publish_runs(a, &runs);
        unscratch(&RUNS, runs);
    }

    /// Publish `runs` as /8 `a`'s sparse segment, retiring the old one
    /// (while changes are held: make them its draft); too many runs make
    /// the /8 dense instead.
    fn publish_runs(&mut self, a: usize, runs: &[(u16, usize)]) {
        if runs.len() > SPARSE_MAX {
            let chunks: Vec<(u16, usize)> =
                runs.iter().copied().filter(|(_, w)| w & 1 == 0).collect();
            self.make_dense(a, &chunks);
            return;
        }
        if let Some(d) = &mut self.drafts {
            let draft = d[a].get_or_insert_with(draft_list);
            draft.clear();
            draft.extend_from_slice(runs);
            return;
        }
        self.replace_sparse(a, build_sparse(runs));
    }

    /// Publish `new` as /8 `a`'s root word and return the word it replaces.
    /// The writer is the only one that stores root words, so a load and a
    /// release store do: an atomic swap (a locked instruction) would also
    /// wait for the new segment's stores to drain, the writer's most costly
    /// instruction when it was one.
    fn publish_root(&mut self, a: usize, new: usize) -> usize {
        let r = &self.shared.root[a];
        let old = r.load(Ordering::Relaxed);
        r.store(new, Ordering::Release);
        if let Some(f) = self.flat() {
            // SAFETY: the array outlives this call: only this writer
            // unlinks it.
            let f = unsafe { &*core::ptr::from_ref(f) };
            self.fill_flat(f, a);
        }
        old
    }

    /// The flat array readers have, if any (the writer's view).
    fn flat(&self) -> Option<&[AtomicU32]> {
        let p = self.shared.flat.load(Ordering::Relaxed);
        // SAFETY: a published flat array of FLAT_LEN words, unmapped only
        // by this writer (retired) or with the table.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast_const(), FLAT_LEN) })
    }

    /// The flat array's shared leaf lists (the writer's side).
    fn values(&self) -> std::sync::MutexGuard<'_, IntMap<u32, u32>> {
        self.shared
            .values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new leaf list of `words` (from [`put_list`] and the rest). Its
    /// flat word (tagged `own`), or the [`FALLBACK`] list's when none can
    /// be had.
    fn new_list(words: &[u64], own: bool) -> u32 {
        // The head and leaves (the first word counts them).
        let head = 8 * list_words(words[0].count_ones() as usize);
        let Some(p) = arena::alloc_list(words.len(), head) else {
            return FALLBACK;
        };
        for (i, w) in words.iter().enumerate() {
            // SAFETY: the block holds `words.len()` words, is ours and is
            // not yet shared.
            unsafe { p.add(i).write(AtomicU64::new(*w)) };
        }
        let off = ((p as usize - arena::lists()) / 16) as u32;
        debug_assert!(off < 1 << 30);
        if own {
            off | OWN_LIST
        } else {
            off
        }
    }

    /// A block's list without sub-lists, `leaves` as many as `leafvec`
    /// marks runs, and if one is [`L_DEEP`], a trailer naming the chunk
    /// `chunk` (0: none). Its flat word, as [`Lpm::new_list`] gives it.
    fn plain_list(leafvec: u64, default: u16, leaves: &[u16], chunk: usize, own: bool) -> u32 {
        let mut buf = arrayvec::ArrayVec::<u64, 20>::new();
        put_list(&mut buf, leafvec, default, leaves);
        if leaves.contains(&L_DEEP) {
            buf.push(trailer(chunk, buf.len() + 1));
        }
        Self::new_list(&buf, own)
    }

    /// The list of the block whose chunk is `c`, with its default's index
    /// and leaf `(default, none)`: the root's runs, and for each /24 slot with
    /// longer routes a sub-list of its /30s (and for those with longer
    /// routes still, of their addresses), unless `subs` is false or they
    /// would not fit a list's largest block (then the chunk answers those
    /// slots). Its words in `buf`.
    fn chunk_list(
        &mut self,
        f: *const AtomicU32,
        c: usize,
        (default, none): (u16, u16),
        subs: bool,
        buf: &mut Vec<u64>,
    ) {
        buf.clear();
        let first = c as *const AtomicU64;
        // SAFETY: a chunk published in a live segment of the writer's: its
        // root node (vector, leafvec, default) and, from u32 index
        // ROOT_LEAF, one leaf per run its leafvec marks; a root slot with
        // the leaf DEEP is a run of its own and descends to a node.
        let (leafvec, leaves) = unsafe {
            let lv = (*first.add(1)).load(Ordering::Relaxed);
            let n = lv.count_ones() as usize;
            (
                lv,
                std::slice::from_raw_parts(first.cast::<u32>().add(poptrie::ROOT_LEAF), n),
            )
        };
        let mut mapped = [0u16; 64];
        let mut kids = arrayvec::ArrayVec::<usize, 64>::new();
        let mut starts = leafvec;
        for (m, &v) in mapped.iter_mut().zip(leaves) {
            let j = starts.trailing_zeros();
            starts &= starts - 1;
            *m = match v {
                NO_ROUTE => none,
                poptrie::DEEP if subs => {
                    // SAFETY: as above: slot j descends.
                    match unsafe { poptrie::step(first, 0, 0, j) } {
                        poptrie::Step::Node(at) => {
                            kids.push(at);
                            L_SUB + (kids.len() - 1) as u16
                        }
                        poptrie::Step::Leaf(_) => L_DEEP,
                    }
                }
                poptrie::DEEP => L_DEEP,
                v => self.dict_index(f, v),
            };
        }
        let leaves = &mapped[..leaves.len()];
        put_list(buf, leafvec, default, leaves);
        if !leaves.iter().any(|x| *x >= L_SUB) {
            return;
        }
        let t = buf.len();
        // The trailer, written once the sub-lists are in.
        buf.push(0);
        self.put_subs(f, first, &kids, 1, (default, none), buf);
        if buf.len() > arena::MAX_WORDS {
            self.chunk_list(f, c, (default, none), false, buf);
            return;
        }
        buf[t] = trailer(c, buf.len());
    }

    /// Append to `buf` the offsets (u16 each, in words from its start) of
    /// the sub-lists of the nodes `kids`, `level` below the root of the
    /// chunk `first`, then the sub-lists, each followed by its own. Each
    /// has the block's default (its index and leaf, `(default, none)`) and
    /// a run of its own for each slot that descends.
    fn put_subs(
        &mut self,
        f: *const AtomicU32,
        first: *const AtomicU64,
        kids: &[usize],
        level: u32,
        (default, none): (u16, u16),
        buf: &mut Vec<u64>,
    ) {
        if kids.is_empty() {
            return;
        }
        let offs = buf.len();
        buf.resize(offs + kids.len().div_ceil(4), 0);
        for (k, &at) in kids.iter().enumerate() {
            let off = buf.len() as u64;
            buf[offs + k / 4] |= off << (16 * (k % 4));
            let mut leaves = arrayvec::ArrayVec::<u16, 64>::new();
            let mut grand = arrayvec::ArrayVec::<usize, 64>::new();
            let mut lv = 0u64;
            let mut prev = None;
            for j in 0..64 {
                // SAFETY: `at` is a node `level` below the root, as its
                // parent's step gave it.
                let step = unsafe { poptrie::step(first, at, level, j) };
                if prev == Some(step) && matches!(step, poptrie::Step::Leaf(_)) {
                    // The run goes on: slots of a value are mostly runs.
                    continue;
                }
                prev = Some(step);
                let leaf = match step {
                    poptrie::Step::Node(a) => {
                        grand.push(a);
                        L_SUB + (grand.len() - 1) as u16
                    }
                    poptrie::Step::Leaf(NO_ROUTE) => none,
                    poptrie::Step::Leaf(v) => self.dict_index(f, v),
                };
                if leaves.last() != Some(&leaf) || (L_SUB..L_SUB + 64).contains(&leaf) {
                    lv |= 1 << j;
                    leaves.push(leaf);
                }
            }
            put_list(buf, lv, default, &leaves);
            self.put_subs(f, first, &grand, level + 1, (default, none), buf);
        }
    }

    /// The dictionary index of value `v` in the flat array `f`, made on
    /// first use; [`L_DEEP`] when the dictionary is full.
    #[inline]
    fn dict_index(&mut self, f: *const AtomicU32, v: u32) -> u16 {
        let h = DictIx::hot_slot(v);
        if self.dict_ix.hot[h].0 == v {
            return self.dict_ix.hot[h].1;
        }
        self.dict_index_cold(f, v)
    }

    /// [`Lpm::dict_index`] for a value not in the map's front cache.
    #[inline(never)]
    fn dict_index_cold(&mut self, f: *const AtomicU32, v: u32) -> u16 {
        if let Some(i) = self.dict_ix.get(&v) {
            self.dict_ix.hot[DictIx::hot_slot(v)] = (v, i);
            return i;
        }
        let i = self.dict_ix.len();
        if i >= usize::from(L_SUB) {
            return L_DEEP;
        }
        // SAFETY: the dictionary of the writer's flat array: DICT_LEN u32s
        // after its words; index i is unused, so no reader reads it until
        // a list naming it is published after this store.
        unsafe { f.add(FLAT_LEN).cast::<u32>().cast_mut().add(i).write(v) };
        self.dict_ix.insert(v, i as u16);
        i as u16
    }

    /// The flat word for a block whose slot word is `w`, in the flat array
    /// `f`: a list of the block's own, made from its chunk's root or its
    /// solo word; for a leaf, the list shared by the blocks of its value.
    fn flat_word_for(&mut self, f: *const AtomicU32, w: usize) -> u32 {
        if w & 1 == 1 {
            return self.shared_list(f, (w >> 1) as u32);
        }
        if w & 3 == SOLO_TAG {
            let start = (w >> 2) & 0x3fff;
            let lw = (w >> 16) & 0xf;
            let nh = ((w >> 20) & SOLO_NONE as usize) as u32;
            let default = match (w >> 42) as u32 {
                SOLO_NONE => NO_ROUTE,
                d => d,
            };
            // The route's /24 slots, or the one it lies inside.
            let js = start >> 8;
            let (mid, je) = if lw <= 6 {
                (self.dict_index(f, nh), js + (1 << (6 - lw)))
            } else {
                (L_DEEP, js + 1)
            };
            let (default, none) = self.default_index(f, default);
            let mut leaves = arrayvec::ArrayVec::<u16, 3>::new();
            let mut lv = 1u64;
            if js > 0 {
                leaves.push(none);
                lv |= 1 << js;
            }
            leaves.push(mid);
            if je < 64 {
                leaves.push(none);
                lv |= 1 << je;
            }
            return Self::plain_list(lv, default, &leaves, 0, true);
        }
        // SAFETY: a chunk published in a live segment of the writer's.
        let default = unsafe { poptrie::default_raw(w as *const AtomicU64) };
        let default = self.default_index(f, default);
        let mut buf = std::mem::take(&mut self.list_buf);
        self.chunk_list(f, w, default, true, &mut buf);
        let fw = Self::new_list(&buf, true);
        self.list_buf = buf;
        fw
    }

    /// The dictionary index of default `d` for a list, and the leaf for
    /// where it answers: the same index (a lookup that lands there reads
    /// the dictionary as for any value); or when the dictionary is full,
    /// index 0 and [`L_DEEP`].
    fn default_index(&mut self, f: *const AtomicU32, d: u32) -> (u16, u16) {
        match self.dict_index(f, d) {
            L_DEEP => (0, L_DEEP),
            i => (i, i),
        }
    }

    /// The list shared by blocks a leaf of value `v` answers, made on
    /// first use, in the flat array `f`.
    fn shared_list(&mut self, f: *const AtomicU32, v: u32) -> u32 {
        if let Some(w) = self.values().get(&v) {
            return *w;
        }
        let (default, none) = self.default_index(f, v);
        let w = Self::plain_list(1, default, &[none], 0, false);
        if w != FALLBACK {
            self.values().insert(v, w);
        }
        w
    }

    /// Bring block `blk`'s word of the flat array `f` up to date with its
    /// slot word `w` (and, for a chunk, the chunk's default), retiring a
    /// list of the block's own it replaces.
    fn flat_store(&mut self, f: &[AtomicU32], blk: usize, w: usize) {
        let cur = f[blk].load(Ordering::Relaxed);
        if self.src[blk] == w {
            if w & 3 != 0 {
                return;
            }
            // SAFETY: the block's own list (or the fallback, whose default
            // no chunk has) and its live chunk.
            let same = unsafe {
                let i = *((list_of(arena::lists(), cur) + 8) as *const u16);
                *f.as_ptr().add(FLAT_LEN).cast::<u32>().add(usize::from(i))
                    == poptrie::default_raw(w as *const AtomicU64)
            };
            if same {
                return;
            }
        }
        let new = self.flat_word_for(f.as_ptr(), w);
        f[blk].store(new, Ordering::Release);
        self.src[blk] = w;
        if cur & OWN_LIST != 0 {
            // Just unlinked; retired with the change.
            self.retire
                .push((list_of(arena::lists(), cur) as *mut (), free_list));
        }
    }

    /// Store slot word `w` for block `blk` in the flat array, if any.
    fn flat_put(&mut self, blk: u32, w: usize) {
        if let Some(f) = self.flat() {
            // SAFETY: the array outlives this call: only this writer
            // unlinks it.
            let f = unsafe { &*core::ptr::from_ref(f) };
            self.flat_store(f, blk as usize, w);
        }
    }

    /// Bring /8 `a`'s 1024 words of the flat array `f` up to date with its
    /// published root word (and segment), storing only those that differ.
    fn fill_flat(&mut self, f: &[AtomicU32], a: usize) {
        let blk0 = a << SEG_BITS;
        let r = self.shared.root[a].load(Ordering::Acquire);
        if r & 1 == 1 {
            for b in 0..SEG_LEN {
                self.flat_store(f, blk0 + b, r);
            }
        } else if r & SPARSE_TAG != 0 {
            let mut runs = scratch(&FLAT_RUNS);
            // SAFETY: the writer is the only one that frees segments.
            unsafe { sparse_runs_into(r & !SPARSE_TAG, &mut runs) };
            for (i, &(start, w)) in runs.iter().enumerate() {
                let end = runs.get(i + 1).map_or(SEG_LEN, |n| usize::from(n.0));
                for b in usize::from(start)..end {
                    self.flat_store(f, blk0 + b, w);
                }
            }
            unscratch(&FLAT_RUNS, runs);
        } else if let Some(seg) = self.segment(a) {
            // SAFETY: the segment outlives this call: only this writer
            // retires it.
            let seg = unsafe { &*core::ptr::from_ref(seg) };
            for (b, s) in seg.slots.iter().enumerate() {
                self.flat_store(f, blk0 + b, s.load(Ordering::Relaxed));
            }
        }
    }

    /// Give readers the flat array when the table has [`Lpm::set_flat_at`]
    /// dense segments, and take it away below half that (IPv4 only). A
    /// table where no region can be mapped goes on without.
    fn flat_check(&mut self) {
        if self.max_len != 32 {
            return;
        }
        let on = self.flat().is_some();
        if !on && self.dense >= self.flat_at {
            self.new_flat();
        } else if on && self.dense < self.flat_at / 2 {
            let p = self
                .shared
                .flat
                .swap(core::ptr::null_mut(), Ordering::AcqRel);
            // Just unlinked; retired with the change, with its lists.
            let values = std::mem::take(&mut *self.values());
            self.retire_flat(p, values);
            self.src = Vec::new();
            self.dict_ix = DictIx::default();
        }
    }

    /// Retire an unlinked flat array, its blocks' own lists and its shared
    /// lists, `values`.
    fn retire_flat(&mut self, p: *mut AtomicU32, values: IntMap<u32, u32>) {
        // SAFETY: the array just unlinked: this writer frees it, later.
        let f = unsafe { std::slice::from_raw_parts(p.cast_const(), FLAT_LEN) };
        let base = arena::lists();
        for w in f {
            let w = w.load(Ordering::Relaxed);
            if w & OWN_LIST != 0 {
                self.retire.push((list_of(base, w) as *mut (), free_list));
            }
        }
        self.retire.push((p.cast(), free_flat));
        for (_, w) in values {
            self.retire.push((list_of(base, w) as *mut (), free_list));
        }
    }

    /// Make, fill and publish a flat array (replacing the one readers have,
    /// if any, and its lists: retired with the change).
    fn new_flat(&mut self) {
        if arena::list_base(FALLBACK_LIST).is_none() {
            return;
        }
        let Some(p) = arena::own_region() else {
            return;
        };
        let old_values = std::mem::take(&mut *self.values());
        self.dict_ix = DictIx::default();
        self.src = vec![0; FLAT_LEN];
        let p = p.cast::<AtomicU32>();
        // SAFETY: a fresh zeroed region, not shared yet, FLAT_LEN words
        // first; zero is a valid AtomicU32 (and names the fallback list),
        // and every word is filled below before readers see the array (no
        // slot word is 0, so each is stored).
        let f = unsafe { std::slice::from_raw_parts(p.cast_const(), FLAT_LEN) };
        for a in 0..256 {
            self.fill_flat(f, a);
        }
        let old = self.shared.flat.swap(p, Ordering::AcqRel);
        if !old.is_null() {
            // Just unlinked; retired with the change, with its lists.
            self.retire_flat(old, old_values);
        }
        let lists = self.values().len();
        self.lists_at = (2 * lists).max(LISTS_MIN);
        self.dict_at = (2 * self.dict_ix.len()).clamp(1024, usize::from(L_SUB));
    }

    /// Shared lists and dictionary values are made as blocks need them and
    /// kept while the flat array lives; when they reach twice what a fresh
    /// array needed, a fresh array gets only those in use.
    fn trim_values(&mut self) {
        if self.flat().is_some()
            && (self.values().len() > self.lists_at || self.dict_ix.len() > self.dict_at)
        {
            self.new_flat();
        }
    }

    /// Give readers the flat array once the table has `segments`
    /// dense segments (0: from now on, whatever its size), and take it away
    /// when it has fewer than half that ([`FLAT_AT`] by default). IPv4
    /// tables only; an IPv6 table ignores it.
    pub fn set_flat_at(&mut self, segments: usize) {
        self.flat_at = segments;
        self.flat_check();
        if !self.hold_retired {
            // SAFETY: unlinked above, retired once, with its free function.
            unsafe { self.domain.retire_all(&mut self.retire) };
        }
    }

    /// Publish the sparse segment `new` for /8 `a`, retiring the old one
    /// (changes not held).
    fn replace_sparse(&mut self, a: usize, new: usize) {
        debug_assert!(
            self.drafts.is_none(),
            "a segment published while changes are held"
        );
        let old = self.publish_root(a, new | SPARSE_TAG);
        if old & 1 == 0 && old & SPARSE_TAG != 0 {
            // Just unlinked; the chunks it lists stay reachable from the new
            // one. Retired with the change.
            self.retire
                .push(((old & !SPARSE_TAG) as *mut (), free_sparse));
        }
    }

    /// Give block `b` of sparse /8 `a` the chunk or solo word `w` by
    /// copying the segment with that single block added or replaced, when
    /// that is the whole change (the block does not start a leaf run, and
    /// the /8 stays within [`SPARSE_MAX`] runs). False when the general
    /// path must run.
    fn sparse_put_single(&mut self, a: usize, b: u16, w: usize) -> bool {
        if w & 1 == 1 || self.drafts.is_some() {
            return false;
        }
        let Some(p) = self.published_sparse(a) else {
            return false;
        };
        let base = p as *const usize;
        let b = usize::from(b);
        // SAFETY: the writer is the only one that frees segments; every
        // index below stays within the counts of the segment's header.
        unsafe {
            let (nl, ns) = sparse_counts(base);
            let (lk, sk) = (1 + nl + ns, 1 + nl + ns + nl.div_ceil(4));
            let l = sparse_lower(base, lk, nl, b);
            if l < nl && sparse_key(base, lk, l) == b {
                return false;
            }
            let at = sparse_lower(base, sk, ns, b);
            let found = at < ns && sparse_key(base, sk, at) == b;
            let ns2 = if found { ns } else { ns + 1 };
            if !found && nl + 2 * ns2 + 1 > SPARSE_MAX {
                return false;
            }
            // The old segment's parts, copied whole where they do not
            // change: the leaf runs' words and blocks, and the singles'
            // words around the one added or replaced (their blocks too
            // when it is replaced).
            let words = |from: usize, n: usize| std::slice::from_raw_parts(base.add(from), n);
            let mut out = sparse_storage(sparse_words(nl, ns2));
            out.push(nl | (ns2 << 32));
            out.extend_from_slice(words(1, nl));
            out.extend_from_slice(words(1 + nl, at));
            out.push(w);
            let after = if found { at + 1 } else { at };
            out.extend_from_slice(words(1 + nl + after, ns - after));
            out.extend_from_slice(words(lk, nl.div_ceil(4)));
            if found {
                out.extend_from_slice(words(sk, ns.div_ceil(4)));
            } else {
                push_keys(
                    &mut out,
                    (0..ns2).map(|j| match j.cmp(&at) {
                        std::cmp::Ordering::Less => sparse_key(base, sk, j),
                        std::cmp::Ordering::Equal => b,
                        std::cmp::Ordering::Greater => sparse_key(base, sk, j - 1),
                    }),
                );
            }
            push_maps(&mut out, nl, ns2);
            debug_assert_eq!(out.len(), sparse_words(nl, ns2));
            let new = Box::into_raw(out.into_boxed_slice()) as *mut usize as usize;
            self.replace_sparse(a, new);
        }
        true
    }

    /// Give /8 `a` a home for block chunks: a sparse segment unless it is
    /// dense already.
    fn ensure_sparse_or_dense(&mut self, a: usize) {
        if self.draft(a).is_some() || self.shared.root[a].load(Ordering::Acquire) & 1 == 0 {
            return;
        }
        let mut runs = scratch(&RUNS);
        self.sparse_runs(a, &mut runs);
        self.publish_runs(a, &runs);
        unscratch(&RUNS, runs);
    }

    /// Point block `blk`'s slot at `word` (a chunk, or for a dense segment
    /// possibly a leaf), in whichever kind of segment its /8 has.
    fn set_slot(&mut self, blk: u32, word: Option<usize>) {
        let a = (blk >> SEG_BITS) as usize;
        let b = blk as usize & (SEG_LEN - 1);
        if let Some(seg) = self.segment(a) {
            let w = word.unwrap_or_else(|| leaf(self.best_le(blk, TOP_BITS)));
            seg.slots[b].store(w, Ordering::Release);
            self.flat_put(blk, w);
            return;
        }
        if !self.is_sparse(a) {
            return;
        }
        if word.is_some_and(|w| self.sparse_put_single(a, b as u16, w)) {
            return;
        }
        let w = word.unwrap_or_else(|| leaf(self.best_le(blk, TOP_BITS)));
        // One block changes: split its run, merge equal neighbours. While
        // changes are held, in the /8's draft.
        if let Some(runs) = self.draft_mut(a) {
            set_run(runs, b as u16, w);
            if runs.len() > SPARSE_MAX {
                let chunks: Vec<(u16, usize)> =
                    runs.iter().copied().filter(|(_, w)| w & 1 == 0).collect();
                self.make_dense(a, &chunks);
            }
            return;
        }
        let mut runs = scratch(&RUNS);
        if let Some(p) = self.published_sparse(a) {
            // SAFETY: the writer is the only one that frees segments.
            unsafe { sparse_runs_into(p, &mut runs) };
        }
        set_run(&mut runs, b as u16, w);
        self.publish_runs(a, &runs);
        unscratch(&RUNS, runs);
    }

    /// Bring block `blk`'s slot in dense /8 `a` up to date with the best
    /// route of length ≤ 18 over it.
    fn refresh_slot(&mut self, a: usize, blk: u32) {
        let b = blk as usize & (SEG_LEN - 1);
        let d = self.best_le(blk, TOP_BITS);
        let Some(s) = self
            .segment(a)
            .map(|seg| seg.slots[b].load(Ordering::Acquire))
        else {
            return;
        };
        let new = if s & 1 == 1 {
            leaf(d)
        } else {
            self.block_default(blk, s)
        };
        if new != s {
            if let Some(seg) = self.segment(a) {
                seg.slots[b].store(new, Ordering::Release);
                self.flat_put(blk, new);
            }
        }
    }

    /// Give the chunk word `w` of block `blk` its block's current default:
    /// a chunk of several routes in place; a single route's word is built
    /// again (solo if the default fits one, else a chunk). Returns the
    /// block's word.
    fn block_default(&mut self, blk: u32, w: usize) -> usize {
        // A chunk of one IPv4 route is rebuilt, to become a solo word again
        // if the new default lets it.
        let single = self.max_len == 32
            && self
                .blocks
                .get(&blk)
                .is_some_and(|cw| matches!(cw.routes, ChunkRoutes::One(_)) && cw.kids_is_empty());
        if is_chunk(w) && !single {
            // SAFETY: the writer owns the published chunk.
            poptrie::set_default(unsafe { chunk(w) }, self.best_le(blk, TOP_BITS));
            // The flat array's list holds the default too.
            self.flat_put(blk, w);
            return w;
        }
        let Some(mut cw) = self.take_block(blk) else {
            return w;
        };
        let new = self.build_word(
            &mut cw,
            TOP_BITS,
            u128::from(blk) << (128 - TOP_BITS),
            false,
        );
        if is_solo(new) {
            self.pending.insert(blk, new);
        }
        self.keep_block(blk, cw);
        new
    }

    /// The word block `blk`'s slot holds now (a leaf if its /8 has no
    /// segment).
    fn slot_word(&self, blk: u32) -> usize {
        let a = (blk >> SEG_BITS) as usize;
        let b = blk as usize & (SEG_LEN - 1);
        if let Some(runs) = self.draft(a) {
            let i = runs.partition_point(|(s, _)| usize::from(*s) <= b);
            return runs[i.saturating_sub(1)].1;
        }
        let r = self.shared.root[a].load(Ordering::Acquire);
        if r & 1 == 1 {
            return r;
        }
        // SAFETY: the writer is the only one that frees segments.
        unsafe { slot_of(r, b) }
    }

    /// The writer's shadow of block `blk`'s chunk, taken out to change:
    /// from the map, or rebuilt from the block's solo word.
    fn take_block(&mut self, blk: u32) -> Option<ChunkW> {
        if let Some(cw) = self.blocks.remove(&blk) {
            return Some(cw);
        }
        let w = self.slot_word(blk);
        (self.max_len == 32 && is_solo(w)).then(|| ChunkW::from_solo(w))
    }

    /// Put back block `blk`'s shadow: a solo block's word is its shadow, so
    /// only chunks are kept.
    fn keep_block(&mut self, blk: u32, cw: ChunkW) {
        if is_chunk(cw.published) || cw.published == 0 {
            self.blocks.insert(blk, cw);
        }
    }

    /// Give /8 `a` a dense segment holding `chunks` (block, chunk),
    /// replacing its sparse one.
    fn make_dense(&mut self, a: usize, chunks: &[(u16, usize)]) {
        if self.segment(a).is_some() {
            return;
        }
        let p = Segment::alloc(|b| leaf(self.best_le(((a << SEG_BITS) | b) as u32, TOP_BITS)));
        // SAFETY: just made, not yet shared.
        let seg = unsafe { &*p };
        for (b, w) in chunks {
            seg.slots[usize::from(*b)].store(*w, Ordering::Relaxed);
        }
        self.discard_draft(a);
        let old = self.publish_root(a, p as usize);
        if old & 1 == 0 && old & SPARSE_TAG != 0 {
            // SAFETY: just unlinked; its chunks now hang off the dense one.
            unsafe {
                self.domain
                    .retire_with((old & !SPARSE_TAG) as *mut (), free_sparse)
            };
        }
        self.dense += 1;
        self.flat_check();
    }

    fn drop_segment_if_unused(&mut self, a: usize) {
        if self.seg_users[a] != 0 {
            return;
        }
        let d = self.best_le((a << SEG_BITS) as u32, 8);
        self.discard_draft(a);
        let old = self.publish_root(a, leaf(d));
        self.mids.remove(&(a as u32));
        if old & 1 == 0 {
            if old & SPARSE_TAG != 0 {
                // SAFETY: just unlinked from its only parent; lists nothing.
                unsafe {
                    self.domain
                        .retire_with((old & !SPARSE_TAG) as *mut (), free_sparse)
                };
            } else {
                // SAFETY: just unlinked from its only parent; holds only leaves.
                unsafe { self.domain.retire_with(old as *mut (), free_segment) };
                self.dense -= 1;
                self.flat_check();
            }
        }
    }

    fn set_short(&mut self, p: u128, len: u8, v: Option<u32>) -> Option<u32> {
        let key = (p >> (128 - TOP_BITS)) as u32;
        let t = &mut self.short[usize::from(len)];
        let old = match v {
            Some(nh) => t.insert(key, nh),
            None => t.remove(&key),
        };
        if t.is_empty() {
            self.short_lens &= !(1 << len);
        } else {
            self.short_lens |= 1 << len;
        }
        if old == v {
            return old;
        }
        if len <= 8 {
            let a0 = (key >> SEG_BITS) as usize;
            for a in a0..a0 + (1usize << (8 - len)) {
                if self.segment(a).is_some() {
                    for b in 0..SEG_LEN {
                        self.refresh_slot(a, ((a << SEG_BITS) | b) as u32);
                    }
                } else if self.is_sparse(a) {
                    // The listed chunks' covering value, then the default.
                    let mut listed = scratch(&LISTED);
                    self.sparse_chunks_into(a, &mut listed);
                    for &(b, w) in listed.iter() {
                        let blk = ((a << SEG_BITS) | usize::from(b)) as u32;
                        self.block_default(blk, w);
                    }
                    unscratch(&LISTED, listed);
                    self.publish_sparse(a);
                } else {
                    self.publish_root(a, leaf(self.best_le((a << SEG_BITS) as u32, 8)));
                }
            }
        } else {
            let a = (key >> SEG_BITS) as usize;
            let span = 1u32 << (TOP_BITS - u32::from(len));
            if old.is_none() {
                self.seg_users[a] += 1;
                self.mids.entry(a as u32).or_default().insert((key, len));
                self.ensure_sparse_or_dense(a);
            } else if v.is_none() {
                if let Some(m) = self.mids.get_mut(&(a as u32)) {
                    m.remove(&(key, len));
                }
            }
            if self.segment(a).is_some() {
                for blk in key..key + span {
                    self.refresh_slot(a, blk);
                }
            } else if self.is_sparse(a) {
                // The covered chunks' covering value, then the runs.
                let lo = key as usize & (SEG_LEN - 1);
                let hi = lo + span as usize;
                let mut listed = scratch(&LISTED);
                self.sparse_chunks_into(a, &mut listed);
                for &(b, w) in listed.iter() {
                    if (lo..hi).contains(&usize::from(b)) {
                        let blk = ((a << SEG_BITS) | usize::from(b)) as u32;
                        self.block_default(blk, w);
                    }
                }
                unscratch(&LISTED, listed);
                self.publish_sparse(a);
            }
            if v.is_none() {
                self.seg_users[a] -= 1;
                self.drop_segment_if_unused(a);
            }
        }
        self.pending.clear();
        old
    }

    fn set_deep(&mut self, p: u128, len: u8, v: Option<u32>) -> Option<u32> {
        let blk = (p >> (128 - TOP_BITS)) as u32;
        let a = (blk >> SEG_BITS) as usize;
        let b = blk as usize & (SEG_LEN - 1);
        if let Some(f) = self.flat() {
            // The block's flat word and source word, which the list's
            // update reads once the chunk is built: on their way meanwhile.
            prefetch(core::ptr::from_ref(&f[blk as usize]).cast());
            prefetch(self.src.as_ptr().wrapping_add(blk as usize).cast());
        }
        let mut cw = match self.take_block(blk) {
            Some(cw) => cw,
            None if v.is_none() => return None,
            None => ChunkW::default(),
        };
        let (old, change) = self.apply(&mut cw, p, u32::from(len), TOP_BITS, v);
        match change {
            Change::Unchanged => {
                self.keep_block(blk, cw);
            }
            Change::Published { new, fresh } => {
                if fresh {
                    self.seg_users[a] += 1;
                    self.ensure_sparse_or_dense(a);
                }
                let _ = b;
                self.set_slot(blk, Some(new));
                self.keep_block(blk, cw);
            }
            Change::Removed => {
                self.set_slot(blk, None);
                self.seg_users[a] -= 1;
                self.drop_segment_if_unused(a);
            }
        }
        old
    }

    /// Apply a change inside chunk `cw`, which covers bits from `start`.
    fn apply(
        &mut self,
        cw: &mut ChunkW,
        p: u128,
        len: u32,
        start: u32,
        v: Option<u32>,
    ) -> (Option<u32>, Change) {
        let w = width(start, u32::from(self.max_len));
        let k = ((p << start) >> (128 - w)) as u32;
        let old;
        if len <= start + w {
            let lw = len - start;
            let key = ((k & top_mask(lw, w)) as u16, lw as u8);
            old = cw.routes.set(&mut self.lists, key, v);
            if old == v {
                return (old, Change::Unchanged);
            }
        } else {
            let k = k as u16;
            let mut kid = match cw.kids_remove(&k) {
                Some(kid) => kid,
                None if v.is_none() => return (None, Change::Unchanged),
                None => ChunkW::default(),
            };
            let (o, ch) = self.apply(&mut kid, p, len, start + w, v);
            old = o;
            match ch {
                Change::Unchanged => {
                    cw.kids_insert(k, kid);
                    return (old, Change::Unchanged);
                }
                Change::Published { new, fresh: false } => {
                    // SAFETY: `cw.published` is live: the writer owns it.
                    let d = unsafe { chunk(cw.published) };
                    let (slot, _) = poptrie::kid(d, kid.rank() as usize)
                        .expect("published parent lists its kids");
                    slot.store(new as u64, Ordering::Release);
                    cw.kids_insert(k, kid);
                    return (old, Change::Unchanged);
                }
                Change::Published { fresh: true, .. } => {
                    cw.kids_insert(k, kid);
                }
                Change::Removed => {}
            }
        }
        if cw.routes.is_empty() && cw.kids_is_empty() {
            if is_chunk(cw.published) {
                self.retire
                    .push((cw.published as *mut (), free_chunk_words));
            }
            cw.published = 0;
            return (old, Change::Removed);
        }
        let fresh = cw.published == 0;
        let new = self.build_word(cw, start, p, true);
        (old, Change::Published { new, fresh })
    }

    /// Publish chunk `cw` (covering bits from `start` of `p`) afresh,
    /// retiring its old chunk: a solo word for an IPv4 block whose only
    /// route fits one, else a poptrie chunk. Returns the new word (also
    /// kept in `cw.published`). `kept`: the routes of length ≤ 18 did not
    /// change since the old word was made, so its default still holds.
    fn build_word(&mut self, cw: &mut ChunkW, start: u32, p: u128, kept: bool) -> usize {
        let old = cw.published;
        // A first-level chunk carries the best route of length ≤ 18 over
        // its block; deeper chunks get theirs from their parent's child
        // slot. A block's word keeps it current (see `block_default`), so
        // a change to the block's own routes reads it there: one line the
        // retirement of the old word touches anyway, where the search
        // probes a map per length.
        let default = if start == TOP_BITS {
            let blk = (p >> (128 - TOP_BITS)) as u32;
            match word_default(old).filter(|_| kept) {
                Some(d) => {
                    debug_assert_eq!(d, self.best_le(blk, TOP_BITS), "block {blk:#x}");
                    d
                }
                None => self.best_le(blk, TOP_BITS),
            }
        } else {
            NO_ROUTE
        };
        let solo = match cw.routes {
            ChunkRoutes::One(b)
                if start == TOP_BITS && self.max_len == 32 && cw.kids_is_empty() =>
            {
                let ((s, lw), nh) = unpack(b);
                solo_word(s, lw, nh, default)
            }
            _ => None,
        };
        let new = match solo {
            Some(w) => w,
            None => {
                let w = width(start, u32::from(self.max_len));
                cw.routes.collect(&self.lists, &mut self.entries);
                self.scratch.clear();
                self.scratch.extend(
                    self.entries
                        .iter()
                        .map(|&((start, len), value)| ChunkRoute { start, len, value }),
                );
                let mut kids = scratch(&KIDS);
                kids.extend(cw.kids_mut().enumerate().map(|(i, (k, kid))| {
                    kid.set_rank(i as u32);
                    (*k, kid.published as u64)
                }));
                let mut words = scratch(&WORDS);
                let p = poptrie::build_raw(
                    w,
                    self.max_len == 128,
                    &self.scratch,
                    &kids,
                    &mut self.kid_defaults,
                    default,
                    &mut words,
                );
                unscratch(&WORDS, words);
                unscratch(&KIDS, kids);
                p as usize
            }
        };
        if is_chunk(old) {
            self.retire.push((old as *mut (), free_chunk_words));
        }
        cw.published = new;
        new
    }

    /// Counts of the readers' structure, for sizing and benchmarks.
    pub fn stats(&self) -> LpmStats {
        fn walk(cw: &ChunkW, st: &mut LpmStats) {
            if !is_chunk(cw.published) {
                return;
            }
            // SAFETY: the writer owns the published chunk.
            let d = unsafe { chunk(cw.published) };
            let (n, l) = poptrie::counts(d);
            st.chunks += 1;
            st.nodes += n;
            st.leaves += l;
            for k in cw.kids() {
                walk(k, st);
            }
        }
        let mut st = LpmStats {
            segments: (0..256).filter(|a| self.segment(*a).is_some()).count(),
            sparse_segments: (0..256).filter(|a| self.is_sparse(*a)).count(),
            flat: self.flat().is_some(),
            ..LpmStats::default()
        };
        for cw in self.blocks.values() {
            walk(cw, &mut st);
        }
        for a in 0..256 {
            st.solos += match self.segment(a) {
                Some(seg) => seg
                    .slots
                    .iter()
                    .filter(|s| is_solo(s.load(Ordering::Acquire)))
                    .count(),
                None => self
                    .published_runs(a)
                    .iter()
                    .filter(|(_, w)| is_solo(*w))
                    .count(),
            };
        }
        st
    }

    /// Bytes of memory the readers' structure occupies (allocator overhead
    /// not included).
    pub fn fib_bytes(&self) -> usize {
        fn walk(cw: &ChunkW) -> usize {
            if !is_chunk(cw.published) {
                return 0;
            }
            // SAFETY: the writer owns the published chunk.
            let d = unsafe { chunk(cw.published) };
            d.len() * 8 + cw.kids().map(walk).sum::<usize>()
        }
        let segs = (0..256).filter(|a| self.segment(*a).is_some()).count();
        let values = self.flat().map_or(0, |f| {
            // SAFETY: the writer's own live lists.
            let words = |w: u32| unsafe { list_size(list_of(arena::lists(), w)) };
            let own: usize = f
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .filter(|w| w & OWN_LIST != 0)
                .map(words)
                .sum();
            let shared: usize = self.values().values().map(|w| words(*w)).sum();
            (own + shared) * 8 + self.dict_ix.len() * 4
        });
        256 * 8
            + segs * core::mem::size_of::<Segment>()
            + self.flat().map_or(0, |_| FLAT_LEN * 4)
            + values
            + (0..256)
                .map(|a| match (self.draft(a), self.published_sparse(a)) {
                    (Some(runs), _) => {
                        let nl = sparse_entries(runs).filter(|e| e.0).count();
                        sparse_words(nl, sparse_entries(runs).count() - nl) * 8
                    }
                    (None, Some(p)) => {
                        // SAFETY: the writer is the only one that frees segments.
                        let (nl, ns) = unsafe { sparse_counts(p as *const usize) };
                        sparse_words(nl, ns) * 8
                    }
                    (None, None) => 0,
                })
                .sum::<usize>()
            + self.blocks.values().map(walk).sum::<usize>()
    }
}

impl Drop for Lpm {
    fn drop(&mut self) {
        // Drafts are published first, so that `shared` frees what they
        // list (only an unwinding change leaves any).
        self.publish_drafts();
        // SAFETY: unlinked, retired once, each with its free function.
        unsafe { self.domain.retire_all(&mut self.retire) };
        // Published chunks stay reachable from `shared`, whose Drop frees them.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word each block gets from a run list.
    fn expand(runs: &[(u16, usize)]) -> Vec<usize> {
        (0..SEG_LEN)
            .map(|b| {
                let i = runs.partition_point(|(s, _)| usize::from(*s) <= b) - 1;
                runs[i].1
            })
            .collect()
    }

    /// The pipeline's lookup in two halves (`slot_v4`, then `resolve_v4`)
    /// answers as the whole lookup does, for addresses in a sparse /8 (solo
    /// words and chunks), a dense one, one covered by a /8 route alone and
    /// one with no route; with and without the flat array.
    #[test]
    fn a_lookup_in_two_halves_answers_as_a_whole_one() {
        for flat in [false, true] {
            lookup_in_two_halves(flat);
        }
    }

    fn lookup_in_two_halves(flat: bool) {
        let d = Domain::new();
        let mut t = Lpm::new_v4(&d);
        if flat {
            t.set_flat_at(0);
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..60u32 {
            let len = [24u8, 24, 24, 26, 20, 16][(i % 6) as usize];
            let a = (10 << 24) | (next() as u32 & 0x00ff_ffff);
            t.insert_v4(a & !(u32::MAX >> len), len, i + 1)
                .expect("route");
        }
        for i in 0..400u32 {
            let a = (11 << 24) | (next() as u32 & 0x00ff_ff00);
            t.insert_v4(a, 24, 100 + i).expect("route");
        }
        t.insert_v4(12 << 24, 8, 7).expect("route");
        // A /16 over blocks with longer routes: where they do not cover an
        // address, the block's default answers.
        for (a, len, nh) in [
            (0x0ac8_0000u32, 16u8, 5000u32),
            (0x0ac8_0100, 26, 5001),
            (0x0ac8_0180, 26, 5002),
            (0x0ac8_4000, 24, 5003),
        ] {
            t.insert_v4(a, len, nh).expect("route");
        }
        let st = t.stats();
        assert!(
            st.sparse_segments >= 1 && st.segments >= 1 && st.solos >= 1 && st.flat == flat,
            "{st:?}"
        );
        let shared = t.shared().clone();
        for i in 0..20_000 {
            let ip = if i % 4 == 0 {
                0x0ac8_0000 | (next() as u32 & 0x7fff)
            } else {
                ((10 + next() % 4) << 24) as u32 | (next() as u32 & 0x00ff_ffff)
            };
            assert_eq!(
                shared.resolve_v4(ip, shared.slot_v4(ip)),
                shared.lookup_v4_trusted(ip),
                "{ip:#x}"
            );
        }
    }

    /// `set_run` against a word per block: after every change the runs
    /// give each block its word, start at block 0, ascend, and no two
    /// neighbouring leaf runs hold the same word (the form segments are
    /// built from and read back in).
    #[test]
    fn set_run_keeps_runs_merged_and_every_blocks_word() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..40 {
            let mut runs = vec![(0u16, leaf(0))];
            let mut model = vec![leaf(0); SEG_LEN];
            for _ in 0..300 {
                // Blocks bunched in a few places, so that runs meet and
                // merge; words from a few leaves and solos.
                let b = ((next() % 8) * 128 + next() % 6) as u16;
                let w = match next() % 4 {
                    0 => SOLO_TAG | ((next() % 2) as usize + 1) << 20,
                    _ => leaf((next() % 3) as u32),
                };
                set_run(&mut runs, b, w);
                model[usize::from(b)] = w;
                assert_eq!(expand(&runs), model);
                assert_eq!(runs[0].0, 0);
                for pair in runs.windows(2) {
                    assert!(pair[0].0 < pair[1].0, "{runs:?}");
                    assert!(pair[0].1 != pair[1].1 || pair[0].1 & 1 == 0, "{runs:?}");
                }
            }
        }
    }

    #[test]
    fn sparse_segments_give_back_their_runs_and_every_blocks_word() {
        let (l1, l2) = (leaf(1), leaf(2));
        let (s1, s2) = (SOLO_TAG | 1 << 20, SOLO_TAG | 2 << 20);
        let cases: Vec<Vec<(u16, usize)>> = vec![
            vec![(0, l1)],
            vec![(0, l1), (5, s1), (6, l1)],
            vec![(0, l1), (5, s1), (6, l1), (9, s1), (10, l1)],
            vec![(0, s1), (1, l1), (1023, s2)],
            vec![(0, l1), (5, s1), (6, l2), (9, s2), (10, l2), (20, l1)],
            vec![(0, l1), (5, s1), (6, s2), (7, l2), (8, s1), (9, l1)],
            vec![(0, s1), (1, s2), (2, l2)],
            vec![(0, l1), (1022, s1), (1023, s2)],
        ];
        // Lists of every length up to the sparse limit, so that each
        // search runs from zero to log2(SPARSE_MAX) steps, with and without
        // bitmaps: run starts drawn from a fixed sequence, leaves and
        // singles in turn; every other list with block 0 a single, so that
        // its first leaf run starts later.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let generated = (1..=SPARSE_MAX).map(|n| {
            let mut starts: Vec<u16> = (0..4 * n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    1 + (x % (SEG_LEN as u64 - 1)) as u16
                })
                .collect();
            starts.sort_unstable();
            starts.dedup();
            starts.truncate(n - 1);
            let mut runs = vec![(0u16, leaf(7))];
            for (i, b) in starts.into_iter().enumerate() {
                let w = match i % 3 {
                    0 => SOLO_TAG | (i + 1) << 20,
                    1 => leaf(i as u32 + 100),
                    _ => leaf(i as u32 + 1000),
                };
                set_run(&mut runs, b, w);
            }
            if n % 2 == 0 {
                set_run(&mut runs, 0, SOLO_TAG | 9 << 20);
            }
            runs
        });
        for runs in cases.into_iter().chain(generated) {
            let p = build_sparse(&runs);
            // SAFETY: `p` is a live segment from `build_sparse`, freed once below.
            unsafe {
                assert_eq!(sparse_runs_of(p), runs);
                let words: Vec<usize> = (0..SEG_LEN).map(|b| sparse_slot(p, b)).collect();
                assert_eq!(words, expand(&runs), "{runs:?}");
                free_sparse(p as *mut ());
            }
        }
    }

    /// Every word of the flat array names a list made from the slot word
    /// root and segments give its block: a chunk's own list (its root's
    /// runs, leaves and default), or a shared list the writer keeps; the
    /// dictionary holds what the writer says; and every block answers as
    /// root and segments do (blocks with longer routes, in every /24).
    /// `subs` counts the sub-lists of /24s it found, and those of them
    /// with sub-lists of their own.
    fn assert_flat_mirrors(t: &Lpm, subs: &mut [usize; 2]) {
        let f = t.flat().expect("a flat array");
        let dict = f.as_ptr().wrapping_add(FLAT_LEN).cast::<u32>();
        for (v, i) in t.dict_ix.iter() {
            // SAFETY: the writer's own dictionary; index i is set.
            assert_eq!(unsafe { *dict.add(usize::from(*i)) }, *v);
        }
        let shared: std::collections::HashSet<u32> = t.values().values().copied().collect();
        for (blk, fw) in f.iter().enumerate() {
            let fw = fw.load(Ordering::Acquire);
            let r = t.shared.root[blk >> SEG_BITS].load(Ordering::Acquire);
            let want = if r & 1 == 1 {
                r
            } else {
                // SAFETY: the writer's own published segment.
                unsafe { slot_of(r, blk & (SEG_LEN - 1)) }
            };
            assert_eq!(t.src[blk], want, "block {blk:#x}");
            // SAFETY: a live list the array names.
            let head = 8 * list_words(
                unsafe { *(list_of(arena::lists(), fw) as *const u64) }.count_ones() as usize,
            );
            assert!(
                arena::line_fit(list_of(arena::lists(), fw), head),
                "block {blk:#x}: a list's head and leaves in one line where they fit one"
            );
            if is_solo(want) {
                assert_eq!(fw & OWN_LIST, OWN_LIST, "block {blk:#x}");
            } else if is_chunk(want) {
                assert_eq!(fw & OWN_LIST, OWN_LIST, "block {blk:#x}");
                let l = list_of(arena::lists(), fw);
                // SAFETY: the writer's own chunk and list.
                unsafe {
                    let c = want as *const AtomicU64;
                    let lv = (*c.add(1)).load(Ordering::Relaxed);
                    assert_eq!(*(l as *const u64), lv, "block {blk:#x}");
                    let di = *((l + 8) as *const u16);
                    // A full dictionary leaves values out: their leaves
                    // are "deep".
                    let full = t.dict_ix.len() == usize::from(L_SUB);
                    let mut starts = lv;
                    let mut next_sub = L_SUB;
                    for i in 0..lv.count_ones() as usize {
                        let j = starts.trailing_zeros();
                        starts &= starts - 1;
                        let leaf = *((l + LIST_HEAD + 2 * i) as *const u16);
                        let v = *c.cast::<u32>().add(poptrie::ROOT_LEAF + i);
                        // Where the chunk's routes do not cover the slot,
                        // the leaf is the default's index (where the
                        // dictionary has it).
                        let dv = poptrie::default_raw(c);
                        let dix = t.dict_ix.get(&dv);
                        if let Some(x) = dix {
                            assert_eq!(di, x, "block {blk:#x}");
                        }
                        let v = if v == NO_ROUTE && dix.is_some() {
                            dv
                        } else {
                            v
                        };
                        let back = match leaf {
                            L_DEEP if full => v,
                            L_DEEP => poptrie::DEEP,
                            x if x >= L_SUB => {
                                // Sub-lists in slot order; every address
                                // of the /24 answers as the chunk does.
                                assert_eq!(x, next_sub, "block {blk:#x} leaf {i}");
                                next_sub += 1;
                                subs[0] += 1;
                                let n = lv.count_ones() as usize;
                                let offs = l + 8 * list_words(n) + 8;
                                let k = usize::from(x - L_SUB);
                                let sub = l + 8 * usize::from(*((offs + 2 * k) as *const u16));
                                let m = (*(sub as *const u64)).count_ones() as usize;
                                let leaves =
                                    std::slice::from_raw_parts((sub + LIST_HEAD) as *const u16, m);
                                if leaves.iter().any(|x| (L_SUB..L_SUB + 64).contains(x)) {
                                    subs[1] += 1;
                                }
                                for low in 0..256 {
                                    let ip = (blk as u32) << 14 | j << 8 | low;
                                    assert_eq!(
                                        t.shared.lookup_v4_trusted(ip),
                                        t.shared.lookup_v4_segments(ip),
                                        "{ip:#x}"
                                    );
                                }
                                poptrie::DEEP
                            }
                            x => *dict.add(usize::from(x)),
                        };
                        assert_eq!(back, v, "block {blk:#x} leaf {i}");
                    }
                }
            } else {
                assert!(shared.contains(&fw), "block {blk:#x}: a shared list");
            }
            let keys: &[u32] = if want & 1 == 1 {
                &[0x2a5c]
            } else {
                &[0, 0x37, 0xff]
            };
            let slots = if want & 1 == 1 { 1 } else { 64 };
            for j in 0..slots {
                for low in keys {
                    let ip = (blk as u32) << 14 | j << 8 | low;
                    assert_eq!(
                        t.shared.lookup_v4_trusted(ip),
                        t.shared.lookup_v4_segments(ip),
                        "{ip:#x}"
                    );
                }
            }
        }
        // Lists and values not in use are bounded (see `trim_values`).
        assert!(shared.len() <= t.lists_at, "{} lists", shared.len());
        assert!(t.dict_ix.len() <= t.dict_at, "{} values", t.dict_ix.len());
    }

    /// Churn over short, /24 and deeper routes in a few /8s, some made
    /// dense, one at a time and in held runs: after every change the flat
    /// array mirrors root and segments. It comes when the table reaches two
    /// dense segments, goes when the table empties, and comes again; the
    /// answers match the table's without it all along.
    #[test]
    fn the_flat_array_mirrors_root_and_segments_through_churn() {
        let d = Domain::new();
        let mut t = Lpm::new_v4(&d);
        t.set_flat_at(2);
        let mut plain = Lpm::new_v4(&d);
        let mut x = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut held: Vec<(u32, u8)> = Vec::new();
        let mut seen = [false; 2];
        let mut subs = [0; 2];
        let mut reader = d.register();
        for round in 0..6 {
            // Fill: enough /24s in 10/8 and 11/8 to make both dense (on
            // even rounds), plus short and deep routes everywhere.
            let n = if round % 2 == 0 { 700 } else { 120 };
            if round % 3 == 2 {
                t.hold_retired();
            }
            for i in 0..n {
                let top = [10u32, 11, 12, 0][(next() % 4) as usize];
                let len = [24u8, 24, 24, 8, 12, 16, 20, 26, 30, 32][(next() % 10) as usize];
                let a = (top << 24 | (next() as u32 & 0x00ff_ffff))
                    & !u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                let nh = i + 1;
                t.insert_v4(a, len, nh).expect("route");
                plain.insert_v4(a, len, nh).expect("route");
                held.push((a, len));
                if round % 3 != 2 && i % 16 == 0 {
                    assert_flat_mirrors_if_any(&t, &mut subs);
                }
            }
            t.flush_retired();
            assert_flat_mirrors_if_any(&t, &mut subs);
            seen[usize::from(t.stats().flat)] = true;
            // Drain most of it (all of it, twice), in random order.
            let keep = if round % 3 == 1 { 0 } else { 40 };
            while held.len() > keep {
                let i = (next() % held.len() as u64) as usize;
                let (a, len) = held.swap_remove(i);
                t.remove_v4(a, len).expect("route");
                plain.remove_v4(a, len).expect("route");
                if held.len().is_multiple_of(16) {
                    assert_flat_mirrors_if_any(&t, &mut subs);
                }
            }
            seen[usize::from(t.stats().flat)] = true;
            let shared = t.shared().clone();
            let keys: Vec<u32> = (0..4096)
                .map(|_| {
                    ([10u32, 11, 12, 0, 13][(next() % 5) as usize] << 24)
                        | (next() as u32 & 0x00ff_ffff)
                })
                .collect();
            let mut out = vec![0u32; keys.len()];
            {
                let g = reader.guard();
                shared.lookup_v4_batch(&g, &keys, &mut out);
            }
            reader.quiescent();
            for (k, o) in keys.iter().zip(&out) {
                assert_eq!(*o, plain.lookup_v4(*k), "{k:#x}");
                assert_eq!(t.lookup_v4(*k), *o, "{k:#x}");
            }
        }
        assert_eq!(seen, [true, true], "the flat array came and went");
        assert!(
            subs[0] > 0 && subs[1] > 0,
            "sub-lists of both levels: {subs:?}"
        );
    }

    fn assert_flat_mirrors_if_any(t: &Lpm, subs: &mut [usize; 2]) {
        if t.flat().is_some() {
            assert_flat_mirrors(t, subs);
        }
    }

    /// More distinct nexthops than the dictionary holds: the lists name
    /// the overflow "deep", and those lookups walk the chunk or go through
    /// root and segments; every answer is still the table's.
    #[test]
    fn a_flat_array_whose_dictionary_is_full_still_answers_every_key() {
        let d = Domain::new();
        let mut t = Lpm::new_v4(&d);
        t.set_flat_at(0);
        let mut plain = Lpm::new_v4(&d);
        let n = DICT_LEN as u32 + 4000;
        // /24s two apart in 10/8..=12/8 (chunks of up to 32 runs), a
        // /26 in every 64th, /16s under some, each route its own nexthop.
        let mut routes = Vec::new();
        for i in 0..n {
            let a = (10 << 24) + (i << 9);
            routes.push((a, 24u8, i));
            if i % 64 == 0 {
                routes.push((a | 0x40, 26, n + i));
            }
        }
        for i in 0..40u32 {
            routes.push(((10 << 24) + (i << 19), 16, 2 * n + i));
        }
        for &(a, len, nh) in &routes {
            t.insert_v4(a, len, nh).expect("route");
            plain.insert_v4(a, len, nh).expect("route");
        }
        assert!(t.stats().flat);
        assert_eq!(
            t.dict_ix.len(),
            usize::from(L_SUB),
            "the dictionary is full"
        );
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for &(a, _, _) in &routes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for ip in [a, a | 0x41, a | (x as u32 & 0x1ff)] {
                assert_eq!(t.lookup_v4(ip), plain.lookup_v4(ip), "{ip:#x}");
            }
        }
        assert_flat_mirrors(&t, &mut [0; 2]);
    }

    /// A block whose flat word names the fallback list (no list could be
    /// had) answers through root and segments.
    #[test]
    fn the_fallback_list_answers_through_root_and_segments() {
        let d = Domain::new();
        let mut t = Lpm::new_v4(&d);
        t.set_flat_at(0);
        for (a, len, nh) in [
            (0x0a00_0000u32, 8u8, 1u32),
            (0x0a01_0200, 24, 2),
            (0x0a01_0280, 25, 3),
            (0x0a02_0000, 20, 4),
            (0x0b00_0000, 24, 5),
        ] {
            t.insert_v4(a, len, nh).expect("route");
        }
        let f = t.flat().expect("a flat array");
        let keys = [
            0x0a01_0203u32,
            0x0a01_0281,
            0x0a01_0301,
            0x0a02_0f00,
            0x0a7f_0000,
            0x0b00_0001,
            0x0b00_0101,
            0x0c00_0000,
        ];
        let want: Vec<u32> = keys.iter().map(|&k| t.lookup_v4(k)).collect();
        assert_eq!(want, [2, 3, 1, 4, 1, 5, NO_ROUTE, NO_ROUTE]);
        for &k in &keys {
            // Lists left unfreed: the test's table only.
            f[(k >> 14) as usize].store(FALLBACK, Ordering::Release);
        }
        let got: Vec<u32> = keys.iter().map(|&k| t.lookup_v4(k)).collect();
        assert_eq!(got, want);
        let mut r = d.register();
        let g = r.guard();
        let mut out = [0u32; 8];
        t.shared().lookup_v4_batch(&g, &keys, &mut out);
        assert_eq!(out.to_vec(), want);
    }

    /// A /24 with longer routes gets a sub-list of its /30s, and a /30
    /// with longer routes one of its addresses: every address of the /24
    /// answers from them (the chunk only where the dictionary is full), as
    /// the table without the flat array does, one by one and in batches.
    #[test]
    fn sub_lists_answer_every_address_under_a_24() {
        let d = Domain::new();
        let mut t = Lpm::new_v4(&d);
        t.set_flat_at(0);
        let mut plain = Lpm::new_v4(&d);
        let routes = [
            (0x0a00_0000u32, 8u8, 1u32),
            (0x0a01_0000, 24, 2),
            (0x0a01_0040, 26, 3),
            (0x0a01_0080, 30, 4),
            (0x0a01_00c8, 32, 5),
            (0x0a01_00c9, 32, 6),
            (0x0a01_00f0, 31, 7),
            (0x0a01_0100, 24, 8),
            (0x0a01_0204, 30, 9),
        ];
        for (a, len, nh) in routes {
            t.insert_v4(a, len, nh).expect("route");
            plain.insert_v4(a, len, nh).expect("route");
        }
        let mut subs = [0; 2];
        assert_flat_mirrors(&t, &mut subs);
        assert_eq!(
            subs,
            [2, 1],
            "two /24s with sub-lists, one /30 with its own"
        );
        let keys: Vec<u32> = (0x0a01_0000..0x0a01_0400).collect();
        let want: Vec<u32> = keys.iter().map(|&k| plain.lookup_v4(k)).collect();
        let got: Vec<u32> = keys.iter().map(|&k| t.lookup_v4(k)).collect();
        assert_eq!(got, want);
        for (k, w) in [
            (0x0a01_00c8, 5),
            (0x0a01_00c9, 6),
            (0x0a01_00ca, 2),
            (0x0a01_00f1, 7),
        ] {
            assert_eq!(t.lookup_v4(k), w, "{k:#x}");
        }
        let mut r = d.register();
        let g = r.guard();
        let mut out = vec![0u32; keys.len()];
        t.shared().lookup_v4_batch(&g, &keys, &mut out);
        assert_eq!(out, want);
    }

    /// A block whose sub-lists would not fit a list's largest block (every
    /// /24 of it holding 32 /30s of different nexthops) gets a list
    /// without them: its slots say "deep" and the chunk answers.
    #[test]
    fn a_block_too_large_for_sub_lists_walks_its_chunk() {
        let d = Domain::new();
        let mut t = Lpm::new_v4(&d);
        t.set_flat_at(0);
        let mut plain = Lpm::new_v4(&d);
        let mut routes = vec![(0x0a00_0000u32, 8u8, 1u32)];
        for j in 0..64u32 {
            for q in 0..32u32 {
                routes.push((0x0a01_0000 | j << 8 | q << 3, 30, 2 + j * 32 + q));
            }
        }
        for &(a, len, nh) in &routes {
            t.insert_v4(a, len, nh).expect("route");
            plain.insert_v4(a, len, nh).expect("route");
        }
        let f = t.flat().expect("a flat array");
        let l = list_of(arena::lists(), f[0x0a01_0000 >> 14].load(Ordering::Relaxed));
        // SAFETY: the writer's own live list.
        let leaves = unsafe {
            let n = (*(l as *const u64)).count_ones() as usize;
            std::slice::from_raw_parts((l + LIST_HEAD) as *const u16, n).to_vec()
        };
        assert_eq!(leaves, vec![L_DEEP; 64], "no sub-lists");
        let keys: Vec<u32> = (0x0a01_0000..0x0a01_4000).step_by(3).collect();
        let want: Vec<u32> = keys.iter().map(|&k| plain.lookup_v4(k)).collect();
        let got: Vec<u32> = keys.iter().map(|&k| t.lookup_v4(k)).collect();
        assert_eq!(got, want);
        let mut r = d.register();
        let g = r.guard();
        let mut out = vec![0u32; keys.len()];
        t.shared().lookup_v4_batch(&g, &keys, &mut out);
        assert_eq!(out, want);
        assert_flat_mirrors(&t, &mut [0; 2]);
    }
}
