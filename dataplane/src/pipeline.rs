//! The burst pipeline: classify → lookup → rewrite → per-output batches.
//!
//! Access → core (push): the (port, VLAN) selects the VRF; the source MAC and
//! address must belong to the port; LPM in the VRF gives a nexthop; TTL is
//! decremented (IPv4 checksum updated incrementally, RFC 1624) and the
//! nexthop's precomputed rewrite prepended, the MPLS TTL copied from the IP
//! TTL (uniform model, RFC 3443 §3.1).
//!
//! Core → access (pop): MPLS over Ethernet, MPLS-over-GRE (RFC 4023) or
//! MPLS-over-UDP (RFC 7510) to our tunnel address; explicit-null labels are
//! popped, the VPN label indexes the label table (per-VRF lookup or direct
//! nexthop), the IP TTL becomes min(IP TTL, MPLS TTL) − 1.
//!
//! Exceptions (ARP/ND for the gateway, TTL expiry, unknown label, no route,
//! packets for the router itself) are copied to a bounded lock-free queue,
//! rate limited by a token bucket; a full queue drops and counts.
//!
//! No allocation, lock or log per packet; no panic reachable from packet
//! bytes (every header is read through a checked view).

use crate::fib::{
    FibView, LabelAction, Nexthop, PortId, PortRole, RemoteNexthop, VrfFib, VrfId, NO_ROUTE,
};
use crate::io::PacketBuf;
use crate::wire::ethernet::{self, ethertype, Frame};
use crate::wire::ipv4::{self, protocol};
use crate::wire::{arp, checksum, gre, ipv6, mpls, udp, MacAddr, WireError};
use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest burst.
pub const MAX_BURST: usize = 64;
/// Deepest label stack accepted on the pop path.
pub const MAX_LABELS: usize = 4;
/// Bytes of a packet kept in an exception.
pub const EXCEPTION_BYTES: usize = 256;

macro_rules! reasons {
    ($($(#[$m:meta])* $name:ident = $text:literal,)*) => {
        /// Why a packet was not forwarded (dropped or handed to the control thread).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Reason { $($(#[$m])* $name,)* }
        impl Reason {
            /// Every reason, in counter order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];
            /// Number of reasons.
            pub const COUNT: usize = Reason::ALL.len();
            /// The counter's name.
            pub fn name(self) -> &'static str {
                match self { $(Reason::$name => $text,)* }
            }
        }
    };
}

reasons! {
    /// Frame shorter than its headers.
    Truncated = "truncated",
    /// Two stacked VLAN tags (802.1ad) or VLAN 4095.
    VlanInVlan = "vlan_in_vlan",
    /// No port configuration for this (port, VLAN).
    UnknownPort = "unknown_port",
    /// Destination MAC is not the router's.
    NotForUs = "not_for_us",
    /// Source MAC or address not allowed on the port.
    Spoofed = "spoofed_source",
    /// Ethertype the port does not handle.
    UnsupportedEthertype = "unsupported_ethertype",
    /// IPv4 header invalid (version, IHL, lengths).
    Ipv4Header = "ipv4_header",
    /// IPv4 header checksum wrong.
    Ipv4Checksum = "ipv4_checksum",
    /// IPv4 options present (not forwarded on the fast path).
    Ipv4Options = "ipv4_options",
    /// IPv6 header invalid.
    Ipv6Header = "ipv6_header",
    /// ARP not for the gateway, or malformed.
    Arp = "arp_not_for_gateway",
    /// MPLS label stack deeper than [`MAX_LABELS`] or not ending where expected.
    LabelStack = "label_stack",
    /// Bad GRE header or payload type.
    Gre = "gre",
    /// Bad UDP header on the MPLS-over-UDP port.
    Udp = "udp",
    /// Fragmented tunnel packet.
    Fragment = "fragment",
    /// VRF missing (being deleted).
    NoVrf = "no_vrf",
    /// Route points at a missing nexthop.
    NoNexthop = "no_nexthop",
    /// Nexthop says drop.
    NexthopDrop = "nexthop_drop",
    /// The remote next hop's MAC is not resolved yet (ARP in progress).
    Unresolved = "nexthop_unresolved",
    /// Not enough headroom for the rewrite.
    NoHeadroom = "no_headroom",
    /// Exception refused by the rate limiter.
    ExceptionRateLimited = "exception_rate_limited",
    /// Exception queue full.
    ExceptionQueueFull = "exception_queue_full",
    /// Exception: ARP request for the gateway.
    ArpGateway = "exc_arp_gateway",
    /// Exception: ARP on the uplink (replies resolve nexthops).
    ArpUplink = "exc_arp_uplink",
    /// Exception: IPv6 neighbour discovery.
    NeighborDiscovery = "exc_neighbor_discovery",
    /// Exception: TTL or hop limit expired (ICMP time exceeded).
    TtlExpired = "exc_ttl_expired",
    /// Exception: label not in the label table.
    UnknownLabel = "exc_unknown_label",
    /// Exception: no route in the VRF (ICMP unreachable).
    NoRoute = "exc_no_route",
    /// Exception: addressed to the router itself.
    LocalDelivery = "exc_local_delivery",
}

impl Reason {
    /// True for reasons that hand the packet to the control thread.
    pub fn is_exception(self) -> bool {
        (self as u8) >= (Reason::ArpGateway as u8)
    }
}

/// What happens to one packet of a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit on a port.
    Tx(PortId),
    /// Not forwarded (dropped, or copied to the exception queue).
    Stop(Reason),
}

