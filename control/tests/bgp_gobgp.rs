//! vpnfwd peering with GoBGP (Debian's gobgpd): VPNv4 (and, in one test, VPNv6) routes GoBGP
//! announces are imported by route target and forwarded with their label,
//! withdrawals remove them, and vpnfwd's own routes reach GoBGP with their
//! RD, label and route target.
//!
//! ```text
//!  h1 (10.1.1.1) ── p [vpnfwd PE 192.0.2.1] core ══ core [gobgpd 192.0.2.9]
//! ```

use std::time::Duration;
use vpnfwd_tests::Lab;

mod common;

use common::{tmp, VPNFWD};

fn have(prog: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| std::path::Path::new(d).join(prog).exists())
}

#[test]
fn vpnv4_routes_flow_both_ways_with_gobgp() {
    with_gobgp(false);
}

#[test]
fn vpnfwd_accepts_the_session_when_gobgp_connects() {
    with_gobgp(true);
}

fn with_gobgp(passive: bool) {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    assert!(
        have("gobgpd") && have("gobgp"),
        "gobgpd is installed by scripts/setup"
    );
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        h1,
    } = common::pe_and_peer("rr", true);
    let h1 = h1.expect("host");
    let name = if passive { "passive" } else { "active" };
    let gobgp_conf = tmp(&format!("gobgpd-{name}.toml"));
    std::fs::write(
        &gobgp_conf,
        r#"
[global.config]
  as = 65001
  router-id = "192.0.2.9"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#,
    )
    .expect("gobgp config");
    let gobgp_log = tmp(&format!("gobgpd-{name}.log"));
    lab.spawn(
        &rr,
        &[
            "gobgpd",
            "-t",
            "toml",
            "-f",
            gobgp_conf.to_str().expect("utf-8"),
        ],
        &gobgp_log,
    )
    .expect("gobgpd");
    let log = common::start_pe(&mut lab, &pe, &format!("bgp-pe-{name}"), passive);
    let logtext = || {
        format!(
            "vpnfwd:\n{}\ngobgpd:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(&gobgp_log).unwrap_or_default()
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(30), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("BGP session established")),
        "no session\n{}",
        logtext()
    );

    // vpnfwd → GoBGP: our port's address with RD, label and route target.
    let rib = || lab.stdout(&rr, &["gobgp", "global", "rib", "-a", "vpnv4"]);
    assert!(
        Lab::wait_until(Duration::from_secs(10), || rib().contains("10.1.1.1/32")),
        "GoBGP did not get our route:\n{}\n{}",
        rib(),
        logtext()
    );
    let r = rib();
    let line = r
        .lines()
        .find(|l| l.contains("10.1.1.1/32"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("65001:1")
            && line.contains("[100]")
            && line.contains("192.0.2.1")
            && line.contains("65001:100"),
        "fields of our route: {line}"
    );

    // GoBGP → vpnfwd: a VPN route, imported by target and forwarded with its label.
    lab.exec(
        &rr,
        &[
            "gobgp",
            "global",
            "rib",
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
        ],
    )
    .expect("inject");
    assert!(
        Lab::wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("announced=1")),
        "no update\n{}",
        logtext()
    );
    assert!(
        Lab::wait_until(Duration::from_secs(10), || lab
            .succeeds(&h1, &["ping", "-c", "1", "-W", "1", "10.1.1.254"])),
        "gateway"
    );
    let cap = lab
        .capture(&rr, "core", Duration::from_secs(4), 200)
        .expect("capture");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let _ = lab.succeeds(&h1, &["ping", "-c", "1", "-W", "1", "10.9.0.5"]);
    }
    let frames = cap.join().expect("capture");
    let labels: Vec<u32> = frames
        .iter()
        .filter(|f| f.get(12..14) == Some(&[0x88, 0x47]))
        .filter_map(|f| {
            f.get(14..18)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) >> 12)
        })
        .collect();
    assert!(
        labels.contains(&3000),
        "no MPLS frame with label 3000 towards GoBGP's PE: {labels:?}\n{}",
        logtext()
    );

    // The CLI shows the peer and the learned route (through the REST API).
    let cli = |args: &[&str]| {
        let mut a = vec![VPNFWD];
        a.extend_from_slice(args);
        lab.exec(&pe, &a)
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_else(|e| e.0)
    };
    let peers = || cli(&["peer", "list"]);
    assert!(
        Lab::wait_until(Duration::from_secs(5), || peers().contains("Established")),
        "peer list:\n{}",
        peers()
    );
    assert!(
        peers()
            .lines()
            .any(|l| l.starts_with("192.0.2.9") && l.contains("65001")),
        "peer list:\n{}",
        peers()
    );
    let routes = || cli(&["route", "list", "--family", "vpnv4", "--rt", "65001:100"]);
    assert!(
        Lab::wait_until(Duration::from_secs(5), || routes().contains("10.9.0.0/24")),
        "route list:\n{}",
        routes()
    );
    let line = routes()
        .lines()
        .find(|l| l.contains("10.9.0.0/24"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("65001:9")
            && line.contains("3000")
            && line.contains("192.0.2.9")
            && line.contains("[1]"),
        "route line: {line}"
    );
    assert!(
        !cli(&["route", "list", "--rt", "65001:7"]).contains("10.9.0.0/24"),
        "route-target filter"
    );

    // A route target the VRF does not import is not installed.
    lab.exec(
        &rr,
        &[
            "gobgp",
            "global",
            "rib",
            "-a",
            "vpnv4",
            "add",
            "10.8.0.0/24",
            "label",
            "3001",
            "rd",
            "65001:9",
            "rt",
            "65001:999",
            "nexthop",
            "192.0.2.9",
        ],
    )
    .expect("inject");
    // Withdrawal of the first route.
    lab.exec(
        &rr,
        &[
            "gobgp",
            "global",
            "rib",
            "-a",
            "vpnv4",
            "del",
            "10.9.0.0/24",
            "label",
            "3000",
            "rd",
            "65001:9",
        ],
    )
    .expect("withdraw");
    assert!(
        Lab::wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("withdrawn=1")),
        "no withdrawal\n{}",
        logtext()
    );
    let cap = lab
        .capture(&rr, "core", Duration::from_secs(3), 200)
        .expect("capture");
    std::thread::sleep(Duration::from_millis(300));
    for dst in ["10.9.0.5", "10.8.0.5"] {
        let _ = lab.succeeds(&h1, &["ping", "-c", "1", "-W", "1", dst]);
    }
    let frames = cap.join().expect("capture");
    assert!(
        !frames.iter().any(|f| f.get(12..14) == Some(&[0x88, 0x47])),
        "MPLS frames after the withdrawal or for a foreign target\n{}",
        logtext()
    );
}

