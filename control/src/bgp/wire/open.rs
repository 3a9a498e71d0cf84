//! OPEN messages and capabilities (RFC 4271 §4.2, RFC 5492): multiprotocol
//! (RFC 4760), route refresh (RFC 2918), extended next hop (RFC 8950),
//! graceful restart (RFC 4724), 4-octet AS (RFC 6793), ADD-PATH (RFC 7911),
//! enhanced route refresh (RFC 7313).

use super::nlri::{Afi, Safi};
use super::{err, Notification, Reader};
use std::net::Ipv4Addr;

/// AS_TRANS, the 2-octet stand-in for a 4-octet AS (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// A capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (1).
    Multiprotocol(Afi, Safi),
    /// Route refresh (2).
    RouteRefresh,
    /// Extended next hop (5): (NLRI AFI, SAFI, next-hop AFI) triples.
    ExtendedNexthop(Vec<(Afi, Safi, Afi)>),
    /// Graceful restart (64): flags and restart time (12 bits), then per
    /// family (AFI, SAFI, flags).
    GracefulRestart {
        /// Restart flags (R, N bits) in the top nibble.
        flags: u8,
        /// Restart time in seconds.
        time: u16,
        /// Families and their forwarding-state flags.
        families: Vec<(Afi, Safi, u8)>,
    },
    /// 4-octet AS numbers (65).
    FourOctetAs(u32),
    /// ADD-PATH (69): (AFI, SAFI, send/receive: 1 receive, 2 send, 3 both).
    AddPath(Vec<(Afi, Safi, u8)>),
    /// Enhanced route refresh (70).
    EnhancedRouteRefresh,
    /// Anything else, kept.
    Unknown(u8, Vec<u8>),
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field (AS_TRANS for large ASNs).
    pub my_as: u16,
    /// Proposed hold time in seconds (0 or ≥ 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, grouped by the optional parameter that carried them.
    pub params: Vec<Vec<Capability>>,
}

impl Open {
    /// An OPEN for `asn` with capabilities, one per optional parameter.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, caps: Vec<Capability>) -> Open {
        let mut caps = caps;
        if !caps.iter().any(|c| matches!(c, Capability::FourOctetAs(_))) {
            caps.push(Capability::FourOctetAs(asn));
        }
        Open {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            params: caps.into_iter().map(|c| vec![c]).collect(),
        }
    }

    /// All capabilities.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flatten()
    }

    /// The speaker's AS: the 4-octet capability's if present, else My AS.
    pub fn asn(&self) -> u32 {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Decode an OPEN body.
    ///
    /// # Errors
    /// The OPEN-error [`Notification`] (RFC 4271 §6.2).
    pub fn decode(body: &[u8]) -> Result<Open, Notification> {
        let bad = |sub: u8, data: Vec<u8>, why: &str| {
            Notification::new(err::OPEN, sub, data, why.to_string())
        };
        let short =
            || Notification::new(err::HEADER, err::HDR_BAD_LENGTH, vec![], "OPEN too short");
        let mut r = Reader::new(body);
        let version = r.u8().ok_or_else(short)?;
        if version != 4 {
            return Err(bad(err::OPEN_VERSION, vec![0, 4], "only BGP version 4"));
        }
        let my_as = r.u16().ok_or_else(short)?;
        let hold_time = r.u16().ok_or_else(short)?;
        if hold_time == 1 || hold_time == 2 {
            return Err(bad(err::OPEN_HOLD_TIME, vec![], "hold time 1 or 2 seconds"));
        }
        let id = r.u32().ok_or_else(short)?;
        if id == 0 {
            return Err(bad(err::OPEN_BAD_ID, vec![], "BGP identifier 0"));
        }
        let plen = usize::from(r.u8().ok_or_else(short)?);
        let pbuf = r.take(plen).ok_or_else(short)?;
        if r.left() != 0 {
            return Err(bad(0, vec![], "bytes after the optional parameters"));
        }
        let mut p = Reader::new(pbuf);
        let mut params = Vec::new();
        while p.left() > 0 {
            let ty = p
                .u8()
                .ok_or_else(|| bad(0, vec![], "truncated parameter"))?;
            let len = usize::from(
                p.u8()
                    .ok_or_else(|| bad(0, vec![], "truncated parameter"))?,
            );
            let v = p
                .take(len)
                .ok_or_else(|| bad(0, vec![], "parameter overruns"))?;
            if ty != 2 {
                // RFC 4271 §6.2: unsupported optional parameter.
                return Err(bad(4, vec![], "unsupported optional parameter"));
            }
            params.push(decode_caps(v).ok_or_else(|| bad(0, vec![], "malformed capability"))?);
        }
        Ok(Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            params,
        })
    }

    /// Encode the body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(4);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut p = Vec::new();
        for group in &self.params {
            let mut v = Vec::new();
            for c in group {
                encode_cap(&mut v, c);
            }
            p.push(2);
            p.push(v.len() as u8);
            p.extend_from_slice(&v);
        }
        out.push(p.len() as u8);
        out.extend_from_slice(&p);
    }
}

