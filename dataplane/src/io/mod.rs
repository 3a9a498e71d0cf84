//! Packet buffers and port back-ends.
//!
//! A [`PacketBuf`] is a fixed 2 KiB buffer with headroom in front of the
//! frame, so that pushing labels and tunnel headers never moves the payload
//! (as with DPDK's mbuf). Buffers are allocated once per worker and reused.
//! [`mem::MemPort`] is the in-memory port used by tests and benchmarks.
//! With DPDK a buffer borrows the received mbuf's storage instead
//! ([`PacketBuf::attach`]): the frame is rewritten in place and the mbuf
//! itself transmitted, with no copy either way.
#![allow(unsafe_code)]

pub mod afpacket;
pub mod afxdp;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod mem;

/// Bytes of each buffer.
pub const BUF_SIZE: usize = 2048;
/// Bytes reserved in front of a received frame.
pub const HEADROOM: usize = 128;

use core::ffi::c_void;
use core::ptr::NonNull;

/// Storage a [`PacketBuf`] can borrow instead of its own bytes: a driver's
/// receive buffer (a DPDK mbuf), handed back through `release` when the
/// frame is dropped or refilled.
#[derive(Debug)]
pub struct ExtStorage {
    /// Gives the storage back to its owner.
    ///
    /// # Safety
    /// Called at most once per attachment, with the handle given to
    /// [`PacketBuf::attach`].
    pub release: unsafe fn(NonNull<c_void>),
}

/// One packet's buffer: the frame lives at `head..head + len` of its
/// storage, which is the buffer's own 2 KiB or, zero-copy, a driver's
/// receive buffer attached with [`PacketBuf::attach`].
pub struct PacketBuf {
    /// The buffer's own bytes (`BUF_SIZE`, from `Box::into_raw`).
    own: NonNull<u8>,
    /// The storage the frame lives in: `own` or the attached buffer.
    base: NonNull<u8>,
    /// Bytes of that storage.
    cap: u16,
    head: u16,
    len: u16,
    /// The attached storage's handle and owner, if any.
    ext: Option<(NonNull<c_void>, &'static ExtStorage)>,
}

// SAFETY: a PacketBuf owns its bytes (or, attached, the driver's buffer until
// it gives it back); nothing else refers to them, so it may move between
// threads and be shared read-only like a Box<[u8]>.
unsafe impl Send for PacketBuf {}
// SAFETY: as above; `&PacketBuf` only reads.
unsafe impl Sync for PacketBuf {}

impl core::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("head", &self.head)
            .field("len", &self.len)
            .field("attached", &self.ext.is_some())
            .finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for PacketBuf {
    /// A copy in a buffer of its own (never sharing attached storage): the
    /// frame at the same headroom, or less where a frame from a larger
    /// driver buffer would not fit otherwise.
    fn clone(&self) -> Self {
        let mut b = PacketBuf::new();
        let n = self.len().min(BUF_SIZE);
        let at = usize::from(self.head).min(BUF_SIZE - n);
        b.whole_mut()[at..at + n].copy_from_slice(&self.frame()[..n]);
        b.head = at as u16;
        b.len = n as u16;
        b
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        self.release();
        // SAFETY: `own` came from Box::into_raw of a [u8; BUF_SIZE] in `new`
        // and is freed only here.
        drop(unsafe { Box::from_raw(self.own.as_ptr().cast::<[u8; BUF_SIZE]>()) });
    }
}

impl PacketBuf {
    /// An empty buffer (allocates; do this once, outside the hot path).
    pub fn new() -> PacketBuf {
        let own = NonNull::from(Box::leak(Box::new([0u8; BUF_SIZE]))).cast::<u8>();
        PacketBuf {
            own,
            base: own,
            cap: BUF_SIZE as u16,
            head: HEADROOM as u16,
            len: 0,
            ext: None,
        }
    }

    /// All bytes of the current storage.
    #[inline]
    fn whole(&self) -> &[u8] {
        // SAFETY: `base` points to `cap` bytes this buffer owns (its own, or
        // attached ones it holds until release).
        unsafe { core::slice::from_raw_parts(self.base.as_ptr(), usize::from(self.cap)) }
    }