/// VPNv6 (6VPE, RFC 4659) both ways: our IPv6 host route reaches GoBGP with
/// RD, label, route target and an IPv4-mapped next hop; GoBGP's VPNv6 route
/// is imported and IPv6 traffic leaves with its label.
#[test]
fn vpnv6_routes_flow_both_ways_with_gobgp() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        h1,
    } = common::pe_and_peer("rr6", true);
    let h1 = h1.expect("host");
    for cmd in [
        vec![
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "eth0",
            "nodad",
        ],
        vec![
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::fe",
        ],
    ] {
        lab.exec(&h1, &cmd).expect("host v6");
    }
    let (_, glog) = common::spawn_gobgpd(&mut lab, &rr, "gobgpd-v6", common::GOBGP_V4_V6);
    let cfg = common::pe_config_v6(false).replace(
        "gateway = \"10.1.1.254\"",
        "gateway = \"10.1.1.254\"\ngateway6 = \"2001:db8:1::fe\"",
    );
    let log = common::start_pe_with(&mut lab, &pe, "bgp-pe-v6", &cfg);
    let logtext = || {
        format!(
            "vpnfwd:\n{}\ngobgpd:\n{}",
            common::read(&log),
            common::read(&glog)
        )
    };
    let rib = || lab.stdout(&rr, &["gobgp", "global", "rib", "-a", "vpnv6"]);
    assert!(
        Lab::wait_until(Duration::from_secs(30), || rib()
            .contains("2001:db8:1::1/128")),
        "GoBGP lacks our VPNv6 route:\n{}\n{}",
        rib(),
        logtext()
    );
    let r = rib();
    let line = r
        .lines()
        .find(|l| l.contains("2001:db8:1::1/128"))
        .unwrap_or_default();
    // GoBGP prints the IPv4-mapped next hop as its IPv4 address.
    assert!(
        line.contains("65001:1")
            && line.contains("[100]")
            && line.contains("192.0.2.1")
            && line.contains("65001:100"),
        "fields of our VPNv6 route: {line}"
    );
    lab.exec(
        &rr,
        &[
            "gobgp",
            "global",
            "rib",
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
        ],
    )
    .expect("inject");
    let routes = || lab.stdout(&pe, &[VPNFWD, "route", "list", "--family", "vpnv6"]);
    assert!(
        Lab::wait_until(Duration::from_secs(10), || routes()
            .contains("2001:db8:9::/64")),
        "we lack GoBGP's VPNv6 route:\n{}\n{}",
        routes(),
        logtext()
    );
    let line = routes()
        .lines()
        .find(|l| l.contains("2001:db8:9::/64"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("65001:9") && line.contains("3100") && line.contains("192.0.2.9"),
        "{line}"
    );
    let cap = lab
        .capture(&rr, "core", Duration::from_secs(4), 200)
        .expect("capture");
    std::thread::sleep(Duration::from_millis(300));
    // The first ping also resolves the gateway (we answer its neighbour
    // solicitation); nothing answers the pings themselves.
    for _ in 0..3 {
        let _ = lab.succeeds(&h1, &["ping", "-6", "-c", "1", "-W", "1", "2001:db8:9::5"]);
    }
    let frames = cap.join().expect("capture");
    let labelled: Vec<(u32, u8)> = frames
        .iter()
        .filter(|f| f.get(12..14) == Some(&[0x88, 0x47]))
        .filter_map(|f| {
            let w = f.get(14..18)?;
            Some((
                u32::from_be_bytes([w[0], w[1], w[2], w[3]]) >> 12,
                f.get(18)? >> 4,
            ))
        })
        .collect();
    assert!(
        labelled.contains(&(3100, 6)),
        "no IPv6 packet under label 3100 towards GoBGP's PE: {labelled:?}\n{}",
        logtext()
    );
}