/// A packet for the control thread.
#[derive(Clone)]
pub struct Exception {
    /// Why.
    pub reason: Reason,
    /// Arrival port.
    pub port: PortId,
    /// Arrival VLAN (0 untagged).
    pub vlan: u16,
    /// The VRF, when known.
    pub vrf: Option<VrfId>,
    /// Length of the original frame.
    pub frame_len: u16,
    /// Bytes kept.
    pub len: u16,
    /// The first bytes of the frame as received.
    pub data: [u8; EXCEPTION_BYTES],
}

impl core::fmt::Debug for Exception {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Exception")
            .field("reason", &self.reason)
            .field("port", &self.port)
            .field("len", &self.frame_len)
            .finish()
    }
}

impl Exception {
    /// The kept bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// Per-worker counters, written by one worker and read by the control thread.
pub struct Counters {
    /// Packets received.
    pub rx: CachePadded<AtomicU64>,
    /// Packets the pipeline sent to a port.
    pub tx: AtomicU64,
    /// Of those, packets the port did not take (its transmit ring full).
    pub tx_refused: AtomicU64,
    /// Per-reason counts, indexed by `Reason as usize`.
    pub reasons: [AtomicU64; Reason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx: CachePadded::new(AtomicU64::new(0)),
            tx: AtomicU64::new(0),
            tx_refused: AtomicU64::new(0),
            reasons: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// The count for one reason.
    pub fn get(&self, r: Reason) -> u64 {
        self.reasons[r as usize].load(Ordering::Relaxed)
    }
}

/// Exception rate limit: tokens per second and bucket depth.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Sustained exceptions per second.
    pub per_sec: u64,
    /// Burst allowance.
    pub burst: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_sec: 10_000,
            burst: 512,
        }
    }
}

/// One worker's pipeline state.
pub struct Pipeline {
    counters: Arc<CachePadded<Counters>>,
    local: [u64; Reason::COUNT],
    local_rx: u64,
    local_tx: u64,
    exceptions: Arc<ArrayQueue<Exception>>,
    limit: RateLimit,
    tokens: u64,
    last_ns: u64,
}

impl core::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pipeline")
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// Outputs of one burst grouped by port: (port, indices into the burst).
pub type OutBatches = ArrayVec<(PortId, ArrayVec<u8, MAX_BURST>), 8>;

#[inline]
fn flow_hash(src: u64, dst: u64, ports: u32, proto: u8) -> u32 {
    let mut h = src.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ dst.rotate_left(29)
        ^ (u64::from(ports) << 8 | u64::from(proto));
    h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h ^ (h >> 29)) as u32
}

struct Ip {
    off: usize,
    v6: bool,
}

impl Pipeline {
    /// A pipeline reporting into `counters` and `exceptions`.
    pub fn new(
        counters: Arc<CachePadded<Counters>>,
        exceptions: Arc<ArrayQueue<Exception>>,
        limit: RateLimit,
    ) -> Pipeline {
        Pipeline {
            counters,
            local: [0; Reason::COUNT],
            local_rx: 0,
            local_tx: 0,
            exceptions,
            limit,
            tokens: limit.burst,
            last_ns: 0,
        }
    }

