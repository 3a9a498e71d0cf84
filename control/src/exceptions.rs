//! Answers to the packets the workers hand to the control thread: ARP and
//! neighbour solicitations for a port's gateway, echo requests to the
//! gateway, and ICMP time-exceeded for packets whose TTL ran out (the
//! pipeline already rate-limits exceptions).

use crate::daemon::{PortInfo, StartError};
use dataplane::fib::PortId;
use dataplane::io::afpacket::AfPacketPort;
use dataplane::pipeline::{Exception, Reason};
use dataplane::wire::ethernet::{self, ethertype, Frame};
use dataplane::wire::ipv4::{self, protocol};
use dataplane::wire::{arp, checksum, ipv6, MacAddr};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Builds and sends the answers.
pub struct Responder {
    info: HashMap<PortId, PortInfo>,
    tx: HashMap<PortId, AfPacketPort>,
    /// Answers sent.
    pub sent: u64,
}

/// The answer frame to an exception, if it calls for one (pure; no I/O).
pub fn answer(
    e: &Exception,
    router_mac: MacAddr,
    gw4: Option<Ipv4Addr>,
    gw6: Option<Ipv6Addr>,
) -> Option<Vec<u8>> {
    let f = e.bytes();
    let eth = ethernet::Repr::parse(&Frame::new_checked(f).ok()?).ok()?;
    let payload = &f[eth.header_len()..];
    let reply_eth = |et: u16| ethernet::Repr {
        dst: eth.src,
        src: router_mac,
        vlan: eth.vlan,
        ethertype: et,
    };
    match e.reason {
        Reason::ArpGateway => {
            let req = arp::Repr::parse(payload).ok()?;
            if Some(req.target_ip) != gw4 || req.operation != arp::Operation::Request {
                return None;
            }
            let le = reply_eth(ethertype::ARP);
            let mut out = vec![0u8; le.header_len() + arp::PACKET_LEN];
            le.emit(&mut out);
            arp::Repr {
                operation: arp::Operation::Reply,
                sender_mac: router_mac,
                sender_ip: req.target_ip,
                target_mac: req.sender_mac,
                target_ip: req.sender_ip,
            }
            .emit(&mut out[le.header_len()..]);
            Some(out)
        }
        Reason::LocalDelivery => {
            let ip = ipv4::Packet::new_checked(payload).ok()?;
            let icmp = ip.payload();
            if Some(ip.dst()) != gw4 || ip.protocol() != protocol::ICMP || icmp.first() != Some(&8)
            {
                return None;
            }
            let mut body = icmp.to_vec();
            body[0] = 0;
            body[2..4].fill(0);
            let c = checksum::checksum(&body);
            body[2..4].copy_from_slice(&c.to_be_bytes());
            Some(ipv4_frame(
                reply_eth(ethertype::IPV4),
                ip.dst(),
                ip.src(),
                protocol::ICMP,
                &body,
            ))
        }
        Reason::TtlExpired => {
            let gw = gw4?;
            let ip = ipv4::Packet::new_checked(payload).ok()?;
            // RFC 792: the original header and the first 8 bytes of its data.
            let quote = &payload[..(ip.header_len() + 8).min(usize::from(ip.total_len()))];
            let mut body = vec![11u8, 0, 0, 0, 0, 0, 0, 0];
            body.extend_from_slice(quote);
            let c = checksum::checksum(&body);
            body[2..4].copy_from_slice(&c.to_be_bytes());
            Some(ipv4_frame(
                reply_eth(ethertype::IPV4),
                gw,
                ip.src(),
                protocol::ICMP,
                &body,
            ))
        }
        Reason::NeighborDiscovery => {
            let gw = gw6?;
            let ip = ipv6::Packet::new_checked(payload).ok()?;
            let icmp = ip.payload();
            // Neighbour solicitation (type 135) for the gateway (RFC 4861 §4.3).
            if icmp.len() < 24 || icmp[0] != 135 || icmp[8..24] != gw.octets() {
                return None;
            }
            let mut body = vec![136u8, 0, 0, 0, 0x60, 0, 0, 0];
            body.extend_from_slice(&gw.octets());
            body.extend_from_slice(&[2, 1]);
            body.extend_from_slice(&router_mac.0);
            let dst = if ip.src().is_unspecified() {
                "ff02::1".parse().ok()?
            } else {
                ip.src()
            };
            let sum = icmpv6_checksum(gw, dst, &body);
            body[2..4].copy_from_slice(&sum.to_be_bytes());
            let le = reply_eth(ethertype::IPV6);
            let mut out = vec![0u8; le.header_len() + ipv6::HEADER_LEN + body.len()];
            le.emit(&mut out);
            ipv6::Repr {
                src: gw,
                dst,
                next_header: protocol::ICMPV6,
                payload_len: body.len() as u16,
                hop_limit: 255,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut out[le.header_len()..]);
            let at = le.header_len() + ipv6::HEADER_LEN;
            out[at..].copy_from_slice(&body);
            Some(out)
        }
        _ => None,
    }
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + body.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, protocol::ICMPV6]);
    pseudo.extend_from_slice(body);
    checksum::checksum(&pseudo)
}