/// Route-target constraint (RFC 4684) with GoBGP as route reflector: we
/// advertise the targets our VRF imports, and the reflector then sends us
/// only the VPN routes that carry one of them.
#[test]
fn rt_constraint_makes_the_reflector_send_only_routes_we_import() {
    rt_constraint(true);
}

/// The control: without RT constraint the reflector sends both routes.
#[test]
fn without_rt_constraint_the_reflector_sends_every_route() {
    rt_constraint(false);
}

/// GoBGP as route reflector for the PE (192.0.2.1), VPNv4 and RT
/// constraint.
const GOBGP_RR_RTC: &str = r#"
[global.config]
  as = 65001
  router-id = "192.0.2.9"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
  [neighbors.route-reflector.config]
    route-reflector-client = true
    route-reflector-cluster-id = "192.0.2.9"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "rtc"
"#;

fn rt_constraint(on: bool) {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        ..
    } = common::pe_and_peer(if on { "rtc" } else { "nortc" }, false);
    // The control run leaves RT constraint out on both sides.
    let gconf = if on {
        GOBGP_RR_RTC.to_string()
    } else {
        GOBGP_RR_RTC.replace(
            "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"rtc\"\n",
            "",
        )
    };
    let (_, glog) = common::spawn_gobgpd(
        &mut lab,
        &rr,
        if on { "gobgpd-rtc" } else { "gobgpd-nortc" },
        &gconf,
    );
    for (prefix, label, rt) in [
        ("10.9.0.0/24", "3000", "65001:100"),
        ("10.8.0.0/24", "3001", "65001:999"),
    ] {
        let a = [
            "gobgp",
            "global",
            "rib",
            "-a",
            "vpnv4",
            "add",
            prefix,
            "label",
            label,
            "rd",
            "65001:9",
            "rt",
            rt,
            "nexthop",
            "192.0.2.9",
        ];
        assert!(
            Lab::wait_until(Duration::from_secs(30), || lab.succeeds(&rr, &a)),
            "inject {prefix}"
        );
    }
    // Each variant its own files: the two run in parallel.
    let log = common::start_pe(&mut lab, &pe, if on { "rtc-pe" } else { "nortc-pe" }, false);
    let logtext = || {
        format!(
            "vpnfwd:\n{}\ngobgpd:\n{}",
            common::read(&log),
            common::read(&glog)
        )
    };
    let rtc = || lab.stdout(&rr, &["gobgp", "global", "rib", "-a", "rtc"]);
    if on {
        assert!(
            Lab::wait_until(Duration::from_secs(30), || rtc().contains("65001:100")),
            "GoBGP lacks our route-target membership:\n{}\n{}",
            rtc(),
            logtext()
        );
    }
    let routes = || lab.stdout(&pe, &[VPNFWD, "route", "list", "--json"]);
    assert!(
        Lab::wait_until(Duration::from_secs(15), || routes().contains("10.9.0.0/24")),
        "the imported target's route: {}\n{}",
        routes(),
        logtext()
    );
    if !on {
        assert!(
            Lab::wait_until(Duration::from_secs(5), || routes().contains("10.8.0.0/24")),
            "without RT constraint both routes arrive: {}\n{}",
            routes(),
            logtext()
        );
        return;
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !routes().contains("10.8.0.0/24"),
        "a route with a target we do not import was sent: {}",
        routes()
    );
    assert!(
        Lab::wait_until(Duration::from_secs(10), || common::read(&log)
            .contains("mp(rtc)")),
        "GoBGP offered RT constraint\n{}",
        logtext()
    );
}

