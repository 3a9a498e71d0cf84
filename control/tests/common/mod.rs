//! Set-up shared by the BGP interop tests: a vpnfwd PE and one BGP peer's
//! namespace on a veth, the PE's configuration, and its start.
//!
//! ```text
//!  [h1 10.1.1.1] ── p [vpnfwd PE 192.0.2.1, AS 65001] core ══ core [peer 192.0.2.9]
//! ```
//! VRF blue: RD 65001:1, label 100, import and export target 65001:100,
//! port p for 10.1.1.1/32 with gateway 10.1.1.254.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use vpnfwd_tests::Lab;

/// The daemon under test.
pub const VPNFWD: &str = env!("CARGO_BIN_EXE_vpnfwd");

/// A per-process temporary path.
pub fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vpnfwd-{}-{name}", std::process::id()))
}

/// A file's text, empty if it cannot be read.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The lab: PE namespace, peer namespace, optional host behind port p.
pub struct PeLab {
    /// The lab itself (tears everything down on drop).
    pub lab: Lab,
    /// The PE's namespace.
    pub pe: String,
    /// The peer's namespace.
    pub peer: String,
    /// The host on port p, if asked for.
    pub h1: Option<String>,
}

/// Build the PE and a peer namespace named `peer`. With `with_host`, h1
/// (10.1.1.1/24 via 10.1.1.254) sits behind port p; otherwise p is a veth
/// with nothing behind it.
pub fn pe_and_peer(peer: &str, with_host: bool) -> PeLab {
    let mut lab = Lab::new();
    let pe = lab.ns("pe").expect("ns");
    let peer = lab.ns(peer).expect("ns");
    lab.exec(&pe, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        .expect("sysctl");
    lab.veth(&pe, "core", &peer, "core").expect("veth");
    // The PE's kernel carries the BGP session on the uplink.
    lab.exec(&pe, &["ip", "addr", "add", "192.0.2.1/24", "dev", "core"])
        .expect("addr");
    lab.exec(&peer, &["ip", "addr", "add", "192.0.2.9/24", "dev", "core"])
        .expect("addr");
    let h1 = if with_host {
        let h1 = lab.ns("h1").expect("ns");
        lab.veth(&pe, "p", &h1, "eth0").expect("veth");
        for cmd in [
            vec!["ip", "link", "set", "eth0", "address", "02:00:00:00:01:01"],
            vec!["ip", "addr", "add", "10.1.1.1/24", "dev", "eth0"],
            vec!["ip", "route", "add", "default", "via", "10.1.1.254"],
        ] {
            lab.exec(&h1, &cmd).expect("host");
        }
        Some(h1)
    } else {
        lab.exec(
            &pe,
            &[
                "ip", "link", "add", "p", "type", "veth", "peer", "name", "p-peer",
            ],
        )
        .expect("port");
        lab.exec(&pe, &["ip", "link", "set", "dev", "p", "up"])
            .expect("up");
        None
    };
    PeLab { lab, pe, peer, h1 }
}

/// The PE's configuration; its peer is 192.0.2.9 in AS 65001.
pub fn pe_config(passive: bool) -> String {
    format!(
        r#"
[dataplane]
idle = "sleep"

[[vrf]]
name = "blue"
label = 100
rd = "65001:1"
import_targets = ["65001:100"]
export_targets = ["65001:100"]

[uplink]
interface = "core"
address = "192.0.2.1"

[[port]]
interface = "p"
vrf = "blue"
mac = "02:00:00:00:01:01"
addresses = ["10.1.1.1/32"]
gateway = "10.1.1.254"

[bgp]
asn = 65001
router_id = "192.0.2.1"

[[bgp.peer]]
address = "192.0.2.9"
asn = 65001
passive = {passive}
"#
    )
}

/// Start vpnfwd with debug logs in the PE's namespace; returns its log.
pub fn start_pe(lab: &mut Lab, pe: &str, name: &str, passive: bool) -> PathBuf {
    start_pe_with(lab, pe, name, &pe_config(passive))
}

/// Start vpnfwd with `config` and debug logs in namespace `ns`; returns its
/// log.
pub fn start_pe_with(lab: &mut Lab, ns: &str, name: &str, config: &str) -> PathBuf {
    let cfg = tmp(&format!("{name}.toml"));
    std::fs::write(&cfg, config).expect("config");
    let log = tmp(&format!("{name}.log"));
    lab.spawn(
        ns,
        &[
            "env",
            "VPNFWD_LOG=debug",
            VPNFWD,
            "run",
            "--config",
            cfg.to_str().expect("utf-8"),
        ],
        &log,
    )
    .expect("vpnfwd");
    log
}

/// The PE's configuration with an IPv6 host route on port p too.
pub fn pe_config_v6(passive: bool) -> String {
    pe_config(passive).replace(
        "addresses = [\"10.1.1.1/32\"]",
        "addresses = [\"10.1.1.1/32\", \"2001:db8:1::1/128\"]",
    )
}

/// GoBGP peering with the PE (192.0.2.1) in AS 65001 for VPNv4 and VPNv6.
pub const GOBGP_V4_V6: &str = r#"
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
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv6-unicast"
"#;

/// Start gobgpd with the TOML configuration `conf` in namespace `ns`;
/// returns (its pid, its log).
pub fn spawn_gobgpd(lab: &mut Lab, ns: &str, name: &str, conf: &str) -> (u32, PathBuf) {
    let path = tmp(&format!("{name}.toml"));
    std::fs::write(&path, conf).expect("gobgp config");
    let log = tmp(&format!("{name}.log"));
    let pid = lab
        .spawn(
            ns,
            &["gobgpd", "-t", "toml", "-f", path.to_str().expect("utf-8")],
            &log,
        )
        .expect("gobgpd");
    (pid, log)
}

/// Start FRR's bgpd alone (`-Z`: no zebra) with `conf` in namespace `ns`,
/// its files in a directory of its own; returns that directory, which is
/// also its vty socket directory (`vtysh --vty_socket DIR`).
pub fn spawn_frr_bgpd(lab: &mut Lab, ns: &str, name: &str, conf: &str) -> String {
    let dir = tmp(name);
    std::fs::create_dir_all(&dir).expect("frr dir");
    lab.track(&dir);
    let path = dir.join("bgpd.conf");
    std::fs::write(&path, conf).expect("frr config");
    let d = dir.to_str().expect("utf-8").to_string();
    let args = [
        "/usr/lib/frr/bgpd",
        "-Z",
        "-S",
        "-n",
        "-f",
        path.to_str().expect("utf-8"),
        "-i",
        &format!("{d}/bgpd.pid"),
        "-z",
        &format!("{d}/zserv"),
        "--vty_socket",
        &d,
        "-A",
        "127.0.0.1",
        "-P",
        "0",
    ];
    lab.spawn(ns, &args, &dir.join("bgpd.log")).expect("bgpd");
    d
}
