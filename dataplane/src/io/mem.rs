//! In-memory ports: a receive side that replays frames and a transmit side
//! that counts (and optionally keeps) what it is given.

use super::PacketBuf;
use crate::rcu::prefetch;

/// How many frames ahead of the one received the replay asks for its bytes
/// (one worker burst).
const AHEAD: usize = 64;

/// A port backed by memory.
#[derive(Debug, Default)]
pub struct MemPort {
    /// All frames back to back, so that replaying them streams through memory.
    data: Vec<u8>,
    /// (start, length) of each frame in `data`.
    frames: Vec<(usize, usize)>,
    next: usize,
    /// Frames transmitted so far.
    pub tx_count: u64,
    /// Kept copies of transmitted frames (if `keep` is on).
    pub sent: Vec<Vec<u8>>,
    keep: bool,
}

impl MemPort {
    /// A port that replays `frames` cyclically on receive.
    pub fn replaying(frames: Vec<Vec<u8>>) -> MemPort {
        let mut data = Vec::with_capacity(frames.iter().map(Vec::len).sum());
        let mut index = Vec::with_capacity(frames.len());
        for f in &frames {
            index.push((data.len(), f.len()));
            data.extend_from_slice(f);
        }
        MemPort {
            data,
            frames: index,
            ..MemPort::default()
        }
    }

    /// A port that keeps a copy of each transmitted frame.
    pub fn capturing() -> MemPort {
        MemPort {
            keep: true,
            ..MemPort::default()
        }
    }

    /// Receive up to `bufs.len()` frames (as a NIC writes them into buffers).
    pub fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize {
        if self.frames.is_empty() {
            return 0;
        }
        let n = self.frames.len();
        let mut ahead = (self.next + AHEAD) % n;
        for b in bufs.iter_mut() {
            // Ask for the frame one burst ahead, as a NIC driver asks for
            // the descriptors and data it will hand out next: the frames
            // stream through memory beside the tables' random reads.
            let (at, at_len) = self.frames[ahead];
            // (Addresses only: a prefetch reads nothing, so no bounds.)
            let p = self.data.as_ptr().wrapping_add(at);
            prefetch(p);
            prefetch(p.wrapping_add(at_len.saturating_sub(1)));
            ahead += 1;
            if ahead == n {
                ahead = 0;
            }
            let (start, len) = self.frames[self.next];
            b.fill(&self.data[start..start + len]);
            self.next += 1;
            if self.next == self.frames.len() {
                self.next = 0;
            }
        }
        bufs.len()
    }

    /// Transmit one frame.
    pub fn tx(&mut self, buf: &PacketBuf) {
        self.tx_frame(buf.frame());
    }

    /// Transmit one frame given as bytes.
    pub fn tx_frame(&mut self, frame: &[u8]) {
        self.tx_count += 1;
        if self.keep {
            self.sent.push(frame.to_vec());
        }
    }
}
