//! Any sequence of VPN route announcements and withdrawals from two peers,
//! with sessions dropping, peers restarting gracefully and stale routes
//! swept, through the VPN RIB and the forwarding tables. Nothing may panic;
//! after every step the RIB holds exactly the paths a model of RFC 4364 /
//! 4724 semantics holds, and each VRF's forwarding table answers for an
//! address exactly when some path the VRF imports covers it; once both
//! peers are gone, nothing is left behind: no path, no nexthop, no route.
#![no_main]

use control::bgp::wire::attr::{AsPathSegment, PathAttr};
use control::bgp::wire::nlri::Nlri;
use control::bgp::wire::{Afi, Attr, Origin, Prefix, RouteDistinguisher, Safi, Update, VpnPrefix};
use control::config::Config;
use control::vpn::Vpn;
use dataplane::fib::VrfId;
use dataplane::wire::mpls::Label;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Three VRFs: one importing 65001:1, one 65001:2, one 65001:1 and 65001:3.
const CFG: &str = r#"
[[vrf]]
name = "a"
import_targets = ["65001:1"]

[[vrf]]
name = "b"
import_targets = ["65001:2"]

[[vrf]]
name = "c"
import_targets = ["65001:1", "65001:3"]

[uplink]
interface = "core"
mac = "02:00:00:00:00:01"
address = "192.0.2.1"

[bgp]
asn = 65001
router_id = "192.0.2.1"
multipath = true

[[bgp.peer]]
address = "192.0.2.8"
asn = 65001

[[bgp.peer]]
address = "192.0.2.9"
asn = 65001
"#;

/// The targets each VRF imports (by VRF id − 1), as target numbers.
const IMPORTS: [&[u32]; 3] = [&[1], &[2], &[1, 3]];

const PEERS: [[u8; 4]; 2] = [[192, 0, 2, 8], [192, 0, 2, 9]];

/// A path as the model holds it.
#[derive(Clone, Debug)]
struct Path {
    targets: Vec<u32>,
    stale: bool,
}

/// Bytes read one at a time, zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

fn prefix(inp: &mut Input<'_>) -> Prefix {
    let (a, b, c) = (inp.byte(), inp.byte(), inp.byte());
    if c & 0x80 == 0 {
        let len = [8u8, 16, 17, 18, 19, 24, 30, 32][usize::from(c & 7)];
        let addr = u32::from_be_bytes([10, a, b & 0xf0, c & 0x70]);
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        Prefix::new(Ipv4Addr::from(addr & mask).into(), len).expect("prefix")
    } else {
        let len = [32u8, 40, 48, 56, 64, 96, 127, 128][usize::from(c & 7)];
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        o[4] = a;
        o[5] = b;
        o[15] = c & 0x70;
        let addr = u128::from_be_bytes(o);
        let mask = u128::MAX << (128 - u32::from(len));
        Prefix::new(Ipv6Addr::from(addr & mask).into(), len).expect("prefix")
    }
}

fn rt(n: u32) -> [u8; 8] {
    let mut b = [0u8, 2, 0xfd, 0xe9, 0, 0, 0, 0];
    b[4..].copy_from_slice(&n.to_be_bytes());
    b
}

/// An MP_UNREACH_NLRI withdrawing `p` under RD 65001:`rd`.
fn unreach(p: Prefix, rd: u32) -> Attr {
    Attr::MpUnreach {
        afi: if p.addr.is_ipv6() {
            Afi::IPV6
        } else {
            Afi::IPV4
        },
        safi: Safi::MPLS_VPN,
        nlri: vec![Nlri::Vpn(VpnPrefix {
            path_id: None,
            label: Label::new(16).expect("label"),
            rd: RouteDistinguisher::as2(65001, rd),
            prefix: p,
        })],
    }
}