    /// Process a burst that arrived on `port`. `now_ns` is a monotonic clock
    /// reading for the exception rate limiter. Fills `verdicts[i]` for each
    /// packet and groups transmitted packets by output port in `out`.
    pub fn process(
        &mut self,
        fib: &FibView<'_>,
        port: PortId,
        pkts: &mut [PacketBuf],
        verdicts: &mut [Verdict],
        out: &mut OutBatches,
        now_ns: u64,
    ) {
        let n = pkts.len().min(verdicts.len()).min(MAX_BURST);
        self.refill(now_ns);
        out.clear();
        // Stage 1: parse, classify, check; what remains is an LPM or a
        // nexthop. The LPMs' first two reads ride along, so that their
        // cache misses overlap the parsing of the packets after: each IPv4
        // lookup asks for its segment slot (or flat word) as its packet is
        // classified, and reads it, asking for the chunk (or list) it
        // names, [`LPM_LAG`] packets later. By the end of the stage every
        // packet's chunk is on its way, and the third pass finds most of
        // them cached. (Three passes of their own over the burst left too
        // little time between a read and the one that needs it: the list's
        // line was still missing at the third pass.)
        let mut steps = [Step::stop(Reason::Truncated); MAX_BURST];
        // The slot words read in the second step, finished in the third
        // (a sparse /8's list is searched once).
        let mut words = [crate::fib::SlotWord::default(); MAX_BURST];
        let mut recent = Recent::default();
        for i in 0..n {
            steps[i] = self.one(fib, &mut recent, port, &mut pkts[i]);
            if let Some(vrf) = steps[i].lookup4() {
                vrf.prefetch_slot_v4(steps[i].arg());
            }
            if let Some(j) = i.checked_sub(LPM_LAG) {
                slot_step(&steps[j], &mut words[j]);
            }
        }
        for j in n.saturating_sub(LPM_LAG)..n {
            slot_step(&steps[j], &mut words[j]);
        }
        for i in 0..n {
            let st = steps[i];
            if let Some(vrf) = st.vrf {
                let (off, v6, ttl) = (st.off(), st.v6(), st.ttl());
                let nh = if v6 {
                    let o = usize::from(off);
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&pkts[i].frame()[o + 24..o + 40]);
                    vrf.lookup_v6(u128::from_be_bytes(a))
                } else {
                    vrf.resolve_v4(st.arg(), words[i])
                };
                steps[i] = if nh == NO_ROUTE {
                    Step::stop(Reason::NoRoute)
                } else {
                    Step::apply(nh, off, v6, ttl - 1)
                };
            }
        }
        for st in steps[..n].iter() {
            if st.is_apply() {
                fib.prefetch_nexthop(st.arg());
            }
        }
        // Stage 3: nexthops, rewrites and per-output batches.
        for i in 0..n {
            let st = steps[i];
            let v = if st.is_apply() {
                apply_nexthop(
                    fib,
                    st.arg(),
                    &mut pkts[i],
                    Ip {
                        off: usize::from(st.off()),
                        v6: st.v6(),
                    },
                    st.ttl(),
                )
            } else {
                // (Every lookup was resolved above.)
                Verdict::Stop(st.reason().unwrap_or(Reason::NoRoute))
            };
            let v = match v {
                Verdict::Stop(r) if r.is_exception() => self.punt(r, port, &pkts[i]),
                v => v,
            };
            verdicts[i] = v;
            match v {
                Verdict::Tx(p) => {
                    self.local_tx += 1;
                    // Most of a burst leaves by the port the packet before
                    // it took: that batch is tried first.
                    let batch = match out.last_mut() {
                        Some(last) if last.0 == p => Some(last),
                        _ => out.iter_mut().find(|(q, _)| *q == p),
                    };
                    match batch {
                        Some((_, idx)) => idx.push(i as u8),
                        None => {
                            if out.is_full() {
                                // More distinct outputs than a burst batch tracks: drop.
                                verdicts[i] = Verdict::Stop(Reason::NoNexthop);
                                self.local[Reason::NoNexthop as usize] += 1;
                                self.local_tx -= 1;
                            } else {
                                let mut idx = ArrayVec::new();
                                idx.push(i as u8);
                                out.push((p, idx));
                            }
                        }
                    }
                }
                Verdict::Stop(r) => self.local[r as usize] += 1,
            }
        }
        self.local_rx += n as u64;
        self.flush_counters();
    }

    fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        let add = dt.saturating_mul(self.limit.per_sec) / 1_000_000_000;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.limit.burst);
            self.last_ns = now_ns;
        }
    }

    fn punt(&mut self, r: Reason, port: PortId, buf: &PacketBuf) -> Verdict {
        if self.tokens == 0 {
            self.local[Reason::ExceptionRateLimited as usize] += 1;
            return Verdict::Stop(r);
        }
        self.tokens -= 1;
        let f = buf.frame();
        let len = f.len().min(EXCEPTION_BYTES);
        let vlan = Frame::new_checked(f)
            .ok()
            .and_then(|e| e.vlan())
            .unwrap_or(0);
        let mut e = Exception {
            reason: r,
            port,
            vlan,
            vrf: None,
            frame_len: f.len() as u16,
            len: len as u16,
            data: [0; EXCEPTION_BYTES],
        };
        e.data[..len].copy_from_slice(&f[..len]);
        if self.exceptions.push(e).is_err() {
            self.local[Reason::ExceptionQueueFull as usize] += 1;
        }
        Verdict::Stop(r)
    }

    /// Count `n` packets a port refused to transmit (the worker's call,
    /// after handing a batch over).
    #[inline]
    pub fn count_tx_refused(&self, n: u64) {
        if n > 0 {
            let c = &self.counters.tx_refused;
            // Single writer per counter set.
            c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        }
    }

    fn flush_counters(&mut self) {
        let c = &self.counters;
        // Single writer per counter set: a relaxed load and store suffices.
        c.rx.store(
            c.rx.load(Ordering::Relaxed) + self.local_rx,
            Ordering::Relaxed,
        );
        c.tx.store(
            c.tx.load(Ordering::Relaxed) + self.local_tx,
            Ordering::Relaxed,
        );
        self.local_rx = 0;
        self.local_tx = 0;
        for (i, v) in self.local.iter_mut().enumerate() {
            if *v != 0 {
                let a = &c.reasons[i];
                a.store(a.load(Ordering::Relaxed) + *v, Ordering::Relaxed);
                *v = 0;
            }
        }
    }

    #[inline]
    fn one<'v>(
        &mut self,
        fib: &'v FibView<'_>,
        recent: &mut Recent<'v>,
        port: PortId,
        buf: &mut PacketBuf,
    ) -> Step<'v> {
        let f = buf.frame();
        let Ok(eth) = Frame::new_checked(f) else {
            return Step::stop(Reason::Truncated);
        };
        let Ok(er) = ethernet::Repr::parse(&eth) else {
            return Step::stop(Reason::VlanInVlan);
        };
        let hl = er.header_len();
        let Some(role) = recent.port(fib, port, er.vlan.unwrap_or(0)) else {
            return Step::stop(Reason::UnknownPort);
        };
        match role {
            PortRole::Access(ap) => {
                if let Some(h) = ap.host_mac {
                    if er.src != h {
                        return Step::stop(Reason::Spoofed);
                    }
                }
                match er.ethertype {
                    ethertype::IPV4 => {
                        if er.dst != ap.router_mac {
                            return Step::stop(Reason::NotForUs);
                        }
                        let ip = match check_v4(&f[hl..]) {
                            Ok(p) => p,
                            Err(r) => return Step::stop(r),
                        };
                        if !ap.allows_v4(ip.src()) {
                            return Step::stop(Reason::Spoofed);
                        }
                        if Some(ip.dst()) == ap.gateway_v4 {
                            return Step::stop(Reason::LocalDelivery);
                        }
                        let ttl = ip.ttl();
                        let Some(vrf) = recent.vrf(fib, ap.vrf) else {
                            return Step::stop(Reason::NoVrf);
                        };
                        lookup_step(vrf, buf, hl, false, ttl)
                    }
                    ethertype::IPV6 => {
                        if er.dst != ap.router_mac && !er.dst.is_multicast() {
                            return Step::stop(Reason::NotForUs);
                        }
                        let ip = match ipv6::Packet::new_checked(&f[hl..]) {
                            Ok(ip) => ip,
                            Err(e) => return Step::stop(v6_reason(e)),
                        };
                        if ip.next_header() == protocol::ICMPV6 {
                            if let Some(&t) = ip.payload().first() {
                                if (133..=137).contains(&t) {
                                    return Step::stop(Reason::NeighborDiscovery);
                                }
                            }
                        }
                        if er.dst != ap.router_mac {
                            return Step::stop(Reason::NotForUs);
                        }
                        if !ap.allows_v6(ip.src()) {
                            return Step::stop(Reason::Spoofed);
                        }
                        if Some(ip.dst()) == ap.gateway_v6 {
                            return Step::stop(Reason::LocalDelivery);
                        }
                        let ttl = ip.hop_limit();
                        let Some(vrf) = recent.vrf(fib, ap.vrf) else {
                            return Step::stop(Reason::NoVrf);
                        };
                        lookup_step(vrf, buf, hl, true, ttl)
                    }
                    ethertype::ARP => match arp::Repr::parse(&f[hl..]) {
                        Ok(a)
                            if Some(a.target_ip) == ap.gateway_v4
                                && a.operation == arp::Operation::Request =>
                        {
                            Step::stop(Reason::ArpGateway)
                        }
                        _ => Step::stop(Reason::Arp),
                    },
                    ethertype::VLAN | ethertype::QINQ => Step::stop(Reason::VlanInVlan),
                    _ => Step::stop(Reason::UnsupportedEthertype),
                }
            }
            PortRole::Uplink(up) => {
                if er.dst != up.router_mac && !er.dst.is_multicast() {
                    return Step::stop(Reason::NotForUs);
                }
                match er.ethertype {
                    ethertype::MPLS if er.dst == up.router_mac => pop(fib, recent, buf, hl),
                    ethertype::IPV4 if er.dst == up.router_mac => {
                        let ip = match check_v4(&f[hl..]) {
                            Ok(p) => p,
                            Err(r) => return Step::stop(r),
                        };
                        if Some(ip.dst()) != up.local_v4 {
                            return Step::stop(Reason::NotForUs);
                        }
                        let ihl = ip.header_len();
                        let frag = ip.flags_frag() & 0x3fff != 0;
                        let tl = usize::from(ip.total_len());
                        match ip.protocol() {
                            protocol::GRE => {
                                if frag {
                                    return Step::stop(Reason::Fragment);
                                }
                                let g = match gre::Packet::new_checked(ip.payload()) {
                                    Ok(g) => g,
                                    Err(WireError::Truncated { .. }) => {
                                        return Step::stop(Reason::Truncated)
                                    }
                                    Err(_) => return Step::stop(Reason::Gre),
                                };
                                if g.protocol() != ethertype::MPLS {
                                    return Step::stop(Reason::Gre);
                                }
                                let off = hl + ihl + g.header_len();
                                buf.truncate(hl + tl);
                                pop(fib, recent, buf, off)
                            }
                            protocol::UDP => {
                                let u = match udp::Packet::new_checked(ip.payload()) {
                                    Ok(u) => u,
                                    Err(WireError::Truncated { .. }) => {
                                        return Step::stop(Reason::Truncated)
                                    }
                                    Err(_) => return Step::stop(Reason::Udp),
                                };
                                if u.dst_port() != udp::PORT_MPLS {
                                    return Step::stop(Reason::LocalDelivery);
                                }
                                if frag {
                                    return Step::stop(Reason::Fragment);
                                }
                                let off = hl + ihl + udp::HEADER_LEN;
                                buf.truncate(hl + ihl + usize::from(u.len()));
                                pop(fib, recent, buf, off)
                            }
                            _ => Step::stop(Reason::LocalDelivery),
                        }
                    }
                    ethertype::ARP => Step::stop(Reason::ArpUplink),
                    ethertype::IPV6 => {
                        // Control traffic and neighbour discovery for the uplink.
                        Step::stop(Reason::LocalDelivery)
                    }
                    ethertype::VLAN | ethertype::QINQ => Step::stop(Reason::VlanInVlan),
                    _ => Step::stop(Reason::UnsupportedEthertype),
                }
            }
        }
    }
}

