//! Ethernet II frames with at most one IEEE 802.1Q tag.
//!
//! A frame whose (outer) ethertype is 802.1Q carries a 4-byte tag before the
//! real ethertype. A second tag (802.1ad / Q-in-Q) is reported by
//! [`Frame::inner_ethertype`] as a VLAN ethertype, which callers treat as
//! unsupported.

use super::{be16, need, put16, MacAddr, WireError};

/// Ethertypes vpnfwd distinguishes.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (Q-in-Q).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// MPLS unicast (RFC 3032).
    pub const MPLS: u16 = 0x8847;
}

mod field {
    pub const DST: core::ops::Range<usize> = 0..6;
    pub const SRC: core::ops::Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an 802.1Q-tagged Ethernet header.
pub const TAGGED_HEADER_LEN: usize = 18;

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap a buffer without checking its length.
    pub fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wrap a buffer, checking it holds the whole header (and the tag if the
    /// ethertype announces one).
    ///
    /// # Errors
    /// [`WireError::Truncated`] when the buffer is shorter than the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Frame { buffer };
        f.check_len()?;
        Ok(f)
    }

    /// Check the buffer is long enough for the header.
    ///
    /// # Errors
    /// [`WireError::Truncated`] when it is not.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        need("ethernet", len, HEADER_LEN)?;
        need("ethernet", len, self.header_len())
    }

    /// Destination MAC.
    pub fn dst(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        MacAddr(m)
    }

    /// Source MAC.
    pub fn src(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        MacAddr(m)
    }

    /// The ethertype right after the source MAC (0x8100 for a tagged frame).
    pub fn outer_ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// True if the frame carries an 802.1Q tag.
    pub fn is_tagged(&self) -> bool {
        self.outer_ethertype() == ethertype::VLAN
    }

    /// The VLAN id of the tag, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.is_tagged()
            .then(|| be16(self.buffer.as_ref(), field::TCI) & 0x0fff)
    }

    /// The priority code point of the tag, if tagged.
    pub fn pcp(&self) -> Option<u8> {
        self.is_tagged()
            .then(|| (self.buffer.as_ref()[field::TCI] >> 5) & 7)
    }

    /// The ethertype of the payload (after the tag, if any).
    pub fn inner_ethertype(&self) -> u16 {
        if self.is_tagged() {
            be16(self.buffer.as_ref(), field::INNER_ETHERTYPE)
        } else {
            self.outer_ethertype()
        }
    }

    /// Length of the header: 14, or 18 with a tag.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Consume the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC.
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    /// Set the source MAC.
    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }
}

/// A parsed Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// 802.1Q VLAN id, if tagged (1–4094).
    pub vlan: Option<u16>,
    /// The payload's ethertype.
    pub ethertype: u16,
}

impl Repr {
    /// Parse a checked frame.
    ///
    /// # Errors
    /// [`WireError::BadField`] for a VLAN id of 4095 or a stacked tag.
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Result<Repr, WireError> {
        let vlan = f.vlan();
        if vlan == Some(0xfff) {
            return Err(WireError::BadField {
                header: "ethernet",
                field: "vlan",
                value: 0xfff,
            });
        }
        let ethertype = f.inner_ethertype();
        if vlan.is_some() && (ethertype == ethertype::VLAN || ethertype == ethertype::QINQ) {
            return Err(WireError::BadField {
                header: "ethernet",
                field: "inner ethertype",
                value: u32::from(ethertype),
            });
        }
        Ok(Repr {
            dst: f.dst(),
            src: f.src(),
            vlan: vlan.filter(|v| *v != 0),
            ethertype,
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Write the header into the start of `buf`.
    ///
    /// # Panics
    /// Panics if `buf` is shorter than [`Repr::header_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::DST].copy_from_slice(&self.dst.0);
        buf[field::SRC].copy_from_slice(&self.src.0);
        match self.vlan {
            Some(v) => {
                put16(buf, field::ETHERTYPE, ethertype::VLAN);
                put16(buf, field::TCI, v & 0x0fff);
                put16(buf, field::INNER_ETHERTYPE, self.ethertype);
            }
            None => put16(buf, field::ETHERTYPE, self.ethertype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // scapy 2.8: bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")/Dot1Q(vlan=100)/IP())[:18]
    const TAGGED: &str = "020000000002 020000000001 8100 0064 0800";
    // scapy 2.8: bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01", type=0x0806))
    const UNTAGGED: &str = "ffffffffffff 020000000001 0806";

    #[test]
    fn deconstructs_a_tagged_frame() {
        let b = hex(TAGGED);
        let f = Frame::new_checked(&b[..]).expect("long enough");
        assert_eq!(f.dst(), "02:00:00:00:00:02".parse().expect("mac"));
        assert_eq!(f.src(), "02:00:00:00:00:01".parse().expect("mac"));
        assert_eq!(f.vlan(), Some(100));
        assert_eq!(f.inner_ethertype(), ethertype::IPV4);
        assert_eq!(f.header_len(), 18);
    }

    #[test]
    fn emit_of_parsed_repr_gives_identical_bytes() {
        for v in [TAGGED, UNTAGGED] {
            let b = hex(v);
            let r = Repr::parse(&Frame::new_checked(&b[..]).expect("ok")).expect("parse");
            let mut out = vec![0xa5; r.header_len()];
            r.emit(&mut out);
            assert_eq!(out, b);
        }
    }

    #[test]
    fn truncated_tag_is_rejected() {
        let b = hex(TAGGED);
        for n in 0..b.len() {
            assert!(Frame::new_checked(&b[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn stacked_vlan_tags_are_refused() {
        let b = hex("020000000002 020000000001 8100 0064 8100");
        let f = Frame::new_checked(&b[..]).expect("len ok");
        assert!(matches!(
            Repr::parse(&f),
            Err(WireError::BadField {
                field: "inner ethertype",
                ..
            })
        ));
    }
}
