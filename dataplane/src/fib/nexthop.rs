//! Nexthops and their precomputed rewrites.
//!
//! As in VPP's adjacencies, a remote nexthop holds the exact bytes to
//! prepend to an IP packet: Ethernet, the outer IPv4 and GRE or UDP header for
//! a tunnel, and the label stack. Per packet the pipeline only fills what
//! depends on the packet: label TTLs, the outer total length and checksum (from
//! a precomputed partial sum), the UDP length and the UDP source port (the
//! flow hash, RFC 7510 §3).

use super::{NexthopId, PortId};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::ipv4::{self, protocol};
use crate::wire::mpls::{self, Label};
use crate::wire::{gre, udp, MacAddr};
use arrayvec::ArrayVec;
use std::net::Ipv4Addr;

/// Maximum ECMP group size.
pub const MAX_ECMP: usize = 16;
/// Maximum bytes a rewrite prepends.
pub const MAX_REWRITE: usize = 64;

/// What a route resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nexthop {
    /// A local port: rewrite the Ethernet header, decrement TTL.
    Local {
        /// Output port.
        port: PortId,
        /// The Ethernet header to write.
        l2: L2Rewrite,
    },
    /// A remote PE: push the VPN label and encapsulate.
    Remote(RemoteNexthop),
    /// Equal-cost members; the flow hash picks one.
    Ecmp(ArrayVec<NexthopId, MAX_ECMP>),
    /// Discard (counted).
    Drop,
    /// A remote next hop whose MAC is still being resolved: discard, counted
    /// apart so that operators see the cause.
    Unresolved,
    /// Hand to the control thread.
    Punt,
}

/// An Ethernet header to write on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Rewrite {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// 802.1Q VLAN, if tagged.
    pub vlan: Option<u16>,
}

/// How a labeled packet reaches a remote PE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// MPLS over Ethernet, optionally under a transport label.
    Ethernet {
        /// Transport label to the remote PE (none with penultimate-hop popping).
        transport: Option<Label>,
    },
    /// MPLS-over-GRE (RFC 4023) from `src` to `dst`.
    Gre {
        /// Our tunnel address.
        src: Ipv4Addr,
        /// The remote PE.
        dst: Ipv4Addr,
    },
    /// MPLS-over-UDP (RFC 7510) from `src` to `dst`.
    Udp {
        /// Our tunnel address.
        src: Ipv4Addr,
        /// The remote PE.
        dst: Ipv4Addr,
    },
}

/// A remote nexthop with its precomputed rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNexthop {
    /// Output (uplink) port.
    pub port: PortId,
    /// The VPN label.
    pub label: Label,
    /// The encapsulation.
    pub encap: Encap,
    /// The Ethernet header towards the first hop.
    pub l2: L2Rewrite,
    /// Bytes and offsets to apply per packet.
    pub rewrite: Rewrite,
}

/// Precomputed bytes to prepend and the offsets the pipeline fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The bytes (only `len` are used).
    pub bytes: [u8; MAX_REWRITE],
    /// Number of bytes to prepend.
    pub len: u8,
    /// Offset of the first label stack entry.
    pub labels_at: u8,
    /// Number of labels.
    pub labels: u8,
    /// Offset of the outer IPv4 header, for tunnels.
    pub outer_ip_at: Option<u8>,
    /// Offset of the UDP header, for MPLS-over-UDP.
    pub udp_at: Option<u8>,
    /// One's-complement sum of the outer IPv4 header with zero length and checksum.
    pub outer_ip_sum: u32,
}

impl RemoteNexthop {
    /// Build a remote nexthop and precompute its rewrite.
    pub fn new(port: PortId, label: Label, encap: Encap, l2: L2Rewrite) -> RemoteNexthop {
        let mut bytes = [0u8; MAX_REWRITE];
        let eth_type = match encap {
            Encap::Ethernet { .. } => ethertype::MPLS,
            Encap::Gre { .. } | Encap::Udp { .. } => ethertype::IPV4,
        };
        let eth = ethernet::Repr {
            dst: l2.dst,
            src: l2.src,
            vlan: l2.vlan,
            ethertype: eth_type,
        };
        eth.emit(&mut bytes);
        let mut at = eth.header_len();
        let mut outer_ip_at = None;
        let mut udp_at = None;
        let mut outer_ip_sum = 0;
        let mut stack: ArrayVec<Label, 2> = ArrayVec::new();
        match encap {
            Encap::Ethernet { transport } => {
                if let Some(t) = transport {
                    stack.push(t);
                }
            }
            Encap::Gre { src, dst } | Encap::Udp { src, dst } => {
                let is_udp = matches!(encap, Encap::Udp { .. });
                let ip = ipv4::Repr {
                    src,
                    dst,
                    protocol: if is_udp { protocol::UDP } else { protocol::GRE },
                    payload_len: 0,
                    ttl: 64,
                    dscp_ecn: 0,
                    ident: 0,
                    dont_frag: true,
                };
                ip.emit(&mut bytes[at..]);
                // Zero the length and checksum to keep the partial sum.
                bytes[at + 2..at + 4].fill(0);
                bytes[at + 10..at + 12].fill(0);
                outer_ip_sum = u32::from(crate::wire::checksum::sum(
                    &bytes[at..at + ipv4::HEADER_LEN],
                ));
                outer_ip_at = Some(at as u8);
                at += ipv4::HEADER_LEN;
                if is_udp {
                    udp::Repr {
                        src_port: 0,
                        dst_port: udp::PORT_MPLS,
                        payload_len: 0,
                    }
                    .emit(&mut bytes[at..]);
                    udp_at = Some(at as u8);
                    at += udp::HEADER_LEN;
                } else {
                    gre::Repr {
                        protocol: ethertype::MPLS,
                        key: None,
                    }
                    .emit(&mut bytes[at..]);
                    at += gre::HEADER_LEN;
                }
            }
        }
        stack.push(label);
        let labels_at = at;
        for (i, l) in stack.iter().enumerate() {
            mpls::Entry {
                label: *l,
                tc: 0,
                bos: i + 1 == stack.len(),
                ttl: 0,
            }
            .emit(&mut bytes[at..]);
            at += mpls::ENTRY_LEN;
        }
        RemoteNexthop {
            port,
            label,
            encap,
            l2,
            rewrite: Rewrite {
                bytes,
                len: at as u8,
                labels_at: labels_at as u8,
                labels: stack.len() as u8,
                outer_ip_at,
                udp_at,
                outer_ip_sum,
            },
        }
    }
}
