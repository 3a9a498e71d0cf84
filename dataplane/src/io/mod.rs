//! Packet buffers and port back-ends.
//!
//! A [`PacketBuf`] is a fixed 2 KiB buffer with headroom in front of the
//! frame, so that pushing labels and tunnel headers never moves the payload
//! (as with DPDK's mbuf). Buffers are allocated once per worker and reused.
//! [`mem::MemPort`] is the in-memory port used by tests and benchmarks.

pub mod mem;

/// Bytes of each buffer.
pub const BUF_SIZE: usize = 2048;
/// Bytes reserved in front of a received frame.
pub const HEADROOM: usize = 128;

/// One packet's buffer: the frame lives at `data[head..head + len]`.
#[derive(Clone)]
pub struct PacketBuf {
    data: Box<[u8; BUF_SIZE]>,
    head: u16,
    len: u16,
}

impl core::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("head", &self.head)
            .field("len", &self.len)
            .finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    /// An empty buffer (allocates; do this once, outside the hot path).
    pub fn new() -> PacketBuf {
        PacketBuf {
            data: Box::new([0; BUF_SIZE]),
            head: HEADROOM as u16,
            len: 0,
        }
    }

    /// Fill with a frame at the standard headroom. Returns false (and leaves
    /// the buffer empty) if the frame does not fit.
    pub fn fill(&mut self, frame: &[u8]) -> bool {
        if frame.len() > BUF_SIZE - HEADROOM {
            self.len = 0;
            return false;
        }
        self.head = HEADROOM as u16;
        self.len = frame.len() as u16;
        self.data[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        true
    }

    /// The frame.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.data[usize::from(self.head)..usize::from(self.head) + usize::from(self.len)]
    }

    /// The frame, mutable.
    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.data[usize::from(self.head)..usize::from(self.head) + usize::from(self.len)]
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
