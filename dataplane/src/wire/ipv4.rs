//! IPv4 headers (RFC 791).
//!
//! [`Packet::new_checked`] verifies the buffer holds the header, that the
//! version is 4, that IHL is at least 5 and that the total length covers the
//! header and fits the buffer. Options are exposed but not interpreted.

use super::{be16, checksum, need, put16, WireError};
use std::net::Ipv4Addr;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// IP protocol numbers vpnfwd distinguishes.
pub mod protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// MPLS in IP (RFC 4023).
    pub const MPLS_IN_IP: u8 = 137;
}

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap a buffer and validate version, IHL and total length.
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::BadField`] naming the field.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        need("ipv4", b.len(), HEADER_LEN)?;
        if self.version() != 4 {
            return Err(WireError::BadField {
                header: "ipv4",
                field: "version",
                value: u32::from(self.version()),
            });
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::BadField {
                header: "ipv4",
                field: "ihl",
                value: (hl / 4) as u32,
            });
        }
        need("ipv4", b.len(), hl)?;
        let tl = usize::from(self.total_len());
        if tl < hl {
            return Err(WireError::BadField {
                header: "ipv4",
                field: "total length",
                value: tl as u32,
            });
        }
        need("ipv4", b.len(), tl)
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// DSCP and ECN byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }
    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }
    /// Flags and fragment offset word.
    pub fn flags_frag(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    /// Protocol.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }
    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(
            b[field::SRC],
            b[field::SRC + 1],
            b[field::SRC + 2],
            b[field::SRC + 3],
        )
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(
            b[field::DST],
            b[field::DST + 1],
            b[field::DST + 2],
            b[field::DST + 3],
        )
    }
    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
    /// The payload as delimited by the header and total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the TTL, updating the checksum incrementally (RFC 1624).
    pub fn set_ttl_update_checksum(&mut self, ttl: u8) {
        let b = self.buffer.as_mut();
        let old = be16(b, field::TTL);
        // The new word is made from the old one in a register: reading it
        // back after writing the TTL byte would wait for the byte store
        // (a wider load is not forwarded from a narrower store).
        let new = u16::from(ttl) << 8 | (old & 0xff);
        b[field::TTL] = ttl;
        let c = checksum::update(be16(b, field::CHECKSUM), old, new);
        put16(b, field::CHECKSUM, c);
    }
    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        put16(b, field::CHECKSUM, 0);
        let c = checksum::checksum(&b[..hl]);
        put16(b, field::CHECKSUM, c);
    }
}

/// A parsed IPv4 header (options are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Payload length in bytes.
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN.
    pub dscp_ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment bit.
    pub dont_frag: bool,
}

impl Repr {
    /// Parse a checked packet; the checksum must verify.
    ///
    /// # Errors
    /// [`WireError::BadField`] for a bad checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, WireError> {
        if !p.verify_checksum() {
            return Err(WireError::BadField {
                header: "ipv4",
                field: "checksum",
                value: u32::from(p.checksum()),
            });
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: p.total_len() - p.header_len() as u16,
            ttl: p.ttl(),
            dscp_ecn: p.dscp_ecn(),
            ident: p.ident(),
            dont_frag: p.flags_frag() & 0x4000 != 0,
        })
    }

    /// Write a 20-byte header with a correct checksum into the start of `buf`.
    ///
    /// # Panics
    /// Panics if `buf` is shorter than 20 bytes or the total length exceeds 65535.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::VER_IHL] = 0x45;
        buf[field::DSCP_ECN] = self.dscp_ecn;
        put16(buf, field::LENGTH, self.payload_len + HEADER_LEN as u16);
        put16(buf, field::IDENT, self.ident);
        put16(
            buf,
            field::FLAGS_FRAG,
            if self.dont_frag { 0x4000 } else { 0 },
        );
        buf[field::TTL] = self.ttl;
        buf[field::PROTOCOL] = self.protocol;
        put16(buf, field::CHECKSUM, 0);
        buf[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        buf[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&buf[..HEADER_LEN]);
        put16(buf, field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // scapy 2.8: bytes(IP(src="10.0.0.1", dst="10.0.1.2", ttl=64, id=1, flags="DF")/UDP(sport=1234, dport=80)/b"ab")
    const UDP_PKT: &str =
        "4500 001e 0001 4000 4011 25cc 0a00 0001 0a00 0102 04d2 0050 000a 8453 6162";

    #[test]
    fn deconstructs_and_verifies_checksum() {
        let b = hex(UDP_PKT);
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 10);
    }

    #[test]
    fn emit_of_parsed_repr_gives_identical_bytes() {
        let b = hex(UDP_PKT);
        let r = Repr::parse(&Packet::new_checked(&b[..]).expect("valid")).expect("parse");
        let mut out = vec![0xa5; 20];
        r.emit(&mut out);
        assert_eq!(out, b[..20]);
    }

    #[test]
    fn bad_ihl_version_and_length_are_named() {
        let mut b = hex(UDP_PKT);
        b[0] = 0x44;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::BadField { field: "ihl", .. })
        ));
        b[0] = 0x65;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::BadField {
                field: "version",
                ..
            })
        ));
        b[0] = 0x45;
        b[3] = 0x10;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::BadField {
                field: "total length",
                ..
            })
        ));
        b[3] = 0xff;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut b = hex(UDP_PKT);
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        p.set_ttl_update_checksum(63);
        assert!(p.verify_checksum());
    }
}
