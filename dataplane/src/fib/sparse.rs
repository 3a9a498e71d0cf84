//! Sparse segments: the compact form of a /8 whose blocks fall into few
//! runs (see [`super::lpm`]): their word format, how readers find a block's
//! word in one, how the writer builds and copies them, and the per-thread
//! pool freed segments go back to.
//!
//! A sparse segment, immutable once published, holds two sorted lists: the
//! runs of leaves (each from its first block to the next run's; the first
//! starts at or before the first block not in the other list) and the
//! single blocks whose word is a chunk or solo. Word 0 holds the number of
//! leaf runs (low 32 bits) and of single blocks (high 32 bits); then the
//! leaf runs' words, the single blocks' words, the leaf runs' first blocks
//! and the single blocks as u16s, four to a word. A VRF's scattered routes
//! cost a single block each, without a leaf run to end it. A segment of
//! more than [`MAP_MIN`] entries then carries a bitmap of its blocks for
//! each list (a bit per block that is a single, or starts a leaf run), with
//! the count of set bits before each bitmap word: a lookup finds its word
//! with a popcount. In a shorter segment a lookup counts each list's keys
//! at or below its block, four keys (a word) at a time.
#![allow(unsafe_code)]

use super::lpm::{leaf, SEG_LEN};
use super::poptrie::NO_ROUTE;

/// Words of a sparse segment with `nl` leaf runs and `ns` single blocks.
pub(super) fn sparse_words(nl: usize, ns: usize) -> usize {
    let maps = if has_maps(nl, ns) { MAP_WORDS } else { 0 };
    1 + nl + ns + nl.div_ceil(4) + ns.div_ceil(4) + maps
}

/// Segments listing more than this many entries carry bitmaps (see the
/// module's text): a lookup then reads two words and a count instead of
/// counting through two lists. 8 took the peak memory of 1000 VRFs of 1000
/// routes from 94 to 101 MiB; 16 looked up a fifth fewer addresses in a
/// 20k-route table.
const MAP_MIN: usize = 12;
/// Words of one list's bitmap: a bit per block.
const MAP_BITS_WORDS: usize = SEG_LEN / 64;
/// Words of one list's counts: a byte per bitmap word, the number of set
/// bits in the words before it.
const MAP_COUNT_WORDS: usize = MAP_BITS_WORDS / 8;
/// Words of both lists' bitmaps and counts: the singles' bitmap, the leaf
/// runs' bitmap, then the singles' counts and the leaf runs' counts.
const MAP_WORDS: usize = 2 * (MAP_BITS_WORDS + MAP_COUNT_WORDS);

/// True if a segment of `nl` leaf runs and `ns` single blocks carries
/// bitmaps (after its key lists).
#[inline(always)]
fn has_maps(nl: usize, ns: usize) -> bool {
    nl + ns > MAP_MIN
}

/// Append the bitmaps and counts of the segment being built in `out`,
/// whose key lists are complete, if its size calls for them.
pub(super) fn push_maps(out: &mut Vec<usize>, nl: usize, ns: usize) {
    if !has_maps(nl, ns) {
        return;
    }
    let (lk, sk) = (1 + nl + ns, 1 + nl + ns + nl.div_ceil(4));
    let mut bits = [[0usize; MAP_BITS_WORDS]; 2];
    for (map, (at, n)) in bits.iter_mut().zip([(sk, ns), (lk, nl)]) {
        for i in 0..n {
            let key = (out[at + i / 4] >> (16 * (i % 4))) & 0xffff;
            map[key / 64] |= 1 << (key % 64);
        }
    }
    for map in &bits {
        out.extend_from_slice(map);
    }
    for map in &bits {
        // Lists hold fewer than 256 keys (the LPM keeps a segment's runs
        // within SPARSE_MAX), so counts fit a byte.
        let mut counts = [0u8; 8 * MAP_COUNT_WORDS];
        let mut total = 0u32;
        for (c, w) in counts.iter_mut().zip(map) {
            *c = u8::try_from(total).expect("fewer than 256 keys in a sparse list");
            total += w.count_ones();
        }
        for c in counts.chunks(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            out.push(u64::from_le_bytes(b) as usize);
        }
    }
}

