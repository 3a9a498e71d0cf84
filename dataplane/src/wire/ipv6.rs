//! IPv6 fixed headers (RFC 8200).
//!
//! Extension headers are not walked: the next-header value is reported as is.

use super::{be16, need, put16, WireError};
use std::net::Ipv6Addr;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap a buffer, validating version and payload length.
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::BadField`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        need("ipv6", b.len(), HEADER_LEN)?;
        if p.version() != 6 {
            return Err(WireError::BadField {
                header: "ipv6",
                field: "version",
                value: u32::from(p.version()),
            });
        }
        need("ipv6", b.len(), HEADER_LEN + usize::from(p.payload_len()))?;
        Ok(p)
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }
    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }
    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        (u32::from(b[1] & 0x0f) << 16) | u32::from(be16(b, 2))
    }
    /// Payload length.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }
    /// Next header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC..field::SRC + 16])
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST..field::DST + 16])
    }
    /// The payload as delimited by the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = h;
    }
}

/// A parsed IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }

    /// Write the 40-byte header into the start of `buf`.
    ///
    /// # Panics
    /// Panics if `buf` is shorter than 40 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let w0 =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        buf[0..4].copy_from_slice(&w0.to_be_bytes());
        put16(buf, field::PAYLOAD_LEN, self.payload_len);
        buf[field::NEXT_HEADER] = self.next_header;
        buf[field::HOP_LIMIT] = self.hop_limit;
        buf[field::SRC..field::SRC + 16].copy_from_slice(&self.src.octets());
        buf[field::DST..field::DST + 16].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // scapy 2.8: bytes(IPv6(src="2001:db8::1", dst="2001:db8:1::2", hlim=64)/UDP(sport=1234, dport=80)/b"ab")
    const UDP6: &str = "6000 0000 000a 1140 2001 0db8 0000 0000 0000 0000 0000 0001
                        2001 0db8 0001 0000 0000 0000 0000 0002 04d2 0050 000a 3de0 6162";

    #[test]
    fn deconstructs_a_udp_packet() {
        let b = hex(UDP6);
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.src(), "2001:db8::1".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(p.dst(), "2001:db8:1::2".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.payload().len(), 10);
    }

    #[test]
    fn emit_of_parsed_repr_gives_identical_bytes() {
        let b = hex(UDP6);
        let r = Repr::parse(&Packet::new_checked(&b[..]).expect("valid"));
        let mut out = vec![0xa5; 40];
        r.emit(&mut out);
        assert_eq!(out, b[..40]);
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let b = hex(UDP6);
        for n in 0..b.len() {
            assert!(Packet::new_checked(&b[..n]).is_err(), "len {n}");
        }
    }
}