/// The first address of `p` and whether `q` covers it.
fn covers(q: &Prefix, p: &Prefix) -> bool {
    match (q.addr, p.addr) {
        (IpAddr::V4(q4), IpAddr::V4(p4)) => {
            let m = if q.len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(q.len))
            };
            u32::from(p4) & m == u32::from(q4)
        }
        (IpAddr::V6(q6), IpAddr::V6(p6)) => {
            let m = if q.len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(q.len))
            };
            u128::from(p6) & m == u128::from(q6)
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config::parse(CFG).expect("config");
    let control::daemon::Built {
        mut fib,
        mut routes,
        ..
    } = control::daemon::build(&cfg).expect("tables");
    let mut vpn = Vpn::new(&cfg);
    let peers: Vec<IpAddr> = PEERS.iter().map(|p| IpAddr::from(*p)).collect();
    for (i, p) in peers.iter().enumerate() {
        vpn.peer_up(*p, 65001, Ipv4Addr::new(192, 0, 2, 8 + i as u8));
    }
    let mut model: HashMap<(usize, u32, Prefix), Path> = HashMap::new();
    let mut seen: Vec<Prefix> = Vec::new();
    let mut inp = Input(data);
    let mut steps = 0;
    while !inp.0.is_empty() && steps < 64 {
        steps += 1;
        let op = inp.byte();
        let pi = usize::from(op & 1);
        let peer = peers[pi];
        // Some steps run inside a batch of forwarding-table changes, as the
        // daemon's UPDATEs do.
        let batch = op & 0x80 != 0;
        if batch {
            fib.begin_batch();
        }
        match op >> 1 & 7 {
            // An UPDATE: announcements (or, with PE 0.0.0.0 or
            // treat-as-withdraw, withdrawals) of one family.
            0..=3 => {
                let flags = inp.byte();
                let n = 1 + usize::from(inp.byte() % 6);
                let targets: Vec<u32> = (1..=3).filter(|t| flags & (1 << t) != 0).collect();
                let pe = match flags >> 4 & 3 {
                    0 => [0, 0, 0, 0],
                    1 => [192, 0, 2, 8],
                    2 => [192, 0, 2, 9],
                    _ => [192, 0, 2, 10],
                };
                let withdraw = flags & 0x40 != 0 && flags & 0x80 != 0;
                let mut nlri = Vec::new();
                let first = prefix(&mut inp);
                let v6 = first.addr.is_ipv6();
                for k in 0..n {
                    let p = if k == 0 { first } else { prefix(&mut inp) };
                    if p.addr.is_ipv6() != v6 {
                        continue;
                    }
                    let rd = 1 + u32::from(inp.byte() % 3);
                    let label = 16 + u32::from(inp.byte() % 4);
                    nlri.push(Nlri::Vpn(VpnPrefix {
                        path_id: None,
                        label: Label::new(label).expect("label"),
                        rd: RouteDistinguisher::as2(65001, rd),
                        prefix: p,
                    }));
                    seen.push(p);
                    let key = (pi, rd, p);
                    if withdraw || pe == [0, 0, 0, 0] {
                        model.remove(&key);
                    } else {
                        model.insert(
                            key,
                            Path {
                                targets: targets.clone(),
                                stale: false,
                            },
                        );
                    }
                }
                let afi = if v6 { Afi::IPV6 } else { Afi::IPV4 };
                let mut nh = vec![0u8; 8];
                if v6 {
                    nh.extend_from_slice(&Ipv4Addr::from(pe).to_ipv6_mapped().octets());
                } else {
                    nh.extend_from_slice(&pe);
                }
                let mut u = Update::with_attrs(vec![
                    Attr::MpReach {
                        afi,
                        safi: Safi::MPLS_VPN,
                        nexthop: nh,
                        nlri,
                    },
                    Attr::Origin(if flags & 1 == 0 {
                        Origin::Igp
                    } else {
                        Origin::Incomplete
                    }),
                    Attr::AsPath(if flags & 2 == 0 {
                        vec![]
                    } else {
                        vec![AsPathSegment::Sequence(vec![65002])]
                    }),
                    Attr::LocalPref(100 + u32::from(op >> 4 & 1)),
                    Attr::Med(u32::from(op >> 5)),
                ]);
                u.attrs.push(PathAttr {
                    flags: 0xc0,
                    attr: Attr::ExtCommunities(targets.iter().map(|t| rt(*t)).collect()),
                });
                if flags & 0x40 != 0 && flags & 0x80 != 0 {
                    u.treat_as_withdraw = true;
                }
                // Sometimes the same UPDATE also withdraws a route of the
                // family (after its announcements, in attribute order).
                if op & 0x40 != 0 {
                    let p = prefix(&mut inp);
                    let rd = 1 + u32::from(inp.byte() % 3);
                    if p.addr.is_ipv6() == v6 {
                        seen.push(p);
                        model.remove(&(pi, rd, p));
                        u.attrs.push(PathAttr {
                            flags: 0x90,
                            attr: unreach(p, rd),
                        });
                    }
                }
                vpn.on_update(peer, &u, &mut routes, &mut fib);
            }
            // A withdrawal of one prefix under one RD.
            4 => {
                let p = prefix(&mut inp);
                let rd = 1 + u32::from(inp.byte() % 3);
                seen.push(p);
                model.remove(&(pi, rd, p));
                let u = Update::with_attrs(vec![unreach(p, rd)]);
                vpn.on_update(peer, &u, &mut routes, &mut fib);
            }
            // The session drops without graceful restart.
            5 => {
                vpn.peer_down(peer, &mut routes, &mut fib);
                model.retain(|k, _| k.0 != pi);
                vpn.peer_up(peer, 65001, Ipv4Addr::new(192, 0, 2, 8 + pi as u8));
            }
            // The peer restarts gracefully, keeping the families chosen.
            6 => {
                let f = inp.byte();
                let mut families = Vec::new();
                if f & 1 != 0 {
                    families.push((Afi::IPV4, Safi::MPLS_VPN));
                }
                if f & 2 != 0 {
                    families.push((Afi::IPV6, Safi::MPLS_VPN));
                }
                vpn.peer_restarting(peer, &families, &mut routes, &mut fib);
                model.retain(|k, _| {
                    k.0 != pi
                        || families.contains(&(
                            if k.2.addr.is_ipv6() {
                                Afi::IPV6
                            } else {
                                Afi::IPV4
                            },
                            Safi::MPLS_VPN,
                        ))
                });
                for (k, path) in model.iter_mut() {
                    if k.0 == pi {
                        path.stale = true;
                    }
                }
                vpn.peer_up(peer, 65001, Ipv4Addr::new(192, 0, 2, 8 + pi as u8));
            }
            // End-of-RIB (or the restart timer): stale routes go.
            _ => {
                let f = inp.byte() % 3;
                let family = [None, Some(Afi::IPV4), Some(Afi::IPV6)][usize::from(f)];
                vpn.sweep_stale(peer, family, &mut routes, &mut fib);
                model.retain(|k, path| {
                    let fam = if k.2.addr.is_ipv6() {
                        Afi::IPV6
                    } else {
                        Afi::IPV4
                    };
                    !(k.0 == pi && path.stale && family.is_none_or(|x| x == fam))
                });
            }
        }
        if batch {
            fib.end_batch();
        }
        check(&vpn, &mut fib, &model, &seen);
    }
    for p in &peers {
        vpn.peer_down(*p, &mut routes, &mut fib);
    }
    model.clear();
    check(&vpn, &mut fib, &model, &seen);
    assert_eq!(routes.nexthops_in_use(), 0, "a nexthop left behind");
});

/// The RIB holds the model's paths, and each VRF answers for the first
/// address of every prefix seen exactly when a path it imports covers it.
fn check(
    vpn: &Vpn,
    fib: &mut dataplane::fib::Fib,
    model: &HashMap<(usize, u32, Prefix), Path>,
    seen: &[Prefix],
) {
    assert_eq!(vpn.learned(), model.len(), "paths held: {model:?}");
    fib.wait_applied();
    for (v, imports) in IMPORTS.iter().enumerate() {
        let vrf = VrfId(v as u32 + 1);
        for p in seen {
            let want = model.iter().any(|(k, path)| {
                covers(&k.2, p) && path.targets.iter().any(|t| imports.contains(t))
            });
            let got = match p.addr {
                IpAddr::V4(a) => fib.lookup_v4(vrf, a),
                IpAddr::V6(a) => fib.lookup_v6(vrf, a),
            };
            assert_eq!(got.is_some(), want, "VRF {v}, {p}: {model:?}");
        }
    }
}
