//! vpnfwd forwarding real traffic between network namespaces over AF_PACKET.
//!
//! Topology (one PE):
//!
//! ```text
//!  h1 (10.1.1.1, VRF blue) ── p1 ┐
//!  h2 (10.1.2.1, VRF blue) ── p2 ├─ vpnfwd (namespace r)
//!  h3 (10.1.1.1, VRF red)  ── p3 ┘
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;
use vpnfwd_tests::Lab;

const VPNFWD: &str = env!("CARGO_BIN_EXE_vpnfwd");

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vpnfwd-{}-{name}", std::process::id()))
}

struct Host {
    ns: String,
    mac: &'static str,
}

/// Build the lab and start vpnfwd; returns the lab, the hosts and the router's log path.
fn one_pe(lab: &mut Lab, name: &str) -> (Vec<Host>, String, PathBuf) {
    let r = lab.ns("r").expect("router namespace");
    lab.exec(&r, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        .expect("sysctl");
    lab.exec(
        &r,
        &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
    )
    .expect("sysctl");
    let specs = [
        ("h1", "p1", "02:00:00:00:01:01", "10.1.1.1/24", "10.1.1.254"),
        ("h2", "p2", "02:00:00:00:01:02", "10.1.2.1/24", "10.1.2.254"),
        ("h3", "p3", "02:00:00:00:01:03", "10.1.1.1/24", "10.1.1.254"),
    ];
    let mut hosts = Vec::new();
    for (h, p, mac, addr, gw) in specs {
        let ns = lab.ns(h).expect("host namespace");
        lab.veth(&r, p, &ns, "eth0").expect("veth");
        lab.exec(&ns, &["ip", "link", "set", "eth0", "address", mac])
            .expect("mac");
        lab.exec(&ns, &["ip", "addr", "add", addr, "dev", "eth0"])
            .expect("addr");
        lab.exec(&ns, &["ip", "route", "add", "default", "via", gw])
            .expect("route");
        // vpnfwd forwards frames as they are on the wire: hosts must not hand
        // it 64 KiB segmentation-offload super-frames.
        lab.exec(
            &ns,
            &[
                "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off",
            ],
        )
        .expect("ethtool");
        hosts.push(Host { ns, mac });
    }
    let config = format!(
        r#"
[dataplane]
idle = "sleep"

[[vrf]]
name = "blue"

[[vrf]]
name = "red"

[[port]]
interface = "p1"
vrf = "blue"
mac = "{m1}"
addresses = ["10.1.1.1/32"]
gateway = "10.1.1.254"

[[port]]
interface = "p2"
vrf = "blue"
mac = "{m2}"
addresses = ["10.1.2.1/32"]
gateway = "10.1.2.254"

[[port]]
interface = "p3"
vrf = "red"
mac = "{m3}"
addresses = ["10.1.1.1/32"]
gateway = "10.1.1.254"
"#,
        m1 = hosts[0].mac,
        m2 = hosts[1].mac,
        m3 = hosts[2].mac,
    );
    let path = tmp(&format!("{name}.toml"));
    std::fs::write(&path, config).expect("write config");
    let log = tmp(&format!("{name}.log"));
    let cfg = path.to_str().expect("utf-8 path").to_string();
    lab.spawn(&r, &[VPNFWD, "run", "--config", &cfg], &log)
        .expect("start vpnfwd");
    (hosts, r, log)
}

fn ping(lab: &Lab, ns: &str, dst: &str) -> bool {
    lab.succeeds(ns, &["ping", "-c", "1", "-W", "1", dst])
}

#[test]
fn hosts_in_one_vrf_reach_each_other_and_other_vrfs_do_not() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut lab = Lab::new();
    let (hosts, _r, log) = one_pe(&mut lab, "onepe");
    let up = Lab::wait_until(Duration::from_secs(10), || {
        ping(&lab, &hosts[0].ns, "10.1.1.254")
    });
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(up, "gateway never answered; vpnfwd log:\n{}", logtext());
    // Same VRF, across two ports.
    assert!(
        ping(&lab, &hosts[0].ns, "10.1.2.1"),
        "h1 → h2\n{}",
        logtext()
    );
    assert!(ping(&lab, &hosts[1].ns, "10.1.1.1"), "h2 → h1");
    // The red host has the same address as h1 but cannot reach blue.
    assert!(
        ping(&lab, &hosts[2].ns, "10.1.1.254"),
        "red gateway answers"
    );
    assert!(!ping(&lab, &hosts[2].ns, "10.1.2.1"), "red reached blue");

    // A TCP transfer with its content checked.
    const SIZE: usize = 100 << 20;
    let server = lab
        .in_ns(&hosts[1].ns, || {
            let l = TcpListener::bind("10.1.2.1:5001").expect("bind");
            let (mut s, _) = l.accept().expect("accept");
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0usize;
            loop {
                let k = s.read(&mut buf).expect("read");
                if k == 0 {
                    break;
                }
                for b in &buf[..k] {
                    h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
                }
                n += k;
            }
            (n, h)
        })
        .expect("enter h2");
    std::thread::sleep(Duration::from_millis(200));
    let client = lab
        .in_ns(&hosts[0].ns, || {
            let mut s = TcpStream::connect_timeout(
                &"10.1.2.1:5001".parse().expect("addr"),
                Duration::from_secs(5),
            )
            .expect("connect");
            s.set_write_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut x: u32 = 12345;
            let mut buf = vec![0u8; 1 << 16];
            let mut sent = 0;
            while sent < SIZE {
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                    h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
                }
                s.write_all(&buf).expect("write");
                sent += buf.len();
            }
            (sent, h)
        })
        .expect("enter h1");
    let sent = client.join().expect("client");
    let got = server.join().expect("server");
    assert_eq!(got, sent, "received bytes and digest equal what was sent");
    // The transfer went out through the ports' AF_XDP sockets (the default).
    assert!(
        logtext().contains("port transmits with AF_XDP"),
        "{}",
        logtext()
    );
}

#[test]
fn an_expiring_ttl_gets_time_exceeded_from_the_gateway() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut lab = Lab::new();
    let (hosts, _r, log) = one_pe(&mut lab, "ttl");
    assert!(
        Lab::wait_until(Duration::from_secs(10), || ping(
            &lab,
            &hosts[0].ns,
            "10.1.1.254"
        )),
        "gateway never answered; vpnfwd log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // TTL 1 expires at the router: ICMP time exceeded from the gateway.
    let out = lab.exec(
        &hosts[0].ns,
        &["ping", "-c", "1", "-W", "1", "-t", "1", "10.1.2.1"],
    );
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).to_string(),
        Err(e) => e.0,
    };
    assert!(
        text.contains("From 10.1.1.254") && text.contains("Time to live exceeded"),
        "{text}"
    );
    // TTL 2 gets through.
    assert!(lab.succeeds(
        &hosts[0].ns,
        &["ping", "-c", "1", "-W", "1", "-t", "2", "10.1.2.1"]
    ));
}
