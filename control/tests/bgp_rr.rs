//! Two vpnfwd PEs as clients of a GoBGP route reflector: each learns the
//! other's VPN routes through the reflector (with ORIGINATOR_ID and
//! CLUSTER_LIST added on the way), resolves the other PE's MAC with ARP,
//! and the hosts behind them talk over MPLS.
//!
//! ```text
//!  h1 10.1.1.1 ── p [PE1 192.0.2.1] core ─┐
//!                                          br0 ── core [GoBGP RR 192.0.2.9]
//!  h2 10.1.2.1 ── p [PE2 192.0.2.2] core ─┘
//! ```

mod common;

use common::{read, tmp, VPNFWD};
use std::time::Duration;
use vpnfwd_tests::Lab;

fn pe_config(n: u8) -> String {
    format!(
        r#"
[dataplane]
idle = "sleep"

[[vrf]]
name = "blue"
label = {label}
rd = "65001:{n}"
import_targets = ["65001:100"]
export_targets = ["65001:100"]

[uplink]
interface = "core"
address = "192.0.2.{n}"

[[port]]
interface = "p"
vrf = "blue"
mac = "02:00:00:00:0{n}:01"
addresses = ["10.1.{n}.1/32"]
gateway = "10.1.{n}.254"

[bgp]
asn = 65001
router_id = "192.0.2.{n}"

[[bgp.peer]]
address = "192.0.2.9"
asn = 65001
"#,
        label = 100 * u32::from(n)
    )
}

#[test]
fn two_pes_exchange_vpn_routes_through_a_gobgp_route_reflector() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut lab = Lab::new();
    let core = lab.ns("core").expect("ns");
    let rr = lab.ns("rr").expect("ns");
    lab.exec(&core, &["ip", "link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    lab.exec(&core, &["ip", "link", "set", "dev", "br0", "up"])
        .expect("bridge up");
    let mut pes = Vec::new();
    let mut hosts = Vec::new();
    for n in 1..=2u8 {
        let pe = lab.ns(&format!("pe{n}")).expect("ns");
        lab.exec(&pe, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            .expect("sysctl");
        lab.veth(&core, &format!("pe{n}"), &pe, "core")
            .expect("veth");
        lab.exec(
            &core,
            &[
                "ip",
                "link",
                "set",
                "dev",
                &format!("pe{n}"),
                "master",
                "br0",
            ],
        )
        .expect("enslave");
        lab.exec(
            &pe,
            &[
                "ip",
                "addr",
                "add",
                &format!("192.0.2.{n}/24"),
                "dev",
                "core",
            ],
        )
        .expect("addr");
        let h = lab.ns(&format!("h{n}")).expect("ns");
        lab.veth(&pe, "p", &h, "eth0").expect("veth");
        for cmd in [
            vec![
                "ip",
                "link",
                "set",
                "eth0",
                "address",
                &format!("02:00:00:00:0{n}:01"),
            ],
            vec![
                "ip",
                "addr",
                "add",
                &format!("10.1.{n}.1/24"),
                "dev",
                "eth0",
            ],
            vec![
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.1.{n}.254"),
            ],
        ] {
            let c: Vec<&str> = cmd.iter().map(|s| s.as_ref()).collect();
            lab.exec(&h, &c).expect("host");
        }
        pes.push(pe);
        hosts.push(h);
    }
    lab.veth(&core, "rr", &rr, "core").expect("veth");
    lab.exec(&core, &["ip", "link", "set", "dev", "rr", "master", "br0"])
        .expect("enslave");
    lab.exec(&rr, &["ip", "addr", "add", "192.0.2.9/24", "dev", "core"])
        .expect("addr");
    let mut rconf = String::from("[global.config]\n  as = 65001\n  router-id = \"192.0.2.9\"\n");
    for n in 1..=2 {
        rconf.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"192.0.2.{n}\"\n    peer-as = 65001\n  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"192.0.2.9\"\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"l3vpn-ipv4-unicast\"\n"
        ));
    }
    let rpath = tmp("rr-gobgpd.toml");
    std::fs::write(&rpath, rconf).expect("rr config");
    let rlog = tmp("rr-gobgpd.log");
    lab.spawn(
        &rr,
        &["gobgpd", "-t", "toml", "-f", rpath.to_str().expect("utf-8")],
        &rlog,
    )
    .expect("gobgpd");
    let mut logs = Vec::new();
    for (i, pe) in pes.iter().enumerate() {
        let n = i as u8 + 1;
        let path = tmp(&format!("rr-pe{n}.toml"));
        std::fs::write(&path, pe_config(n)).expect("config");
        let log = tmp(&format!("rr-pe{n}.log"));
        lab.spawn(
            pe,
            &[
                "env",
                "VPNFWD_LOG=debug",
                VPNFWD,
                "run",
                "--config",
                path.to_str().expect("utf-8"),
            ],
            &log,
        )
        .expect("vpnfwd");
        logs.push(log);
    }
    let all = || {
        format!(
            "pe1:\n{}\npe2:\n{}\nrr:\n{}",
            read(&logs[0]),
            read(&logs[1]),
            read(&rlog)
        )
    };
    let routes = |pe: &str| -> Vec<serde_json::Value> {
        lab.exec(pe, &[VPNFWD, "route", "list", "--json"])
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default()
    };
    // Each PE learns the other's host route, from the reflector, with the
    // other PE as next hop and its RD and label.
    for (me, other) in [(1u8, 2u8), (2, 1)] {
        let pe = &pes[usize::from(me) - 1];
        let want = format!("10.1.{other}.1/32");
        assert!(
            Lab::wait_until(Duration::from_secs(30), || routes(pe)
                .iter()
                .any(|r| r["prefix"] == want.as_str())),
            "PE{me} lacks {want}\n{}",
            all()
        );
        let r = routes(pe)
            .into_iter()
            .find(|r| r["prefix"] == want.as_str())
            .expect("route");
        assert_eq!(r["peer"], "192.0.2.9", "{r}");
        assert_eq!(r["nexthop"], format!("192.0.2.{other}").as_str(), "{r}");
        assert_eq!(r["rd"], format!("65001:{other}").as_str(), "{r}");
        assert_eq!(r["label"], 100 * u32::from(other), "{r}");
        assert_eq!(
            routes(pe).len(),
            1,
            "its own route reflected back is not held: {:?}",
            routes(pe)
        );
    }
    // Traffic: h1 ↔ h2 across the VPN.
    assert!(
        Lab::wait_until(Duration::from_secs(15), || lab
            .succeeds(&hosts[0], &["ping", "-c", "1", "-W", "1", "10.1.2.1"])),
        "h1 → h2\n{}",
        all()
    );
    assert!(lab.succeeds(&hosts[1], &["ping", "-c", "1", "-W", "1", "10.1.1.1"]));
}