fn v6_reason(e: WireError) -> Reason {
    match e {
        WireError::Truncated { .. } => Reason::Truncated,
        WireError::BadField { .. } => Reason::Ipv6Header,
    }
}

fn check_v4(b: &[u8]) -> Result<ipv4::Packet<&[u8]>, Reason> {
    let ip = ipv4::Packet::new_checked(b).map_err(|e| match e {
        WireError::Truncated { .. } => Reason::Truncated,
        WireError::BadField { .. } => Reason::Ipv4Header,
    })?;
    if !ip.verify_checksum() {
        return Err(Reason::Ipv4Checksum);
    }
    if ip.header_len() != ipv4::HEADER_LEN {
        return Err(Reason::Ipv4Options);
    }
    Ok(ip)
}

/// Table reads a burst repeats, kept for one call of
/// [`Pipeline::process`] (whose view of the tables does not change): its
/// packets arrive on one port, most on one VLAN, and most carry one VPN
/// label or belong to one VRF. Each hit saves a slot array's chain of
/// dependent reads.
#[derive(Default)]
struct Recent<'v> {
    port: Option<(u16, Option<&'v PortRole>)>,
    label: Option<(u32, Option<LabelAction>)>,
    vrf: Option<(VrfId, Option<&'v VrfFib>)>,
}

impl<'v> Recent<'v> {
    /// [`FibView::port`], `port` being the burst's.
    #[inline(always)]
    fn port(&mut self, fib: &'v FibView<'_>, port: PortId, vlan: u16) -> Option<&'v PortRole> {
        kept(&mut self.port, vlan, || fib.port(port, vlan))
    }

    /// [`FibView::label`].
    #[inline(always)]
    fn label(&mut self, fib: &'v FibView<'_>, label: u32) -> Option<LabelAction> {
        kept(&mut self.label, label, || fib.label(label))
    }

    /// [`FibView::vrf`].
    #[inline(always)]
    fn vrf(&mut self, fib: &'v FibView<'_>, vrf: VrfId) -> Option<&'v VrfFib> {
        kept(&mut self.vrf, vrf, || fib.vrf(vrf))
    }
}