/// Outbound route-target constraint: with RFC 4684 negotiated we send the
/// reflector the routes of the VRFs whose targets it asked for (here those
/// its own VRFs import, which GoBGP announces as membership), follow its
/// membership as it changes, and nothing else.
#[test]
fn with_rt_constraint_we_send_a_reflector_only_the_vrfs_it_asks_for() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        ..
    } = common::pe_and_peer("rtc-out", false);
    let (_, glog) = common::spawn_gobgpd(&mut lab, &rr, "gobgpd-rtc-out", GOBGP_RR_RTC);
    let vrf = |lab: &Lab, args: &[&str]| {
        let mut a = vec!["gobgp", "vrf"];
        a.extend_from_slice(args);
        assert!(
            Lab::wait_until(Duration::from_secs(30), || lab.succeeds(&rr, &a)),
            "gobgp {args:?}"
        );
    };
    // The reflector asks for 65001:200 (red) only.
    vrf(
        &lab,
        &[
            "add",
            "r",
            "rd",
            "65001:92",
            "rt",
            "import",
            "65001:200",
            "export",
            "65001:200",
        ],
    );
    // Blue exports 65001:100 (10.1.1.1/32), red 65001:200 (10.2.2.2/32).
    // They import other targets: our own membership, which GoBGP reflects
    // back to us, asks for neither.
    let config = common::pe_config(false)
        .replace(
            "import_targets = [\"65001:100\"]",
            "import_targets = [\"65001:101\"]",
        )
        .replace(
            "[uplink]",
            "[[vrf]]\nname = \"red\"\nlabel = 200\nrd = \"65001:2\"\nimport_targets = [\"65001:201\"]\nexport_targets = [\"65001:200\"]\n\n[uplink]",
        )
        .replace(
            "[bgp]",
            "[[port]]\ninterface = \"p\"\nvlan = 200\nvrf = \"red\"\nmac = \"02:00:00:00:01:02\"\naddresses = [\"10.2.2.2/32\"]\ngateway = \"10.2.2.254\"\n\n[bgp]",
        );
    let log = common::start_pe_with(&mut lab, &pe, "rtc-out-pe", &config);
    let logtext = || {
        format!(
            "vpnfwd:\n{}\ngobgpd:\n{}",
            common::read(&log),
            common::read(&glog)
        )
    };
    let adj_in = || {
        lab.stdout(
            &rr,
            &["gobgp", "neighbor", "192.0.2.1", "adj-in", "-a", "vpnv4"],
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(20), || adj_in().contains("10.2.2.2/32")),
        "red, asked for, arrives: {}\n{}",
        adj_in(),
        logtext()
    );
    std::thread::sleep(Duration::from_secs(2));
    let rtc_out = || {
        lab.stdout(
            &rr,
            &["gobgp", "neighbor", "192.0.2.1", "adj-out", "-a", "rtc"],
        )
    };
    assert!(
        !adj_in().contains("10.1.1.1/32"),
        "blue was not asked for: {}\nthe reflector's membership to us: {}\n{}",
        adj_in(),
        rtc_out(),
        logtext()
    );
    // Membership changes: blue asked for, red no longer.
    vrf(
        &lab,
        &[
            "add",
            "b",
            "rd",
            "65001:91",
            "rt",
            "import",
            "65001:100",
            "export",
            "65001:100",
        ],
    );
    assert!(
        Lab::wait_until(Duration::from_secs(10), || adj_in().contains("10.1.1.1/32")),
        "blue follows the membership: {}\n{}",
        adj_in(),
        logtext()
    );
    vrf(&lab, &["del", "r"]);
    assert!(
        Lab::wait_until(Duration::from_secs(10), || !adj_in()
            .contains("10.2.2.2/32")),
        "red is withdrawn with its membership: {}\n{}",
        adj_in(),
        logtext()
    );
    assert!(adj_in().contains("10.1.1.1/32"), "{}", adj_in());
}