/// The count byte `i` of the counts at word `at`.
///
/// # Safety
/// `base` must point at a live sparse segment with bitmaps whose counts
/// start at word `at`, and `i` < [`MAP_BITS_WORDS`].
#[inline(always)]
unsafe fn map_count(base: *const usize, at: usize, i: usize) -> usize {
    // SAFETY: caller's contract.
    (unsafe { *base.add(at + i / 8) } >> (8 * (i % 8))) & 0xff
}

/// The (leaf runs, single blocks) counts of the sparse segment at `base`.
///
/// # Safety
/// `base` must point at a live sparse segment.
#[inline(always)]
pub(super) unsafe fn sparse_counts(base: *const usize) -> (usize, usize) {
    // SAFETY: caller's contract; word 0 is the header.
    let h = unsafe { *base };
    (h & 0xffff_ffff, h >> 32)
}

/// Key `i` of the u16 list starting at word `at`.
///
/// # Safety
/// `base` must point at a live sparse segment and key `i` lie in it.
#[inline(always)]
pub(super) unsafe fn sparse_key(base: *const usize, at: usize, i: usize) -> usize {
    // SAFETY: caller's contract.
    (unsafe { *base.add(at + i / 4) } >> (16 * (i % 4))) & 0xffff
}

/// The first of the `n` sorted keys of the list at word `at` that is not
/// below `b` (`n` if none).
///
/// # Safety
/// `base` must point at a live sparse segment holding that list.
#[inline(always)]
pub(super) unsafe fn sparse_lower(base: *const usize, at: usize, n: usize, b: usize) -> usize {
    // SAFETY: forwarded contract.
    unsafe { partition(base, at, 0, n, |k| k < b) }
}

/// The first index `i` of `lo..lo + n` whose key fails `below` (`lo + n`
/// if none), for a `below` that holds for a prefix of the sorted keys.
///
/// Branch-free: the loop runs log2(n) times whatever the keys, and each
/// step's choice is a conditional move, so a reader pays no mispredicted
/// branch per probe (half of them would be, on random addresses).
///
/// # Safety
/// `base` must point at a live sparse segment whose list at word `at`
/// holds at least `lo + n` keys.
#[inline(always)]
unsafe fn partition(
    base: *const usize,
    at: usize,
    lo: usize,
    n: usize,
    below: impl Fn(usize) -> bool,
) -> usize {
    if n == 0 {
        return lo;
    }
    let (mut first, mut len) = (lo, n);
    while len > 1 {
        let half = len / 2;
        // SAFETY: first + half < lo + n (the caller's list).
        let k = unsafe { sparse_key(base, at, first + half) };
        first = core::hint::select_unpredictable(below(k), first + half, first);
        len -= half;
    }
    // SAFETY: first < lo + n.
    first + usize::from(below(unsafe { sparse_key(base, at, first) }))
}

/// The entries `(is_leaf, block, word)` of a sparse segment's two lists
/// built from `runs`: the singles, and the leaf runs but those that resume
/// the last leaf run past singles.
pub(super) fn sparse_entries(
    runs: &[(u16, usize)],
) -> impl Iterator<Item = (bool, u16, usize)> + '_ {
    let mut last_leaf = None;
    runs.iter().filter_map(move |&(b, w)| {
        if w & 1 == 0 {
            Some((false, b, w))
        } else if last_leaf != Some(w) {
            last_leaf = Some(w);
            Some((true, b, w))
        } else {
            None
        }
    })
}