/// The value kept in `last` if it was read for `key`, else `read()`, kept.
#[inline(always)]
fn kept<K: Copy + PartialEq, V: Copy>(
    last: &mut Option<(K, V)>,
    key: K,
    read: impl FnOnce() -> V,
) -> V {
    match *last {
        Some((k, v)) if k == key => v,
        _ => {
            let v = read();
            *last = Some((key, v));
            v
        }
    }
}

/// Pop the label stack starting at `off` and forward the inner packet.
fn pop<'v>(
    fib: &'v FibView<'_>,
    recent: &mut Recent<'v>,
    buf: &mut PacketBuf,
    mut off: usize,
) -> Step<'v> {
    let mut action = None;
    let mut mpls_ttl = 255u8;
    for _ in 0..MAX_LABELS {
        let Ok(e) = mpls::Entry::parse(&buf.frame()[off..]) else {
            return Step::stop(Reason::Truncated);
        };
        off += mpls::ENTRY_LEN;
        mpls_ttl = e.ttl;
        let l = e.label.value();
        if l == mpls::Label::IPV4_EXPLICIT_NULL.value()
            || l == mpls::Label::IPV6_EXPLICIT_NULL.value()
        {
            if e.bos {
                // Explicit null alone: no VPN to look the packet up in.
                return Step::stop(Reason::UnknownLabel);
            }
            continue;
        }
        let Some(a) = recent.label(fib, l) else {
            return Step::stop(Reason::UnknownLabel);
        };
        if !e.bos {
            return Step::stop(Reason::LabelStack);
        }
        action = Some(a);
        break;
    }
    let Some(action) = action else {
        return Step::stop(Reason::LabelStack);
    };
    if mpls_ttl <= 1 {
        return Step::stop(Reason::TtlExpired);
    }
    let inner = &buf.frame()[off..];
    let v6 = match inner.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = match check_v4(inner) {
                Ok(ip) => ip,
                Err(r) => return Step::stop(r),
            };
            let tl = usize::from(ip.total_len());
            buf.truncate(off + tl);
            false
        }
        Some(6) => {
            let ip = match ipv6::Packet::new_checked(inner) {
                Ok(ip) => ip,
                Err(e) => return Step::stop(v6_reason(e)),
            };
            let tl = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            buf.truncate(off + tl);
            true
        }
        Some(_) => return Step::stop(Reason::UnsupportedEthertype),
        None => return Step::stop(Reason::Truncated),
    };
    let ip_ttl = if v6 {
        buf.frame()[off + 7]
    } else {
        buf.frame()[off + 8]
    };
    let ttl = ip_ttl.min(mpls_ttl);
    match action {
        LabelAction::VrfLookup(v) => match recent.vrf(fib, v) {
            Some(vrf) => lookup_step(vrf, buf, off, v6, ttl),
            None => Step::stop(Reason::NoVrf),
        },
        LabelAction::Nexthop(nh) => {
            if ttl <= 1 {
                return Step::stop(Reason::TtlExpired);
            }
            Step::apply(nh.get(), off as u16, v6, ttl - 1)
        }
    }
}