    /// All bytes of the current storage, mutable.
    #[inline]
    fn whole_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `whole`; `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.base.as_ptr(), usize::from(self.cap)) }
    }

    /// Give attached storage back and return to the buffer's own bytes.
    fn release(&mut self) {
        if let Some((h, st)) = self.ext.take() {
            // SAFETY: the handle was attached once and is released once
            // (taken out of `ext` above).
            unsafe { (st.release)(h) };
            self.base = self.own;
            self.cap = BUF_SIZE as u16;
        }
    }

    /// Fill with a frame at the standard headroom (in the buffer's own
    /// bytes, giving back any attached storage). Returns false (and leaves
    /// the buffer empty) if the frame does not fit.
    pub fn fill(&mut self, frame: &[u8]) -> bool {
        self.release();
        self.head = HEADROOM as u16;
        if frame.len() > BUF_SIZE - HEADROOM {
            self.len = 0;
            return false;
        }
        self.len = frame.len() as u16;
        self.whole_mut()[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        true
    }

    /// Lend the buffer a driver's storage: the frame is `len` bytes at
    /// `head` of the `cap` bytes at `base`. Storage attached before is
    /// given back first.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `cap` bytes, and used by
    /// nobody else, until `store.release` is called with `handle` (which
    /// this buffer does when it is refilled, dropped or detached).
    pub unsafe fn attach(
        &mut self,
        handle: NonNull<c_void>,
        store: &'static ExtStorage,
        base: NonNull<u8>,
        cap: u16,
        head: u16,
        len: u16,
    ) -> bool {
        self.release();
        if u32::from(head) + u32::from(len) > u32::from(cap) {
            // SAFETY: the caller hands the storage over; refused, it goes
            // straight back.
            unsafe { (store.release)(handle) };
            self.len = 0;
            return false;
        }
        self.ext = Some((handle, store));
        self.base = base;
        self.cap = cap;
        self.head = head;
        self.len = len;
        true
    }

    /// The attached storage's handle, if the buffer holds `store`'s.
    #[inline]
    pub fn attached_to(&self, store: &'static ExtStorage) -> Option<NonNull<c_void>> {
        match self.ext {
            Some((h, s)) if core::ptr::eq(s, store) => Some(h),
            _ => None,
        }
    }

    /// Take `store`'s storage away, without releasing it: returns its
    /// handle (the caller now owns it, with the frame at `headroom()` for
    /// `len()` bytes as they were before this call), or None if the buffer
    /// does not hold `store`'s. The buffer is left empty, on its own bytes.
    #[inline]
    pub fn detach_from(&mut self, store: &'static ExtStorage) -> Option<NonNull<c_void>> {
        self.attached_to(store)?;
        let (h, _) = self.ext.take()?;
        self.base = self.own;
        self.cap = BUF_SIZE as u16;
        self.head = HEADROOM as u16;
        self.len = 0;
        Some(h)
    }

    /// The frame.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.whole()[usize::from(self.head)..usize::from(self.head) + usize::from(self.len)]
    }

    /// The frame, mutable.
    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        let (h, l) = (usize::from(self.head), usize::from(self.len));
        &mut self.whole_mut()[h..h + l]
    }

    /// Frame length.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True if the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(self.head)
    }

    /// Move the frame's start by `delta` bytes (negative grows the frame at
    /// the front, positive trims it). Returns false, changing nothing, if
    /// that would leave the buffer.
    #[inline]
    pub fn adjust_front(&mut self, delta: isize) -> bool {
        let head = self.head as isize + delta;
        let len = self.len as isize - delta;
        if head < 0 || len < 0 {
            return false;
        }
        self.head = head as u16;
        self.len = len as u16;
        true
    }

    /// Shorten the frame to `len` bytes (no-op if already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < usize::from(self.len) {
            self.len = len as u16;
        }
    }
}

/// Compute the TCP or UDP checksum of a frame whose sender left it to the
/// NIC (checksum offload on veth reaches an AF_PACKET reader unfinished).
/// Frames that are not TCP/UDP over IPv4/IPv6, or are fragments, are left
/// alone. Returns true if a checksum was written.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    use crate::wire::checksum::{fold, sum};
    use crate::wire::ethernet::{ethertype, Frame};
    let Ok(eth) = Frame::new_checked(&*frame) else {
        return false;
    };
    let (et, hl) = (eth.inner_ethertype(), eth.header_len());
    let ip = &frame[hl..];
    let (proto, l4_at, l4_len, pseudo): (u8, usize, usize, u32) = match et {
        ethertype::IPV4 => {
            let Ok(p) = crate::wire::ipv4::Packet::new_checked(ip) else {
                return false;
            };
            if p.flags_frag() & 0x3fff != 0 {
                return false;
            }
            let len = usize::from(p.total_len()) - p.header_len();
            let s = u32::from(sum(&ip[12..20])) + u32::from(p.protocol()) + len as u32;
            (p.protocol(), hl + p.header_len(), len, s)
        }
        ethertype::IPV6 => {
            let Ok(p) = crate::wire::ipv6::Packet::new_checked(ip) else {
                return false;
            };
            let len = usize::from(p.payload_len());
            let s = u32::from(sum(&ip[8..40])) + u32::from(p.next_header()) + len as u32;
            (p.next_header(), hl + 40, len, s)
        }
        _ => return false,
    };
    let off = match proto {
        6 if l4_len >= 20 => 16,
        17 if l4_len >= 8 => 6,
        _ => return false,
    };
    let Some(seg) = frame.get_mut(l4_at..l4_at + l4_len) else {
        return false;
    };
    seg[off..off + 2].fill(0);
    let mut c = !fold(pseudo + u32::from(sum(seg)));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_length_is_copied_exactly() {
        let src: Vec<u8> = (0..=255u8).collect();
        let mut b = PacketBuf::new();
        for n in 0..=src.len() {
            // Leave stale bytes behind each copy to catch short copies.
            b.whole_mut().fill(0xee);
            assert!(b.fill(&src[..n]));
            assert_eq!(b.frame(), &src[..n], "length {n}");
            assert_eq!(
                b.whole()[HEADROOM + n..HEADROOM + n + 8],
                [0xee; 8],
                "length {n}"
            );
        }
        assert!(!b.fill(&vec![0; BUF_SIZE - HEADROOM + 1]));
        assert!(b.is_empty());
    }

    /// A driver's storage for the attach tests: a leaked 256-byte block
    /// per attachment, freed (and counted) on release.
    static RELEASED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    /// Frees a block made by `lend`.
    unsafe fn give_back(h: NonNull<c_void>) {
        // SAFETY: `h` came from Box::into_raw in `lend`, released once.
        drop(unsafe { Box::from_raw(h.as_ptr().cast::<[u8; 256]>()) });
        RELEASED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    static TEST_STORE: ExtStorage = ExtStorage { release: give_back };
    static OTHER_STORE: ExtStorage = ExtStorage { release: give_back };
    /// Attach a fresh block holding `frame` at offset 64.
    fn lend(b: &mut PacketBuf, frame: &[u8]) -> (NonNull<c_void>, bool) {
        let mut block = Box::new([0u8; 256]);
        block[64..64 + frame.len()].copy_from_slice(frame);
        let p = NonNull::from(Box::leak(block));
        // SAFETY: the block is ours until give_back.
        let ok = unsafe { b.attach(p.cast(), &TEST_STORE, p.cast(), 256, 64, frame.len() as u16) };
        (p.cast(), ok)
    }

    #[test]
    fn attached_storage_is_used_in_place_and_given_back_once() {
        use std::sync::atomic::Ordering::SeqCst;
        let before = RELEASED.load(SeqCst);
        let mut b = PacketBuf::new();
        let (h, ok) = lend(&mut b, b"\x01\x02\x03\x04");
        assert!(ok);
        assert_eq!(b.frame(), [1, 2, 3, 4]);
        assert_eq!(b.headroom(), 64);
        assert_eq!(b.attached_to(&TEST_STORE), Some(h));
        assert_eq!(b.attached_to(&OTHER_STORE), None);
        // Rewrites land in the lent storage: push 2 bytes at the front.
        assert!(b.adjust_front(-2));
        b.frame_mut()[..2].copy_from_slice(&[9, 9]);
        // SAFETY: the block is still attached, hence alive.
        let seen = unsafe { &*h.as_ptr().cast::<[u8; 256]>() };
        assert_eq!(seen[62..68], [9, 9, 1, 2, 3, 4]);
        // A clone is a copy of its own, at the same headroom.
        let c = b.clone();
        assert_eq!(c.frame(), [9, 9, 1, 2, 3, 4]);
        assert_eq!(c.headroom(), 62);
        assert_eq!(c.attached_to(&TEST_STORE), None);
        drop(c);
        assert_eq!(RELEASED.load(SeqCst), before);
        // Refilling gives the storage back, once.
        assert!(b.fill(&[7; 10]));
        assert_eq!(RELEASED.load(SeqCst), before + 1);
        assert_eq!(b.frame(), [7; 10]);
        // Detaching hands the storage over without releasing it.
        let (h2, _) = lend(&mut b, &[5; 3]);
        assert_eq!(b.detach_from(&OTHER_STORE), None);
        assert_eq!(b.detach_from(&TEST_STORE), Some(h2));
        assert!(b.is_empty());
        assert_eq!(b.detach_from(&TEST_STORE), None);
        // SAFETY: detached: ours to give back.
        unsafe { give_back(h2) };
        assert_eq!(RELEASED.load(SeqCst), before + 2);
        // Dropping an attached buffer gives its storage back.
        let _ = lend(&mut b, &[1]);
        drop(b);
        assert_eq!(RELEASED.load(SeqCst), before + 3);
        // A frame that does not fit its storage is refused and given back.
        let mut b = PacketBuf::new();
        let p = NonNull::from(Box::leak(Box::new([0u8; 256])));
        // SAFETY: the block is ours until give_back.
        let ok = unsafe { b.attach(p.cast(), &TEST_STORE, p.cast(), 256, 200, 57) };
        assert!(!ok);
        assert!(b.is_empty());
        assert_eq!(RELEASED.load(SeqCst), before + 4);
    }

    #[test]
    fn udp_checksum_is_completed() {
        // A hand-written Ethernet header before the IPv4/UDP packet of
        // wire::ipv4's golden vector (scapy 2.8).
        let mut f = crate::wire::hex(
            "ffffffffffff 000000000000 0800 4500 001e 0001 4000 4011 25cc 0a00 0001 0a00 0102 04d2 0050 000a 8453 6162",
        );
        let good = f.clone();
        f[40..42].copy_from_slice(&[0x12, 0x34]);
        assert!(complete_l4_checksum(&mut f));
        assert_eq!(f, good);
    }
}
