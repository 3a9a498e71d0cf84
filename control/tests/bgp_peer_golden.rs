//! Golden vectors from real BGP speakers: GoBGP 3.10, BIRD 2.0.12 and FRR
//! 8.4 (Debian 12) each open a session to a recorder built on our codec,
//! which answers their OPEN and keeps every message they send — OPEN,
//! KEEPALIVE, UPDATEs with VPNv4/VPNv6 routes and path attributes,
//! End-of-RIB. Every message must decode and re-encode byte for byte.
//! With `VPNFWD_GOLDEN_OUT=<dir>` the captures are written there as
//! `<speaker>.hex` (the files under `control/testdata/peers/`, which
//! `bgp_wire.rs` replays offline and the fuzzer takes as seeds).

mod common;

use common::tmp;
use control::bgp::wire::nlri::{Afi, Safi};
use control::bgp::wire::{self, Capability, Context, Message, Open};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use vpnfwd_tests::Lab;

/// What a recording holds: (raw message, the context it decodes under).
type Recording = Result<Vec<(Vec<u8>, Context)>, String>;

/// Accept one session on port 179 and record for `secs` after the peer's
/// OPEN: (raw message, the context it decodes under).
fn record(secs: u64) -> Recording {
    let l = TcpListener::bind("0.0.0.0:179").map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(40) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(format!("no connection: {e}")),
        }
    };
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let ours = Open::new(
        65001,
        90,
        "192.0.2.1".parse().expect("ip"),
        vec![
            Capability::Multiprotocol(Afi::IPV4, Safi::MPLS_VPN),
            Capability::Multiprotocol(Afi::IPV6, Safi::MPLS_VPN),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
        ],
    );
    let plain = Context::default();
    s.write_all(&wire::encode(&Message::Open(ours), &plain)?)
        .map_err(|e| e.to_string())?;
    s.write_all(&wire::encode(&Message::Keepalive, &plain)?)
        .map_err(|e| e.to_string())?;
    let mut ctx = Context::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut until: Option<Instant> = None;
    let mut chunk = [0u8; 65536];
    let mut last_ka = Instant::now();
    while until.is_none_or(|u| Instant::now() < u) {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("no OPEN within a minute".into());
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if last_ka.elapsed() > Duration::from_secs(5) {
            let _ = s.write_all(&wire::encode(&Message::Keepalive, &ctx)?);
            last_ka = Instant::now();
        }
        while let Ok(Some(len)) = wire::frame_len(&buf) {
            if buf.len() < len {
                break;
            }
            let raw: Vec<u8> = buf.drain(..len).collect();
            let msg = wire::decode(&raw, &ctx).map_err(|n| format!("decode: {}", n.reason))?;
            if let Message::Open(o) = &msg {
                ctx.four_octet_as = o
                    .capabilities()
                    .any(|c| matches!(c, Capability::FourOctetAs(_)));
                out.push((raw, Context::default()));
                until = Some(Instant::now() + Duration::from_secs(secs));
                continue;
            }
            out.push((raw, ctx.clone()));
        }
    }
    Ok(out)
}

fn check(speaker: &str, msgs: &[(Vec<u8>, Context)]) -> Vec<String> {
    let mut kinds = Vec::new();
    for (raw, ctx) in msgs {
        let m = wire::decode(raw, ctx)
            .unwrap_or_else(|n| panic!("{speaker}: decode {}: {}", hex(raw), n.reason));
        let again =
            wire::encode(&m, ctx).unwrap_or_else(|e| panic!("{speaker}: encode {m:?}: {e}"));
        assert_eq!(
            hex(&again),
            hex(raw),
            "{speaker}: re-encoding differs for {m:?}"
        );
        kinds.push(match &m {
            Message::Open(_) => "open".to_string(),
            Message::Keepalive => "keepalive".to_string(),
            Message::Update(u) => {
                let codes: Vec<String> =
                    u.attrs.iter().map(|a| a.attr.code().to_string()).collect();
                format!("update[{}]", codes.join(","))
            }
            Message::Notification { .. } => "notification".to_string(),
            Message::RouteRefresh { .. } => "route-refresh".to_string(),
        });
    }
    if let Ok(dir) = std::env::var("VPNFWD_GOLDEN_OUT") {
        let mut text = format!(
            "# BGP messages {speaker} sent to a vpnfwd recorder (AS 65001, VPNv4+VPNv6,\n# route refresh, 4-octet AS offered); one per line: hex, then 4 if it decodes\n# with 4-octet AS numbers. Captured by control/tests/bgp_peer_golden.rs.\n"
        );
        for (raw, ctx) in msgs {
            text.push_str(&format!(
                "{} {}\n",
                hex(raw),
                if ctx.four_octet_as { 4 } else { 2 }
            ));
        }
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{speaker}.hex")),
            text,
        )
        .expect("write captures");
    }
    kinds
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn recorder(lab: &Lab, pe: &str, secs: u64) -> std::thread::JoinHandle<Recording> {
    lab.in_ns(pe, move || record(secs))
        .expect("recorder thread")
}

