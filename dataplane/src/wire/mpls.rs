//! MPLS label stack entries (RFC 3032 §2.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |                Label                  | TC  |S|       TTL     |
//! ```

use super::{be32, need, WireError};

/// Length of one label stack entry.
pub const ENTRY_LEN: usize = 4;

/// A 20-bit MPLS label. Construction rejects values that do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(u32);

impl Label {
    /// IPv4 explicit null (RFC 3032 §2.1).
    pub const IPV4_EXPLICIT_NULL: Label = Label(0);
    /// IPv6 explicit null.
    pub const IPV6_EXPLICIT_NULL: Label = Label(2);
    /// Implicit null (never on the wire).
    pub const IMPLICIT_NULL: Label = Label(3);
    /// Largest label value.
    pub const MAX: u32 = (1 << 20) - 1;
    /// First label value not reserved by RFC 3032.
    pub const FIRST_UNRESERVED: u32 = 16;

    /// A label, if `v` fits 20 bits.
    pub const fn new(v: u32) -> Option<Label> {
        if v <= Self::MAX {
            Some(Label(v))
        } else {
            None
        }
    }
    /// The label's value.
    pub const fn value(self) -> u32 {
        self.0
    }
}

impl core::fmt::Display for Label {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One label stack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The label.
    pub label: Label,
    /// Traffic class (3 bits).
    pub tc: u8,
    /// Bottom of stack.
    pub bos: bool,
    /// Time to live.
    pub ttl: u8,
}

impl Entry {
    /// Decode from the 32-bit word.
    pub fn from_word(w: u32) -> Entry {
        Entry {
            label: Label(w >> 12),
            tc: ((w >> 9) & 7) as u8,
            bos: (w >> 8) & 1 == 1,
            ttl: w as u8,
        }
    }
    /// Encode to the 32-bit word.
    pub fn to_word(self) -> u32 {
        (self.label.0 << 12)
            | (u32::from(self.tc & 7) << 9)
            | (u32::from(self.bos) << 8)
            | u32::from(self.ttl)
    }
    /// Read the entry at the start of `buf`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if fewer than 4 bytes.
    pub fn parse(buf: &[u8]) -> Result<Entry, WireError> {
        need("mpls", buf.len(), ENTRY_LEN)?;
        Ok(Entry::from_word(be32(buf, 0)))
    }
    /// Write the entry to the start of `buf`.
    ///
    /// # Panics
    /// Panics if `buf` is shorter than 4 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[..4].copy_from_slice(&self.to_word().to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    #[test]
    fn two_entry_stack_decodes_and_re_encodes() {
        // scapy 2.8 (contrib mpls): bytes(MPLS(label=100, s=0, ttl=64)/MPLS(label=1000, s=1, ttl=63))
        let b = hex("0006 4040 003e 813f");
        let a = Entry::parse(&b).expect("4 bytes");
        let c = Entry::parse(&b[4..]).expect("4 bytes");
        assert_eq!((a.label.value(), a.bos, a.ttl), (100, false, 64));
        assert_eq!((c.label.value(), c.bos, c.ttl), (1000, true, 63));
        let mut out = vec![0xa5; 8];
        a.emit(&mut out);
        c.emit(&mut out[4..]);
        assert_eq!(out, b);
    }

    #[test]
    fn labels_beyond_twenty_bits_are_rejected_not_masked() {
        assert!(Label::new(Label::MAX).is_some());
        assert!(Label::new(Label::MAX + 1).is_none());
    }
}
