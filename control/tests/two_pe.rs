//! Two vpnfwd PEs back to back over an uplink veth, with static VPN routes:
//! hosts behind PE1 reach hosts behind PE2 over each encapsulation, IPv4 and
//! IPv6, and a capture on the uplink shows the exact label and encapsulation.
//!
//! ```text
//!  h1 ── p [PE1] core ══ core [PE2] p ── h2
//!  10.1.1.1            uplink            10.1.2.1
//!  2001:db8:1::1                         2001:db8:2::1
//! ```

use std::path::PathBuf;
use std::time::Duration;
use vpnfwd_tests::Lab;

const VPNFWD: &str = env!("CARGO_BIN_EXE_vpnfwd");
const PE1_UP_MAC: &str = "02:00:00:00:aa:01";
const PE2_UP_MAC: &str = "02:00:00:00:aa:02";
/// The VPN label each PE gives its VRF (what the other pushes).
const PE1_LABEL: u32 = 100;
const PE2_LABEL: u32 = 200;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vpnfwd-{}-{name}", std::process::id()))
}

#[allow(clippy::too_many_arguments)]
fn pe_config(
    my_label: u32,
    my_addr: &str,
    up_mac: &str,
    host_mac: &str,
    host4: &str,
    gw4: &str,
    host6: &str,
    gw6: &str,
    routes: &[(&str, u32, &str)],
    peer_mac: &str,
    encap: &str,
) -> String {
    let mut c = format!(
        r#"
[dataplane]
idle = "sleep"

[[vrf]]
name = "blue"
label = {my_label}

[uplink]
interface = "core"
mac = "{up_mac}"
address = "{my_addr}"

[[port]]
interface = "p"
vrf = "blue"
mac = "{host_mac}"
addresses = ["{host4}/32", "{host6}/128"]
gateway = "{gw4}"
gateway6 = "{gw6}"
"#
    );
    for (prefix, label, pe) in routes {
        c.push_str(&format!(
            "\n[[route]]\nvrf = \"blue\"\nprefix = \"{prefix}\"\nlabel = {label}\npe = \"{pe}\"\nencap = \"{encap}\"\n"
        ));
        // MPLS over Ethernet uses a configured next-hop MAC; the tunnels
        // resolve the remote PE with ARP.
        if encap == "mpls" {
            c.push_str(&format!("nexthop_mac = \"{peer_mac}\"\n"));
        }
    }

    c
}

#[allow(clippy::too_many_arguments)]
fn host(
    lab: &mut Lab,
    name: &str,
    pe: &str,
    mac: &str,
    v4: &str,
    gw4: &str,
    v6: &str,
    gw6: &str,
) -> String {
    let ns = lab.ns(name).expect("host namespace");
    lab.veth(pe, "p", &ns, "eth0").expect("veth");
    for cmd in [
        vec!["ip", "link", "set", "eth0", "address", mac],
        vec!["ip", "addr", "add", v4, "dev", "eth0"],
        vec!["ip", "-6", "addr", "add", v6, "dev", "eth0", "nodad"],
        vec!["ip", "route", "add", "default", "via", gw4],
        vec!["ip", "-6", "route", "add", "default", "via", gw6],
        vec![
            "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off",
        ],
    ] {
        lab.exec(&ns, &cmd).expect("host set-up");
    }
    ns
}

/// What a captured uplink frame carries, as far as this test cares.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    encap: &'static str,
    label: u32,
    bos: bool,
    inner_version: u8,
}

