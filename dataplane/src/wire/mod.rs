//! Zero-copy wire views of the headers vpnfwd reads and writes.
//!
//! Each header has a `Packet<T: AsRef<[u8]>>` view over a buffer and a small
//! `Repr` value type. `Packet::new_checked` verifies the length once; after
//! that no accessor can panic, whatever the bytes say. Field offsets are named
//! constants. `Repr::parse` validates semantics, `Repr::emit` writes every byte
//! of the header it owns.
//!
//! Headers: Ethernet II with one optional IEEE 802.1Q tag, ARP (RFC 826) for
//! IPv4 over Ethernet, IPv4 (RFC 791), IPv6 (RFC 8200), UDP (RFC 768), GRE
//! (RFC 2784, as used by MPLS-over-GRE, RFC 4023) and MPLS label stack entries
//! (RFC 3032).

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gre;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod udp;

/// Why a buffer could not be viewed or parsed as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header (or the length it announces) does.
    #[error("{header} truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// The header being read.
        header: &'static str,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// A field holds a value the header does not allow.
    #[error("{header}: bad {field} value {value}")]
    BadField {
        /// The header being read.
        header: &'static str,
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
}

pub(crate) fn need(header: &'static str, have: usize, needed: usize) -> Result<(), WireError> {
    if have < needed {
        Err(WireError::Truncated {
            header,
            needed,
            have,
        })
    } else {
        Ok(())
    }
}

// One bounds check per field: the slice's length is known after it.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    let s = &b[at..at + 2];
    u16::from_be_bytes([s[0], s[1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let s = &b[at..at + 4];
    u32::from_be_bytes([s[0], s[1], s[2], s[3]])
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The all-zero address.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// True for group (multicast or broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl core::fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

impl core::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl core::str::FromStr for MacAddr {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = WireError::BadField {
            header: "mac",
            field: "text",
            value: 0,
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or(bad)?;
            if p.len() != 2 {
                return Err(bad);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad)?;
        }
        if parts.next().is_some() {
            return Err(bad);
        }
        Ok(MacAddr(out))
    }
}

/// Parse a hex string (whitespace ignored) into bytes; for tests and golden vectors.
///
/// # Panics
/// Panics on a non-hex character or an odd number of digits.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex digit"))
        .collect()
}
