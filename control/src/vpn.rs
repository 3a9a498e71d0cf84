//! BGP/MPLS IP-VPN behaviour (RFC 4364): VRFs import the VPN routes whose
//! route targets they list (§4.3.1) and export their local routes as
//! labeled VPN routes with their route distinguisher and export targets
//! (§4.3.2, §4.3.4).
//!
//! Routes learned from peers are kept in the `rib` module: per (prefix, peer,
//! RD), each pointing at the path attributes of the UPDATE that carried
//! it. For each VRF and prefix, the importable routes go through the
//! decision process of RFC 4271 §9.1.2.2: highest LOCAL_PREF, shortest
//! AS_PATH, lowest ORIGIN, lowest MED among routes from the same
//! neighbouring AS, eBGP over iBGP; with multipath (the default) every
//! route left that leads to a distinct (label, PE) shares the prefix as an
//! ECMP group, else the tie-breakers pick one: lowest router id
//! (ORIGINATOR_ID for reflected routes), shortest CLUSTER_LIST, lowest peer
//! address.
//!
//! Graceful restart (RFC 4724, helper): when a session that negotiated it
//! drops without a NOTIFICATION, the peer's routes stay installed, marked
//! stale; routes the peer re-announces after it comes back are fresh again,
//! and its End-of-RIB for a family (or the restart timer) removes the stale
//! rest.

use crate::bgp::wire::attr::{code, Attr};
use crate::bgp::wire::nlri::{Afi, Nlri, Safi};
use crate::bgp::wire::{
    AsPathSegment, Message, Origin, Prefix, RouteDistinguisher, Update, VpnPrefix,
};
use crate::config::{parse_prefix, parse_rd, parse_route_target, Config, EncapKind};
use crate::daemon::RouteSet;
use crate::fxmap::FxMap;
use dataplane::fib::{Fib, NexthopId, VrfId};
use dataplane::slab::Slab;
use dataplane::wire::mpls::Label;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::rib::*;

/// A VRF's VPN settings.
#[derive(Debug, Clone)]
struct VrfVpn {
    id: VrfId,
    rd: Option<RouteDistinguisher>,
    import: Vec<[u8; 8]>,
    export: Vec<[u8; 8]>,
    label: Option<u32>,
    locals: Vec<Prefix>,
}

/// What the VPN layer knows of an Established peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerInfo {
    asn: u32,
    id: Ipv4Addr,
}

/// The VPN layer between the BGP sessions and the tables.
#[derive(Debug)]
pub struct Vpn {
    vrfs: Vec<VrfVpn>,
    /// VRF indices importing each route target.
    by_rt: FxMap<[u8; 8], Vec<usize>>,
    learned: Rib,
    peers: HashMap<IpAddr, PeerInfo>,
    encap: EncapKind,
    me: Option<Ipv4Addr>,
    local_as: u32,
    /// Our BGP identifier (loop detection on reflected routes).
    router_id: Option<Ipv4Addr>,
    multipath: bool,
    scratch: Scratch,
    /// Route-target membership (RFC 4684) of each peer that negotiated it:
    /// only the VRFs whose export targets it asked for are sent to it.
    membership: HashMap<IpAddr, Membership>,
}

/// A peer's route-target membership and what it was sent.
#[derive(Debug, Default)]
struct Membership {
    /// Its membership routes: (prefix length over origin AS and target,
    /// origin AS, target).
    routes: Vec<(u8, u32, [u8; 8])>,
    /// The VRFs (by index) whose local routes it was sent.
    sent: Vec<usize>,
}

impl Membership {
    /// True if a membership route covers `rt`: one of length 32 or less
    /// (any target of an origin AS, or all: the default) or whose first
    /// length − 32 bits are the target's.
    fn wants(&self, rt: &[u8; 8]) -> bool {
        self.routes.iter().any(|(len, _, t)| {
            let bits = u32::from(*len).saturating_sub(32).min(64);
            bits == 0
                || (u64::from_be_bytes(*t) ^ u64::from_be_bytes(*rt)) & (u64::MAX << (64 - bits))
                    == 0
        })
    }
}

/// Buffers [`Vpn::reconcile`] reuses from prefix to prefix.
#[derive(Debug, Default)]
struct Scratch {
    vrfs: Vec<u32>,
    now: Vec<(u32, NexthopId)>,
    members: Vec<(u32, Ipv4Addr, EncapKind)>,
}

/// What deciding a prefix's installations reads besides its entry.
struct Decide<'a> {
    vrfs: &'a [VrfVpn],
    multipath: bool,
    encap: EncapKind,
    me: Option<Ipv4Addr>,
    peers: &'a [IpAddr],
    sets: &'a Slab<AttrSet>,
    path_lists: &'a Slab<Vec<Learned>>,
}

impl Decide<'_> {
    /// Decide what each VRF that could hold `prefix` (whose RIB entry is
    /// `entry`) installs for it, as [`Vpn::reconcile`] says. True when the
    /// entry is left with no path and nothing installed: the caller removes
    /// it.
    fn decide(
        &self,
        entry: &mut Entry,
        prefix: Prefix,
        scratch: &mut Scratch,
        inst_lists: &mut Slab<Vec<(u32, NexthopId)>>,
        routes: &mut RouteSet,
        fib: &mut Fib,
    ) -> bool {
        let Decide {
            vrfs,
            multipath,
            encap,
            me,
            peers,
            sets,
            path_lists,
        } = *self;
        let paths = entry.paths.slice(path_lists);
        let Scratch {
            vrfs: in_vrfs,
            now,
            members,
        } = scratch;
        in_vrfs.clear();
        now.clear();
        in_vrfs.extend(entry.installed.iter(inst_lists).map(|(v, _)| v));
        for l in paths {
            in_vrfs.extend_from_slice(&sets[l.set].path.vrfs);
        }
        if in_vrfs.len() > 1 {
            in_vrfs.sort_unstable();
            in_vrfs.dedup();
        }
        for &vi in in_vrfs.iter() {
            let v = &vrfs[vi as usize];
            let imports = |l: &Learned| sets[l.set].path.vrfs.binary_search(&vi).is_ok();
            // The importable routes go through the decision process; the
            // best (with multipath, every best leading to a distinct
            // (label, PE), e.g. anycast over two RDs) are installed. A
            // single path needs no decision.
            members.clear();
            if let [one] = paths {
                if imports(one) {
                    members.push((one.label(), one.pe(), encap));
                }
            } else {
                let chosen: Vec<&Learned> = paths.iter().filter(|l| imports(l)).collect();
                let cands: Vec<(&PathInfo, IpAddr)> = chosen
                    .iter()
                    .map(|l| {
                        let a = &sets[l.set];
                        (&*a.path, peers[a.peer as usize])
                    })
                    .collect();
                members.extend(
                    best_paths(&cands, multipath)
                        .into_iter()
                        .map(|i| (chosen[i].label(), chosen[i].pe(), encap)),
                );
                if members.len() > 1 {
                    members.sort_by_key(|m| (m.0, m.1));
                    members.dedup();
                }
            }
            let old = entry
                .installed
                .iter(inst_lists)
                .find(|(x, _)| *x == vi)
                .map(|(_, n)| n);
            let nh = match routes.set_bgp(fib, v.id, (prefix.addr, prefix.len), members, me, old) {
                Ok(nh) => nh,
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "VPN route not installed");
                    old
                }
            };
            if let Some(nh) = nh {
                now.push((vi, nh));
            }
        }
        let empty = paths.is_empty();
        entry.installed.set(inst_lists, now);
        empty && entry.installed.is_none()
    }
}

/// The PE address of a VPN route's next hop: a zero RD then an IPv4
/// address (RFC 4364 §4.3.2), or for 6VPE an IPv4-mapped IPv6 address
/// (RFC 4659 §3.2.1.2), possibly followed by a link-local one. The
/// tunnels run over IPv4, so a native IPv6 next hop is refused (None).
fn vpn_nexthop(nh: &[u8]) -> Option<Ipv4Addr> {
    let a = match nh.len() {
        12 => &nh[8..12],
        4 => &nh[0..4],
        24 | 48 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&nh[8..24]).ok()?);
            return v6.to_ipv4_mapped();
        }
        16 | 32 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&nh[0..16]).ok()?);
            return v6.to_ipv4_mapped();
        }
        _ => return None,
    };
    Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
}

