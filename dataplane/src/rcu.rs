//! Quiescent-state-based reclamation (QSBR) for the forwarding tables.
//!
//! The tables have one writer (the control thread, with the thread that
//! applies its route batches) and many readers (the workers). Readers never wait and never write shared memory per lookup:
//! once per poll-loop iteration each worker calls [`Reader::quiescent`],
//! announcing that it holds no reference into any table. The writer unlinks an
//! old object, then hands it to [`Domain::retire`]; it is freed by
//! [`Domain::collect`] only once every online reader has announced a
//! quiescent state after the unlink.
//!
//! Invariants:
//! - A [`Guard`] borrows its [`Reader`] mutably, so no reference obtained
//!   through a guard can outlive the next quiescent state (the borrow checker
//!   enforces it).
//! - An object is retired only after it is unreachable from every table root
//!   for readers that start after the retire call.
//! - The global epoch only grows; a reader's slot holds the epoch it saw at
//!   its last quiescent state, or `OFFLINE`.
//!
//! This module and the table modules that publish raw pointers are the only
//! places outside packet I/O where `unsafe` appears: lock-free reclamation
//! cannot be expressed in safe Rust without a per-lookup cost.
#![allow(unsafe_code)]

use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const OFFLINE: u64 = u64::MAX;

/// Hint the CPU to fetch the cache line at `p` (no effect on correctness).
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and has no architectural effect, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// An unlinked object and the function that frees it, for
/// [`Domain::retire_all`].
pub type Retiree = (*mut (), unsafe fn(*mut ()));

struct Retired {
    epoch: u64,
    ptr: *mut (),
    free: unsafe fn(*mut ()),
}

// SAFETY: only pointers to `Send` values are retired (enforced by the bound on
// `Domain::retire`), and they are freed on whichever thread runs `collect`.
unsafe impl Send for Retired {}

struct Inner {
    epoch: CachePadded<AtomicU64>,
    readers: Mutex<Vec<Arc<CachePadded<AtomicU64>>>>,
    retired: Mutex<Vec<Retired>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every reader holds an `Arc<Inner>`, so none is left: free all.
        let list = std::mem::take(self.retired.get_mut().unwrap_or_else(|e| e.into_inner()));
        for r in list {
            // SAFETY: no reader exists any more and each pointer was retired once.
            unsafe { (r.free)(r.ptr) };
        }
    }
}

/// A domain named without being kept alive ([`Domain::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakDomain(std::sync::Weak<Inner>);

impl WeakDomain {
    /// True if `g` was issued by a reader of this domain. (The weak
    /// reference keeps the domain's allocation, so its address cannot be
    /// reused by another domain while this exists.)
    pub fn owns(&self, g: &Guard<'_>) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(g.domain))
    }