fn decode_caps(v: &[u8]) -> Option<Vec<Capability>> {
    let mut r = Reader::new(v);
    let mut out = Vec::new();
    while r.left() > 0 {
        let code = r.u8()?;
        let len = usize::from(r.u8()?);
        let d = r.take(len)?;
        let afi = |i: usize| Afi(u16::from_be_bytes([d[i], d[i + 1]]));
        out.push(match (code, len) {
            (1, 4) => Capability::Multiprotocol(afi(0), Safi(d[3])),
            (2, 0) => Capability::RouteRefresh,
            (5, l) if l % 6 == 0 => Capability::ExtendedNexthop(
                (0..l / 6)
                    .map(|i| (afi(6 * i), Safi(d[6 * i + 3]), afi(6 * i + 4)))
                    .collect(),
            ),
            (64, l) if l >= 2 && (l - 2) % 4 == 0 => Capability::GracefulRestart {
                flags: d[0] & 0xf0,
                time: u16::from_be_bytes([d[0] & 0x0f, d[1]]),
                families: (0..(l - 2) / 4)
                    .map(|i| (afi(2 + 4 * i), Safi(d[4 + 4 * i]), d[5 + 4 * i]))
                    .collect(),
            },
            (65, 4) => Capability::FourOctetAs(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
            (69, l) if l % 4 == 0 => Capability::AddPath(
                (0..l / 4)
                    .map(|i| (afi(4 * i), Safi(d[4 * i + 2]), d[4 * i + 3]))
                    .collect(),
            ),
            (70, 0) => Capability::EnhancedRouteRefresh,
            _ => Capability::Unknown(code, d.to_vec()),
        });
    }
    Some(out)
}

fn encode_cap(out: &mut Vec<u8>, c: &Capability) {
    let mut v = Vec::new();
    let code = match c {
        Capability::Multiprotocol(a, s) => {
            v.extend_from_slice(&a.0.to_be_bytes());
            v.extend_from_slice(&[0, s.0]);
            1
        }
        Capability::RouteRefresh => 2,
        Capability::ExtendedNexthop(l) => {
            for (a, s, n) in l {
                v.extend_from_slice(&a.0.to_be_bytes());
                v.extend_from_slice(&[0, s.0]);
                v.extend_from_slice(&n.0.to_be_bytes());
            }
            5
        }
        Capability::GracefulRestart {
            flags,
            time,
            families,
        } => {
            v.extend_from_slice(&[(flags & 0xf0) | ((time >> 8) as u8 & 0x0f), *time as u8]);
            for (a, s, f) in families {
                v.extend_from_slice(&a.0.to_be_bytes());
                v.extend_from_slice(&[s.0, *f]);
            }
            64
        }
        Capability::FourOctetAs(a) => {
            v.extend_from_slice(&a.to_be_bytes());
            65
        }
        Capability::AddPath(l) => {
            for (a, s, m) in l {
                v.extend_from_slice(&a.0.to_be_bytes());
                v.extend_from_slice(&[s.0, *m]);
            }
            69
        }
        Capability::EnhancedRouteRefresh => 70,
        Capability::Unknown(code, d) => {
            v.extend_from_slice(d);
            *code
        }
    };
    out.push(code);
    out.push(v.len() as u8);
    out.extend_from_slice(&v);
}