/// Push `keys` (u16 values) four to a word, the first in the low bits.
///
/// Segments are built by pushing every word in order rather than by
/// zero-filling and or-ing keys in: the optimiser turns a malloc followed
/// by a zero fill into calloc, which in glibc skips the per-thread cache
/// and takes the arena lock for each of the writer's small segments.
pub(super) fn push_keys(out: &mut Vec<usize>, keys: impl Iterator<Item = usize>) {
    let (mut acc, mut n) = (0usize, 0usize);
    for k in keys {
        acc |= k << (16 * (n % 4));
        n += 1;
        if n % 4 == 0 {
            out.push(acc);
            acc = 0;
        }
    }
    if n % 4 != 0 {
        out.push(acc);
    }
}

/// A sparse segment for `runs` (sorted, run 0 at block 0, leaf runs
/// merged, chunk and solo runs one block each, as [`set_run`] keeps them).
///
/// One pass sorts the runs into the two lists (on the stack: a segment
/// lists fewer than 256 of each, see [`push_maps`]), then the words go out
/// in order. Four passes of filtered iterators over the runs cost the
/// writer three times as many instructions per segment.
pub(super) fn build_sparse(runs: &[(u16, usize)]) -> usize {
    const CAP: usize = 256;
    let mut leaves: arrayvec::ArrayVec<(u16, usize), CAP> = arrayvec::ArrayVec::new();
    let mut singles: arrayvec::ArrayVec<(u16, usize), CAP> = arrayvec::ArrayVec::new();
    for (is_leaf, b, w) in sparse_entries(runs) {
        let list = if is_leaf { &mut leaves } else { &mut singles };
        assert!(!list.is_full(), "a sparse segment of more than {CAP} runs");
        list.push((b, w));
    }
    let (nl, ns) = (leaves.len(), singles.len());
    let mut w = sparse_storage(sparse_words(nl, ns));
    w.push(nl | (ns << 32));
    w.extend(leaves.iter().map(|e| e.1));
    w.extend(singles.iter().map(|e| e.1));
    push_keys(&mut w, leaves.iter().map(|e| usize::from(e.0)));
    push_keys(&mut w, singles.iter().map(|e| usize::from(e.0)));
    push_maps(&mut w, nl, ns);
    debug_assert_eq!(w.len(), sparse_words(nl, ns));
    Box::into_raw(w.into_boxed_slice()) as *mut usize as usize
}

/// The runs of the sparse segment at `p`, as [`build_sparse`] took them.
///
/// # Safety
/// `p` (untagged) must point at a live sparse segment.
pub(super) unsafe fn sparse_runs_of(p: usize) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    // SAFETY: caller's contract.
    unsafe { sparse_runs_into(p, &mut out) };
    out
}

/// [`sparse_runs_of`] into `out` (cleared first).
///
/// # Safety
/// `p` (untagged) must point at a live sparse segment.
pub(super) unsafe fn sparse_runs_into(p: usize, out: &mut Vec<(u16, usize)>) {
    out.clear();
    let base = p as *const usize;
    // SAFETY: caller's contract, for every read below: indices stay within
    // the counts of the header.
    unsafe {
        let (nl, ns) = sparse_counts(base);
        let (lk, sk) = (1 + nl + ns, 1 + nl + ns + nl.div_ceil(4));
        let leaf = |i: usize| (sparse_key(base, lk, i), *base.add(1 + i));
        let single = |i: usize| (sparse_key(base, sk, i), *base.add(1 + nl + i));
        out.reserve(nl + 2 * ns);
        let (mut i, mut j) = (0, 0);
        let mut current: Option<usize> = None;
        while i < nl || j < ns {
            let take_leaf = j >= ns || (i < nl && leaf(i).0 < single(j).0);
            if take_leaf {
                let (k, w) = leaf(i);
                i += 1;
                current = Some(w);
                if out.last().is_none_or(|l| l.1 != w) {
                    out.push((k as u16, w));
                }
            } else {
                let (k, w) = single(j);
                j += 1;
                out.push((k as u16, w));
                // The leaf in effect resumes after the block, unless the
                // next entry starts there.
                let next = match (i < nl, j < ns) {
                    (true, true) => leaf(i).0.min(single(j).0),
                    (true, false) => leaf(i).0,
                    (false, true) => single(j).0,
                    (false, false) => SEG_LEN,
                };
                if let Some(c) = current {
                    if next != k + 1 && k + 1 < SEG_LEN {
                        out.push(((k + 1) as u16, c));
                    }
                }
            }
        }
    }
}

