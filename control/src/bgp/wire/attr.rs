//! Path attributes (RFC 4271 §4.3, §5), with the error handling of RFC 7606.
//!
//! Each attribute keeps the flags it arrived with, so a decoded UPDATE
//! re-encodes to the same bytes (some speakers set Extended Length on short
//! attributes). Decoding an attribute yields the attribute, or the action
//! RFC 7606 prescribes for its error.

use super::nlri::{self, Afi, Nlri, Safi};
use super::{err, Context, Notification, Reader};
use std::net::Ipv4Addr;

/// Attribute flags.
pub mod flag {
    /// Optional.
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial.
    pub const PARTIAL: u8 = 0x20;
    /// Extended length (two-octet length field).
    pub const EXT_LEN: u8 = 0x10;
}

/// Attribute type codes.
pub mod code {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MED: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR.
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// ORIGINATOR_ID (RFC 4456).
    pub const ORIGINATOR_ID: u8 = 9;
    /// CLUSTER_LIST (RFC 4456).
    pub const CLUSTER_LIST: u8 = 10;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH: u8 = 15;
    /// EXTENDED_COMMUNITIES (RFC 4360).
    pub const EXT_COMMUNITIES: u8 = 16;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793).
    pub const AS4_AGGREGATOR: u8 = 18;
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// IGP (0).
    Igp,
    /// EGP (1).
    Egp,
    /// INCOMPLETE (2).
    Incomplete,
}

/// An AS_PATH or AS4_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsPathSegment {
    /// AS_SET (1).
    Set(Vec<u32>),
    /// AS_SEQUENCE (2).
    Sequence(Vec<u32>),
    /// AS_CONFED_SEQUENCE (3) or AS_CONFED_SET (4), kept as type and ASNs.
    Confed(u8, Vec<u32>),
}

/// A decoded path attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attr {
    /// ORIGIN.
    Origin(Origin),
    /// AS_PATH (4-octet ASNs in memory whatever the session uses).
    AsPath(Vec<AsPathSegment>),
    /// NEXT_HOP.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR (AS, router).
    Aggregator(u32, Ipv4Addr),
    /// COMMUNITIES.
    Communities(Vec<u32>),
    /// ORIGINATOR_ID.
    OriginatorId(Ipv4Addr),
    /// CLUSTER_LIST.
    ClusterList(Vec<Ipv4Addr>),
    /// MP_REACH_NLRI.
    MpReach {
        /// Family.
        afi: Afi,
        /// Subsequent family.
        safi: Safi,
        /// Next hop as on the wire (for VPN families it starts with a zero RD).
        nexthop: Vec<u8>,
        /// Reachable NLRI.
        nlri: Vec<Nlri>,
    },
    /// MP_UNREACH_NLRI.
    MpUnreach {
        /// Family.
        afi: Afi,
        /// Subsequent family.
        safi: Safi,
        /// Withdrawn NLRI.
        nlri: Vec<Nlri>,
    },
    /// EXTENDED_COMMUNITIES (route targets and others, 8 bytes each).
    ExtCommunities(Vec<[u8; 8]>),
    /// AS4_PATH.
    As4Path(Vec<AsPathSegment>),
    /// AS4_AGGREGATOR.
    As4Aggregator(u32, Ipv4Addr),
    /// An attribute vpnfwd does not interpret (kept, passed on if transitive).
    Unknown {
        /// Type code.
        code: u8,
        /// Value.
        data: Vec<u8>,
    },
}

/// An attribute with the flags it carries on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttr {
    /// Flags byte.
    pub flags: u8,
    /// The attribute.
    pub attr: Attr,
}

/// The RFC 7606 outcome of a malformed attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrError {
    /// Discard the attribute, keep the route (RFC 7606 §2 "attribute discard").
    Discard(u8),
    /// Treat the UPDATE's NLRI as withdrawn (§2 "treat-as-withdraw").
    TreatAsWithdraw(u8),
    /// Reset the session with this notification.
    Reset(Notification),
}