    /// True while the domain exists.
    pub fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// A reclamation domain: one per set of tables that share readers.
#[derive(Clone)]
pub struct Domain {
    inner: Arc<Inner>,
}

impl Default for Domain {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Domain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Domain")
            .field("epoch", &self.inner.epoch.load(Ordering::Relaxed))
            .field("pending", &self.pending())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the lists inconsistent
    // (push and retain are the only operations), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Domain {
    /// A new domain with no readers.
    pub fn new() -> Domain {
        Domain {
            inner: Arc::new(Inner {
                epoch: CachePadded::new(AtomicU64::new(1)),
                readers: Mutex::new(Vec::new()),
                retired: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Register a reader (a worker thread). It starts online.
    pub fn register(&self) -> Reader {
        let slot = Arc::new(CachePadded::new(AtomicU64::new(OFFLINE)));
        lock(&self.inner.readers).push(slot.clone());
        let mut r = Reader {
            slot,
            domain: self.inner.clone(),
            _not_sync: PhantomData,
        };
        r.online();
        r
    }

    /// True if `g` was issued by a reader of this domain.
    pub fn owns(&self, g: &Guard<'_>) -> bool {
        Arc::ptr_eq(&self.inner, g.domain)
    }

    /// A reference that names this domain without keeping it alive, for
    /// objects the domain itself may hold (a retired table that names its
    /// domain strongly would keep it, and so itself, from ever being freed).
    pub fn downgrade(&self) -> WeakDomain {
        WeakDomain(Arc::downgrade(&self.inner))
    }

    /// Defer freeing `b` until every reader has passed a quiescent state.
    ///
    /// # Safety
    /// `ptr` must come from `Box::into_raw` of a `Box<T>`, must not be retired
    /// twice, and must already be unreachable from every shared structure for
    /// readers that start after this call.
    pub unsafe fn retire<T: Send>(&self, ptr: *mut T) {
        unsafe fn free<T>(p: *mut ()) {
            // SAFETY: `p` came from `Box::<T>::into_raw` (contract of `retire`).
            drop(unsafe { Box::from_raw(p.cast::<T>()) });
        }
        // SAFETY: forwarded contract; `free::<T>` frees a `Box<T>`.
        unsafe { self.retire_with(ptr.cast(), free::<T>) }
    }

    /// Defer `free(ptr)` until every reader has passed a quiescent state.
    ///
    /// # Safety
    /// `free(ptr)` must be sound to call once on any thread (the pointee is
    /// `Send`); `ptr` must not be retired twice and must already be
    /// unreachable for readers that start after this call.
    pub unsafe fn retire_with(&self, ptr: *mut (), free: unsafe fn(*mut ())) {
        self.enqueue(core::iter::once((ptr, free)));
    }

    /// Queue `items` under one new epoch, collecting once enough wait.
    fn enqueue(&self, items: impl Iterator<Item = Retiree>) {
        let len = {
            // The epoch is taken under the lock, so that the list stays in
            // epoch order when two threads retire.
            let mut l = lock(&self.inner.retired);
            let epoch = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            l.extend(items.map(|(ptr, free)| Retired { epoch, ptr, free }));
            l.len()
        };
        if len >= 256 {
            self.collect();
        }
    }

    /// [`Domain::retire_with`] for every `(ptr, free)` of `items` (drained),
    /// under one epoch and one lock.
    ///
    /// # Safety
    /// As [`Domain::retire_with`], for each item.
    pub unsafe fn retire_all(&self, items: &mut Vec<Retiree>) {
        if !items.is_empty() {
            self.enqueue(items.drain(..));
        }
    }

    /// Free every retired object that no reader can still hold. Returns how
    /// many remain pending.
    pub fn collect(&self) -> usize {
        fence(Ordering::SeqCst);
        let min = lock(&self.inner.readers)
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .min()
            .unwrap_or(OFFLINE);
        loop {
            // Up to 64 at a time, freed outside the lock (a free function
            // may retire in turn), with no allocation.
            let mut ready: arrayvec::ArrayVec<Retired, 64> = arrayvec::ArrayVec::new();
            let left = {
                let mut l = lock(&self.inner.retired);
                let keep = l.partition_point(|r| r.epoch <= min).min(64);
                ready.extend(l.drain(..keep));
                l.len()
            };
            if ready.is_empty() {
                return left;
            }
            for r in ready {
                // SAFETY: every online reader announced a quiescent state at
                // an epoch at or after the retire, so none holds the pointer;
                // it was retired once (contract of `retire`).
                unsafe { (r.free)(r.ptr) };
            }
        }
    }

    /// Run `f` once every reader has passed a quiescent state (on whichever
    /// thread collects then): for changes that must wait until no reader
    /// can still act on what it saw before this call.
    pub fn defer(&self, f: Box<dyn FnOnce() + Send>) {
        /// Runs the deferred closure.
        ///
        /// # Safety
        /// `p` came from `Box::into_raw` in `defer`, and is run once.
        unsafe fn run(p: *mut ()) {
            // SAFETY: the contract above.
            let f = unsafe { Box::from_raw(p.cast::<Box<dyn FnOnce() + Send>>()) };
            f();
        }
        let p = Box::into_raw(Box::new(f));
        // SAFETY: a fresh box no reader knows, retired once; `run` takes it
        // back as the box it is; the closure is Send.
        unsafe { self.retire_with(p.cast(), run) };
    }

    /// Objects retired but not yet freed.
    pub fn pending(&self) -> usize {
        lock(&self.inner.retired).len()
    }

    /// Wait (spinning, then yielding) until everything retired so far is freed.
    /// Only for the control thread and tests: readers must keep announcing
    /// quiescent states or go offline.
    pub fn synchronize(&self) {
        let mut spins = 0u32;
        while self.collect() > 0 {
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            }
        }
    }
}

/// A registered reader. Owned by one thread at a time (it is `Send` but not
/// `Sync`).
pub struct Reader {
    slot: Arc<CachePadded<AtomicU64>>,
    domain: Arc<Inner>,
    _not_sync: PhantomData<Cell<()>>,
}

impl core::fmt::Debug for Reader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader")
            .field("seen", &self.slot.load(Ordering::Relaxed))
            .finish()
    }
}

impl Reader {
    /// Announce that this thread holds no table reference. Call once per
    /// poll-loop iteration.
    #[inline]
    pub fn quiescent(&mut self) {
        let e = self.domain.epoch.load(Ordering::Acquire);
        self.slot.store(e, Ordering::Release);
    }

