//! Packet buffers and port back-ends.
//!
//! A [`PacketBuf`] is a fixed 2 KiB buffer with headroom in front of the
//! frame, so that pushing labels and tunnel headers never moves the payload
//! (as with DPDK's mbuf). Buffers are allocated once per worker and reused.
//! [`mem::MemPort`] is the in-memory port used by tests and benchmarks.

pub mod afpacket;
pub mod afxdp;
#[cfg(feature = "dpdk")]
pub mod dpdk;
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
            b.data.fill(0xee);
            assert!(b.fill(&src[..n]));
            assert_eq!(b.frame(), &src[..n], "length {n}");
            assert_eq!(
                b.data[HEADROOM + n..HEADROOM + n + 8],
                [0xee; 8],
                "length {n}"
            );
        }
        assert!(!b.fill(&vec![0; BUF_SIZE - HEADROOM + 1]));
        assert!(b.is_empty());
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