/// Decision process (RFC 4271 §9.1.2.2) over `cands` (route, peer): the
/// indices of the routes that tie through eBGP-over-iBGP (the multipath
/// set), or with `multipath` off the single winner of the tie-breakers.
fn best_paths(cands: &[(&PathInfo, IpAddr)], multipath: bool) -> Vec<usize> {
    if cands.len() <= 1 {
        return (0..cands.len()).collect();
    }
    let mut idx: Vec<usize> = (0..cands.len()).collect();
    let keep_best = |idx: &mut Vec<usize>, key: &dyn Fn(&PathInfo) -> u64| {
        if let Some(best) = idx.iter().map(|i| key(cands[*i].0)).min() {
            idx.retain(|i| key(cands[*i].0) == best);
        }
    };
    keep_best(&mut idx, &|p| u64::from(u32::MAX - p.local_pref));
    keep_best(&mut idx, &|p| u64::from(p.as_path_len));
    keep_best(&mut idx, &|p| u64::from(p.origin));
    // MED only between routes from the same neighbouring AS.
    let mut best_med: Vec<(u32, u32)> = Vec::new();
    for i in &idx {
        let p = cands[*i].0;
        match best_med.iter_mut().find(|(a, _)| *a == p.neighbor_as) {
            Some((_, m)) => *m = (*m).min(p.med),
            None => best_med.push((p.neighbor_as, p.med)),
        }
    }
    idx.retain(|i| {
        let p = cands[*i].0;
        best_med.contains(&(p.neighbor_as, p.med))
    });
    keep_best(&mut idx, &|p| u64::from(!p.ebgp));
    if multipath || idx.len() <= 1 {
        return idx;
    }
    keep_best(&mut idx, &|p| u64::from(p.router_id));
    keep_best(&mut idx, &|p| u64::from(p.cluster_len));
    idx.sort_by_key(|i| cands[*i].1);
    idx.truncate(1);
    idx
}

/// A route target as text: `asn:n` or `ip:n`.
pub fn rt_text(t: &[u8; 8]) -> String {
    match t[0] {
        0 => format!(
            "{}:{}",
            u16::from_be_bytes([t[2], t[3]]),
            u32::from_be_bytes([t[4], t[5], t[6], t[7]])
        ),
        1 => format!(
            "{}:{}",
            Ipv4Addr::new(t[2], t[3], t[4], t[5]),
            u16::from_be_bytes([t[6], t[7]])
        ),
        _ => format!(
            "{}:{}",
            u32::from_be_bytes([t[2], t[3], t[4], t[5]]),
            u16::from_be_bytes([t[6], t[7]])
        ),
    }
}

fn is_route_target(c: &[u8; 8]) -> bool {
    c[1] == 0x02 && c[0] <= 0x02
}

