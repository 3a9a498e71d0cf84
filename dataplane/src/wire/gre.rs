//! GRE headers (RFC 2784, RFC 2890 key and sequence bits) as used by
//! MPLS-over-GRE (RFC 4023): protocol type 0x8847.

use super::{be16, need, put16, WireError};

/// Length of a GRE header with no optional fields.
pub const HEADER_LEN: usize = 4;

const C: u16 = 0x8000;
const K: u16 = 0x2000;
const S: u16 = 0x1000;

/// A view of a GRE packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer; checks version 0 and that the optional fields fit.
    ///
    /// # Errors
    /// [`WireError::Truncated`] or a bad version.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        need("gre", b.len(), HEADER_LEN)?;
        let ver = p.flags() & 0x7;
        if ver != 0 {
            return Err(WireError::BadField {
                header: "gre",
                field: "version",
                value: u32::from(ver),
            });
        }
        need("gre", b.len(), p.header_len())?;
        Ok(p)
    }
    /// The flags and version word.
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    /// Protocol type of the payload.
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    /// Header length including checksum, key and sequence fields if present.
    pub fn header_len(&self) -> usize {
        let f = self.flags();
        HEADER_LEN
            + 4 * (usize::from(f & C != 0) + usize::from(f & K != 0) + usize::from(f & S != 0))
    }
    /// The key, if the K bit is set.
    pub fn key(&self) -> Option<u32> {
        let f = self.flags();
        (f & K != 0).then(|| {
            let at = HEADER_LEN + if f & C != 0 { 4 } else { 0 };
            super::be32(self.buffer.as_ref(), at)
        })
    }
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// A GRE header as vpnfwd emits it: no checksum, optional key, no sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Protocol type of the payload.
    pub protocol: u16,
    /// Optional key (RFC 2890).
    pub key: Option<u32>,
}

impl Repr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            protocol: p.protocol(),
            key: p.key(),
        }
    }
    /// Bytes [`Repr::emit`] writes.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + if self.key.is_some() { 4 } else { 0 }
    }
    /// Write the header.
    ///
    /// # Panics
    /// Panics if `buf` is shorter than [`Repr::header_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        put16(buf, 0, if self.key.is_some() { K } else { 0 });
        put16(buf, 2, self.protocol);
        if let Some(k) = self.key {
            super::put32(buf, 4, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    #[test]
    fn mpls_over_gre_header_round_trips() {
        // scapy 2.8: bytes(GRE(proto=0x8847))
        let b = hex("0000 8847");
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.protocol(), 0x8847);
        let r = Repr::parse(&p);
        let mut out = vec![0xa5; r.header_len()];
        r.emit(&mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn keyed_header_round_trips() {
        // scapy 2.8: bytes(GRE(proto=0x8847, key_present=1, key=0x01020304))
        let b = hex("2000 8847 0102 0304");
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.key(), Some(0x0102_0304));
        let r = Repr::parse(&p);
        let mut out = vec![0xa5; r.header_len()];
        r.emit(&mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn version_one_is_refused() {
        let b = hex("0001 880b");
        assert!(Packet::new_checked(&b[..]).is_err());
    }
}