impl Attr {
    /// The type code.
    pub fn code(&self) -> u8 {
        match self {
            Attr::Origin(_) => code::ORIGIN,
            Attr::AsPath(_) => code::AS_PATH,
            Attr::NextHop(_) => code::NEXT_HOP,
            Attr::Med(_) => code::MED,
            Attr::LocalPref(_) => code::LOCAL_PREF,
            Attr::AtomicAggregate => code::ATOMIC_AGGREGATE,
            Attr::Aggregator(..) => code::AGGREGATOR,
            Attr::Communities(_) => code::COMMUNITIES,
            Attr::OriginatorId(_) => code::ORIGINATOR_ID,
            Attr::ClusterList(_) => code::CLUSTER_LIST,
            Attr::MpReach { .. } => code::MP_REACH,
            Attr::MpUnreach { .. } => code::MP_UNREACH,
            Attr::ExtCommunities(_) => code::EXT_COMMUNITIES,
            Attr::As4Path(_) => code::AS4_PATH,
            Attr::As4Aggregator(..) => code::AS4_AGGREGATOR,
            Attr::Unknown { code, .. } => *code,
        }
    }

    /// The flags RFC 4271 and its successors give this attribute.
    pub fn default_flags(&self) -> u8 {
        use flag::*;
        match self.code() {
            code::ORIGIN
            | code::AS_PATH
            | code::NEXT_HOP
            | code::LOCAL_PREF
            | code::ATOMIC_AGGREGATE => TRANSITIVE,
            code::MED
            | code::ORIGINATOR_ID
            | code::CLUSTER_LIST
            | code::MP_REACH
            | code::MP_UNREACH => OPTIONAL,
            _ => OPTIONAL | TRANSITIVE,
        }
    }
}

