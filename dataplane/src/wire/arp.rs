//! ARP for IPv4 over Ethernet (RFC 826).

use super::{be16, need, put16, MacAddr, WireError};
use std::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Request (1).
    Request,
    /// Reply (2).
    Reply,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Operation.
    pub operation: Operation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

fn mac(b: &[u8]) -> MacAddr {
    let mut m = [0; 6];
    m.copy_from_slice(&b[..6]);
    MacAddr(m)
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl Repr {
    /// Parse an ARP packet for Ethernet and IPv4.
    ///
    /// # Errors
    /// [`WireError::Truncated`], or [`WireError::BadField`] for another hardware
    /// or protocol type, address length or operation.
    pub fn parse(b: &[u8]) -> Result<Repr, WireError> {
        need("arp", b.len(), PACKET_LEN)?;
        let bad = |field, value| WireError::BadField {
            header: "arp",
            field,
            value,
        };
        if be16(b, 0) != 1 {
            return Err(bad("hardware type", u32::from(be16(b, 0))));
        }
        if be16(b, 2) != 0x0800 {
            return Err(bad("protocol type", u32::from(be16(b, 2))));
        }
        if b[4] != 6 || b[5] != 4 {
            return Err(bad("address length", u32::from(b[4])));
        }
        let operation = match be16(b, 6) {
            1 => Operation::Request,
            2 => Operation::Reply,
            o => return Err(bad("operation", u32::from(o))),
        };
        Ok(Repr {
            operation,
            sender_mac: mac(&b[8..]),
            sender_ip: ip(&b[14..]),
            target_mac: mac(&b[18..]),
            target_ip: ip(&b[24..]),
        })
    }

    /// Write the 28-byte packet.
    ///
    /// # Panics
    /// Panics if `b` is shorter than 28 bytes.
    pub fn emit(&self, b: &mut [u8]) {
        put16(b, 0, 1);
        put16(b, 2, 0x0800);
        b[4] = 6;
        b[5] = 4;
        put16(
            b,
            6,
            match self.operation {
                Operation::Request => 1,
                Operation::Reply => 2,
            },
        );
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // scapy 2.8: bytes(ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1", pdst="10.0.0.254"))
    const WHO_HAS: &str = "0001 0800 0604 0001 020000000001 0a000001 000000000000 0a0000fe";

    #[test]
    fn who_has_gateway_round_trips() {
        let b = hex(WHO_HAS);
        let r = Repr::parse(&b).expect("valid");
        assert_eq!(r.operation, Operation::Request);
        assert_eq!(r.target_ip, Ipv4Addr::new(10, 0, 0, 254));
        let mut out = vec![0xa5; PACKET_LEN];
        r.emit(&mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn other_hardware_types_are_refused() {
        let mut b = hex(WHO_HAS);
        b[1] = 6;
        assert!(matches!(
            Repr::parse(&b),
            Err(WireError::BadField {
                field: "hardware type",
                ..
            })
        ));
        assert!(Repr::parse(&b[..27]).is_err());
    }
}
