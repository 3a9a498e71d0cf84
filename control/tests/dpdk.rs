//! The DPDK back-end in the daemon: BGP and ARP reach the kernel through
//! the uplink's kernel twin (a tap) while `net_af_xdp` owns the uplink, and
//! start-up mistakes give one line saying what to do.
//!
//! ```text
//!  [h1 10.1.1.1] ── p [vpnfwd PE, DPDK af_xdp] core ══ core [gobgpd 192.0.2.9]
//!                         └ vpnfwd0 (tap, 192.0.2.1/24): the PE's BGP session
//! ```
#![cfg(feature = "dpdk")]

mod common;

use common::{tmp, VPNFWD};
use std::process::Command;
use std::time::Duration;
use vpnfwd_tests::Lab;

fn dpdk(cfg: String, dpdk_section: &str) -> String {
    cfg.replacen(
        "[dataplane]\nidle = \"sleep\"\n",
        &format!("[dataplane]\nidle = \"sleep\"\nbackend = \"dpdk\"\n\n[dataplane.dpdk]\n{dpdk_section}\n"),
        1,
    )
}

#[test]
fn bgp_and_arp_reach_the_kernel_twin_while_af_xdp_owns_the_uplink() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        h1,
    } = common::pe_and_peer("rr", true);
    let h1 = h1.expect("host");
    // The router's address moves from the uplink to its kernel twin.
    lab.exec(&pe, &["ip", "addr", "flush", "dev", "core"])
        .expect("flush");
    // AF_XDP carries no checksum-offload state: a veth peer must send
    // complete checksums (a NIC always does).
    lab.exec(&rr, &["ethtool", "-K", "core", "tx", "off"])
        .expect("ethtool");
    let gobgp_conf = tmp("dpdk-gobgpd.toml");
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
    let gobgp_log = tmp("dpdk-gobgpd.log");
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
    let cfg = tmp("dpdk-twin.toml");
    std::fs::write(
        &cfg,
        dpdk(
            common::pe_config(false),
            "driver = \"af_xdp\"\nmbufs = 4095\nkernel_interface = \"vpnfwd0\"\nkernel_address = \"192.0.2.1/24\"",
        ),
    )
    .expect("config");
    let log = tmp("dpdk-twin.log");
    lab.spawn(
        &pe,
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
    let logtext = || {
        format!(
            "vpnfwd:\n{}\ngobgpd:\n{}",
            common::read(&log),
            common::read(&gobgp_log)
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(30), || common::read(&log)
            .contains("BGP session established")),
        "no session through the kernel twin\n{}",
        logtext()
    );
    // The peer reaches the router's own address (ARP and ICMP through the
    // twin).
    assert!(
        lab.succeeds(&rr, &["ping", "-c", "1", "-W", "2", "192.0.2.1"]),
        "ping to the twin\n{}",
        logtext()
    );
    let rib = || lab.stdout(&rr, &["gobgp", "global", "rib", "-a", "vpnv4"]);
    assert!(
        Lab::wait_until(Duration::from_secs(10), || rib().contains("10.1.1.1/32")),
        "GoBGP did not get our route:\n{}\n{}",
        rib(),
        logtext()
    );
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
        Lab::wait_until(Duration::from_secs(10), || common::read(&log)
            .contains("announced=1")),
        "no update\n{}",
        logtext()
    );
    assert!(
        Lab::wait_until(Duration::from_secs(10), || lab
            .succeeds(&h1, &["ping", "-c", "1", "-W", "1", "10.1.1.254"])),
        "gateway\n{}",
        logtext()
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
        "no MPLS frame with label 3000 from the DPDK PE: {labels:?}\n{}",
        logtext()
    );
}

/// Run `vpnfwd run` in `ns`, expecting it to fail: returns its error line
/// after checking the exit status, the absence of a panic, and that the
/// error is one line.
fn fails(ns: &str, config: &str, name: &str) -> String {
    let path = tmp(&format!("{name}.toml"));
    std::fs::write(&path, config).expect("config");
    let cmd = format!("exec {VPNFWD} run --config {}", path.display());
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", &cmd])
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.expect("run");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{name}: should fail\n{err}");
    assert!(!err.contains("panicked"), "{name}: panic\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("vpnfwd:")).collect();
    assert_eq!(lines.len(), 1, "{name}: one error line\n{err}");
    lines[0].to_string()
}

#[test]
fn start_up_mistakes_give_one_line_that_says_what_to_do() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab { lab, pe, .. } = common::pe_and_peer("nobody", false);
    let base = || {
        dpdk(
            common::pe_config(false),
            "driver = \"af_xdp\"\nmbufs = 4095",
        )
    };

    // An interface that does not exist.
    let cfg = base().replace("interface = \"core\"", "interface = \"nosuch0\"");
    let e = fails(&pe, &cfg, "dpdk-noif");
    assert!(e.contains("nosuch0") && e.contains("exist"), "{e}");

    // A malformed device string.
    let cfg = dpdk(
        common::pe_config(false),
        "driver = \"af_xdp\"\nmbufs = 4095\n[dataplane.dpdk.devargs]\ncore = \"net_af_xdp0,iface\"",
    );
    let e = fails(&pe, &cfg, "dpdk-badvdev");
    assert!(
        e.contains("net_af_xdp0,iface") && e.contains("key=value"),
        "{e}"
    );
    let cfg = dpdk(
        common::pe_config(false),
        "[dataplane.dpdk.devargs]\ncore = \"net_nosuch0,iface=core\"",
    );
    let e = fails(&pe, &cfg, "dpdk-baddriver");
    assert!(e.contains("unknown driver"), "{e}");

    // No huge pages free: the PE sees a /proc/meminfo without any (in its
    // own mount namespace only).
    let meminfo = tmp("meminfo-nohuge");
    let real = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let fake: String = real
        .lines()
        .map(|l| {
            if l.starts_with("HugePages_Free:") || l.starts_with("HugePages_Total:") {
                format!("{}        0\n", l.split(':').next().unwrap_or_default())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&meminfo, fake).expect("fake meminfo");
    let cmd_prefix = format!(
        "unshare -m --propagation private sh -c 'mount --bind {} /proc/meminfo &&",
        meminfo.display()
    );
    let path = tmp("dpdk-nohuge.toml");
    std::fs::write(&path, base()).expect("config");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pe,
            "sh",
            "-c",
            &format!(
                "{cmd_prefix} exec {VPNFWD} run --config {}'",
                path.display()
            ),
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "no huge pages: should fail\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("vpnfwd:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("no free huge pages") && lines[0].contains("nr_hugepages"),
        "{err}"
    );
    let _ = std::fs::remove_file(&meminfo);
    let _ = std::fs::remove_file(&path);
    drop(lab);
}