fn ip_hash(f: &[u8], off: usize, v6: bool) -> u32 {
    let p = &f[off..];
    if v6 {
        let w = |a: usize| -> u64 {
            p.get(a..a + 8)
                .map_or(0, |s| u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
        };
        let ports = p
            .get(40..44)
            .map_or(0, |s| u32::from_be_bytes(s.try_into().unwrap_or([0; 4])));
        flow_hash(
            w(8) ^ w(16),
            w(24) ^ w(32),
            ports,
            p.get(6).copied().unwrap_or(0),
        )
    } else {
        let w = |a: usize| -> u64 {
            p.get(a..a + 4).map_or(0, |s| {
                u64::from(u32::from_be_bytes(s.try_into().unwrap_or([0; 4])))
            })
        };
        let ports = p
            .get(20..24)
            .map_or(0, |s| u32::from_be_bytes(s.try_into().unwrap_or([0; 4])));
        flow_hash(w(12), w(16), ports, p.get(9).copied().unwrap_or(0))
    }
}

/// After classification: look `buf`'s IP destination up in `vrf`. `ttl` is
/// the packet's current TTL.
#[inline]
fn lookup_step<'v>(vrf: &'v VrfFib, buf: &PacketBuf, off: usize, v6: bool, ttl: u8) -> Step<'v> {
    if ttl <= 1 {
        return Step::stop(Reason::TtlExpired);
    }
    let f = buf.frame();
    let dst4 = if v6 {
        0
    } else {
        crate::wire::be32(f, off + 16)
    };
    Step::new(Some(vrf), LOOKUP | u8::from(v6), dst4, off as u16, ttl)
}

