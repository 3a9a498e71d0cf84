//! Memory for the LPM's poptrie chunks and dense segments, in 2 MB regions
//! the kernel may back with transparent huge pages
//! (`madvise(MADV_HUGEPAGE)`).
//!
//! A full table's lookups land on random chunks across megabytes; in 4 KiB
//! pages nearly every one needs a page walk. Here the chunks of all tables
//! share regions aligned to 2 MB, so that one TLB entry covers thousands of
//! chunks wherever the system's THP setting is `madvise` or `always`
//! (Debian's default is `madvise`). Where it is `never`, or a region cannot
//! be mapped, the memory is ordinary pages or the heap: nothing changes but
//! speed.
//!
//! Blocks come in size classes (2-word steps up to 64 words, 16-word steps
//! up to [`MAX_WORDS`], a dense segment's 1024 slot words the largest); a
//! freed block goes on its class's free list and is reused by the next
//! block of that class, or split for a smaller one before the regions
//! grow. Regions are kept for the process's life, so the tables' memory is
//! their high-water mark. Larger blocks (rare: an IPv6 chunk with hundreds
//! of nodes) come from the heap, as every block does where no region can
//! be mapped. Only writers allocate and free (blocks are freed after
//! readers' grace periods), so a mutex is enough.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Bytes of a region (one transparent huge page).
pub(crate) const REGION: usize = 2 << 20;
/// Largest block, in words, the regions serve.
pub(crate) const MAX_WORDS: usize = 1024;
/// Number of size classes.
const CLASSES: usize = 32 + (MAX_WORDS - 64) / 16;

/// The size class of a block of `words` (1..=MAX_WORDS) and the words it
/// holds.
fn class(words: usize) -> (usize, usize) {
    if words <= 64 {
        let c = words.div_ceil(2).max(1);
        (c - 1, 2 * c)
    } else {
        let c = (words - 64).div_ceil(16);
        (31 + c, 64 + 16 * c)
    }
}

struct Pool {
    /// Head of each class's free list (0: empty); a free block's first
    /// word holds the next.
    free: [usize; CLASSES],
    /// Unused part of the current region.
    next: usize,
    end: usize,
    /// Whether mapping regions failed (then the heap serves every block).
    no_regions: bool,
    /// Start addresses of the regions, sorted.
    regions: Vec<usize>,
}

/// Chunks and segments.
static POOL: Mutex<Pool> = Mutex::new(Pool::empty());
/// The flat arrays' leaf lists, in regions of their own: a full table's
/// lookups read one list each, and packed together they take a few
/// megabytes of lines that stay cached.
static LISTS: Mutex<Pool> = Mutex::new(Pool::empty());

