//! vpnfwd peering with BIRD 2 (Debian's bird2): BIRD's static VPNv4 route
//! (exported with `next hop keep`, so its label survives, and a route
//! target added by filter) is imported and forwarded with its label; our
//! route lands in BIRD's vpn4 table with its RD, label and target.
//!
//! ```text
//!  h1 (10.1.1.1) ── p [vpnfwd PE 192.0.2.1] core ══ core [BIRD 192.0.2.9]
//! ```

use std::time::Duration;
use vpnfwd_tests::Lab;

mod common;

use common::tmp;

const BIRD_CONF: &str = "
router id 192.0.2.9;
vpn4 table vpntab;
protocol device { }
protocol static st {
  vpn4 { table vpntab; };
  route 65001:9 10.9.0.0/24 via 192.0.2.9 mpls 3000;
}
protocol bgp tovpnfwd {
  local 192.0.2.9 as 65001;
  neighbor 192.0.2.1 as 65001;
  vpn4 mpls {
    table vpntab;
    import all;
    export filter { bgp_ext_community.add((rt, 65001, 100)); accept; };
    next hop keep;
  };
}
";

#[test]
fn vpnv4_routes_flow_both_ways_with_bird() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: bird,
        h1,
    } = common::pe_and_peer("bird", true);
    let h1 = h1.expect("host");
    let bconf = tmp("bird.conf");
    std::fs::write(&bconf, BIRD_CONF).expect("bird config");
    let ctl = tmp("bird.ctl");
    let ctl_s = ctl.to_str().expect("utf-8").to_string();
    let blog = tmp("bird.log");
    lab.spawn(
        &bird,
        &[
            "bird",
            "-f",
            "-c",
            bconf.to_str().expect("utf-8"),
            "-s",
            &ctl_s,
        ],
        &blog,
    )
    .expect("bird");
    let log = common::start_pe(&mut lab, &pe, "bird-pe", false);
    let birdc = |args: &[&str]| {
        let mut a = vec!["birdc", "-s", ctl_s.as_str()];
        a.extend_from_slice(args);
        lab.stdout(&bird, &a)
    };
    let text = || {
        format!(
            "vpnfwd:\n{}\nbird:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(&blog).unwrap_or_default()
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(40), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("announced=1")),
        "vpnfwd did not learn BIRD's route\n{}\n{}",
        text(),
        birdc(&["show", "protocols", "all", "tovpnfwd"])
    );
    // Our route in BIRD's vpn4 table, with RD, label and target.
    let ours = || {
        birdc(&[
            "show",
            "route",
            "table",
            "vpntab",
            "all",
            "65001:1",
            "10.1.1.1/32",
        ])
    };
    assert!(
        Lab::wait_until(Duration::from_secs(10), || ours()
            .contains("BGP.mpls_label_stack: 100")),
        "BIRD lacks our route:\n{}\n{}",
        ours(),
        text()
    );
    let r = ours();
    assert!(
        r.contains("BGP.ext_community: (rt, 65001, 100)")
            && r.contains("BGP.next_hop: 192.0.2.1")
            && r.contains("65001:1 10.1.1.1/32"),
        "fields of our route in BIRD: {r}"
    );
    // BIRD's route forwarded with its label.
    assert!(
        Lab::wait_until(Duration::from_secs(10), || lab
            .succeeds(&h1, &["ping", "-c", "1", "-W", "1", "10.1.1.254"])),
        "gateway"
    );
    let cap = lab
        .capture(&bird, "core", Duration::from_secs(3), 200)
        .expect("capture");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let _ = lab.succeeds(&h1, &["ping", "-c", "1", "-W", "1", "10.9.0.5"]);
    }
    let labels: Vec<u32> = cap
        .join()
        .expect("capture")
        .iter()
        .filter(|f| f.get(12..14) == Some(&[0x88, 0x47]))
        .filter_map(|f| {
            f.get(14..18)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) >> 12)
        })
        .collect();
    assert!(
        labels.contains(&3000),
        "no frame with BIRD's label 3000: {labels:?}\n{}",
        text()
    );
}

const BIRD_CONF_V6: &str = "
router id 192.0.2.9;
vpn6 table vpntab6;
ipv6 table igp6;
protocol device { }
protocol static st6 {
  vpn6 { table vpntab6; };
  route 65001:9 2001:db8:9::/64 via ::ffff:192.0.2.9 mpls 3100;
}
protocol bgp tovpnfwd {
  local 192.0.2.9 as 65001;
  neighbor 192.0.2.1 as 65001;
  vpn6 mpls {
    table vpntab6;
    igp table igp6;
    import all;
    export filter { bgp_ext_community.add((rt, 65001, 100)); accept; };
    next hop keep;
    extended next hop on;
  };
}
";

/// VPNv6 (6VPE) both ways with BIRD (`extended next hop on`, which BIRD
/// needs for IPv4 next hops of IPv6 routes): BIRD holds our IPv6 route
/// with its RD, label, target and next hop, and we import BIRD's.
#[test]
fn vpnv6_routes_flow_both_ways_with_bird() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: bird,
        ..
    } = common::pe_and_peer("bird6", false);
    let bconf = tmp("bird6.conf");
    std::fs::write(&bconf, BIRD_CONF_V6).expect("bird config");
    let ctl = tmp("bird6.ctl");
    let ctl_s = ctl.to_str().expect("utf-8").to_string();
    let blog = tmp("bird6.log");
    lab.spawn(
        &bird,
        &[
            "bird",
            "-f",
            "-c",
            bconf.to_str().expect("utf-8"),
            "-s",
            &ctl_s,
        ],
        &blog,
    )
    .expect("bird");
    let log = common::start_pe_with(&mut lab, &pe, "bird6-pe", &common::pe_config_v6(false));
    let table = || {
        lab.stdout(
            &bird,
            &[
                "birdc", "-s", &ctl_s, "show", "route", "table", "vpntab6", "all",
            ],
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(30), || table()
            .contains("65001:1 2001:db8:1::1/128")),
        "BIRD lacks our VPNv6 route:\n{}\nvpnfwd:\n{}\nbird:\n{}",
        table(),
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(&blog).unwrap_or_default()
    );
    let t = table();
    let ours = &t[t.find("65001:1 2001:db8:1::1/128").unwrap_or(0)..];
    for want in [
        "BGP.next_hop: 192.0.2.1",
        "(rt, 65001, 100)",
        "BGP.mpls_label_stack: 100",
    ] {
        assert!(ours.contains(want), "BIRD's view lacks {want:?}:\n{t}");
    }
    let routes = || {
        lab.exec(
            &pe,
            &[
                common::VPNFWD,
                "route",
                "list",
                "--family",
                "vpnv6",
                "--json",
            ],
        )
        .ok()
        .and_then(|o| serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).ok())
        .unwrap_or_default()
    };
    assert!(
        Lab::wait_until(Duration::from_secs(20), || routes()
            .iter()
            .any(|r| r["prefix"] == "2001:db8:9::/64")),
        "we lack BIRD's VPNv6 route: {:?}",
        routes()
    );
    let r = routes()
        .into_iter()
        .find(|r| r["prefix"] == "2001:db8:9::/64")
        .expect("route");
    assert_eq!(r["rd"], "65001:9", "{r}");
    assert_eq!(r["label"], 3100, "{r}");
    assert_eq!(r["nexthop"], "192.0.2.9", "{r}");
    assert_eq!(r["vrfs"], serde_json::json!([1]), "{r}");
}