/// A step's code for a packet that needs an LPM ([`Reason`]s' values
/// mean it is not forwarded, for that reason).
const LOOKUP: u8 = 0xf0;
/// A step's code for a packet that needs a nexthop applied.
const APPLY: u8 = 0xf2;
/// Added to `LOOKUP` or `APPLY` for an IPv6 packet.
const V6: u8 = 1;

const _: () = assert!(Reason::COUNT < LOOKUP as usize);

/// Where a packet stands between the stages of [`Pipeline::process`]: a
/// reference and one word, which the functions of the first stage return
/// in two registers. (As an enum with data, or any other record, it was
/// returned through the stack: written by narrow stores, then copied by a
/// wide load that could not be forwarded from them, a stall every packet.)
/// The stages test its code byte directly.
#[derive(Clone, Copy)]
struct Step<'v> {
    /// The VRF to look in, for a packet that needs an LPM (and only then).
    vrf: Option<&'v VrfFib>,
    /// Bits 0–31: the IPv4 destination to look up, or the nexthop to apply;
    /// 32–47: the IP header's offset in the frame; 48–55: the packet's TTL
    /// before an LPM, the TTL to write with a nexthop; 56–63: the code.
    word: u64,
}

impl<'v> Step<'v> {
    fn new(vrf: Option<&'v VrfFib>, code: u8, arg: u32, off: u16, ttl: u8) -> Self {
        Step {
            vrf,
            word: u64::from(arg)
                | u64::from(off) << 32
                | u64::from(ttl) << 48
                | u64::from(code) << 56,
        }
    }

    fn stop(r: Reason) -> Self {
        Step::new(None, r as u8, 0, 0, 0)
    }

    fn apply(nh: u32, off: u16, v6: bool, ttl: u8) -> Self {
        Step::new(None, APPLY | u8::from(v6), nh, off, ttl)
    }

    fn code(self) -> u8 {
        (self.word >> 56) as u8
    }

    /// The VRF of a packet that needs an IPv4 LPM.
    fn lookup4(self) -> Option<&'v VrfFib> {
        if self.code() == LOOKUP {
            self.vrf
        } else {
            None
        }
    }

    fn is_apply(self) -> bool {
        self.code() & !V6 == APPLY
    }

    /// For an LPM or a nexthop: whether the packet is IPv6.
    fn v6(self) -> bool {
        self.code() & V6 != 0
    }

    /// Why the packet is not forwarded, if that is decided.
    fn reason(self) -> Option<Reason> {
        Reason::ALL.get(usize::from(self.code())).copied()
    }

    fn arg(self) -> u32 {
        self.word as u32
    }

    fn off(self) -> u16 {
        (self.word >> 32) as u16
    }

    fn ttl(self) -> u8 {
        (self.word >> 48) as u8
    }
}

/// Packets between an IPv4 lookup's first read (its segment slot or flat
/// word asked for) and its second (the slot read, its chunk or list asked
/// for) in the first stage of [`Pipeline::process`].
const LPM_LAG: usize = 8;

/// The second read of an IPv4 lookup: the slot word of `st`'s destination,
/// into `w`, its chunk or list asked for.
#[inline(always)]
fn slot_step<'v>(st: &Step<'v>, w: &mut crate::fib::SlotWord<'v>) {
    if let Some(vrf) = st.lookup4() {
        *w = vrf.slot_v4(st.arg());
    }
}