fn ipv4_frame(
    eth: ethernet::Repr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    body: &[u8],
) -> Vec<u8> {
    let hl = eth.header_len();
    let mut out = vec![0u8; hl + ipv4::HEADER_LEN + body.len()];
    eth.emit(&mut out);
    ipv4::Repr {
        src,
        dst,
        protocol: proto,
        payload_len: body.len() as u16,
        ttl: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: false,
    }
    .emit(&mut out[hl..]);
    out[hl + ipv4::HEADER_LEN..].copy_from_slice(body);
    out
}

/// An ARP request for `target` from `(mac, ip)`, broadcast.
pub fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let eth = ethernet::Repr {
        dst: MacAddr::BROADCAST,
        src: mac,
        vlan: None,
        ethertype: ethertype::ARP,
    };
    let mut out = vec![0u8; ethernet::HEADER_LEN + arp::PACKET_LEN];
    eth.emit(&mut out);
    arp::Repr {
        operation: arp::Operation::Request,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: MacAddr::ZERO,
        target_ip: target,
    }
    .emit(&mut out[ethernet::HEADER_LEN..]);
    out
}

/// The ARP packet an uplink exception carries, if it is one.
pub fn uplink_arp(e: &Exception) -> Option<(ethernet::Repr, arp::Repr)> {
    let f = e.bytes();
    let eth = ethernet::Repr::parse(&Frame::new_checked(f).ok()?).ok()?;
    let a = arp::Repr::parse(&f[eth.header_len()..]).ok()?;
    Some((eth, a))
}

/// The ARP reply to a request for our address `ip` at `mac`.
pub fn arp_reply(req: &arp::Repr, eth: &ethernet::Repr, mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let le = ethernet::Repr {
        dst: req.sender_mac,
        src: mac,
        vlan: eth.vlan,
        ethertype: ethertype::ARP,
    };
    let mut out = vec![0u8; le.header_len() + arp::PACKET_LEN];
    le.emit(&mut out);
    arp::Repr {
        operation: arp::Operation::Reply,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: req.sender_mac,
        target_ip: req.sender_ip,
    }
    .emit(&mut out[le.header_len()..]);
    out
}

impl Responder {
    /// Send a frame on a port; true if the kernel took it.
    pub fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        let ok = self
            .tx
            .get_mut(&port)
            .is_some_and(|tx| tx.tx_burst(&[frame]) == 1);
        if ok {
            self.sent += 1;
        }
        ok
    }

    /// Open a transmit socket on every port's interface.
    ///
    /// # Errors
    /// [`StartError`] if an interface cannot be opened.
    pub fn new(info: &HashMap<PortId, PortInfo>) -> Result<Responder, StartError> {
        let mut tx = HashMap::new();
        for (id, p) in info {
            tx.insert(*id, AfPacketPort::open_tx_only(&p.interface)?);
        }
        Ok(Responder {
            info: info.clone(),
            tx,
            sent: 0,
        })
    }

    /// Answer one exception if it calls for an answer.
    pub fn handle(&mut self, e: &Exception) {
        let Some(p) = self.info.get(&e.port) else {
            return;
        };
        let Some((mac, gw4, gw6)) = p.access.get(&e.vlan).copied() else {
            return;
        };
        if let Some(frame) = answer(e, mac, gw4, gw6) {
            if let Some(tx) = self.tx.get_mut(&e.port) {
                if tx.tx_burst(&[&frame]) == 1 {
                    self.sent += 1;
                }
            }
        }
    }
}