fn lock(pool: &'static Mutex<Pool>) -> std::sync::MutexGuard<'static, Pool> {
    pool.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The heap's layout for a block of `words` words.
fn heap_layout(words: usize) -> std::alloc::Layout {
    // 16-byte alignment, as region blocks have. A chunk's words number far
    // fewer than isize::MAX / 8.
    std::alloc::Layout::from_size_align(words.max(1) * 8, 16)
        .expect("a chunk's bytes are far below isize::MAX")
}

/// A block of at least `words` words, 16-byte aligned, its contents
/// unspecified: from a region where one serves that size, else from the
/// heap. Give it back with [`free`].
///
/// Aborts, as `Box` does, when the heap is out of memory.
pub(crate) fn alloc(words: usize) -> *mut AtomicU64 {
    alloc_in(&POOL, words)
}

/// A block for a flat array's leaf list of `words` words (at most
/// [`MAX_WORDS`]), 16-byte aligned, in the address space [`list_base`]
/// reserved, placed so that its first `head` bytes (the part every lookup
/// reads from) lie in one cache line where they fit one, else start one
/// ([`line_fit`]); `None` when it cannot be had. Give it back with
/// [`free_list`].
pub(crate) fn alloc_list(words: usize, head: usize) -> Option<*mut AtomicU64> {
    if LIST_BASE.load(Ordering::Relaxed) == 0 || !(1..=MAX_WORDS).contains(&words) {
        return None;
    }
    // SAFETY: `map_list_region` returns fresh regions of REGION bytes.
    unsafe { lock(&LISTS).take_where(words, map_list_region, |at| line_fit(at, head)) }
}

/// Whether a block at `at` keeps its first `head` bytes inside one 64-byte
/// line (where `head` fits one) or starts a line (where it does not): a
/// lookup then finds a list's head and the leaf it needs in one line, or
/// two for the longest lists, and asks for no line it will not read.
pub(crate) fn line_fit(at: usize, head: usize) -> bool {
    if head <= 64 {
        at % 64 + head <= 64
    } else {
        at.is_multiple_of(64)
    }
}

/// Free blocks of a class looked at for one that [`Pool::take_where`]'s
/// test accepts, before the region's next block is taken instead.
const FIT_TRIES: usize = 8;

/// Address space reserved for the lists' regions: 16 GiB, so that a list
/// is named by 30 bits, its offset in 16-byte units.
const LIST_SPAN: usize = 16 << 30;
/// Start of the lists' address space (0: not reserved yet).
static LIST_BASE: AtomicUsize = AtomicUsize::new(0);
/// Bytes of it mapped so far.
static LIST_USED: AtomicUsize = AtomicUsize::new(0);

/// The start of the lists' address space, reserved on first use (address
/// space only, `PROT_NONE`: regions are mapped in it as lists need them),
/// with the block at offset 0 holding `first` (a list every table may name
/// and none frees); `None` if it cannot be reserved.
pub(crate) fn list_base(first: [u64; 3]) -> Option<usize> {
    let mut pool = lock(&LISTS);
    let b = LIST_BASE.load(Ordering::Relaxed);
    if b != 0 {
        return Some(b);
    }
    if pool.no_regions {
        return None;
    }
    // SAFETY: an anonymous reservation at an address of the kernel's
    // choosing touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LIST_SPAN + REGION,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        pool.no_regions = true;
        return None;
    }
    let base = (p as usize).next_multiple_of(REGION);
    LIST_BASE.store(base, Ordering::Release);
    // SAFETY: as in `alloc_list`; the pool is fresh, so its first block is
    // the first region's start.
    let Some(q) = (unsafe { pool.take(first.len(), map_list_region) }) else {
        LIST_BASE.store(0, Ordering::Release);
        pool.no_regions = true;
        return None;
    };
    debug_assert_eq!(q as usize, base);
    for (i, w) in first.iter().enumerate() {
        // SAFETY: the block just taken, ours, not shared yet.
        unsafe { q.add(i).write(AtomicU64::new(*w)) };
    }
    Some(base)
}

/// The start of the lists' address space, for readers of a flat array
/// (which exists only once [`list_base`] reserved it).
#[inline(always)]
pub(crate) fn lists() -> usize {
    LIST_BASE.load(Ordering::Relaxed)
}

/// The next region of the lists' address space, mapped and advised for
/// huge pages; `None` when it is used up or cannot be mapped.
fn map_list_region() -> Option<usize> {
    let base = LIST_BASE.load(Ordering::Relaxed);
    let off = LIST_USED.fetch_add(REGION, Ordering::Relaxed);
    if base == 0 || off + REGION > LIST_SPAN {
        return None;
    }
    let at = base + off;
    // SAFETY: a fixed mapping over part of our own reservation, which
    // nothing else uses.
    let p = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            REGION,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: advice on the region just mapped.
    unsafe { libc::madvise(p, REGION, libc::MADV_HUGEPAGE) };
    Some(at)
}

fn alloc_in(pool: &'static Mutex<Pool>, words: usize) -> *mut AtomicU64 {
    if (1..=MAX_WORDS).contains(&words) {
        if let Some(p) = alloc_in_region(pool, words) {
            return p;
        }
    }
    let layout = heap_layout(words);
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    p.cast()
}

/// Map a 2 MB-aligned region of [`REGION`] bytes, asking for huge pages.
fn map_region() -> Option<usize> {
    // Map twice the size and trim to the alignment.
    let len = 2 * REGION;
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let start = p as usize;
    let aligned = start.next_multiple_of(REGION);
    // SAFETY: both ranges lie inside the mapping just made and nothing
    // refers to them.
    unsafe {
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = start + len - (aligned + REGION);
        if tail > 0 {
            libc::munmap((aligned + REGION) as *mut libc::c_void, tail);
        }
        // Advice only: without THP the region is ordinary pages.
        libc::madvise(aligned as *mut libc::c_void, REGION, libc::MADV_HUGEPAGE);
    }
    Some(aligned)
}

/// A region of [`REGION`] bytes of its own, zeroed, 2 MB-aligned and
/// marked for huge pages, outside the pool (a large IPv4 table's flat
/// array and dictionary); `None` if it cannot be mapped. Give it back with
/// [`unmap_region`].
pub(crate) fn own_region() -> Option<*mut u8> {
    map_region().map(|p| p as *mut u8)
}

/// Unmap a region from [`own_region`].
///
/// # Safety
/// `p` must come from [`own_region`], be unreachable by any reader and be
/// given back once.
pub(crate) unsafe fn unmap_region(p: *mut u8) {
    // SAFETY: caller's contract: a whole mapping of REGION bytes of ours.
    unsafe { libc::munmap(p.cast(), REGION) };
}

/// A region block of at least `words` words (1..=[`MAX_WORDS`]); `None`
/// where no region could be mapped.
fn alloc_in_region(pool: &'static Mutex<Pool>, words: usize) -> Option<*mut AtomicU64> {
    // SAFETY: `map_region` returns fresh regions of REGION bytes.
    unsafe { lock(pool).take(words, map_region) }
}

impl Pool {
    /// A pool with no region yet.
    const fn empty() -> Pool {
        Pool {
            free: [0; CLASSES],
            next: 0,
            end: 0,
            no_regions: false,
            regions: Vec::new(),
        }
    }

    /// A block for `words` words (1..=[`MAX_WORDS`]): a free one of its
    /// class, else the current region's next, else a larger free block
    /// split, else the first of a new region from `map`; `None` when `map`
    /// fails.
    ///
    /// # Safety
    /// `map` must return the start of [`REGION`] bytes of writable memory,
    /// 16-byte aligned, that nothing else uses for as long as the pool does.
    unsafe fn take(
        &mut self,
        words: usize,
        map: impl FnOnce() -> Option<usize>,
    ) -> Option<*mut AtomicU64> {
        // SAFETY: caller's contract.
        unsafe { self.take_where(words, map, |_| true) }
    }

    /// [`Pool::take`] for a block whose address `fits` accepts. `fits`
    /// must accept every 64-byte aligned address: the region's next block
    /// is moved to the next line (the span skipped goes to the free lists)
    /// where it is not accepted, and a larger free block is split at its
    /// first line where its start is not.
    ///
    /// # Safety
    /// As for [`Pool::take`].
    unsafe fn take_where(
        &mut self,
        words: usize,
        map: impl FnOnce() -> Option<usize>,
        fits: impl Fn(usize) -> bool,
    ) -> Option<*mut AtomicU64> {
        let (c, size) = class(words);
        if let Some(b) = self.pop_where(c, &fits) {
            return Some(b as *mut AtomicU64);
        }
        let bytes = size * 8;
        if !fits(self.next) {
            let line = (self.next | 63) + 1;
            if self.end >= line && self.end - line >= bytes {
                // SAFETY: the region's unused span up to the line.
                unsafe { self.give(self.next, (line - self.next) / 8) };
                self.next = line;
            }
        }
        if self.end - self.next < bytes || !fits(self.next) {
            let split = (c + 1..CLASSES).find_map(|k| {
                let b = self.pop(k)?;
                let skip = if fits(b) { 0 } else { ((b | 63) + 1) - b };
                if skip + bytes <= class_words(k) * 8 {
                    Some((k, b, skip))
                } else {
                    // SAFETY: the block just popped, back on its list.
                    unsafe { self.give(b, class_words(k)) };
                    None
                }
            });
            if let Some((big, b, skip)) = split {
                // SAFETY: the parts of a free block around the one taken.
                unsafe {
                    self.give(b, skip / 8);
                    self.give(b + skip + bytes, class_words(big) - size - skip / 8);
                }
                return Some((b + skip) as *mut AtomicU64);
            }
            if self.no_regions {
                return None;
            }
            // The rest of the old region goes to the free lists.
            // SAFETY: the region's unused tail.
            unsafe { self.give(self.next, (self.end - self.next) / 8) };
            let Some(r) = map() else {
                self.no_regions = true;
                return None;
            };
            self.next = r;
            self.end = r + REGION;
            let at = self.regions.partition_point(|&x| x < r);
            self.regions.insert(at, r);
        }
        let b = self.next;
        self.next += bytes;
        Some(b as *mut AtomicU64)
    }

    /// The first of the first [`FIT_TRIES`] free blocks of class `c` that
    /// `fits` accepts, unlinked.
    fn pop_where(&mut self, c: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
        let mut prev: Option<usize> = None;
        let mut at = self.free[c];
        for _ in 0..FIT_TRIES {
            if at == 0 {
                return None;
            }
            // SAFETY: a free block of this class (see `give`), its first
            // word the next free block.
            let next = unsafe { *(at as *const usize) };
            if fits(at) {
                match prev {
                    None => self.free[c] = next,
                    // SAFETY: the free block before it, linked the same way.
                    Some(p) => unsafe { *(p as *mut usize) = next },
                }
                return Some(at);
            }
            prev = Some(at);
            at = next;
        }
        None
    }

    /// The first free block of class `c`, unlinked.
    fn pop(&mut self, c: usize) -> Option<usize> {
        let head = self.free[c];
        if head == 0 {
            return None;
        }
        // SAFETY: a free block of this class (see `give`), its first word
        // the next free block.
        self.free[c] = unsafe { *(head as *const usize) };
        Some(head)
    }

    /// Put the unused span of `words` words at `at` on the free lists, in
    /// the largest blocks that fit.
    ///
    /// # Safety
    /// The span must be writable memory of one of the pool's regions,
    /// 16-byte aligned, an even number of words, used by nothing else.
    unsafe fn give(&mut self, mut at: usize, mut words: usize) {
        while words >= 2 {
            let w = words.min(MAX_WORDS);
            let (mut c, mut size) = class(w);
            if size > w {
                c -= 1;
                size = class_words(c);
            }
            // SAFETY: caller's contract: unused memory of a region, at
            // least `size` words.
            unsafe { *(at as *mut usize) = self.free[c] };
            self.free[c] = at;
            at += size * 8;
            words -= size;
        }
    }
}

/// Words of a block of class `c`.
fn class_words(c: usize) -> usize {
    if c < 32 {
        2 * (c + 1)
    } else {
        64 + 16 * (c - 31)
    }
}

/// Give back a block [`alloc`] returned for `words` words.
///
/// # Safety
/// `p` must come from [`alloc`] with the same `words`, be unreachable by
/// any reader, and be given back once.
pub(crate) unsafe fn free(p: *mut AtomicU64, words: usize) {
    // SAFETY: caller's contract.
    unsafe { free_in(&POOL, p, words) }
}

/// Give back a block [`alloc_list`] returned for `words` words.
///
/// # Safety
/// As for [`free`], for a block from [`alloc_list`].
pub(crate) unsafe fn free_list(p: *mut AtomicU64, words: usize) {
    // SAFETY: caller's contract.
    unsafe { free_in(&LISTS, p, words) }
}

/// # Safety
/// As for [`free`], for a block from `pool`.
unsafe fn free_in(pool: &'static Mutex<Pool>, p: *mut AtomicU64, words: usize) {
    let a = p as usize;
    let mut pool = lock(pool);
    let i = pool.regions.partition_point(|&r| r <= a);
    if i > 0 && a < pool.regions[i - 1] + REGION {
        // SAFETY: caller's contract: the class's whole block is unused.
        unsafe { pool.give(a, class(words).1) };
        return;
    }
    drop(pool);
    // SAFETY: not in a region, so `alloc` took it from the heap with this
    // layout.
    unsafe { std::alloc::dealloc(p.cast(), heap_layout(words)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_reuses_and_splits_freed_blocks_before_it_grows() {
        // Two stand-in regions of 2 MB each, 16-byte aligned.
        let mut one = vec![0u128; REGION / 16];
        let mut two = vec![0u128; REGION / 16];
        let (r1, r2) = (one.as_mut_ptr() as usize, two.as_mut_ptr() as usize);
        let mut pool = Pool::empty();
        // SAFETY: the stand-in regions are the test's own 2 MB buffers,
        // alive to its end and used by nothing else; what is given back
        // was taken, with its class's size.
        unsafe {
            let a = pool.take(1024, || Some(r1)).expect("first region") as usize;
            assert_eq!(a, r1);
            // Fill the first region but for 112 words (a class's size).
            let mut used = 1024;
            while REGION / 8 - used >= 1124 {
                pool.take(1024, || None).expect("room");
                used += 1024;
            }
            pool.take(REGION / 8 - used - 112, || None).expect("room");
            pool.give(a, 1024);
            // No room left for 1008 words: the freed 1024-word block, split
            // (16 words back on a free list), before any new region.
            let b = pool.take(1000, || None).expect("the freed block") as usize;
            assert_eq!(b, a);
            // Room for 112: the region's rest.
            let c = pool.take(100, || None).expect("the region's rest") as usize;
            assert_eq!(c, r1 + (REGION / 8 - 112) * 8);
            // The smallest larger free block serves first: the 16 words.
            pool.give(b, 1008);
            let d = pool.take(10, || None).expect("the smallest split block") as usize;
            assert_eq!(d, a + 1008 * 8);
            let e = pool.take(64, || None).expect("b's block, split") as usize;
            assert_eq!(e, a);
            let mut f = 0;
            for _ in 0..20 {
                f = pool.take(1024, || Some(r2)).expect("the second region") as usize;
            }
            assert!(f >= r2 && f < r2 + REGION);
            assert_eq!(pool.regions.len(), 2);
        }
        // Without regions, nothing more.
        let mut empty = Pool::empty();
        // SAFETY: `map` gives nothing.
        assert!(unsafe { empty.take(8, || None) }.is_none());
        assert!(empty.no_regions);
        drop((one, two));
    }

    #[test]
    fn list_heads_stay_in_one_line_and_the_skipped_spans_are_used() {
        // A stand-in region of 2 MB, aligned to a line.
        let mut one = vec![0u128; REGION / 16 + 4];
        let r = (one.as_mut_ptr() as usize).next_multiple_of(64);
        let mut pool = Pool::empty();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut live: Vec<(usize, usize)> = Vec::new();
        // SAFETY: the stand-in region is the test's own buffer, alive to
        // its end and used by nothing else; what is given back was taken,
        // with its class's size.
        unsafe {
            let (mut bytes, mut peak) = (0usize, 0usize);
            for round in 0..8_000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Lists of 1 to 64 leaves, some with sub-lists after.
                let leaves = 1 + (rng % 64) as usize;
                let head = (10 + 2 * leaves).div_ceil(8) * 8;
                let words = head / 8
                    + if rng & 0x100 != 0 {
                        (rng >> 9) as usize % 40
                    } else {
                        0
                    };
                let at = pool
                    .take_where(words, || Some(r), |a| line_fit(a, head))
                    .expect("room") as usize;
                assert!(
                    line_fit(at, head),
                    "round {round}: {head} bytes at {:#x}",
                    at % 64
                );
                assert_eq!(at % 16, 0);
                live.push((at, words));
                bytes += class(words).1 * 8;
                peak = peak.max(bytes);
                // Churn: give back one of the live blocks now and then.
                if rng & 3 == 0 {
                    let (a, w) = live.swap_remove((rng >> 20) as usize % live.len());
                    pool.give(a, class(w).1);
                    bytes -= class(w).1 * 8;
                }
            }
            // One region serves it all, and the spans skipped for alignment
            // went to the free lists and were taken again: little of the
            // region beyond the most that was live is used.
            assert_eq!(pool.regions.len(), 1);
            let used = pool.next - r;
            assert!(used <= peak + peak / 8, "{used} bytes used for {peak} live");
            live.sort_unstable();
            for w in live.windows(2) {
                assert!(w[0].0 + class(w[0].1).1 * 8 <= w[1].0, "blocks overlap");
            }
        }
        drop(one);
    }

    #[test]
    fn classes_hold_their_sizes_and_reuse_freed_blocks() {
        for w in 1..=MAX_WORDS {
            let (c, s) = class(w);
            assert!(c < CLASSES && s >= w && s == class_words(c), "{w}");
            assert!(s - w < if w <= 64 { 2 } else { 16 }, "{w}");
        }
        let a = alloc(10);
        assert_eq!(a as usize % 16, 0);
        // SAFETY: a fresh block of 10 words, ours.
        unsafe {
            for i in 0..10 {
                (*a.add(i)).store(i as u64, std::sync::atomic::Ordering::Relaxed);
            }
            free(a, 10);
        }
        let b = alloc(9);
        // Other tests' tables allocate too, so b need not be a; but b is a
        // whole, writable block of its class.
        // SAFETY: as above.
        unsafe {
            for i in 0..9 {
                (*b.add(i)).store(0, std::sync::atomic::Ordering::Relaxed);
            }
            free(b, 9);
            // A block too large for the regions comes from the heap.
            let big = alloc(MAX_WORDS + 1);
            (*big.add(MAX_WORDS)).store(1, std::sync::atomic::Ordering::Relaxed);
            free(big, MAX_WORDS + 1);
        }
    }
}