/// Set the IP TTL to `ttl` and rewrite for the nexthop.
fn apply_nexthop(fib: &FibView<'_>, nh: u32, buf: &mut PacketBuf, ip: Ip, ttl: u8) -> Verdict {
    let mut nexthop = match fib.nexthop(nh) {
        Some(n) => n,
        None => return Verdict::Stop(Reason::NoNexthop),
    };
    if let Nexthop::Ecmp(members) = nexthop {
        let hash = ip_hash(buf.frame(), ip.off, ip.v6);
        let Some(m) = members.get(hash as usize % members.len().max(1)) else {
            return Verdict::Stop(Reason::NoNexthop);
        };
        nexthop = match fib.nexthop(m.get()) {
            Some(n) => n,
            None => return Verdict::Stop(Reason::NoNexthop),
        };
    }
    // Write the new TTL.
    {
        let f = buf.frame_mut();
        if ip.v6 {
            f[ip.off + 7] = ttl;
        } else {
            let mut p = ipv4::Packet::new_unchecked(&mut f[ip.off..]);
            p.set_ttl_update_checksum(ttl);
        }
    }
    match nexthop {
        Nexthop::Local { port, l2 } => {
            let et = if ip.v6 {
                ethertype::IPV6
            } else {
                ethertype::IPV4
            };
            let eth = ethernet::Repr {
                dst: l2.dst,
                src: l2.src,
                vlan: l2.vlan,
                ethertype: et,
            };
            let hl = eth.header_len();
            if !reframe(buf, ip.off, hl) {
                return Verdict::Stop(Reason::NoHeadroom);
            }
            eth.emit(buf.frame_mut());
            Verdict::Tx(*port)
        }
        Nexthop::Remote(r) => push(buf, &ip, r, ttl),
        Nexthop::Drop => Verdict::Stop(Reason::NexthopDrop),
        Nexthop::Unresolved => Verdict::Stop(Reason::Unresolved),
        Nexthop::Punt => Verdict::Stop(Reason::LocalDelivery),
        Nexthop::Ecmp(_) => Verdict::Stop(Reason::NoNexthop),
    }
}

/// Make the frame start `hl` bytes before the IP header at `off`.
#[inline]
fn reframe(buf: &mut PacketBuf, off: usize, hl: usize) -> bool {
    let delta = off as isize - hl as isize;
    if delta < 0 && buf.headroom() < delta.unsigned_abs() {
        return false;
    }
    buf.adjust_front(delta)
}

#[inline]
fn push(buf: &mut PacketBuf, ip: &Ip, r: &RemoteNexthop, ttl: u8) -> Verdict {
    let rw = &r.rewrite;
    let rl = usize::from(rw.len);
    let hash = if rw.udp_at.is_some() {
        ip_hash(buf.frame(), ip.off, ip.v6)
    } else {
        0
    };
    if !reframe(buf, ip.off, rl) {
        return Verdict::Stop(Reason::NoHeadroom);
    }
    let total = buf.len();
    let f = buf.frame_mut();
    f[..rl].copy_from_slice(&rw.bytes[..rl]);
    let la = usize::from(rw.labels_at);
    for i in 0..usize::from(rw.labels) {
        f[la + i * 4 + 3] = ttl;
    }
    if let Some(o) = rw.outer_ip_at {
        let o = usize::from(o);
        let ip_len = (total - o) as u16;
        f[o + 2..o + 4].copy_from_slice(&ip_len.to_be_bytes());
        let c = !checksum::fold(rw.outer_ip_sum + u32::from(ip_len));
        f[o + 10..o + 12].copy_from_slice(&c.to_be_bytes());
        if let Some(u) = rw.udp_at {
            let u = usize::from(u);
            let sport = 0xc000 | (hash as u16 & 0x3fff);
            f[u..u + 2].copy_from_slice(&sport.to_be_bytes());
            f[u + 4..u + 6].copy_from_slice(&((total - u) as u16).to_be_bytes());
        }
    }
    Verdict::Tx(r.port)
}

/// The MAC the router uses when it has none configured (locally administered).
pub const DEFAULT_ROUTER_MAC: MacAddr = MacAddr([0x02, 0x76, 0x70, 0x6e, 0x00, 0x01]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_every_field_and_kind() {
        let fields = [
            (0, 0, 0),
            (u32::MAX, u16::MAX, u8::MAX),
            (0x0a00_0001, 14, 64),
        ];
        for &r in Reason::ALL {
            for (arg, off, ttl) in fields {
                let st = Step::new(None, r as u8, arg, off, ttl);
                assert_eq!(st.reason(), Some(r));
                assert!(!st.is_apply() && st.lookup4().is_none());
                assert_eq!((st.arg(), st.off(), st.ttl()), (arg, off, ttl));
            }
        }
        for v6 in [false, true] {
            for (arg, off, ttl) in fields {
                let st = Step::apply(arg, off, v6, ttl);
                assert!(st.is_apply() && st.reason().is_none() && st.lookup4().is_none());
                assert_eq!((st.arg(), st.off(), st.ttl(), st.v6()), (arg, off, ttl, v6));
                let st = Step::new(None, LOOKUP | u8::from(v6), arg, off, ttl);
                assert!(!st.is_apply() && st.reason().is_none());
                assert_eq!((st.arg(), st.off(), st.ttl(), st.v6()), (arg, off, ttl, v6));
            }
        }
    }
}