impl Vpn {
    /// The VPN settings of a configuration (already validated).
    pub fn new(cfg: &Config) -> Vpn {
        let vrfs: Vec<VrfVpn> = cfg
            .vrfs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let locals = cfg
                    .ports
                    .iter()
                    .filter(|p| p.vrf == v.name)
                    .flat_map(|p| p.addresses.iter())
                    .filter_map(|a| parse_prefix(a).ok())
                    .filter_map(|(a, l)| Prefix::new(a, l))
                    .collect();
                VrfVpn {
                    id: VrfId(i as u32 + 1),
                    rd: v.rd.as_deref().and_then(|r| parse_rd(r).ok()),
                    import: v
                        .import_targets
                        .iter()
                        .filter_map(|t| parse_route_target(t).ok())
                        .collect(),
                    export: v
                        .export_targets
                        .iter()
                        .filter_map(|t| parse_route_target(t).ok())
                        .collect(),
                    label: v.label,
                    locals,
                }
            })
            .collect();
        let mut by_rt: FxMap<[u8; 8], Vec<usize>> = FxMap::default();
        for (i, v) in vrfs.iter().enumerate() {
            for rt in &v.import {
                by_rt.entry(*rt).or_default().push(i);
            }
        }
        Vpn {
            vrfs,
            by_rt,
            learned: Rib::default(),
            peers: HashMap::new(),
            encap: cfg.bgp.as_ref().map_or(EncapKind::Mpls, |b| b.encap),
            me: cfg.uplink.as_ref().and_then(|u| u.address),
            local_as: cfg.bgp.as_ref().map_or(0, |b| b.asn),
            router_id: cfg.bgp.as_ref().map(|b| b.router_id),
            multipath: cfg.bgp.as_ref().is_none_or(|b| b.multipath),
            scratch: Scratch::default(),
            membership: HashMap::new(),
        }
    }

    /// A session with `peer` came up with `families`: with route-target
    /// constraint it starts with no membership (nothing is exported to it
    /// until it asks), without it gets every exporting VRF.
    pub fn session_up(&mut self, peer: IpAddr, families: &[(Afi, Safi)]) {
        if families.contains(&(Afi::IPV4, Safi::RT_CONSTRAINT)) {
            self.membership.insert(peer, Membership::default());
        } else {
            self.membership.remove(&peer);
        }
    }

    /// The session with `peer` went down: its membership goes with it.
    pub fn session_down(&mut self, peer: IpAddr) {
        self.membership.remove(&peer);
    }

    /// Apply the route-target membership routes of an UPDATE from `peer`
    /// (RFC 4684). Returns true if its membership changed.
    pub fn on_membership(&mut self, peer: IpAddr, u: &Update) -> bool {
        let Some(m) = self.membership.get_mut(&peer) else {
            return false;
        };
        let mut changed = false;
        for pa in &u.attrs {
            let (reach, nlri) = match &pa.attr {
                Attr::MpReach {
                    safi: Safi::RT_CONSTRAINT,
                    nlri,
                    ..
                } => (!u.treat_as_withdraw, nlri),
                Attr::MpUnreach {
                    safi: Safi::RT_CONSTRAINT,
                    nlri,
                    ..
                } => (false, nlri),
                _ => continue,
            };
            for n in nlri {
                let Nlri::RtConstraint { len, origin_as, rt } = n else {
                    continue;
                };
                let r = (*len, *origin_as, *rt);
                let at = m.routes.iter().position(|x| *x == r);
                match (reach, at) {
                    (true, None) => {
                        m.routes.push(r);
                        changed = true;
                    }
                    (false, Some(i)) => {
                        m.routes.swap_remove(i);
                        changed = true;
                    }
                    _ => {}
                }
            }
        }
        changed
    }

    /// The exporting VRFs `peer` is to get now: every one without
    /// route-target constraint, else those with a target it asked for.
    fn wanted_by(&self, peer: IpAddr) -> Vec<usize> {
        let m = self.membership.get(&peer);
        (0..self.vrfs.len())
            .filter(|i| {
                let v = &self.vrfs[*i];
                m.is_none_or(|m| v.export.iter().any(|rt| m.wants(rt)))
            })
            .collect()
    }

    /// After `peer`'s membership changed: the UPDATEs announcing the VRFs
    /// it now asks for and withdrawing those it no longer does.
    pub fn export_changes(
        &mut self,
        peer: IpAddr,
        peer_as: u32,
        families: &[(Afi, Safi)],
    ) -> Vec<Message> {
        let want = self.wanted_by(peer);
        let Some(m) = self.membership.get_mut(&peer) else {
            return vec![];
        };
        let sent = std::mem::replace(&mut m.sent, want.clone());
        let mut out = Vec::new();
        for i in want.iter().filter(|i| !sent.contains(i)) {
            out.extend(self.vrf_updates(*i, peer_as, families, false));
        }
        for i in sent.iter().filter(|i| !want.contains(i)) {
            out.extend(self.vrf_updates(*i, peer_as, families, true));
        }
        out
    }

    fn insert(&mut self, prefix: Prefix, l: Learned) -> bool {
        self.learned.insert(prefix, l).is_none()
    }

    fn remove(&mut self, prefix: &Prefix, peer: IpAddr, rd: &RouteDistinguisher) -> bool {
        let Some(i) = self.learned.find_peer(peer) else {
            return false;
        };
        self.learned.remove(prefix, i, rd).is_some()
    }

    /// A session came up: the peer's AS and identifier feed best-path
    /// selection.
    pub fn peer_up(&mut self, peer: IpAddr, asn: u32, id: Ipv4Addr) {
        self.peers.insert(peer, PeerInfo { asn, id });
    }

    /// Routes held from `peer` that are stale (kept through its restart).
    pub fn stale_from(&self, peer: IpAddr) -> usize {
        let Some(i) = self.learned.find_peer(peer) else {
            return 0;
        };
        self.learned
            .iter()
            .filter(|(_, a, l)| a.peer == i && l.stale())
            .count()
    }

    /// The peer's session dropped and it is restarting gracefully: keep its
    /// routes of `families` installed, marked stale, and forget the rest.
    /// Returns (kept, withdrawn).
    pub fn peer_restarting(
        &mut self,
        peer: IpAddr,
        families: &[(Afi, Safi)],
        routes: &mut RouteSet,
        fib: &mut Fib,
    ) -> (usize, usize) {
        let keep_v4 = families.contains(&(Afi::IPV4, Safi::MPLS_VPN));
        let keep_v6 = families.contains(&(Afi::IPV6, Safi::MPLS_VPN));
        let mut kept = 0;
        let mut gone = Vec::new();
        let Some(i) = self.learned.find_peer(peer) else {
            return (0, 0);
        };
        self.learned.for_each_mut(|prefix, a, l| {
            if a.peer != i {
                return;
            }
            let keep = if prefix.addr.is_ipv4() {
                keep_v4
            } else {
                keep_v6
            };
            if keep {
                l.set_stale(true);
                kept += 1;
            } else {
                gone.push((prefix, a.rd));
            }
        });
        let n = gone.len();
        self.remove_all(peer, gone, routes, fib);
        (kept, n)
    }

    /// Remove the stale routes of `peer` (of one address family, or all):
    /// its End-of-RIB arrived, or the restart or stale timer ran out.
    pub fn sweep_stale(
        &mut self,
        peer: IpAddr,
        family: Option<Afi>,
        routes: &mut RouteSet,
        fib: &mut Fib,
    ) -> usize {
        let Some(i) = self.learned.find_peer(peer) else {
            return 0;
        };
        let gone: Vec<(Prefix, RouteDistinguisher)> = self
            .learned
            .iter()
            .filter(|(prefix, a, l)| {
                a.peer == i
                    && l.stale()
                    && family.is_none_or(|f| (f == Afi::IPV4) == prefix.addr.is_ipv4())
            })
            .map(|(prefix, a, _)| (prefix, a.rd))
            .collect();
        let n = gone.len();
        self.remove_all(peer, gone, routes, fib);
        n
    }

    /// Remove `peer`'s paths `gone` and re-decide their prefixes. `gone`
    /// comes from a walk of the RIB, which yields a prefix's paths one after
    /// the other, so a prefix's repeats (one per RD) are adjacent: they are
    /// skipped without sorting what may be a whole table.
    fn remove_all(
        &mut self,
        peer: IpAddr,
        mut gone: Vec<(Prefix, RouteDistinguisher)>,
        routes: &mut RouteSet,
        fib: &mut Fib,
    ) {
        for (prefix, rd) in &gone {
            self.remove(prefix, peer, rd);
        }
        gone.dedup_by(|a, b| a.0 == b.0);
        for (prefix, _) in gone {
            self.reconcile(prefix, None, routes, fib);
        }
    }

    /// Routes held from `peer` per family (vpnv4, vpnv6).
    pub fn learned_by_family(&self, peer: IpAddr) -> (usize, usize) {
        let mut v4 = 0;
        let mut v6 = 0;
        let Some(i) = self.learned.find_peer(peer) else {
            return (0, 0);
        };
        for (prefix, a, _) in self.learned.iter() {
            if a.peer == i {
                if prefix.addr.is_ipv4() {
                    v4 += 1;
                } else {
                    v6 += 1;
                }
            }
        }
        (v4, v6)
    }

    /// True if `u` is one of our own routes come back: its ORIGINATOR_ID is
    /// our identifier, or its AS_PATH holds our AS on an eBGP session.
    fn loops(&self, u: &Update) -> bool {
        if let (Some(Attr::OriginatorId(o)), Some(me)) =
            (u.attr(code::ORIGINATOR_ID), self.router_id)
        {
            if *o == me {
                return true;
            }
        }
        match u.attr(code::AS_PATH) {
            Some(Attr::AsPath(segs)) => segs.iter().any(|s| match s {
                AsPathSegment::Sequence(v) | AsPathSegment::Set(v) => v.contains(&self.local_as),
                AsPathSegment::Confed(..) => false,
            }),
            _ => false,
        }
    }

    /// Routes from `peer` per family (vpnv4, vpnv6) that carry a route
    /// target some VRF imports.
    pub fn accepted_by_family(&self, peer: IpAddr) -> (usize, usize) {
        let mut v4 = 0;
        let mut v6 = 0;
        let Some(i) = self.learned.find_peer(peer) else {
            return (0, 0);
        };
        for (prefix, a, _) in self.learned.iter() {
            if a.peer == i && !a.path.vrfs.is_empty() {
                if prefix.addr.is_ipv4() {
                    v4 += 1;
                } else {
                    v6 += 1;
                }
            }
        }
        (v4, v6)
    }

    fn path_of(&self, peer: IpAddr, u: &Update) -> PathInfo {
        let rts: Vec<[u8; 8]> = match u.attr(code::EXT_COMMUNITIES) {
            Some(Attr::ExtCommunities(c)) => c.iter().copied().filter(is_route_target).collect(),
            _ => vec![],
        };
        let info = self.peers.get(&peer).copied();
        let (as_path_len, neighbor_as) = match u.attr(code::AS_PATH) {
            Some(Attr::AsPath(segs)) => {
                let len = segs
                    .iter()
                    .map(|s| match s {
                        AsPathSegment::Sequence(v) => v.len() as u32,
                        AsPathSegment::Set(_) => 1,
                        AsPathSegment::Confed(..) => 0,
                    })
                    .sum();
                let first = segs.iter().find_map(|s| match s {
                    AsPathSegment::Sequence(v) => v.first().copied(),
                    _ => None,
                });
                (len, first.unwrap_or(0))
            }
            _ => (0, 0),
        };
        let ebgp = info.is_some_and(|i| i.asn != self.local_as);
        let mut vrfs: Vec<u32> = rts
            .iter()
            .filter_map(|rt| self.by_rt.get(rt))
            .flatten()
            .map(|i| *i as u32)
            .collect();
        vrfs.sort_unstable();
        vrfs.dedup();
        PathInfo {
            rts,
            vrfs,
            local_pref: match u.attr(code::LOCAL_PREF) {
                Some(Attr::LocalPref(v)) if !ebgp => *v,
                _ => 100,
            },
            as_path_len,
            origin: match u.attr(code::ORIGIN) {
                Some(Attr::Origin(Origin::Igp)) => 0,
                Some(Attr::Origin(Origin::Egp)) => 1,
                _ => 2,
            },
            med: match u.attr(code::MED) {
                Some(Attr::Med(v)) => *v,
                _ => 0,
            },
            neighbor_as,
            ebgp,
            router_id: match u.attr(code::ORIGINATOR_ID) {
                Some(Attr::OriginatorId(id)) => u32::from(*id),
                _ => info.map_or(0, |i| u32::from(i.id)),
            },
            cluster_len: match u.attr(code::CLUSTER_LIST) {
                Some(Attr::ClusterList(c)) => c.len() as u32,
                _ => 0,
            },
        }
    }

    /// Routes learned and held.
    pub fn learned(&self) -> usize {
        self.learned.len()
    }

    /// Routes learned from `peer`.
    pub fn learned_from(&self, peer: IpAddr) -> usize {
        self.learned
            .find_peer(peer)
            .and_then(|i| self.learned.per_peer.get(i as usize))
            .copied()
            .unwrap_or(0)
    }

    /// The learned routes of one family (optionally of one RD, or carrying
    /// one route target given as text) as JSON for the API: prefix, RD,
    /// label, next hop, route targets, peer, path attributes, staleness and
    /// the VRFs it is installed in.
    pub fn routes_json(
        &self,
        v6: bool,
        rd: Option<&str>,
        rt: Option<&str>,
    ) -> Vec<serde_json::Value> {
        let mut rows: Vec<_> = self
            .learned
            .iter()
            .filter(|(prefix, a, _)| {
                prefix.addr.is_ipv6() == v6
                    && rd.is_none_or(|r| a.rd.to_string() == r)
                    && rt.is_none_or(|t| a.path.rts.iter().any(|x| rt_text(x) == t))
            })
            .map(|(prefix, a, l)| (prefix, self.learned.peer_addr(a.peer), a, l))
            .collect();
        // In prefix, then peer and RD order.
        rows.sort_unstable_by_key(|r| (r.0, r.1, r.2.rd));
        rows.into_iter()
            .map(|(prefix, peer, a, l)| {
                let rd = a.rd;
                let rts: Vec<String> = a.path.rts.iter().map(rt_text).collect();
                // The VRFs that hold the prefix and import this route (not
                // those holding the prefix from another RD's route).
                let mut vrfs: Vec<u32> = self
                    .learned
                    .by_prefix
                    .get(&prefix)
                    .map(|e| {
                        e.installed
                            .iter(&self.learned.inst_lists)
                            .filter(|(i, _)| a.path.vrfs.binary_search(i).is_ok())
                            .map(|(i, _)| self.vrfs[i as usize].id.0)
                            .collect()
                    })
                    .unwrap_or_default();
                vrfs.sort_unstable();
                serde_json::json!({
                    "prefix": prefix.to_string(),
                    "rd": rd.to_string(),
                    "label": l.label(),
                    "nexthop": l.pe().to_string(),
                    "route_targets": rts,
                    "peer": peer.to_string(),
                    "vrfs": vrfs,
                    "local_pref": a.path.local_pref,
                    "med": a.path.med,
                    "as_path_len": a.path.as_path_len,
                    "stale": l.stale(),
                })
            })
            .collect()
    }

    /// Re-decide what each VRF that could hold `prefix` installs for it:
    /// the VRFs importing a target of some route for it, and those that hold
    /// it now. With `add`, that path is inserted first and the decision made
    /// on the entry the insertion found (no second lookup). A prefix left
    /// with no path and nothing installed leaves the RIB.
    fn reconcile(
        &mut self,
        prefix: Prefix,
        add: Option<Learned>,
        routes: &mut RouteSet,
        fib: &mut Fib,
    ) {
        let Vpn {
            learned,
            vrfs,
            multipath,
            encap,
            me,
            scratch,
            ..
        } = self;
        let Rib {
            by_prefix,
            peers,
            sets,
            path_lists,
            inst_lists,
            per_peer,
            len,
        } = learned;
        let entry = match add {
            Some(l) => {
                let e = by_prefix.get_or_default(&prefix);
                Rib::add_path(e, sets, path_lists, per_peer, len, l);
                e
            }
            None => match by_prefix.get_mut(&prefix) {
                Some(e) => e,
                None => return,
            },
        };
        let cx = Decide {
            vrfs,
            multipath: *multipath,
            encap: *encap,
            me: *me,
            peers,
            sets,
            path_lists,
        };
        if cx.decide(entry, prefix, scratch, inst_lists, routes, fib) {
            by_prefix.remove(&prefix);
        }
    }

    /// Apply an UPDATE from `peer`. Returns (announced, withdrawn) counts.
    pub fn on_update(
        &mut self,
        peer: IpAddr,
        u: &Update,
        routes: &mut RouteSet,
        fib: &mut Fib,
    ) -> (usize, usize) {
        let path = Arc::new(self.path_of(peer, u));
        // Loops: a route reflected back to its originator (RFC 4456 §8) or
        // carrying our AS from outside (RFC 4271 §9.1.2) is not used; it
        // replaces (withdraws) what the peer sent before for its prefixes.
        let looped = self.loops(u);
        let pi = self.learned.peer_index(peer);
        let mut touched: Vec<Prefix> = Vec::new();
        let mut sets: Vec<(RouteDistinguisher, u32)> = Vec::new();
        let (mut ann, mut wd) = (0, 0);
        for pa in &u.attrs {
            match &pa.attr {
                Attr::MpUnreach {
                    safi: Safi::MPLS_VPN,
                    nlri,
                    ..
                } => {
                    for n in nlri {
                        if let Nlri::Vpn(v) = n {
                            if self.remove(&v.prefix, peer, &v.rd) {
                                wd += 1;
                            }
                            touched.push(v.prefix);
                        }
                    }
                }
                Attr::MpReach {
                    safi: Safi::MPLS_VPN,
                    nexthop,
                    nlri,
                    ..
                } => {
                    // 0.0.0.0 is no next hop: its routes are withdrawn.
                    let pe = vpn_nexthop(nexthop).and_then(|a| NonZeroU32::new(u32::from(a)));
                    for (i, n) in nlri.iter().enumerate() {
                        // The RIB's slots are cache misses: fetch a few
                        // prefixes ahead.
                        if let Some(Nlri::Vpn(ahead)) = nlri.get(i + PREFETCH_AHEAD) {
                            self.learned.by_prefix.prefetch(&ahead.prefix);
                        }
                        if let Nlri::Vpn(v) = n {
                            match (pe, u.treat_as_withdraw || looped) {
                                (Some(pe), false) => {
                                    // One attribute set per RD of the UPDATE
                                    // (looked for among the last few made).
                                    let recent = &sets[sets.len().saturating_sub(16)..];
                                    let set = match recent.iter().find(|(rd, _)| *rd == v.rd) {
                                        Some((_, set)) => *set,
                                        None => {
                                            let set = self.learned.new_set(path.clone(), v.rd, pi);
                                            sets.push((v.rd, set));
                                            set
                                        }
                                    };
                                    let l = Learned {
                                        set,
                                        label: v.label.value() & !STALE,
                                        pe,
                                    };
                                    // A prefix is decided once its last
                                    // path of the UPDATE is in (one prefix
                                    // under several RDs comes in a row),
                                    // on the entry just found.
                                    match nlri.get(i + 1) {
                                        Some(Nlri::Vpn(next)) if next.prefix == v.prefix => {
                                            self.insert(v.prefix, l);
                                        }
                                        _ => self.reconcile(v.prefix, Some(l), routes, fib),
                                    }
                                    ann += 1;
                                }
                                _ => {
                                    touched.push(v.prefix);
                                    if self.remove(&v.prefix, peer, &v.rd) {
                                        wd += 1;
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // Deciding a prefix again is harmless: only repeats in a row (one
        // prefix under several RDs) are skipped, no sort.
        touched.dedup();
        for p in touched {
            self.reconcile(p, None, routes, fib);
        }
        (ann, wd)
    }

    /// Forget everything `peer` announced.
    pub fn peer_down(&mut self, peer: IpAddr, routes: &mut RouteSet, fib: &mut Fib) -> usize {
        let gone: Vec<(Prefix, RouteDistinguisher)> = match self.learned.find_peer(peer) {
            Some(i) => self
                .learned
                .iter()
                .filter(|(_, a, _)| a.peer == i)
                .map(|(prefix, a, _)| (prefix, a.rd))
                .collect(),
            None => Vec::new(),
        };
        let n = gone.len();
        self.peers.remove(&peer);
        self.remove_all(peer, gone, routes, fib);
        n
    }

    /// The End-of-RIB marker of each family in `families` we send routes
    /// of (RFC 4724 §2): an UPDATE with an empty MP_UNREACH_NLRI.
    pub fn end_of_rib_markers(families: &[(Afi, Safi)]) -> Vec<Message> {
        [
            (Afi::IPV4, Safi::MPLS_VPN),
            (Afi::IPV6, Safi::MPLS_VPN),
            (Afi::IPV4, Safi::RT_CONSTRAINT),
        ]
        .into_iter()
        .filter(|f| families.contains(f))
        .map(|(afi, safi)| {
            Message::Update(Update::with_attrs(vec![Attr::MpUnreach {
                afi,
                safi,
                nlri: vec![],
            }]))
        })
        .collect()
    }

    /// Our route-target membership (RFC 4684) for a peer that negotiated
    /// it: one route per target some VRF imports, originated by our AS,
    /// with our address as next hop, then its End-of-RIB. Empty when the
    /// family was not negotiated.
    pub fn rt_membership(&self, peer_as: u32, families: &[(Afi, Safi)]) -> Vec<Message> {
        if !families.contains(&(Afi::IPV4, Safi::RT_CONSTRAINT)) {
            return vec![];
        }
        let Some(me) = self.me else { return vec![] };
        let mut rts: Vec<[u8; 8]> = self.by_rt.keys().copied().collect();
        rts.sort_unstable();
        if rts.is_empty() {
            return vec![];
        }
        let nlri = rts
            .into_iter()
            .map(|rt| Nlri::RtConstraint {
                len: 96,
                origin_as: self.local_as,
                rt,
            })
            .collect();
        let ibgp = peer_as == self.local_as;
        let mut attrs = vec![
            Attr::MpReach {
                afi: Afi::IPV4,
                safi: Safi::RT_CONSTRAINT,
                nexthop: me.octets().to_vec(),
                nlri,
            },
            Attr::Origin(Origin::Igp),
            Attr::AsPath(if ibgp {
                vec![]
            } else {
                vec![AsPathSegment::Sequence(vec![self.local_as])]
            }),
        ];
        if ibgp {
            attrs.push(Attr::LocalPref(100));
        }
        vec![Message::Update(Update::with_attrs(attrs))]
    }

    /// The family whose End-of-RIB `u` is, if it is one.
    pub fn end_of_rib(u: &Update) -> Option<(Afi, Safi)> {
        if u.attrs.len() != 1 || !u.withdrawn.is_empty() || !u.nlri.is_empty() {
            return None;
        }
        match &u.attrs[0].attr {
            Attr::MpUnreach { afi, safi, nlri } if nlri.is_empty() => Some((*afi, *safi)),
            _ => None,
        }
    }

    /// The UPDATEs announcing the local routes of every exporting VRF
    /// `peer` (in `peer_as`) is to get (all, or with route-target constraint
    /// those with a target it asked for), for the VPN families negotiated
    /// with it (iBGP: LOCAL_PREF and an empty AS_PATH; eBGP: our AS).
    pub fn exports(
        &mut self,
        peer: IpAddr,
        peer_as: u32,
        families: &[(Afi, Safi)],
    ) -> Vec<Message> {
        let want = self.wanted_by(peer);
        let out = want
            .iter()
            .flat_map(|i| self.vrf_updates(*i, peer_as, families, false))
            .collect();
        if let Some(m) = self.membership.get_mut(&peer) {
            m.sent = want;
        }
        out
    }

    /// The UPDATEs announcing (or withdrawing) VRF `i`'s local routes, one
    /// per family negotiated; none for a VRF that exports nothing.
    fn vrf_updates(
        &self,
        i: usize,
        peer_as: u32,
        families: &[(Afi, Safi)],
        withdraw: bool,
    ) -> Vec<Message> {
        let Some(me) = self.me else { return vec![] };
        let v = &self.vrfs[i];
        let mut out = Vec::new();
        let (Some(rd), Some(label)) = (v.rd, v.label.and_then(Label::new)) else {
            return out;
        };
        if v.export.is_empty() || v.locals.is_empty() {
            return out;
        }
        for family in [Afi::IPV4, Afi::IPV6] {
            if !families.contains(&(family, Safi::MPLS_VPN)) {
                continue;
            }
            let nlri: Vec<Nlri> = v
                .locals
                .iter()
                .filter(|p| (family == Afi::IPV4) == p.addr.is_ipv4())
                .map(|p| {
                    Nlri::Vpn(VpnPrefix {
                        path_id: None,
                        label,
                        rd,
                        prefix: *p,
                    })
                })
                .collect();
            if nlri.is_empty() {
                continue;
            }
            if withdraw {
                out.push(Message::Update(Update::with_attrs(vec![Attr::MpUnreach {
                    afi: family,
                    safi: Safi::MPLS_VPN,
                    nlri,
                }])));
                continue;
            }
            let mut nexthop = vec![0u8; 8];
            if family == Afi::IPV4 {
                nexthop.extend_from_slice(&me.octets());
            } else {
                // 6VPE: an IPv4-mapped IPv6 next hop (RFC 4659 §3.2.1.2).
                nexthop.extend_from_slice(&me.to_ipv6_mapped().octets());
            }
            let ibgp = peer_as == self.local_as;
            let mut attrs = vec![
                Attr::MpReach {
                    afi: family,
                    safi: Safi::MPLS_VPN,
                    nexthop,
                    nlri,
                },
                Attr::Origin(Origin::Igp),
                Attr::AsPath(if ibgp {
                    vec![]
                } else {
                    vec![AsPathSegment::Sequence(vec![self.local_as])]
                }),
            ];
            if ibgp {
                attrs.push(Attr::LocalPref(100));
            }
            attrs.push(Attr::ExtCommunities(v.export.clone()));
            out.push(Message::Update(Update::with_attrs(attrs)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_keys_give_back_their_prefix_and_never_collide() {
        let mut seen = std::collections::HashMap::new();
        let mut x = 0x9e37_79b9u32;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            for len in 0..=32u8 {
                let p = Prefix::new(IpAddr::V4(Ipv4Addr::from(x)), len).expect("prefix");
                let IpAddr::V4(a) = p.addr else { continue };
                let back = match v4_key(a, len) {
                    V4Key::Net(k) => {
                        if let Some(q) = seen.insert(k, p) {
                            assert_eq!(q, p, "two prefixes share key {k:#x}");
                        }
                        v4_net_prefix(k)
                    }
                    V4Key::Host(k) => {
                        assert_eq!(len, 32);
                        v4_host_prefix(k)
                    }
                };
                assert_eq!(back, p);
            }
        }
        // Host bits do not make another key.
        let a: Ipv4Addr = "10.1.2.3".parse().expect("ip");
        let b: Ipv4Addr = "10.1.2.0".parse().expect("ip");
        assert!(matches!((v4_key(a, 24), v4_key(b, 24)), (V4Key::Net(x), V4Key::Net(y)) if x == y));
    }
    use crate::bgp::wire::attr::PathAttr;
    use dataplane::fib::Nexthop;

    const CFG: &str = r#"
[[vrf]]
name = "blue"
import_targets = ["65001:100"]

[uplink]
interface = "core"
mac = "02:00:00:00:00:01"
address = "192.0.2.1"

[bgp]
asn = 65001
router_id = "192.0.2.1"

[[bgp.peer]]
address = "192.0.2.8"
asn = 65001
"#;

    fn update(rd: u32, label: u32, pe: [u8; 4], withdraw: bool) -> Update {
        let nlri = vec![Nlri::Vpn(VpnPrefix {
            path_id: None,
            label: Label::new(label).expect("label"),
            rd: RouteDistinguisher::as2(65001, rd),
            prefix: Prefix::new("10.9.0.0".parse().expect("ip"), 24).expect("prefix"),
        })];
        if withdraw {
            return Update::with_attrs(vec![Attr::MpUnreach {
                afi: Afi::IPV4,
                safi: Safi::MPLS_VPN,
                nlri,
            }]);
        }
        let mut nh = vec![0u8; 8];
        nh.extend_from_slice(&pe);
        let mut u = Update::with_attrs(vec![
            Attr::MpReach {
                afi: Afi::IPV4,
                safi: Safi::MPLS_VPN,
                nexthop: nh,
                nlri,
            },
            Attr::Origin(Origin::Igp),
            Attr::AsPath(vec![]),
        ]);
        u.attrs.push(PathAttr {
            flags: 0xc0,
            attr: Attr::ExtCommunities(vec![[0, 2, 0xfd, 0xe9, 0, 0, 0, 100]]),
        });
        u
    }

    /// The VPN layer and the tables the daemon builds from `cfg`.
    fn tables(cfg: &str) -> (Vpn, RouteSet, Fib) {
        let cfg = Config::parse(cfg).expect("config");
        let crate::daemon::Built { fib, routes, .. } = crate::daemon::build(&cfg).expect("tables");
        (Vpn::new(&cfg), routes, fib)
    }

    fn members(fib: &Fib) -> Option<usize> {
        let nh = fib.lookup_v4(VrfId(1), "10.9.0.5".parse().expect("ip"))?;
        let mut r = fib.reader();
        let v = r.view();
        match v.nexthop(nh.get()) {
            Some(Nexthop::Ecmp(m)) => Some(m.len()),
            Some(_) => Some(1),
            None => Some(0),
        }
    }

    #[test]
    fn a_pes_nexthop_lives_exactly_as_long_as_routes_use_it() {
        // Routes over one PE in a row take their references without
        // looking the nexthop up; withdrawals must still see every one.
        let (_, mut routes, mut fib) = tables(CFG);
        let a = (3008, Ipv4Addr::new(192, 0, 2, 8), EncapKind::Mpls);
        let b = (3009, Ipv4Addr::new(192, 0, 2, 9), EncapKind::Mpls);
        let p = |i: u8| (IpAddr::from([10, 9, i, 0]), 24u8);
        let dst = |i: u8| Ipv4Addr::new(10, 9, i, 1);
        let set = |routes: &mut RouteSet, fib: &mut Fib, i: u8, m: &[_], old| {
            routes
                .set_bgp(fib, VrfId(1), p(i), m, None, old)
                .expect("installed")
        };
        let live = |fib: &Fib, id: Option<NexthopId>| {
            let id = id.expect("a nexthop");
            fib.reader().view().nexthop(id.get()).is_some()
        };
        let ids: Vec<_> = (0..5)
            .map(|i| set(&mut routes, &mut fib, i, &[a], None))
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "one nexthop for PE A");
        let over_b = set(&mut routes, &mut fib, 9, &[b], None);
        assert_eq!(routes.nexthops_in_use(), 2);
        // The same nexthop again: nothing changes.
        assert_eq!(set(&mut routes, &mut fib, 9, &[b], over_b), over_b);
        for i in 0..4 {
            assert_eq!(
                set(&mut routes, &mut fib, i, &[], ids[usize::from(i)]),
                None
            );
            assert_eq!(fib.lookup_v4(VrfId(1), dst(i)), None);
        }
        assert_eq!(routes.nexthops_in_use(), 2, "one route is still over A");
        assert_eq!(fib.lookup_v4(VrfId(1), dst(4)), ids[4]);
        assert!(live(&fib, ids[4]));
        set(&mut routes, &mut fib, 4, &[], ids[4]);
        assert_eq!(routes.nexthops_in_use(), 1, "A went with its last route");
        // Three more over B, all withdrawn while B is the one in use.
        let more: Vec<_> = (5..8)
            .map(|i| set(&mut routes, &mut fib, i, &[b], None))
            .collect();
        for (i, id) in (5..8).zip(&more) {
            set(&mut routes, &mut fib, i, &[], *id);
        }
        assert_eq!(
            routes.nexthops_in_use(),
            1,
            "the first route over B holds it"
        );
        set(&mut routes, &mut fib, 9, &[], over_b);
        assert_eq!(routes.nexthops_in_use(), 0, "no nexthop left behind");
        // B comes back as a new nexthop, not the one that went.
        let again = set(&mut routes, &mut fib, 1, &[b], None);
        assert!(live(&fib, again));
        assert_eq!(fib.lookup_v4(VrfId(1), dst(1)), again);
        assert_eq!(routes.nexthops_in_use(), 1);
    }

    #[test]
    fn two_pes_announcing_one_prefix_under_two_rds_share_it_by_ecmp() {
        let (mut vpn, mut routes, mut fib) = tables(CFG);
        let (p8, p9): (IpAddr, IpAddr) = (
            "192.0.2.8".parse().expect("ip"),
            "192.0.2.9".parse().expect("ip"),
        );
        vpn.on_update(
            p8,
            &update(8, 3008, [192, 0, 2, 8], false),
            &mut routes,
            &mut fib,
        );
        assert_eq!(members(&fib), Some(1));
        vpn.on_update(
            p9,
            &update(9, 3009, [192, 0, 2, 9], false),
            &mut routes,
            &mut fib,
        );
        assert_eq!(members(&fib), Some(2), "anycast over two RDs is ECMP");
        vpn.on_update(
            p8,
            &update(8, 3008, [192, 0, 2, 8], true),
            &mut routes,
            &mut fib,
        );
        assert_eq!(members(&fib), Some(1));
        assert_eq!(routes.nexthops_in_use(), 1, "the group and PE 8 went");
        vpn.peer_down(p9, &mut routes, &mut fib);
        assert_eq!(members(&fib), None, "all gone");
        assert_eq!(routes.nexthops_in_use(), 0, "no nexthop left behind");
    }

    #[test]
    fn one_update_with_a_prefix_under_two_rds_installs_both_paths_in_any_order() {
        // (RD, label, prefix) in the UPDATE's order: the two paths of
        // 10.9.0.0/24 in a row, then apart.
        let orders: [[(u32, u32, &str); 3]; 2] = [
            [
                (1, 3001, "10.9.0.0"),
                (2, 3002, "10.9.0.0"),
                (1, 3001, "10.8.0.0"),
            ],
            [
                (1, 3001, "10.9.0.0"),
                (1, 3001, "10.8.0.0"),
                (2, 3002, "10.9.0.0"),
            ],
        ];
        for order in orders {
            let (mut vpn, mut routes, mut fib) = tables(CFG);
            let mut u = update(1, 3001, [192, 0, 2, 8], false);
            let Some(PathAttr {
                attr: Attr::MpReach { nlri, .. },
                ..
            }) = u.attrs.first_mut()
            else {
                panic!("an MP_REACH_NLRI first");
            };
            *nlri = order
                .iter()
                .map(|(rd, label, p)| {
                    Nlri::Vpn(VpnPrefix {
                        path_id: None,
                        label: Label::new(*label).expect("label"),
                        rd: RouteDistinguisher::as2(65001, *rd),
                        prefix: Prefix::new(p.parse().expect("ip"), 24).expect("prefix"),
                    })
                })
                .collect();
            let p8: IpAddr = "192.0.2.8".parse().expect("ip");
            assert_eq!(vpn.on_update(p8, &u, &mut routes, &mut fib), (3, 0));
            assert_eq!(members(&fib), Some(2), "{order:?}: both labels");
            assert!(
                fib.lookup_v4(VrfId(1), "10.8.0.1".parse().expect("ip"))
                    .is_some(),
                "{order:?}"
            );
        }
    }

    #[test]
    fn a_listed_route_names_only_the_vrfs_that_import_it() {
        // Blue imports 65001:100, red 65001:200; one prefix from each.
        let (mut vpn, mut routes, mut fib) = tables(&CFG.replace(
            "[uplink]",
            "[[vrf]]\nname = \"red\"\nimport_targets = [\"65001:200\"]\n\n[uplink]",
        ));
        let p8: IpAddr = "192.0.2.8".parse().expect("ip");
        vpn.on_update(
            p8,
            &update(8, 3008, [192, 0, 2, 8], false),
            &mut routes,
            &mut fib,
        );
        let red = update_with(
            9,
            3009,
            [192, 0, 2, 8],
            vec![Attr::ExtCommunities(vec![[0, 2, 0xfd, 0xe9, 0, 0, 0, 200]])],
        );
        vpn.on_update(p8, &red, &mut routes, &mut fib);
        let rows = vpn.routes_json(false, None, None);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let vrfs_of = |rd: &str| {
            rows.iter()
                .find(|r| r["rd"] == rd)
                .map(|r| r["vrfs"].clone())
                .expect("row")
        };
        let (blue, red) = (vpn.vrfs[0].id.0, vpn.vrfs[1].id.0);
        assert_eq!(vrfs_of("65001:8"), serde_json::json!([blue]));
        assert_eq!(vrfs_of("65001:9"), serde_json::json!([red]));
    }

    /// Two exporting VRFs, blue (65001:100, 10.1.1.1/32) and red
    /// (65001:200, 10.2.2.2/32), in place of [`CFG`]'s VRF.
    const EXPORTING: &str = r#"
[[vrf]]
name = "blue"
rd = "65001:1"
label = 100
export_targets = ["65001:100"]

[[vrf]]
name = "red"
rd = "65001:2"
label = 200
export_targets = ["65001:200"]

[[port]]
interface = "b1"
vrf = "blue"
mac = "02:00:00:00:00:01"
addresses = ["10.1.1.1/32"]
gateway = "10.1.1.254"

[[port]]
interface = "r1"
vrf = "red"
mac = "02:00:00:00:00:02"
addresses = ["10.2.2.2/32"]
gateway = "10.2.2.254"
"#;

    /// The (prefix, announced) pairs of VPNv4 UPDATEs.
    fn sent(msgs: &[Message]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for m in msgs {
            let Message::Update(u) = m else { continue };
            for pa in &u.attrs {
                let (nlri, reach) = match &pa.attr {
                    Attr::MpReach { nlri, .. } => (nlri, true),
                    Attr::MpUnreach { nlri, .. } => (nlri, false),
                    _ => continue,
                };
                for n in nlri {
                    if let Nlri::Vpn(v) = n {
                        out.push((v.prefix.to_string(), reach));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Membership routes for `targets` (length, origin AS 65001, target).
    fn membership(reach: bool, targets: &[(u8, [u8; 8])]) -> Update {
        let nlri = targets
            .iter()
            .map(|(len, rt)| Nlri::RtConstraint {
                len: *len,
                origin_as: 65001,
                rt: *rt,
            })
            .collect();
        Update::with_attrs(vec![if reach {
            Attr::MpReach {
                afi: Afi::IPV4,
                safi: Safi::RT_CONSTRAINT,
                nexthop: vec![192, 0, 2, 8],
                nlri,
            }
        } else {
            Attr::MpUnreach {
                afi: Afi::IPV4,
                safi: Safi::RT_CONSTRAINT,
                nlri,
            }
        }])
    }

    #[test]
    fn with_rt_constraint_a_peer_gets_only_the_vrfs_it_asks_for() {
        let cfg = Config::parse(&CFG.replace(
            "[[vrf]]\nname = \"blue\"\nimport_targets = [\"65001:100\"]\n",
            EXPORTING,
        ))
        .expect("config");
        let mut vpn = Vpn::new(&cfg);
        let vpn4 = [(Afi::IPV4, Safi::MPLS_VPN)];
        let rtc = [
            (Afi::IPV4, Safi::MPLS_VPN),
            (Afi::IPV4, Safi::RT_CONSTRAINT),
        ];
        let (blue, red) = ("10.1.1.1/32".to_string(), "10.2.2.2/32".to_string());
        // Without RT constraint: every exporting VRF.
        vpn.session_up(P8, &vpn4);
        assert_eq!(
            sent(&vpn.exports(P8, 65001, &vpn4)),
            vec![(blue.clone(), true), (red.clone(), true)]
        );
        assert!(!vpn.on_membership(
            P8,
            &membership(true, &[(96, [0, 2, 0xfd, 0xe9, 0, 0, 0, 100])])
        ));
        // With it: nothing until the peer asks.
        vpn.session_up(P8, &rtc);
        assert!(vpn.exports(P8, 65001, &rtc).is_empty());
        let rt100 = (96, [0, 2, 0xfd, 0xe9, 0, 0, 0, 100]);
        assert!(vpn.on_membership(P8, &membership(true, &[rt100])));
        assert_eq!(
            sent(&vpn.export_changes(P8, 65001, &rtc)),
            vec![(blue.clone(), true)]
        );
        assert!(
            !vpn.on_membership(P8, &membership(true, &[rt100])),
            "no change"
        );
        // A prefix of targets: type, AS and the first three bytes of the
        // number, 65001:0 to 65001:255, adds red's 65001:200 (blue's was
        // sent already).
        let prefix = (32 + 56, [0, 2, 0xfd, 0xe9, 0, 0, 0, 0]);
        assert!(vpn.on_membership(P8, &membership(true, &[prefix])));
        assert_eq!(
            sent(&vpn.export_changes(P8, 65001, &rtc)),
            vec![(red.clone(), true)]
        );
        // Withdrawn memberships withdraw the routes.
        assert!(vpn.on_membership(P8, &membership(false, &[rt100, prefix])));
        assert_eq!(
            sent(&vpn.export_changes(P8, 65001, &rtc)),
            vec![(blue.clone(), false), (red.clone(), false)]
        );
        // The default membership (length 0) asks for everything.
        assert!(vpn.on_membership(P8, &membership(true, &[(0, [0; 8])])));
        assert_eq!(
            sent(&vpn.export_changes(P8, 65001, &rtc)),
            vec![(blue.clone(), true), (red.clone(), true)]
        );
        // A route refresh resends what the membership asks for; a new
        // session starts again from nothing.
        assert_eq!(sent(&vpn.exports(P8, 65001, &rtc)).len(), 2);
        vpn.session_down(P8);
        vpn.session_up(P8, &rtc);
        assert!(vpn.exports(P8, 65001, &rtc).is_empty());
    }

    /// An announcement of 10.9.0.0/24 with extra attributes.
    fn update_with(rd: u32, label: u32, pe: [u8; 4], extra: Vec<Attr>) -> Update {
        let mut u = update(rd, label, pe, false);
        for a in extra {
            let code = a.code();
            u.attrs.retain(|p| p.attr.code() != code);
            u.attrs.push(PathAttr {
                flags: 0x40,
                attr: a,
            });
        }
        u
    }

    /// The labels installed for 10.9.0.5 in VRF 1 (the PEs' MACs are
    /// resolved first, so routes install as rewrites).
    fn installed(routes: &mut RouteSet, fib: &mut Fib) -> Vec<u32> {
        for i in 7..=9u8 {
            let ip = Ipv4Addr::new(192, 0, 2, i);
            let mac = dataplane::wire::MacAddr([2, 0, 0, 0, 0, i]);
            if let Some(c) = routes.neighbors.heard(ip, mac, std::time::Instant::now()) {
                routes.neighbor_changed(fib, c);
            }
        }
        let Some(nh) = fib.lookup_v4(VrfId(1), "10.9.0.5".parse().expect("ip")) else {
            return vec![];
        };
        let mut r = fib.reader();
        let v = r.view();
        let label_of = |id: u32| match v.nexthop(id) {
            Some(Nexthop::Remote(rn)) => rn.label.value(),
            _ => 0,
        };
        let mut out = match v.nexthop(nh.get()) {
            Some(Nexthop::Ecmp(m)) => m.iter().map(|id| label_of(id.get())).collect(),
            Some(_) => vec![label_of(nh.get())],
            None => vec![],
        };
        out.sort_unstable();
        out
    }

    fn setup(extra: &str) -> (Vpn, RouteSet, Fib) {
        let (mut vpn, routes, fib) =
            tables(&CFG.replace("[[bgp.peer]]", &format!("{extra}\n[[bgp.peer]]")));
        for (p, asn) in [
            ("192.0.2.8", 65001),
            ("192.0.2.9", 65001),
            ("192.0.2.7", 65007),
        ] {
            let ip: Ipv4Addr = p.parse().expect("ip");
            vpn.peer_up(IpAddr::V4(ip), asn, ip);
        }
        (vpn, routes, fib)
    }

    const P7: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    const P8: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
    const P9: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));

    #[test]
    fn best_path_follows_the_rfc4271_decision_steps() {
        let (mut vpn, mut routes, mut fib) = setup("multipath = false");
        // Higher LOCAL_PREF wins even with a longer AS path.
        vpn.on_update(
            P8,
            &update_with(
                8,
                3008,
                [192, 0, 2, 8],
                vec![
                    Attr::LocalPref(200),
                    Attr::AsPath(vec![AsPathSegment::Sequence(vec![1, 2, 3])]),
                ],
            ),
            &mut routes,
            &mut fib,
        );
        vpn.on_update(
            P9,
            &update_with(9, 3009, [192, 0, 2, 9], vec![Attr::LocalPref(100)]),
            &mut routes,
            &mut fib,
        );
        assert_eq!(installed(&mut routes, &mut fib), vec![3008], "local_pref");
        // Equal LOCAL_PREF: the shorter AS path.
        vpn.on_update(
            P8,
            &update_with(
                8,
                3008,
                [192, 0, 2, 8],
                vec![Attr::AsPath(vec![AsPathSegment::Sequence(vec![1, 2, 3])])],
            ),
            &mut routes,
            &mut fib,
        );
        assert_eq!(
            installed(&mut routes, &mut fib),
            vec![3009],
            "as_path length"
        );
        // Same path length: lower ORIGIN.
        vpn.on_update(
            P8,
            &update_with(
                8,
                3008,
                [192, 0, 2, 8],
                vec![Attr::AsPath(vec![]), Attr::Origin(Origin::Igp)],
            ),
            &mut routes,
            &mut fib,
        );
        vpn.on_update(
            P9,
            &update_with(
                9,
                3009,
                [192, 0, 2, 9],
                vec![Attr::Origin(Origin::Incomplete)],
            ),
            &mut routes,
            &mut fib,
        );
        assert_eq!(installed(&mut routes, &mut fib), vec![3008], "origin");
        // Same neighbour AS: lower MED.
        let path = || Attr::AsPath(vec![AsPathSegment::Sequence(vec![64999])]);
        vpn.on_update(
            P8,
            &update_with(8, 3008, [192, 0, 2, 8], vec![path(), Attr::Med(50)]),
            &mut routes,
            &mut fib,
        );
        vpn.on_update(
            P9,
            &update_with(
                9,
                3009,
                [192, 0, 2, 9],
                vec![path(), Attr::Med(10), Attr::Origin(Origin::Igp)],
            ),
            &mut routes,
            &mut fib,
        );
        assert_eq!(installed(&mut routes, &mut fib), vec![3009], "med");
        // All equal: the lower router id (192.0.2.8).
        vpn.on_update(
            P9,
            &update_with(
                9,
                3009,
                [192, 0, 2, 9],
                vec![path(), Attr::Med(50), Attr::Origin(Origin::Igp)],
            ),
            &mut routes,
            &mut fib,
        );
        assert_eq!(installed(&mut routes, &mut fib), vec![3008], "router id");
        // eBGP beats iBGP when everything before is equal.
        vpn.on_update(
            P7,
            &update_with(
                7,
                3007,
                [192, 0, 2, 7],
                vec![path(), Attr::Med(50), Attr::Origin(Origin::Igp)],
            ),
            &mut routes,
            &mut fib,
        );
        assert_eq!(
            installed(&mut routes, &mut fib),
            vec![3007],
            "ebgp over ibgp"
        );
    }

    #[test]
    fn multipath_shares_only_among_the_equal_best() {
        let (mut vpn, mut routes, mut fib) = setup("");
        vpn.on_update(
            P8,
            &update_with(8, 3008, [192, 0, 2, 8], vec![]),
            &mut routes,
            &mut fib,
        );
        vpn.on_update(
            P9,
            &update_with(9, 3009, [192, 0, 2, 9], vec![]),
            &mut routes,
            &mut fib,
        );
        assert_eq!(installed(&mut routes, &mut fib), vec![3008, 3009]);
        vpn.on_update(
            P9,
            &update_with(9, 3009, [192, 0, 2, 9], vec![Attr::LocalPref(300)]),
            &mut routes,
            &mut fib,
        );
        assert_eq!(
            installed(&mut routes, &mut fib),
            vec![3009],
            "a better path leaves the group"
        );
    }

    #[test]
    fn graceful_restart_keeps_routes_until_end_of_rib_rfc4724() {
        let (mut vpn, mut routes, mut fib) = setup("");
        vpn.on_update(
            P8,
            &update(8, 3008, [192, 0, 2, 8], false),
            &mut routes,
            &mut fib,
        );
        let other = |label: u32| {
            let mut u = update(8, label, [192, 0, 2, 8], false);
            for a in &mut u.attrs {
                if let Attr::MpReach { nlri, .. } = &mut a.attr {
                    if let Nlri::Vpn(v) = &mut nlri[0] {
                        v.prefix = Prefix::new("10.8.0.0".parse().expect("ip"), 16).expect("p");
                    }
                }
            }
            u
        };
        vpn.on_update(P8, &other(3108), &mut routes, &mut fib);
        assert_eq!(vpn.learned_from(P8), 2);
        let (kept, gone) =
            vpn.peer_restarting(P8, &[(Afi::IPV4, Safi::MPLS_VPN)], &mut routes, &mut fib);
        assert_eq!((kept, gone), (2, 0));
        assert_eq!(
            installed(&mut routes, &mut fib),
            vec![3008],
            "still forwarding while it restarts"
        );
        assert_eq!(vpn.stale_from(P8), 2);
        // Back: it re-announces one route, then End-of-RIB.
        vpn.peer_up(P8, 65001, Ipv4Addr::new(192, 0, 2, 8));
        vpn.on_update(
            P8,
            &update(8, 3008, [192, 0, 2, 8], false),
            &mut routes,
            &mut fib,
        );
        assert_eq!(vpn.stale_from(P8), 1);
        let eor = &Vpn::end_of_rib_markers(&[(Afi::IPV4, Safi::MPLS_VPN)])[0];
        let Message::Update(eor) = eor else {
            panic!("update")
        };
        assert_eq!(Vpn::end_of_rib(eor), Some((Afi::IPV4, Safi::MPLS_VPN)));
        assert_eq!(
            Vpn::end_of_rib(&update(8, 3008, [192, 0, 2, 8], true)),
            None
        );
        assert_eq!(
            vpn.sweep_stale(P8, Some(Afi::IPV4), &mut routes, &mut fib),
            1
        );
        assert_eq!(vpn.learned_from(P8), 1);
        assert_eq!(installed(&mut routes, &mut fib), vec![3008]);
        // Restarting without the family kept: everything goes at once.
        let (kept, gone) = vpn.peer_restarting(P8, &[], &mut routes, &mut fib);
        assert_eq!((kept, gone), (0, 1));
        assert!(installed(&mut routes, &mut fib).is_empty());
    }

    #[test]
    fn vpn_next_hops_of_both_families_give_the_pe() {
        let pe = Some(Ipv4Addr::new(192, 0, 2, 9));
        let mut v4 = vec![0u8; 8];
        v4.extend_from_slice(&[192, 0, 2, 9]);
        assert_eq!(vpn_nexthop(&v4), pe);
        let mut v6 = vec![0u8; 8];
        v6.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped().octets());
        assert_eq!(vpn_nexthop(&v6), pe, "6VPE");
        let mut ll = v6.clone();
        ll.extend_from_slice(&[0u8; 8]);
        ll.extend_from_slice(
            &"fe80::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
        );
        assert_eq!(vpn_nexthop(&ll), pe, "with a link-local next hop");
        let mut native = vec![0u8; 8];
        native.extend_from_slice(
            &"2001:db8::9"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
        );
        assert_eq!(vpn_nexthop(&native), None, "native IPv6 PE: no IPv4 tunnel");
        assert_eq!(vpn_nexthop(&[1, 2, 3]), None);
    }

    #[test]
    fn our_own_routes_reflected_back_or_with_our_as_are_not_used() {
        let (mut vpn, mut routes, mut fib) = setup("");
        // Reflected to us with our own identifier as ORIGINATOR_ID.
        let mine = update_with(
            8,
            3008,
            [192, 0, 2, 8],
            vec![Attr::OriginatorId(Ipv4Addr::new(192, 0, 2, 1))],
        );
        assert_eq!(vpn.on_update(P8, &mine, &mut routes, &mut fib), (0, 0));
        assert!(installed(&mut routes, &mut fib).is_empty());
        // Another originator is fine; then the same prefix with our AS in
        // its path (from outside) withdraws it.
        let other = update_with(
            8,
            3008,
            [192, 0, 2, 8],
            vec![Attr::OriginatorId(Ipv4Addr::new(192, 0, 2, 8))],
        );
        vpn.on_update(P8, &other, &mut routes, &mut fib);
        assert_eq!(installed(&mut routes, &mut fib), vec![3008]);
        let looped = update_with(
            8,
            3008,
            [192, 0, 2, 8],
            vec![Attr::AsPath(vec![AsPathSegment::Sequence(vec![
                65007, 65001,
            ])])],
        );
        assert_eq!(vpn.on_update(P8, &looped, &mut routes, &mut fib), (0, 1));
        assert!(installed(&mut routes, &mut fib).is_empty());
    }

    #[test]
    fn a_route_whose_next_hop_is_0_0_0_0_replaces_and_withdraws() {
        let (mut vpn, mut routes, mut fib) = setup("");
        let good = update(8, 3008, [192, 0, 2, 8], false);
        assert_eq!(vpn.on_update(P8, &good, &mut routes, &mut fib), (1, 0));
        assert_eq!(installed(&mut routes, &mut fib), vec![3008]);
        let zero = update(8, 3009, [0, 0, 0, 0], false);
        assert_eq!(vpn.on_update(P8, &zero, &mut routes, &mut fib), (0, 1));
        assert!(installed(&mut routes, &mut fib).is_empty());
        assert_eq!(vpn.learned(), 0);
    }

    #[test]
    fn the_rib_keeps_paths_per_prefix_through_every_change() {
        let mut rib = Rib::default();
        let path = Arc::new(PathInfo {
            rts: vec![],
            vrfs: vec![],
            local_pref: 100,
            as_path_len: 0,
            origin: 0,
            med: 0,
            neighbor_as: 0,
            ebgp: false,
            router_id: 0,
            cluster_len: 0,
        });
        let (p8, p9) = (rib.peer_index(P8), rib.peer_index(P9));
        assert_eq!(rib.peer_index(P8), p8, "one index per peer");
        assert_eq!(rib.peer_addr(p9), P9);
        let rd = |n| RouteDistinguisher::as2(65001, n);
        let mut l = |peer: u32, rd: RouteDistinguisher, label: u32| Learned {
            set: rib.new_set(path.clone(), rd, peer),
            label,
            pe: NonZeroU32::MIN.saturating_add(0xc000_0208),
        };
        let p = Prefix::new("10.9.0.0".parse().expect("ip"), 24).expect("prefix");
        let (a, b, c, d) = (
            l(p8, rd(1), 1),
            l(p8, rd(1), 2),
            l(p9, rd(1), 3),
            l(p8, rd(2), 4),
        );
        assert!(rib.insert(p, a).is_none());
        assert_eq!(rib.insert(p, b).map(|x| x.label()), Some(1));
        assert_eq!(rib.sets[a.set].refs, 0, "a replaced path frees its set");
        assert!(rib.insert(p, c).is_none());
        assert!(rib.insert(p, d).is_none());
        assert_eq!(rib.len(), 3);
        let mut labels: Vec<u32> = rib.paths(&p).iter().map(|x| x.label()).collect();
        labels.sort_unstable();
        assert_eq!(labels, vec![2, 3, 4]);
        assert_eq!(rib.remove(&p, p9, &rd(1)).map(|x| x.label()), Some(3));
        assert!(rib.remove(&p, p9, &rd(1)).is_none());
        assert_eq!(rib.remove(&p, p8, &rd(2)).map(|x| x.label()), Some(4));
        assert_eq!(rib.paths(&p).len(), 1);
        rib.for_each_mut(|_, _, l| l.set_stale(true));
        assert!(rib.iter().all(|(_, _, l)| l.stale() && l.label() == 2));
        assert_eq!(rib.remove(&p, p8, &rd(1)).map(|x| x.label()), Some(2));
        assert_eq!(rib.len(), 0);
        assert!(rib.paths(&p).is_empty());
        assert_eq!(rib.iter().count(), 0);
        // Every set is free again, and a new one reuses a slot.
        assert!(rib.sets.iter().all(|s| s.refs == 0));
        let n = rib.sets.slots();
        rib.new_set(path.clone(), rd(3), p8);
        assert_eq!(rib.sets.slots(), n);
        // Installations in one VRF inline, in several in a list, freed.
        let nh = |n| NexthopId::new(n).expect("id");
        let mut inst = Installed::default();
        let mut lists = Slab::default();
        inst.set(&mut lists, &[(3, nh(0))]);
        assert!(matches!(inst, Installed::One(3, _)));
        assert_eq!(inst.iter(&lists).collect::<Vec<_>>(), vec![(3, nh(0))]);
        inst.set(&mut lists, &[(3, nh(7)), (4, nh(8))]);
        assert_eq!(
            inst.iter(&lists).collect::<Vec<_>>(),
            vec![(3, nh(7)), (4, nh(8))]
        );
        inst.set(&mut lists, &[]);
        assert!(inst.is_none());
        assert_eq!(lists.free_slots(), 1, "the list is freed");
        // A path of 12 bytes, and an installation, per prefix: 28 bytes
        // with an IPv4 key.
        assert_eq!(std::mem::size_of::<Learned>(), 12);
        assert_eq!(std::mem::size_of::<Entry>(), 20);
        assert_eq!(std::mem::size_of::<((u32, u8), Entry)>(), 28);
        assert_eq!(
            Learned {
                set: 0,
                label: 0,
                pe: NonZeroU32::MIN.saturating_add(0xc000_0208)
            }
            .pe(),
            Ipv4Addr::new(192, 0, 2, 9)
        );
    }

    #[test]
    fn route_targets_print_in_their_configured_form() {
        assert_eq!(rt_text(&[0, 2, 0xfd, 0xe9, 0, 0, 0, 100]), "65001:100");
        assert_eq!(rt_text(&[1, 2, 192, 0, 2, 1, 0, 7]), "192.0.2.1:7");
    }
}