/// The slot word of block `b` in the sparse segment at `p`. Out of line:
/// the lookup loops stay compact for dense segments (measured faster).
///
/// # Safety
/// `p` (untagged) must point at a live sparse segment.
#[inline(never)]
pub(super) unsafe fn sparse_slot(p: usize, b: usize) -> usize {
    let base = p as *const usize;
    // SAFETY: caller's contract, for every read below: indices stay within
    // the counts of the header.
    unsafe {
        let (nl, ns) = sparse_counts(base);
        let (lk, sk) = (1 + nl + ns, 1 + nl + ns + nl.div_ceil(4));
        if has_maps(nl, ns) {
            let ms = sk + ns.div_ceil(4);
            let (ml, cs) = (ms + MAP_BITS_WORDS, ms + 2 * MAP_BITS_WORDS);
            let cl = cs + MAP_COUNT_WORDS;
            let (w, bit) = (b / 64, 1usize << (b % 64));
            let singles = *base.add(ms + w);
            if singles & bit != 0 {
                let i = map_count(base, cs, w) + (singles & (bit - 1)).count_ones() as usize;
                return *base.add(1 + nl + i);
            }
            if nl == 0 {
                return leaf(NO_ROUTE);
            }
            // The leaf runs starting at or before b: the last of them
            // holds b (the first run if none does).
            let starts = *base.add(ml + w);
            let r = map_count(base, cl, w) + (starts & (bit | (bit - 1))).count_ones() as usize;
            return *base.add(r.max(1));
        }
        // A short list: its keys at or below b counted four at a time.
        // The single block b, if listed, is the last of them.
        let r = count_le(base, sk, ns, b);
        if r > 0 && sparse_key(base, sk, r - 1) == b {
            return *base.add(nl + r);
        }
        if nl == 0 {
            return leaf(NO_ROUTE);
        }
        // The last leaf run starting at or before b (or the first).
        *base.add(count_le(base, lk, nl, b).max(1))
    }
}

/// How many of the `n` keys of the list at word `at` are at most `b`,
/// counted four keys (one word) at a time: in each 16-bit lane, `b` with
/// the lane's top bit set, less the key, keeps that bit exactly when the
/// key is at most `b` (keys and `b` are below 2^10, so no lane borrows from
/// the next). The last word's unused lanes hold 0, which counts, and are
/// taken off.
///
/// # Safety
/// `base` must point at a live sparse segment whose list at word `at`
/// holds `n` keys.
#[inline(always)]
unsafe fn count_le(base: *const usize, at: usize, n: usize, b: usize) -> usize {
    const TOP: u64 = 0x8000_8000_8000_8000;
    let probe = (b as u64).wrapping_mul(0x0001_0001_0001_0001) | TOP;
    let words = n.div_ceil(4);
    let mut c = 0;
    for w in 0..words {
        // SAFETY: w < n.div_ceil(4), inside the caller's list.
        let keys = unsafe { *base.add(at + w) } as u64;
        c += (probe.wrapping_sub(keys) & TOP).count_ones() as usize;
    }
    c - (words * 4 - n)
}

