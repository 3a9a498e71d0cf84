//! UDP headers (RFC 768), as used by MPLS-over-UDP (RFC 7510).

use super::{be16, need, put16, WireError};

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;
/// The destination port of MPLS-over-UDP (RFC 7510 §3).
pub const PORT_MPLS: u16 = 6635;

/// A view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer, checking the header and the length field.
    ///
    /// # Errors
    /// [`WireError::Truncated`] or a bad length field.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        need("udp", b.len(), HEADER_LEN)?;
        let l = usize::from(p.len());
        if l < HEADER_LEN {
            return Err(WireError::BadField {
                header: "udp",
                field: "length",
                value: l as u32,
            });
        }
        need("udp", b.len(), l)?;
        Ok(p)
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    /// Length field (header and payload).
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }
    /// True if the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

/// A UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length.
    pub payload_len: u16,
}

impl Repr {
    /// Parse a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN as u16,
        }
    }
    /// Write the header with a zero checksum (allowed for MPLS-over-UDP over
    /// IPv4, RFC 7510 §3).
    ///
    /// # Panics
    /// Panics if `buf` is shorter than 8 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        put16(buf, 0, self.src_port);
        put16(buf, 2, self.dst_port);
        put16(buf, 4, self.payload_len + HEADER_LEN as u16);
        put16(buf, 6, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    #[test]
    fn parses_the_mpls_port_and_length() {
        // scapy 2.8: bytes(UDP(sport=49152, dport=6635, chksum=0)/b"\x00\x3e\x81\x40")
        let b = hex("c000 19eb 000c 0000 003e 8140");
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.dst_port(), PORT_MPLS);
        let r = Repr::parse(&p);
        assert_eq!(r.payload_len, 4);
        let mut out = vec![0xa5; 8];
        r.emit(&mut out);
        assert_eq!(out, b[..8]);
    }

    #[test]
    fn length_shorter_than_header_is_rejected() {
        let b = hex("c000 19eb 0004 0000");
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::BadField {
                field: "length",
                ..
            })
        ));
    }
}