#[test]
fn gobgp_messages_reencode_byte_identically() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab, pe, peer, ..
    } = common::pe_and_peer("gold-gobgp", false);
    let rec = recorder(&lab, &pe, 6);
    common::spawn_gobgpd(&mut lab, &peer, "gold-gobgpd", common::GOBGP_V4_V6);
    // Routes with a spread of attributes, in before the session comes up.
    for args in [
        &[
            "-a",
            "vpnv4",
            "add",
            "10.9.0.0/24",
            "label",
            "3000",
            "rd",
            "65001:9",
            "rt",
            "65001:100",
            "nexthop",
            "192.0.2.9",
            "med",
            "10",
            "local-pref",
            "200",
            "community",
            "65001:7",
        ][..],
        &[
            "-a",
            "vpnv4",
            "add",
            "10.8.0.0/16",
            "label",
            "3001",
            "rd",
            "192.0.2.9:3",
            "rt",
            "65001:100",
            "rt",
            "192.0.2.9:5",
            "nexthop",
            "192.0.2.9",
            "aspath",
            "65002,65003",
        ][..],
        &[
            "-a",
            "vpnv6",
            "add",
            "2001:db8:9::/64",
            "label",
            "3100",
            "rd",
            "65001:9",
            "rt",
            "65001:100",
            "nexthop",
            "::ffff:192.0.2.9",
        ][..],
    ] {
        let mut a = vec!["gobgp", "global", "rib"];
        a.extend_from_slice(args);
        let _ = Lab::wait_until(Duration::from_secs(5), || lab.succeeds(&peer, &a));
    }
    let msgs = rec.join().expect("recorder").expect("recording");
    let kinds = check("gobgpd-3.10", &msgs);
    assert!(kinds.iter().any(|k| k == "open"), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .filter(|k| k.starts_with("update[") && k.contains("14"))
            .count()
            >= 2,
        "VPN UPDATEs: {kinds:?}"
    );
}

#[test]
fn bird_messages_reencode_byte_identically() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab, pe, peer, ..
    } = common::pe_and_peer("gold-bird", false);
    let rec = recorder(&lab, &pe, 6);
    let conf = tmp("gold-bird.conf");
    std::fs::write(
        &conf,
        "
router id 192.0.2.9;
vpn4 table vpntab;
vpn6 table vpntab6;
protocol device { }
protocol static st4 {
  vpn4 { table vpntab; };
  route 65001:9 10.9.0.0/24 via 192.0.2.9 mpls 3000;
  route 65001:9 10.7.0.0/25 via 192.0.2.9 mpls 3002;
}
protocol static st6 {
  vpn6 { table vpntab6; };
  route 65001:9 2001:db8:9::/64 via ::ffff:192.0.2.9 mpls 3100;
}
protocol bgp rec {
  local 192.0.2.9 as 65001;
  neighbor 192.0.2.1 as 65001;
  vpn4 mpls {
    table vpntab;
    import none;
    export filter { bgp_ext_community.add((rt, 65001, 100)); bgp_med = 20; bgp_community.add((65001, 7)); accept; };
    next hop keep;
  };
  vpn6 mpls {
    table vpntab6;
    import none;
    export filter { bgp_ext_community.add((rt, 65001, 100)); accept; };
    next hop keep;
  };
}
",
    )
    .expect("config");
    let ctl = tmp("gold-bird.ctl");
    lab.spawn(
        &peer,
        &[
            "bird",
            "-f",
            "-c",
            conf.to_str().expect("utf-8"),
            "-s",
            ctl.to_str().expect("utf-8"),
        ],
        &tmp("gold-bird.log"),
    )
    .expect("bird");
    let msgs = rec.join().expect("recorder").expect("recording");
    let kinds = check("bird-2.0.12", &msgs);
    assert!(kinds.iter().any(|k| k == "open"), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .any(|k| k.starts_with("update[") && k.contains("14")),
        "VPN UPDATEs: {kinds:?}\n{}",
        std::fs::read_to_string(tmp("gold-bird.log")).unwrap_or_default()
    );
}

#[test]
fn frr_messages_reencode_byte_identically() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab, pe, peer, ..
    } = common::pe_and_peer("gold-frr", false);
    let rec = recorder(&lab, &pe, 5);
    common::spawn_frr_bgpd(
        &mut lab,
        &peer,
        "gold-frr",
        "
hostname frr
router bgp 65001
 bgp router-id 192.0.2.9
 no bgp default ipv4-unicast
 neighbor 192.0.2.1 remote-as 65001
 address-family ipv4 vpn
  neighbor 192.0.2.1 activate
 exit-address-family
 address-family ipv6 vpn
  neighbor 192.0.2.1 activate
 exit-address-family
!
",
    );
    let msgs = rec.join().expect("recorder").expect("recording");
    // FRR without zebra originates no VPN route: its OPEN (with its many
    // capabilities: FQDN, extended next hop, graceful restart...) and
    // KEEPALIVEs.
    let kinds = check("frr-8.4", &msgs);
    assert!(kinds.iter().any(|k| k == "open"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "keepalive"), "{kinds:?}");
}
