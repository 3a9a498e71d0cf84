//! BGP/MPLS IP-VPN behaviour (RFC 4364): VRFs import the VPN routes whose
//! route targets they list (§4.3.1) and export their local routes as
//! labeled VPN routes with their route distinguisher and export targets
//! (§4.3.2, §4.3.4).
//!
//! Routes learned from peers are kept per (prefix, peer, RD). For each VRF
//! and prefix, every importable route is a candidate; candidates leading to
//! distinct (label, PE) pairs share the prefix as an ECMP group, until
//! best-path selection lands in the RIB.

use crate::bgp::wire::attr::{code, Attr};
use crate::bgp::wire::nlri::{Afi, Nlri, Safi};
use crate::bgp::wire::{
    AsPathSegment, Message, Origin, Prefix, RouteDistinguisher, Update, VpnPrefix,
};
use crate::config::{parse_prefix, parse_rd, parse_route_target, Config, EncapKind};
use crate::daemon::RouteSet;
use dataplane::fib::{Fib, VrfId};
use dataplane::wire::mpls::Label;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

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

#[derive(Debug, Clone, PartialEq, Eq)]
struct Learned {
    label: u32,
    pe: Ipv4Addr,
    rts: Vec<[u8; 8]>,
}

/// The VPN layer between the BGP sessions and the tables.
#[derive(Debug)]
pub struct Vpn {
    vrfs: Vec<VrfVpn>,
    /// VRF indices importing each route target.
    by_rt: std::collections::HashMap<[u8; 8], Vec<usize>>,
    /// VRF indices each prefix is installed in.
    installed_in: std::collections::HashMap<Prefix, Vec<usize>>,
    learned: BTreeMap<(Prefix, IpAddr, RouteDistinguisher), Learned>,
    encap: EncapKind,
    me: Option<Ipv4Addr>,
    local_as: u32,
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
        let mut by_rt: std::collections::HashMap<[u8; 8], Vec<usize>> =
            std::collections::HashMap::new();
        for (i, v) in vrfs.iter().enumerate() {
            for rt in &v.import {
                by_rt.entry(*rt).or_default().push(i);
            }
        }
        Vpn {
            vrfs,
            by_rt,
            installed_in: std::collections::HashMap::new(),
            learned: BTreeMap::new(),
            encap: cfg.bgp.as_ref().map_or(EncapKind::Mpls, |b| b.encap),
            me: cfg.uplink.as_ref().and_then(|u| u.address),
            local_as: cfg.bgp.as_ref().map_or(0, |b| b.asn),
        }
    }

    /// Routes learned and held.
    pub fn learned(&self) -> usize {
        self.learned.len()
    }

    /// Routes learned from `peer`.
    pub fn learned_from(&self, peer: IpAddr) -> usize {
        self.learned.keys().filter(|(_, p, _)| *p == peer).count()
    }

    /// Every learned route as JSON for the API: prefix, RD, label, next hop,
    /// route targets, peer, and the VRFs it is installed in.
    pub fn routes_json(&self) -> Vec<serde_json::Value> {
        self.learned
            .iter()
            .map(|((prefix, peer, rd), l)| {
                let rts: Vec<String> = l.rts.iter().map(rt_text).collect();
                let vrfs: Vec<u32> = self
                    .installed_in
                    .get(prefix)
                    .map(|v| v.iter().map(|i| self.vrfs[*i].id.0).collect())
                    .unwrap_or_default();
                serde_json::json!({
                    "prefix": prefix.to_string(),
                    "rd": rd.to_string(),
                    "label": l.label,
                    "nexthop": l.pe.to_string(),
                    "route_targets": rts,
                    "peer": peer.to_string(),
                    "vrfs": vrfs,
                })
            })
            .collect()
    }

    /// Re-decide what each VRF that could hold `prefix` installs for it:
    /// the VRFs importing a target of some route for it, and those that hold
    /// it now.
    fn reconcile(&mut self, prefix: Prefix, routes: &mut RouteSet, fib: &mut Fib) {
        let entries: Vec<(IpAddr, RouteDistinguisher, Learned)> = self
            .learned
            .range(
                (
                    prefix,
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    RouteDistinguisher([0; 8]),
                )..,
            )
            .take_while(|((p, ..), _)| *p == prefix)
            .map(|((_, peer, rd), l)| (*peer, *rd, l.clone()))
            .collect();
        let mut vrfs: Vec<usize> = self.installed_in.remove(&prefix).unwrap_or_default();
        for (_, _, l) in &entries {
            for rt in &l.rts {
                if let Some(v) = self.by_rt.get(rt) {
                    vrfs.extend(v);
                }
            }
        }
        vrfs.sort_unstable();
        vrfs.dedup();
        let mut now_in = Vec::new();
        for vi in vrfs {
            let v = &self.vrfs[vi];
            // Every importable route is a candidate; routes to distinct
            // (label, PE) pairs share the traffic (ECMP, e.g. anycast over two
            // RDs) until best-path selection lands.
            let mut members: Vec<(u32, Ipv4Addr, EncapKind)> = entries
                .iter()
                .filter(|(_, _, l)| l.rts.iter().any(|rt| v.import.contains(rt)))
                .map(|(_, _, l)| (l.label, l.pe, self.encap))
                .collect();
            members.sort_by_key(|m| (m.0, m.1));
            members.dedup();
            if !members.is_empty() {
                now_in.push(vi);
            }
            if let Err(e) =
                routes.set_dynamic_multi(fib, v.id, (prefix.addr, prefix.len), &members, self.me)
            {
                tracing::warn!(%prefix, error = %e, "VPN route not installed");
            }
        }
        if !now_in.is_empty() {
            self.installed_in.insert(prefix, now_in);
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
        let rts: Vec<[u8; 8]> = match u.attr(code::EXT_COMMUNITIES) {
            Some(Attr::ExtCommunities(c)) => c.iter().copied().filter(is_route_target).collect(),
            _ => vec![],
        };
        let mut touched: HashSet<Prefix> = HashSet::new();
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
                            if self.learned.remove(&(v.prefix, peer, v.rd)).is_some() {
                                wd += 1;
                            }
                            touched.insert(v.prefix);
                        }
                    }
                }
                Attr::MpReach {
                    safi: Safi::MPLS_VPN,
                    nexthop,
                    nlri,
                    ..
                } => {
                    // VPN next hops carry a zero RD before the address (RFC 4364 §4.3.2).
                    let pe = match nexthop.len() {
                        12 => Some(Ipv4Addr::new(
                            nexthop[8],
                            nexthop[9],
                            nexthop[10],
                            nexthop[11],
                        )),
                        4 => Some(Ipv4Addr::new(
                            nexthop[0], nexthop[1], nexthop[2], nexthop[3],
                        )),
                        _ => None,
                    };
                    for n in nlri {
                        if let Nlri::Vpn(v) = n {
                            touched.insert(v.prefix);
                            match (pe, u.treat_as_withdraw) {
                                (Some(pe), false) => {
                                    self.learned.insert(
                                        (v.prefix, peer, v.rd),
                                        Learned {
                                            label: v.label.value(),
                                            pe,
                                            rts: rts.clone(),
                                        },
                                    );
                                    ann += 1;
                                }
                                _ => {
                                    if self.learned.remove(&(v.prefix, peer, v.rd)).is_some() {
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
        for p in touched {
            self.reconcile(p, routes, fib);
        }
        (ann, wd)
    }

    /// Forget everything `peer` announced.
    pub fn peer_down(&mut self, peer: IpAddr, routes: &mut RouteSet, fib: &mut Fib) -> usize {
        let gone: Vec<(Prefix, IpAddr, RouteDistinguisher)> = self
            .learned
            .keys()
            .filter(|(_, p, _)| *p == peer)
            .copied()
            .collect();
        let prefixes: HashSet<Prefix> = gone.iter().map(|k| k.0).collect();
        for k in &gone {
            self.learned.remove(k);
        }
        for p in prefixes {
            self.reconcile(p, routes, fib);
        }
        gone.len()
    }

    /// The UPDATEs announcing every exporting VRF's local routes to a peer
    /// in `peer_as` (iBGP: LOCAL_PREF and an empty AS_PATH; eBGP: our AS).
    pub fn exports(&self, peer_as: u32) -> Vec<Message> {
        let Some(me) = self.me else { return vec![] };
        let mut out = Vec::new();
        for v in &self.vrfs {
            let (Some(rd), Some(label)) = (v.rd, v.label.and_then(Label::new)) else {
                continue;
            };
            if v.export.is_empty() || v.locals.is_empty() {
                continue;
            }
            for family in [Afi::IPV4, Afi::IPV6] {
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
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn two_pes_announcing_one_prefix_under_two_rds_share_it_by_ecmp() {
        let cfg = Config::parse(CFG).expect("config");
        let crate::daemon::Built {
            mut fib,
            mut routes,
            ..
        } = crate::daemon::build(&cfg).expect("tables");
        let mut vpn = Vpn::new(&cfg);
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
        vpn.peer_down(p9, &mut routes, &mut fib);
        assert_eq!(members(&fib), None, "all gone");
    }

    #[test]
    fn route_targets_print_in_their_configured_form() {
        assert_eq!(rt_text(&[0, 2, 0xfd, 0xe9, 0, 0, 0, 100]), "65001:100");
        assert_eq!(rt_text(&[1, 2, 192, 0, 2, 1, 0, 7]), "192.0.2.1:7");
    }
}