fn decode(f: &[u8]) -> Option<Seen> {
    let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (encap, at) = match et {
        0x8847 => ("mpls", 14),
        0x0800 => {
            let ihl = usize::from(f.get(14)? & 0xf) * 4;
            match *f.get(23)? {
                47 if u16::from_be_bytes([*f.get(14 + ihl + 2)?, *f.get(14 + ihl + 3)?])
                    == 0x8847 =>
                {
                    ("gre", 14 + ihl + 4)
                }
                17 if u16::from_be_bytes([*f.get(14 + ihl + 2)?, *f.get(14 + ihl + 3)?])
                    == 6635 =>
                {
                    ("udp", 14 + ihl + 8)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let w = u32::from_be_bytes([
        *f.get(at)?,
        *f.get(at + 1)?,
        *f.get(at + 2)?,
        *f.get(at + 3)?,
    ]);
    Some(Seen {
        encap,
        label: w >> 12,
        bos: w & 0x100 != 0,
        inner_version: f.get(at + 4)? >> 4,
    })
}

struct TwoPe {
    lab: Lab,
    pe1: String,
    pe2: String,
    h1: String,
    h2: String,
    pe1_pid: u32,
    pe1_config: PathBuf,
    logs: Vec<PathBuf>,
}

impl TwoPe {
    fn log(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ping(&self, ns: &str, dst: &str) -> bool {
        self.lab.succeeds(ns, &["ping", "-c", "1", "-W", "1", dst])
    }
}

fn pe1_config(encap: &str, extra: &[(String, u32)]) -> String {
    let mut routes: Vec<(&str, u32, &str)> = vec![
        ("10.1.2.0/24", PE2_LABEL, "192.0.2.2"),
        ("2001:db8:2::/64", PE2_LABEL, "192.0.2.2"),
    ];
    for (p, l) in extra {
        routes.push((p.as_str(), *l, "192.0.2.2"));
    }
    pe_config(
        PE1_LABEL,
        "192.0.2.1",
        PE1_UP_MAC,
        "02:00:00:00:01:01",
        "10.1.1.1",
        "10.1.1.254",
        "2001:db8:1::1",
        "2001:db8:1::fe",
        &routes,
        PE2_UP_MAC,
        encap,
    )
}

/// How a PE opens its interfaces: the default AF_PACKET back-end, or DPDK
/// with one of its Linux-interface drivers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    AfPacket,
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    Dpdk(&'static str),
}

impl Backend {
    fn config(self, text: String) -> String {
        match self {
            Backend::AfPacket => text,
            Backend::Dpdk(driver) => text.replacen(
                "[dataplane]\nidle = \"sleep\"\n",
                &format!(
                    "[dataplane]\nidle = \"sleep\"\nbackend = \"dpdk\"\n\n[dataplane.dpdk]\ndriver = \"{driver}\"\nmbufs = 4095\n"
                ),
                1,
            ),
        }
    }
}

fn setup(encap: &'static str, name: &str) -> TwoPe {
    setup_with(encap, name, Backend::AfPacket, Backend::AfPacket)
}

fn setup_with(encap: &'static str, name: &str, be1: Backend, be2: Backend) -> TwoPe {
    let mut lab = Lab::new();
    let pe1 = lab.ns("pe1").expect("ns");
    let pe2 = lab.ns("pe2").expect("ns");
    for pe in [&pe1, &pe2] {
        lab.exec(pe, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            .expect("sysctl");
        lab.exec(
            pe,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        )
        .expect("sysctl");
    }
    lab.veth(&pe1, "core", &pe2, "core").expect("uplink");
    let h1 = host(
        &mut lab,
        "h1",
        &pe1,
        "02:00:00:00:01:01",
        "10.1.1.1/24",
        "10.1.1.254",
        "2001:db8:1::1/64",
        "2001:db8:1::fe",
    );
    let h2 = host(
        &mut lab,
        "h2",
        &pe2,
        "02:00:00:00:02:01",
        "10.1.2.1/24",
        "10.1.2.254",
        "2001:db8:2::1/64",
        "2001:db8:2::fe",
    );
    let c1 = be1.config(pe1_config(encap, &[]));
    let c2 = be2.config(pe_config(
        PE2_LABEL,
        "192.0.2.2",
        PE2_UP_MAC,
        "02:00:00:00:02:01",
        "10.1.2.1",
        "10.1.2.254",
        "2001:db8:2::1",
        "2001:db8:2::fe",
        &[
            ("10.1.1.0/24", PE1_LABEL, "192.0.2.1"),
            ("2001:db8:1::/64", PE1_LABEL, "192.0.2.1"),
        ],
        PE1_UP_MAC,
        encap,
    ));
    let mut logs = Vec::new();
    let mut pids = Vec::new();
    let mut paths = Vec::new();
    for (pe, cfg, n) in [(&pe1, c1, 1), (&pe2, c2, 2)] {
        let path = tmp(&format!("{name}-pe{n}.toml"));
        std::fs::write(&path, cfg).expect("config");
        let log = tmp(&format!("{name}-pe{n}.log"));
        pids.push(
            lab.spawn(
                pe,
                &[VPNFWD, "run", "--config", path.to_str().expect("utf-8")],
                &log,
            )
            .expect("start vpnfwd"),
        );
        logs.push(log);
        paths.push(path);
    }
    let t = TwoPe {
        lab,
        pe1,
        pe2,
        h1,
        h2,
        pe1_pid: pids[0],
        pe1_config: paths.swap_remove(0),
        logs,
    };
    assert!(
        Lab::wait_until(Duration::from_secs(10), || t.ping(&t.h1, "10.1.1.254")),
        "PE1 gateway\n{}",
        t.log()
    );
    t
}

fn two_pes(encap: &'static str) {
    two_pes_with(encap, encap, Backend::AfPacket, Backend::AfPacket);
}

/// PE2 must use AF_PACKET (a capture cannot see frames AF_XDP takes).
fn two_pes_with(encap: &'static str, name: &str, be1: Backend, be2: Backend) {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let t = setup_with(encap, name, be1, be2);
    let _ = &t.pe1;
    // Capture PE1's pushes as PE2 receives them, while both families cross.
    let cap = t
        .lab
        .capture(&t.pe2, "core", Duration::from_secs(3), 64)
        .expect("capture");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        Lab::wait_until(Duration::from_secs(5), || t.ping(&t.h1, "10.1.2.1")),
        "IPv4 h1 → h2 over {encap}\n{}",
        t.log()
    );
    assert!(
        Lab::wait_until(Duration::from_secs(5), || t.ping(&t.h1, "2001:db8:2::1")),
        "IPv6 h1 → h2 over {encap}\n{}",
        t.log()
    );
    let frames = cap.join().expect("capture thread");
    let seen: Vec<Seen> = frames
        .iter()
        .filter(|f| f.get(6..12) == Some(&[2, 0, 0, 0, 0xaa, 1]))
        .filter_map(|f| decode(f))
        .collect();
    for v in [4u8, 6] {
        let want = Seen {
            encap,
            label: PE2_LABEL,
            bos: true,
            inner_version: v,
        };
        assert!(
            seen.contains(&want),
            "no {want:?} on the uplink; saw {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .all(|s| s.encap == encap && s.label == PE2_LABEL),
        "only {encap} with label {PE2_LABEL}: {seen:?}"
    );
    if encap != "mpls" {
        // PE1 found PE2's uplink MAC with ARP (PE2 answered for 192.0.2.2).
        assert!(
            t.log()
                .contains("next hop resolved ip=192.0.2.2 mac=02:00:00:00:aa:02"),
            "{}",
            t.log()
        );
    }
    // And back.
    assert!(t.ping(&t.h2, "10.1.1.1"), "IPv4 h2 → h1");
    assert!(t.ping(&t.h2, "2001:db8:1::1"), "IPv6 h2 → h1");
    // A destination the VRF has no route for is counted as such, and the
    // counters (and, with DPDK, the devices) are there to read.
    assert!(!t.ping(&t.h1, "10.77.0.1"), "no route, no answer");
    let stats = stats_of(&t, &t.pe1);
    let p = &stats["packets"];
    assert!(
        p["rx"].as_u64() > Some(0) && p["tx"].as_u64() > Some(0),
        "{stats}"
    );
    assert!(
        p["tx_refused"]
            .as_u64()
            .is_some_and(|r| Some(r) <= p["tx"].as_u64()),
        "{stats}"
    );
    assert!(
        p["not_forwarded"]["exc_no_route"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(
        p["not_forwarded"]["exc_arp_gateway"].as_u64().is_some(),
        "every reason listed: {stats}"
    );
    let ports = stats["ports"].as_array().expect("ports");
    if matches!(be1, Backend::Dpdk(_)) {
        assert_eq!(
            ports.len(),
            if matches!(be1, Backend::Dpdk("af_xdp")) {
                3
            } else {
                2
            },
            "{stats}"
        );
        for d in ports {
            assert_eq!(d["link_up"], true, "{d}");
            assert!(d["mbufs_free"].as_u64() <= d["mbufs"].as_u64(), "{d}");
        }
        assert!(
            ports.iter().any(|d| d["ipackets"].as_u64() > Some(0)),
            "{stats}"
        );
        let out = t
            .lab
            .exec(&t.pe1, &[VPNFWD, "stats"])
            .expect("vpnfwd stats");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("DEVICE") && text.contains("exc_no_route="),
            "{text}"
        );
    } else {
        // One receive ring per interface (one worker), with its kernel
        // counters.
        assert_eq!(ports.len(), 2, "{stats}");
        assert!(
            ports.iter().all(|r| r["ring_drops"].as_u64().is_some()),
            "{stats}"
        );
        assert!(
            ports.iter().any(|r| r["ring_packets"].as_u64() > Some(0)),
            "{stats}"
        );
    }
}

/// `vpnfwd stats --json` of the router in namespace `ns`.
fn stats_of(t: &TwoPe, ns: &str) -> serde_json::Value {
    let out = t
        .lab
        .exec(ns, &[VPNFWD, "stats", "--json"])
        .expect("vpnfwd stats");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn hosts_behind_two_pes_talk_over_mpls_over_ethernet() {
    two_pes("mpls");
}

#[test]
fn hosts_behind_two_pes_talk_over_mpls_over_gre() {
    two_pes("gre");
}

#[test]
fn hosts_behind_two_pes_talk_over_mpls_over_udp() {
    two_pes("udp");
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_xdp_pe_pushes_mpls_over_ethernet_to_an_af_packet_pe() {
    two_pes_with(
        "mpls",
        "dpdk-xdp",
        Backend::Dpdk("af_xdp"),
        Backend::AfPacket,
    );
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_packet_pe_pushes_mpls_over_udp_with_arp_resolution() {
    two_pes_with(
        "udp",
        "dpdk-pkt",
        Backend::Dpdk("af_packet"),
        Backend::AfPacket,
    );
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_xdp_pe_pushes_mpls_over_gre_and_udp() {
    two_pes_with(
        "gre",
        "dpdk-xdp-gre",
        Backend::Dpdk("af_xdp"),
        Backend::AfPacket,
    );
    two_pes_with(
        "udp",
        "dpdk-xdp-udp",
        Backend::Dpdk("af_xdp"),
        Backend::AfPacket,
    );
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_packet_pe_pushes_mpls_over_ethernet_and_gre() {
    two_pes_with(
        "mpls",
        "dpdk-pkt-mpls",
        Backend::Dpdk("af_packet"),
        Backend::AfPacket,
    );
    two_pes_with(
        "gre",
        "dpdk-pkt-gre",
        Backend::Dpdk("af_packet"),
        Backend::AfPacket,
    );
}

#[cfg(feature = "dpdk")]
#[test]
fn two_dpdk_pes_talk_over_mpls_over_gre() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut t = setup_with(
        "gre",
        "dpdk-both",
        Backend::Dpdk("af_packet"),
        Backend::Dpdk("af_xdp"),
    );
    for (ns, dst) in [
        (&t.h1, "10.1.2.1"),
        (&t.h1, "2001:db8:2::1"),
        (&t.h2, "10.1.1.1"),
        (&t.h2, "2001:db8:1::1"),
    ] {
        assert!(
            Lab::wait_until(Duration::from_secs(5), || t.ping(ns, dst)),
            "{dst} over GRE between two DPDK PEs\n{}",
            t.log()
        );
    }
    assert!(t.log().contains("DPDK port started"), "{}", t.log());
    // On a clean stop each device's counters are logged.
    let (p1, lab) = (t.pe1_pid, &mut t.lab);
    lab.stop(p1, Duration::from_secs(10));
    let log = t.log();
    let line = log
        .lines()
        .find(|l| l.contains("DPDK port device=\"net_af_packet0\""))
        .unwrap_or_else(|| panic!("no port counters:\n{log}"));
    assert!(
        line.contains("link_up=true") && line.contains("opackets="),
        "{line}"
    );
    // Frames cross PE1 zero-copy in the mbufs they arrived in, and
    // net_af_packet keeps none: every mbuf is back in its pool.
    let pools: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DPDK pool after close device=\"net_af_packet"))
        .collect();
    assert_eq!(pools.len(), 2, "{log}");
    for l in pools {
        assert!(l.contains("free=4095 size=4095"), "a leak: {l}");
    }
}

/// A UDP stream of `n` datagrams from h1 to h2, paced; returns how many
/// distinct ones arrived.
#[cfg(feature = "dpdk")]
fn udp_stream(t: &TwoPe, n: u32) -> usize {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = t
        .lab
        .in_ns(&t.h2, move || {
            let sock = std::net::UdpSocket::bind("10.1.2.1:7000").expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut seen = std::collections::HashSet::new();
            let mut buf = [0u8; 64];
            while let Ok(k) = sock.recv(&mut buf) {
                if k == 4 {
                    seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                }
            }
            seen.len()
        })
        .expect("enter h2");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver up");
    t.lab
        .in_ns(&t.h1, move || {
            let sock = std::net::UdpSocket::bind("10.1.1.1:0").expect("bind");
            for i in 0..n {
                sock.send_to(&i.to_be_bytes(), "10.1.2.1:7000")
                    .expect("send");
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
        .expect("enter h1")
        .join()
        .expect("sender");
    rx.join().expect("receiver")
}

#[cfg(feature = "dpdk")]
#[test]
fn a_dpdk_af_xdp_pe_loses_no_frame_of_a_long_stream() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    // 20 000 frames cycle each device's 4095 buffers several times, so
    // every buffer of the pool carries frames (net_af_xdp once dropped
    // those sent from the last buffers of a pool).
    let t = setup_with(
        "mpls",
        "dpdk-stream",
        Backend::Dpdk("af_xdp"),
        Backend::AfPacket,
    );
    assert!(
        Lab::wait_until(Duration::from_secs(5), || t.ping(&t.h1, "10.1.2.1")),
        "no path\n{}",
        t.log()
    );
    // AF_XDP carries no checksum-offload state (see hugepages.md): the
    // sending host completes its UDP checksums itself.
    t.lab
        .exec(&t.h1, &["ethtool", "-K", "eth0", "tx", "off"])
        .expect("ethtool");
    let got = udp_stream(&t, 20_000);
    assert_eq!(got, 20_000, "datagrams delivered\n{}", t.log());
}

#[test]
fn forwarding_continues_without_loss_while_routes_churn_through_reloads() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut t = setup("mpls", "churn");
    assert!(
        Lab::wait_until(Duration::from_secs(5), || t.ping(&t.h1, "10.1.2.1")),
        "{}",
        t.log()
    );
    // 500 pings 10 ms apart towards a route that never changes...
    let h1 = t.h1.clone();
    let pinger = {
        let lab_ns = h1.clone();
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns", "exec", &lab_ns, "ping", "-q", "-c", "500", "-i", "0.01", "-W", "1",
                    "10.1.2.1",
                ])
                .output()
                .expect("ping runs")
        })
    };
    // ...while PE1 reloads 100 times, each time withdrawing and announcing
    // 250 other routes (25 000 route changes).
    let mut reloads = 0;
    let start = std::time::Instant::now();
    for round in 0..100u32 {
        let extra: Vec<(String, u32)> = (0..250u32)
            .map(|i| (format!("10.{}.{}.0/24", 100 + (round % 2), i), 1000 + i))
            .collect();
        let text = pe1_config("mpls", &extra);
        let tmpfile = t.pe1_config.with_extension("new");
        std::fs::write(&tmpfile, text).expect("write");
        std::fs::rename(&tmpfile, &t.pe1_config).expect("rename");
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &t.pe1_pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        reloads += 1;
        std::thread::sleep(Duration::from_millis(25));
    }
    let churn_secs = start.elapsed().as_secs_f64();
    let out = pinger.join().expect("pinger");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(" 0% packet loss"),
        "loss on the stable route during churn:\n{text}\n{}",
        t.log()
    );
    assert!(t.lab.running(t.pe1_pid), "PE1 still running");
    // Every reload was applied (each line reports the route changes).
    assert!(
        Lab::wait_until(Duration::from_secs(5), || t
            .log()
            .matches(" reloaded path=")
            .count()
            >= 1),
        "no reload applied:\n{}",
        t.log()
    );
    let applied = t.log().matches(" reloaded path=").count();
    // Signals that arrive while a reload runs coalesce, so fewer may apply;
    // each applied reload swapped the 250 routes (or installed the first set).
    assert!(applied >= 10, "only {applied} reloads applied");
    assert!(
        t.log().contains("added=250 removed=250"),
        "reloads swap the churned routes:\n{}",
        t.log()
    );
    eprintln!("{reloads} reload signals in {churn_secs:.1} s, {applied} reloads applied");
    let pid = t.pe1_pid;
    let status = t.lab.stop(pid, Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit on SIGTERM:\n{}",
        t.log()
    );
}