    /// Stop holding back reclamation, e.g. before sleeping.
    pub fn offline(&mut self) {
        self.slot.store(OFFLINE, Ordering::Release);
    }

    /// Start reading again after [`Reader::offline`].
    pub fn online(&mut self) {
        let e = self.domain.epoch.load(Ordering::SeqCst);
        self.slot.store(e, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// True unless offline.
    pub fn is_online(&self) -> bool {
        self.slot.load(Ordering::Relaxed) != OFFLINE
    }

    /// A read-side guard. References obtained through it cannot outlive the
    /// next call to [`Reader::quiescent`]. Comes online if offline.
    #[inline]
    pub fn guard(&mut self) -> Guard<'_> {
        if !self.is_online() {
            self.online();
        }
        Guard {
            domain: &self.domain,
            _reader: PhantomData,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.offline();
        lock(&self.domain.readers).retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

/// Proof that the holder is inside a read-side section of a domain.
pub struct Guard<'r> {
    domain: &'r Arc<Inner>,
    _reader: PhantomData<&'r mut Reader>,
}

/// A lazily allocated, fixed-capacity array of RCU-managed boxes indexed by
/// `u32`: the nexthop, label, port and VRF tables. Readers load without
/// waiting; the writer replaces an entry with `SlotArray::set`, which
/// retires the previous box.
pub struct SlotArray<T: Send + Sync> {
    domain: Domain,
    segments: Box<[AtomicPtr<Segment<T>>]>,
    capacity: u32,
}

const SEG_BITS: u32 = 10;
const SEG_LEN: usize = 1 << SEG_BITS;

/// The slots inline, so that a read goes segment → slot → entry.
struct Segment<T> {
    slots: [AtomicPtr<T>; SEG_LEN],
}

impl<T: Send + Sync> SlotArray<T> {
    /// An empty array of `capacity` entries whose retirements go to `domain`.
    pub fn new(domain: &Domain, capacity: u32) -> Self {
        let nseg = (capacity as usize).div_ceil(SEG_LEN);
        SlotArray {
            domain: domain.clone(),
            segments: (0..nseg)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            capacity,
        }
    }

    /// Number of indices the array can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The entry at `idx`, if set.
    ///
    /// # Panics
    /// Panics if `g` belongs to another domain (a programming error).
    #[inline]
    pub fn get<'g>(&'g self, g: &'g Guard<'_>, idx: u32) -> Option<&'g T> {
        assert!(self.domain.owns(g), "guard from another domain");
        self.get_unchecked_domain(idx)
    }

    /// As [`SlotArray::get`] for a caller that has checked the guard's domain
    /// (see [`SlotArray::domain`]) once for a whole burst.
    #[inline]
    pub(crate) fn get_unchecked_domain(&self, idx: u32) -> Option<&T> {
        let seg = self.segments.get((idx >> SEG_BITS) as usize)?;
        let s = seg.load(Ordering::Acquire);
        if s.is_null() {
            return None;
        }
        // SAFETY: segments are published once and freed only in `drop`, which
        // takes `&mut self`.
        let seg = unsafe { &*s };
        let p = seg.slots[(idx as usize) & (SEG_LEN - 1)].load(Ordering::Acquire);
        // SAFETY: a non-null slot points to a live box: boxes are freed only
        // after `set` unlinked them and every reader passed a quiescent state;
        // the caller is inside a read-side section of this domain.
        unsafe { p.as_ref() }
    }

    /// Start fetching the entry at `idx` (a hint for a caller inside a
    /// read-side section).
    #[inline]
    pub(crate) fn prefetch_entry(&self, idx: u32) {
        if let Some(e) = self.get_unchecked_domain(idx) {
            prefetch(core::ptr::from_ref(e).cast());
        }
    }

    /// The writer's view of the entry. Only the single writer of the array
    /// may call this: it reads without a guard, which is sound because only
    /// the writer's own calls to [`SlotArray::set`] retire entries.
    pub(crate) fn get_writer(&self, idx: u32) -> Option<&T> {
        self.get_unchecked_domain(idx)
    }

    /// The domain retirements go to.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Replace the entry at `idx` (`None` clears it). Returns false if `idx`
    /// is beyond capacity.
    pub(crate) fn set(&self, idx: u32, value: Option<T>) -> bool {
        if idx >= self.capacity {
            return false;
        }
        let seg_slot = &self.segments[(idx >> SEG_BITS) as usize];
        let mut s = seg_slot.load(Ordering::Acquire);
        if s.is_null() {
            if value.is_none() {
                return true;
            }
            let seg = Box::new(Segment {
                slots: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            });
            let fresh = Box::into_raw(seg);
            s = match seg_slot.compare_exchange(s, fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => fresh,
                Err(current) => {
                    // SAFETY: `fresh` was never published.
                    drop(unsafe { Box::from_raw(fresh) });
                    current
                }
            };
        }
        // SAFETY: segments live until `drop`.
        let seg = unsafe { &*s };
        let new = value.map_or(std::ptr::null_mut(), |v| Box::into_raw(Box::new(v)));
        let old = seg.slots[(idx as usize) & (SEG_LEN - 1)].swap(new, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` came from Box::into_raw, was swapped out of its only
            // slot (so it is retired once and unreachable for new readers).
            unsafe { self.domain.retire(old) };
        }
        true
    }
}

impl<T: Send + Sync> Drop for SlotArray<T> {
    fn drop(&mut self) {
        for seg in self.segments.iter() {
            let s = seg.load(Ordering::Acquire);
            if s.is_null() {
                continue;
            }
            // SAFETY: `&mut self`: no reader can hold a reference into the
            // array any more; segments came from Box::into_raw.
            let seg = unsafe { Box::from_raw(s) };
            for slot in seg.slots.iter() {
                let p = slot.load(Ordering::Acquire);
                if !p.is_null() {
                    // Defer: a reader may still hold a reference obtained
                    // before the array became unreachable.
                    // SAFETY: p came from Box::into_raw and is in no other slot.
                    unsafe { self.domain.retire(p) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Counted(#[allow(dead_code)] u32);
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn retired_entry_outlives_an_online_reader_until_it_is_quiescent() {
        let d = Domain::new();
        let arr = SlotArray::new(&d, 4096);
        let mut r = d.register();
        assert!(arr.set(7, Some(Counted(1))));
        let before = DROPS.load(Ordering::SeqCst);
        {
            let g = r.guard();
            assert!(arr.get(&g, 7).is_some());
        }
        arr.set(7, Some(Counted(2)));
        assert_eq!(d.collect(), 1, "reader has not passed a quiescent state");
        assert_eq!(DROPS.load(Ordering::SeqCst), before);
        r.quiescent();
        assert_eq!(d.collect(), 0);
        assert_eq!(DROPS.load(Ordering::SeqCst), before + 1);
    }

    #[test]
    fn offline_readers_do_not_hold_back_reclamation() {
        let d = Domain::new();
        let arr: SlotArray<u64> = SlotArray::new(&d, 16);
        let mut r = d.register();
        arr.set(1, Some(5));
        r.offline();
        arr.set(1, None);
        assert_eq!(d.collect(), 0);
        let g = r.guard();
        assert!(arr.get(&g, 1).is_none());
    }

    #[test]
    fn indices_beyond_capacity_are_refused() {
        let d = Domain::new();
        let arr: SlotArray<u64> = SlotArray::new(&d, 10);
        assert!(!arr.set(10, Some(1)));
        let mut r = d.register();
        let g = r.guard();
        assert!(arr.get(&g, 5000).is_none());
    }
}