fn segments(data: &[u8], four: bool) -> Option<Vec<AsPathSegment>> {
    let w = if four { 4 } else { 2 };
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while r.left() > 0 {
        let ty = r.u8()?;
        let n = usize::from(r.u8()?);
        if n == 0 {
            return None;
        }
        let b = r.take(n * w)?;
        let asns: Vec<u32> = b
            .chunks(w)
            .map(|c| {
                if four {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        out.push(match ty {
            1 => AsPathSegment::Set(asns),
            2 => AsPathSegment::Sequence(asns),
            3 | 4 => AsPathSegment::Confed(ty, asns),
            _ => return None,
        });
    }
    Some(out)
}

fn put_segments(out: &mut Vec<u8>, segs: &[AsPathSegment], four: bool) {
    for s in segs {
        let (ty, asns) = match s {
            AsPathSegment::Set(a) => (1, a),
            AsPathSegment::Sequence(a) => (2, a),
            AsPathSegment::Confed(t, a) => (*t, a),
        };
        out.push(ty);
        out.push(asns.len() as u8);
        for a in asns {
            if four {
                out.extend_from_slice(&a.to_be_bytes());
            } else {
                // 2-octet sessions carry AS_TRANS (23456) for large ASNs (RFC 6793 §4.2.2).
                out.extend_from_slice(&u16::try_from(*a).unwrap_or(23456).to_be_bytes());
            }
        }
    }
}

fn ipv4(d: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(d[0], d[1], d[2], d[3])
}

/// Decode one attribute's value.
///
/// # Errors
/// The RFC 7606 action for a malformed value or wrong flags.
pub fn decode_value(flags: u8, code: u8, d: &[u8], ctx: &Context) -> Result<Attr, AttrError> {
    use flag::*;
    let twa = || AttrError::TreatAsWithdraw(code);
    let known_flags = |want: u8| (flags & (OPTIONAL | TRANSITIVE)) == want;
    let reset = |sub: u8, why: &str| {
        AttrError::Reset(Notification::new(
            err::UPDATE,
            sub,
            vec![flags, code],
            why.to_string(),
        ))
    };
    let attr = match code {
        code::ORIGIN => {
            if !known_flags(TRANSITIVE) || d.len() != 1 || d[0] > 2 {
                return Err(twa());
            }
            Attr::Origin([Origin::Igp, Origin::Egp, Origin::Incomplete][usize::from(d[0])])
        }
        code::AS_PATH => {
            if !known_flags(TRANSITIVE) {
                return Err(twa());
            }
            Attr::AsPath(segments(d, ctx.four_octet_as).ok_or_else(twa)?)
        }
        code::NEXT_HOP => {
            if !known_flags(TRANSITIVE) || d.len() != 4 {
                return Err(twa());
            }
            Attr::NextHop(ipv4(d))
        }
        code::MED => {
            if !known_flags(OPTIONAL) || d.len() != 4 {
                return Err(twa());
            }
            Attr::Med(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        }
        code::LOCAL_PREF => {
            if !known_flags(TRANSITIVE) || d.len() != 4 {
                return Err(twa());
            }
            Attr::LocalPref(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        }
        code::ATOMIC_AGGREGATE => {
            if !known_flags(TRANSITIVE) || !d.is_empty() {
                return Err(AttrError::Discard(code));
            }
            Attr::AtomicAggregate
        }
        code::AGGREGATOR => {
            let want = if ctx.four_octet_as { 8 } else { 6 };
            if !known_flags(OPTIONAL | TRANSITIVE) || d.len() != want {
                return Err(AttrError::Discard(code));
            }
            if ctx.four_octet_as {
                Attr::Aggregator(u32::from_be_bytes([d[0], d[1], d[2], d[3]]), ipv4(&d[4..]))
            } else {
                Attr::Aggregator(u32::from(u16::from_be_bytes([d[0], d[1]])), ipv4(&d[2..]))
            }
        }
        code::COMMUNITIES => {
            if !known_flags(OPTIONAL | TRANSITIVE) || d.is_empty() || !d.len().is_multiple_of(4) {
                return Err(twa());
            }
            Attr::Communities(
                d.chunks(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        code::ORIGINATOR_ID => {
            if !known_flags(OPTIONAL) || d.len() != 4 {
                return Err(twa());
            }
            Attr::OriginatorId(ipv4(d))
        }
        code::CLUSTER_LIST => {
            if !known_flags(OPTIONAL) || d.is_empty() || !d.len().is_multiple_of(4) {
                return Err(twa());
            }
            Attr::ClusterList(d.chunks(4).map(ipv4).collect())
        }
        code::EXT_COMMUNITIES => {
            if !known_flags(OPTIONAL | TRANSITIVE) || d.is_empty() || !d.len().is_multiple_of(8) {
                return Err(twa());
            }
            Attr::ExtCommunities(
                d.chunks(8)
                    .map(|c| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(c);
                        a
                    })
                    .collect(),
            )
        }
        code::AS4_PATH => {
            // RFC 6793 §6 / RFC 7606 §7.7: a malformed AS4_PATH is discarded.
            if !known_flags(OPTIONAL | TRANSITIVE) {
                return Err(AttrError::Discard(code));
            }
            Attr::As4Path(segments(d, true).ok_or(AttrError::Discard(code))?)
        }
        code::AS4_AGGREGATOR => {
            if !known_flags(OPTIONAL | TRANSITIVE) || d.len() != 8 {
                return Err(AttrError::Discard(code));
            }
            Attr::As4Aggregator(u32::from_be_bytes([d[0], d[1], d[2], d[3]]), ipv4(&d[4..]))
        }
        code::MP_REACH | code::MP_UNREACH => {
            // RFC 7606 §7.11: an MP attribute we cannot parse leaves the NLRI
            // unknown, so the session is reset.
            if !known_flags(OPTIONAL) {
                return Err(reset(err::UPD_FLAGS, "MP attribute flags"));
            }
            let mut r = Reader::new(d);
            let afi = Afi(r
                .u16()
                .ok_or_else(|| reset(err::UPD_LENGTH, "MP attribute too short"))?);
            let safi = Safi(
                r.u8()
                    .ok_or_else(|| reset(err::UPD_LENGTH, "MP attribute too short"))?,
            );
            let add_path = ctx.add_path(afi, safi);
            if code == code::MP_REACH {
                let nhl = usize::from(
                    r.u8()
                        .ok_or_else(|| reset(err::UPD_LENGTH, "MP_REACH too short"))?,
                );
                let nexthop = r
                    .take(nhl)
                    .ok_or_else(|| reset(err::UPD_LENGTH, "MP_REACH next hop overruns"))?
                    .to_vec();
                r.u8()
                    .ok_or_else(|| reset(err::UPD_LENGTH, "MP_REACH reserved byte missing"))?;
                let nlri = nlri::decode(&d[r.at..], afi, safi, add_path)
                    .map_err(|_| reset(err::UPD_NETWORK, "MP_REACH NLRI malformed"))?;
                Attr::MpReach {
                    afi,
                    safi,
                    nexthop,
                    nlri,
                }
            } else {
                let nlri = nlri::decode(&d[r.at..], afi, safi, add_path)
                    .map_err(|_| reset(err::UPD_NETWORK, "MP_UNREACH NLRI malformed"))?;
                Attr::MpUnreach { afi, safi, nlri }
            }
        }
        _ => {
            if flags & OPTIONAL == 0 {
                // RFC 4271 §6.3: an unrecognised well-known attribute.
                return Err(AttrError::Reset(Notification::new(
                    err::UPDATE,
                    2,
                    vec![flags, code],
                    format!("unrecognised well-known attribute {code}"),
                )));
            }
            Attr::Unknown {
                code,
                data: d.to_vec(),
            }
        }
    };
    Ok(attr)
}

/// Encode an attribute with its flags (the length form follows the
/// Extended Length flag, widened if the value needs it).
pub fn encode(out: &mut Vec<u8>, pa: &PathAttr, ctx: &Context) {
    let mut v = Vec::new();
    match &pa.attr {
        Attr::Origin(o) => v.push(*o as u8),
        Attr::AsPath(s) => put_segments(&mut v, s, ctx.four_octet_as),
        Attr::NextHop(a) | Attr::OriginatorId(a) => v.extend_from_slice(&a.octets()),
        Attr::Med(x) | Attr::LocalPref(x) => v.extend_from_slice(&x.to_be_bytes()),
        Attr::AtomicAggregate => {}
        Attr::Aggregator(asn, ip) => {
            if ctx.four_octet_as {
                v.extend_from_slice(&asn.to_be_bytes());
            } else {
                v.extend_from_slice(&u16::try_from(*asn).unwrap_or(23456).to_be_bytes());
            }
            v.extend_from_slice(&ip.octets());
        }
        Attr::Communities(c) => c.iter().for_each(|x| v.extend_from_slice(&x.to_be_bytes())),
        Attr::ClusterList(c) => c.iter().for_each(|x| v.extend_from_slice(&x.octets())),
        Attr::ExtCommunities(c) => c.iter().for_each(|x| v.extend_from_slice(x)),
        Attr::As4Path(s) => put_segments(&mut v, s, true),
        Attr::As4Aggregator(asn, ip) => {
            v.extend_from_slice(&asn.to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
        Attr::MpReach {
            afi,
            safi,
            nexthop,
            nlri,
        } => {
            v.extend_from_slice(&afi.0.to_be_bytes());
            v.push(safi.0);
            v.push(nexthop.len() as u8);
            v.extend_from_slice(nexthop);
            v.push(0);
            nlri::encode(&mut v, nlri);
        }
        Attr::MpUnreach { afi, safi, nlri } => {
            v.extend_from_slice(&afi.0.to_be_bytes());
            v.push(safi.0);
            nlri::encode(&mut v, nlri);
        }
        Attr::Unknown { data, .. } => v.extend_from_slice(data),
    }
    let ext = pa.flags & flag::EXT_LEN != 0 || v.len() > 255;
    out.push(if ext {
        pa.flags | flag::EXT_LEN
    } else {
        pa.flags
    });
    out.push(pa.attr.code());
    if ext {
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    } else {
        out.push(v.len() as u8);
    }
    out.extend_from_slice(&v);
}
