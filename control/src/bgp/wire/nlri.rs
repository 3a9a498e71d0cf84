//! Address families and NLRI: IPv4/IPv6 unicast prefixes (RFC 4271,
//! RFC 4760), labeled VPN-IPv4/VPN-IPv6 (RFC 4364 §4.3.4, RFC 4659, label
//! encoding per RFC 8277 §2: one label), route-target membership (RFC 4684)
//! and ADD-PATH path identifiers (RFC 7911).

use super::Reader;
use dataplane::wire::mpls::Label;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    /// IPv4.
    pub const IPV4: Afi = Afi(1);
    /// IPv6.
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent address family identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    /// Unicast.
    pub const UNICAST: Safi = Safi(1);
    /// MPLS-labeled VPN (RFC 4364).
    pub const MPLS_VPN: Safi = Safi(128);
    /// Route-target constraint (RFC 4684).
    pub const RT_CONSTRAINT: Safi = Safi(132);
}

/// An IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// Address with host bits clear.
    pub addr: IpAddr,
    /// Length in bits.
    pub len: u8,
}

impl Prefix {
    /// A prefix, if `len` fits the family (host bits are cleared).
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let (max, addr) = match addr {
            IpAddr::V4(a) => {
                let m = if len == 0 {
                    0
                } else {
                    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
                };
                (32, IpAddr::V4(Ipv4Addr::from(u32::from(a) & m)))
            }
            IpAddr::V6(a) => {
                let m = if len == 0 {
                    0
                } else {
                    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
                };
                (128, IpAddr::V6(Ipv6Addr::from(u128::from(a) & m)))
            }
        };
        (len <= max).then_some(Prefix { addr, len })
    }

    fn octets(&self) -> Vec<u8> {
        let n = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => a.octets()[..n].to_vec(),
            IpAddr::V6(a) => a.octets()[..n].to_vec(),
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A route distinguisher (RFC 4364 §4.2): type 0 (2-octet AS : 4-octet
/// number), 1 (IPv4 : 2-octet number), 2 (4-octet AS : 2-octet number).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteDistinguisher(pub [u8; 8]);

impl RouteDistinguisher {
    /// Type 0: `asn:number`.
    pub fn as2(asn: u16, number: u32) -> Self {
        let mut b = [0u8; 8];
        b[2..4].copy_from_slice(&asn.to_be_bytes());
        b[4..8].copy_from_slice(&number.to_be_bytes());
        RouteDistinguisher(b)
    }
    /// Type 1: `ip:number`.
    pub fn ip(ip: Ipv4Addr, number: u16) -> Self {
        let mut b = [0u8; 8];
        b[1] = 1;
        b[2..6].copy_from_slice(&ip.octets());
        b[6..8].copy_from_slice(&number.to_be_bytes());
        RouteDistinguisher(b)
    }
    /// Type 2: `asn4:number`.
    pub fn as4(asn: u32, number: u16) -> Self {
        let mut b = [0u8; 8];
        b[1] = 2;
        b[2..6].copy_from_slice(&asn.to_be_bytes());
        b[6..8].copy_from_slice(&number.to_be_bytes());
        RouteDistinguisher(b)
    }
    /// The type field.
    pub fn kind(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }
}

impl std::fmt::Display for RouteDistinguisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        match self.kind() {
            0 => write!(
                f,
                "{}:{}",
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            ),
            1 => write!(
                f,
                "{}:{}",
                Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            2 => write!(
                f,
                "{}:{}",
                u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            t => write!(f, "type{t}:{:02x?}", &b[2..]),
        }
    }
}

/// A labeled VPN prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VpnPrefix {
    /// ADD-PATH path identifier, when negotiated.
    pub path_id: Option<u32>,
    /// The label (in withdrawals, whatever the sender put there).
    pub label: Label,
    /// The route distinguisher.
    pub rd: RouteDistinguisher,
    /// The prefix.
    pub prefix: Prefix,
}

/// An NLRI entry of any supported family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nlri {
    /// IPv4 or IPv6 unicast, with an optional path identifier.
    Unicast(Option<u32>, Prefix),
    /// VPN-IPv4 or VPN-IPv6.
    Vpn(VpnPrefix),
    /// Route-target membership (RFC 4684): prefix length in bits (0–96),
    /// origin AS and route target, zero-padded.
    RtConstraint {
        /// Prefix length in bits over origin AS and route target.
        len: u8,
        /// Origin AS.
        origin_as: u32,
        /// Route target (extended community), zero past `len`.
        rt: [u8; 8],
    },
}

/// Why NLRI could not be read (the caller maps it to RFC 7606 handling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlriError;