/// Give block `b` the word `w` in a sorted run list (run 0 starts at block
/// 0), splitting its run and merging leaf runs that end up equal.
pub(super) fn set_run(runs: &mut Vec<(u16, usize)>, b: u16, w: usize) {
    let i = runs.partition_point(|(s, _)| *s <= b).saturating_sub(1);
    let Some(&(s, old)) = runs.get(i) else {
        runs.push((0, w));
        return;
    };
    if old == w {
        return;
    }
    let end = runs.get(i + 1).map_or(SEG_LEN, |r| usize::from(r.0));
    // Run i becomes up to three: its part before b, b, its part after b.
    let at = match (s < b, usize::from(b) + 1 < end) {
        (true, true) => {
            // b inside the run (a scattered route's block, the usual
            // change): both neighbours hold `old`, so nothing merges.
            let len = runs.len();
            runs.resize(len + 2, (0, 0));
            runs.copy_within(i + 1..len, i + 3);
            runs[i + 1] = (b, w);
            runs[i + 2] = (b + 1, old);
            return;
        }
        (true, false) => {
            runs.insert(i + 1, (b, w));
            i + 1
        }
        (false, true) => {
            runs[i] = (b, w);
            runs.insert(i + 1, (b + 1, old));
            i
        }
        (false, false) => {
            runs[i] = (b, w);
            i
        }
    };
    // Only leaves merge: a run of a chunk or solo word is its one block
    // (two blocks may hold equal solo words, each its own route). Runs
    // merged before, so only those around b can merge now.
    let mut k = i.max(1);
    let mut hi = (at + 2).min(runs.len());
    while k < hi {
        if runs[k].1 == runs[k - 1].1 && runs[k].1 & 1 == 1 {
            runs.remove(k);
            hi -= 1;
        } else {
            k += 1;
        }
    }
}

/// Free a sparse segment (not the chunks it lists).
///
/// # Safety
/// `p` (untagged) from [`build_sparse`], unreachable by readers, freed once.
pub(super) unsafe fn free_sparse(p: *mut ()) {
    // SAFETY: caller's contract; word 0 is the header.
    let (nl, ns) = unsafe { sparse_counts(p as *const usize) };
    let n = sparse_words(nl, ns);
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            match pool.0.get_mut(n - 1) {
                Some(free) if free.len() < POOL_DEPTH => {
                    free.push(p as usize);
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false);
    if !pooled {
        // SAFETY: the allocation was a boxed slice of this many words.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p as *mut usize, n)) });
    }
}

/// Sparse segments of up to this many words are recycled through [`POOL`].
const POOL_WORDS: usize = 96;
/// Most freed segments a size class of [`POOL`] keeps (about 9 MiB in all
/// at most, per thread that frees segments).
const POOL_DEPTH: usize = 256;

/// Freed sparse segments by size (index: words − 1).
struct SegPool([Vec<usize>; POOL_WORDS]);

impl Drop for SegPool {
    fn drop(&mut self) {
        for (i, class) in self.0.iter_mut().enumerate() {
            for p in class.drain(..) {
                // SAFETY: pooled pointers are boxed slices of i + 1 words
                // that nobody else owns.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(p as *mut usize, i + 1))
                });
            }
        }
    }
}

thread_local! {
    /// This thread's freed sparse segments, which its writes reuse. A
    /// writer replaces a segment for nearly every change and the old ones
    /// are freed in bursts, one per grace period: glibc's per-thread cache
    /// keeps seven blocks of a size, so most of them went through malloc's
    /// and free's slow paths, a sixth of the writer's instructions. The
    /// thread that applies changes is the one that retires and mostly
    /// collects what they unlinked, so its frees feed its own writes.
    static POOL: std::cell::RefCell<SegPool> =
        const { std::cell::RefCell::new(SegPool([const { Vec::new() }; POOL_WORDS])) };
}

/// Empty storage for a sparse segment of `n` words: a recycled one of
/// that size if this thread's [`POOL`] has one.
pub(super) fn sparse_storage(n: usize) -> Vec<usize> {
    let recycled = POOL
        .try_with(|pool| pool.borrow_mut().0.get_mut(n.wrapping_sub(1))?.pop())
        .ok()
        .flatten();
    match recycled {
        // SAFETY: `free_sparse` pools only boxed slices of exactly `n`
        // words (the global allocator's layout for `n` usizes), each once,
        // owned by nobody else once pooled.
        Some(p) => unsafe { Vec::from_raw_parts(p as *mut usize, 0, n) },
        None => Vec::with_capacity(n),
    }
}