/// With route-target constraint and graceful restart our VPN End-of-RIB
/// follows the peer's membership End-of-RIB (a peer keeping our routes
/// through our restart must not drop those it has not asked for yet).
#[test]
fn with_rt_constraint_our_vpn_end_of_rib_waits_for_the_peers_membership() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        ..
    } = common::pe_and_peer("rtc-eor", false);
    let (_, glog) = common::spawn_gobgpd(
        &mut lab,
        &rr,
        "gobgpd-rtc-eor",
        r#"
[global.config]
  as = 65001
  router-id = "192.0.2.9"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 60
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "rtc"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
"#,
    );
    let log = common::start_pe(&mut lab, &pe, "rtc-eor-pe", false);
    let text = || common::read(&log);
    assert!(
        Lab::wait_until(Duration::from_secs(20), || text()
            .contains("membership complete; End-of-RIB sent")),
        "vpnfwd:\n{}\ngobgpd:\n{}",
        text(),
        common::read(&glog)
    );
    let t = text();
    let rtc_eor = t
        .find("family=\"rtc\"")
        .expect("the peer's membership End-of-RIB");
    let ours = t.find("membership complete").expect("ours");
    assert!(rtc_eor < ours, "{t}");
}

/// The session over IPv6 transport (VPNv4 routes, IPv4 PE next hops).
#[test]
fn a_session_over_ipv6_transport_carries_vpnv4_routes() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        ..
    } = common::pe_and_peer("rr-v6t", false);
    for (ns, addr) in [(&pe, "2001:db8:ff::1/64"), (&rr, "2001:db8:ff::9/64")] {
        for cmd in [
            vec!["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"],
            vec!["sysctl", "-qw", "net.ipv6.conf.core.disable_ipv6=0"],
            vec!["ip", "-6", "addr", "add", addr, "dev", "core", "nodad"],
        ] {
            lab.exec(ns, &cmd).expect("ipv6 transport");
        }
    }
    let (_, glog) = common::spawn_gobgpd(
        &mut lab,
        &rr,
        "gobgpd-v6t",
        r#"
[global.config]
  as = 65001
  router-id = "192.0.2.9"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "2001:db8:ff::1"
    peer-as = 65001
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#,
    );
    let log = common::start_pe_with(
        &mut lab,
        &pe,
        "v6t-pe",
        &common::pe_config(false).replace(
            "address = \"192.0.2.9\"\nasn = 65001",
            "address = \"2001:db8:ff::9\"\nasn = 65001",
        ),
    );
    let logtext = || {
        format!(
            "vpnfwd:\n{}\ngobgpd:\n{}",
            common::read(&log),
            common::read(&glog)
        )
    };
    let rib = || lab.stdout(&rr, &["gobgp", "global", "rib", "-a", "vpnv4"]);
    assert!(
        Lab::wait_until(Duration::from_secs(30), || rib().contains("10.1.1.1/32")),
        "our route over the IPv6 session:\n{}\n{}",
        rib(),
        logtext()
    );
    assert!(
        common::read(&log).contains("BGP session established peer=2001:db8:ff::9"),
        "{}",
        logtext()
    );
    let line = rib()
        .lines()
        .find(|l| l.contains("10.1.1.1/32"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("192.0.2.1"), "IPv4 PE next hop: {line}");
}