fn addr_from(afi: Afi, bytes: &[u8]) -> Option<IpAddr> {
    match afi {
        Afi::IPV4 => {
            let mut a = [0u8; 4];
            a.get_mut(..bytes.len())?.copy_from_slice(bytes);
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        Afi::IPV6 => {
            let mut a = [0u8; 16];
            a.get_mut(..bytes.len())?.copy_from_slice(bytes);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn max_bits(afi: Afi) -> u32 {
    if afi == Afi::IPV6 {
        128
    } else {
        32
    }
}

/// Decode a run of NLRI of one family.
///
/// # Errors
/// [`NlriError`] if an entry overruns the buffer or has an impossible length.
pub fn decode(buf: &[u8], afi: Afi, safi: Safi, add_path: bool) -> Result<Vec<Nlri>, NlriError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while r.left() > 0 {
        let path_id = if add_path {
            Some(r.u32().ok_or(NlriError)?)
        } else {
            None
        };
        let bits = u32::from(r.u8().ok_or(NlriError)?);
        match safi {
            Safi::UNICAST => {
                if bits > max_bits(afi) {
                    return Err(NlriError);
                }
                let bytes = r.take(bits.div_ceil(8) as usize).ok_or(NlriError)?;
                let p = Prefix::new(addr_from(afi, bytes).ok_or(NlriError)?, bits as u8)
                    .ok_or(NlriError)?;
                out.push(Nlri::Unicast(path_id, p));
            }
            Safi::MPLS_VPN => {
                // 24 bits of label, 64 of RD, then the prefix.
                let plen = bits.checked_sub(88).ok_or(NlriError)?;
                if plen > max_bits(afi) {
                    return Err(NlriError);
                }
                let l = r.take(3).ok_or(NlriError)?;
                let label = Label::new(
                    (u32::from(l[0]) << 12) | (u32::from(l[1]) << 4) | (u32::from(l[2]) >> 4),
                )
                .ok_or(NlriError)?;
                let mut rd = [0u8; 8];
                rd.copy_from_slice(r.take(8).ok_or(NlriError)?);
                let bytes = r.take(plen.div_ceil(8) as usize).ok_or(NlriError)?;
                let prefix = Prefix::new(addr_from(afi, bytes).ok_or(NlriError)?, plen as u8)
                    .ok_or(NlriError)?;
                out.push(Nlri::Vpn(VpnPrefix {
                    path_id,
                    label,
                    rd: RouteDistinguisher(rd),
                    prefix,
                }));
            }
            Safi::RT_CONSTRAINT => {
                if bits > 96 || (bits > 0 && bits < 32) {
                    return Err(NlriError);
                }
                let bytes = r.take(bits.div_ceil(8) as usize).ok_or(NlriError)?;
                let mut full = [0u8; 12];
                full[..bytes.len()].copy_from_slice(bytes);
                let mut rt = [0u8; 8];
                rt.copy_from_slice(&full[4..]);
                out.push(Nlri::RtConstraint {
                    len: bits as u8,
                    origin_as: u32::from_be_bytes([full[0], full[1], full[2], full[3]]),
                    rt,
                });
            }
            _ => return Err(NlriError),
        }
    }
    Ok(out)
}

/// Encode NLRI entries (the family is implied by each entry).
pub fn encode(out: &mut Vec<u8>, nlri: &[Nlri]) {
    for n in nlri {
        match n {
            Nlri::Unicast(id, p) => {
                if let Some(id) = id {
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.push(p.len);
                out.extend_from_slice(&p.octets());
            }
            Nlri::Vpn(v) => {
                if let Some(id) = v.path_id {
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.push(88 + v.prefix.len);
                let l = v.label.value();
                out.extend_from_slice(&[(l >> 12) as u8, (l >> 4) as u8, ((l << 4) as u8) | 1]);
                out.extend_from_slice(&v.rd.0);
                out.extend_from_slice(&v.prefix.octets());
            }
            Nlri::RtConstraint { len, origin_as, rt } => {
                out.push(*len);
                let mut full = [0u8; 12];
                full[..4].copy_from_slice(&origin_as.to_be_bytes());
                full[4..].copy_from_slice(rt);
                out.extend_from_slice(&full[..usize::from(*len).div_ceil(8)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpnv4_nlri_decodes_label_rd_and_prefix() {
        // RFC 4364 §4.3.4 layout, built by hand: length 112 bits (24 label +
        // 64 RD + 24 prefix), label 16000 with bottom-of-stack, RD 65000:100,
        // prefix 10.1.2.0/24.
        let b = [
            112, 0x03, 0xe8, 0x01, 0, 0, 0xfd, 0xe8, 0, 0, 0, 100, 10, 1, 2,
        ];
        let n = decode(&b, Afi::IPV4, Safi::MPLS_VPN, false).expect("valid");
        let want = Nlri::Vpn(VpnPrefix {
            path_id: None,
            label: Label::new(16000).expect("label"),
            rd: RouteDistinguisher::as2(65000, 100),
            prefix: Prefix::new("10.1.2.0".parse().expect("ip"), 24).expect("prefix"),
        });
        assert_eq!(n, vec![want]);
        let mut out = Vec::new();
        encode(&mut out, &n);
        assert_eq!(out, b);
        assert_eq!(RouteDistinguisher::as2(65000, 100).to_string(), "65000:100");
    }

    #[test]
    fn overrunning_or_impossible_lengths_are_errors() {
        assert!(decode(&[25, 10, 1, 2], Afi::IPV4, Safi::UNICAST, false).is_err());
        assert!(decode(&[33, 10, 1, 2, 3, 4], Afi::IPV4, Safi::UNICAST, false).is_err());
        assert!(decode(&[80, 0, 0, 0], Afi::IPV4, Safi::MPLS_VPN, false).is_err());
        assert!(decode(&[0, 0, 0], Afi::IPV4, Safi::UNICAST, true).is_err());
    }
}
