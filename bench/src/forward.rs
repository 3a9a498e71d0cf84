//! `bench forward`: forwarding on veth between network namespaces, vpnfwd
//! beside the Linux kernel, in one run.
//!
//! ```text
//!  generator ns ── g0 ═ d0 ── DUT ns ── d1 ═ s0 ── sink ns
//! ```
//!
//! The generator sends frames (`--size`, 64 bytes by default) to random
//! destinations over the installed routes (`--destinations`, 1024 by
//! default; `--flows` UDP source ports each) from pre-built frames,
//! rate-paced in bursts of 32, through an AF_XDP socket (`--generator
//! afxdp`, the default: descriptors on a ring and one kick per burst) or
//! AF_PACKET `sendmmsg` (`--generator afpacket`); each frame carries a
//! sequence number and a send timestamp in its last 16 bytes. The sink counts what arrives and records latencies in an
//! HDR histogram. For each system: the no-drop rate (binary search on the
//! offered rate, RFC 2544 style, loss ≤ 0.01 % over one-second trials), the
//! receive rate at the generator's maximum, latency percentiles at the
//! no-drop rate, and the DUT's CPU cycles per packet (its CPU time × the
//! nominal clock ÷ packets; vpnfwd only, the kernel's work is spread over
//! softirqs). `--rate PPS` replaces the no-drop search with one trial at
//! that offered rate. `--retries R` repeats a lossy trial of the search up
//! to R times before the rate counts as lossy; `--rounds N` measures every
//! system N times, alternating, and reports each system's median round. Needs root, and `vpnfwd` built next to this binary
//! (`cargo build --release -p control`).
//!
//! Systems: `vpnfwd` (VRF LPM + MPLS push), `vpnfwd-pop` (label pop + VRF
//! LPM), on the back-end `--backend afpacket|dpdk` (`--vdev net_af_xdp` or
//! `net_af_packet` with DPDK), and with `--compare`: `kernel` (plain IPv4
//! forwarding of the same traffic; the kernel here has no MPLS),
//! `testpmd-afpacket` and `testpmd-afxdp` (dpdk-testpmd MAC forwarding over
//! `net_af_packet` or `net_af_xdp` on the same veths: the I/O ceiling),
//! `ovs` and `ovs-pop` (Open vSwitch's userspace datapath with bagpipe-bgp's
//! OpenFlow rules: `push_mpls` + L2 rewrite per prefix, and `pop_mpls` then
//! a prefix lookup).

use crate::gen;
use crate::Opts;
use dataplane::io::afpacket::{AfPacketOptions, AfPacketPort};
use dataplane::io::afxdp::AfXdpTx;
use dataplane::io::PacketBuf;
use hdrhistogram::Histogram;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vpnfwd_tests::Lab;

const MAGIC: u32 = 0x7670_6e66;
/// The generator's socket type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generator {
    /// AF_XDP (copy mode): descriptors on a ring, one kick per burst.
    AfXdp,
    /// AF_PACKET `sendmmsg`.
    AfPacket,
}

enum GenPort {
    AfXdp(AfXdpTx),
    AfPacket(AfPacketPort),
}

/// Generator settings from the command line.
#[derive(Debug, Clone, Copy)]
struct GenOpts {
    /// The generator's socket.
    generator: Generator,
    /// Frame length in bytes (without the MPLS entry of pop frames).
    size: usize,
    /// UDP source ports per destination (flows).
    flows: usize,
    /// A fixed offered rate (packets/s) instead of the no-drop search.
    rate: Option<f64>,
    /// Further trials at a rate whose trial lost packets before the search
    /// takes it as lossy (a one-off hiccup of the shared cores then does
    /// not decide the no-drop rate).
    retries: usize,
}

static GEN: std::sync::OnceLock<GenOpts> = std::sync::OnceLock::new();

fn gen_opts() -> GenOpts {
    *GEN.get().unwrap_or(&GenOpts {
        generator: Generator::AfXdp,
        size: 64,
        flows: 1,
        rate: None,
        retries: 0,
    })
}
const POP_LABEL: u32 = 100;

struct Net {
    lab: Lab,
    g: String,
    d: String,
    s: String,
    g0: [u8; 6],
    d0: [u8; 6],
    s0: [u8; 6],
    /// Where the generator's frames go: the DUT's interface MAC, or a MAC
    /// of the forwarder's own that the DUT's kernel ignores.
    dst: [u8; 6],
}

/// The gateway MAC the forwarders answer to on their access port, not the
/// interface's own: the DUT's kernel, which also sees every frame an
/// AF_PACKET (or Open vSwitch netdev) port receives, then drops transit
/// frames at once (another host's MAC) instead of routing each one to an
/// error. The kernel comparison gets frames to the interface's MAC.
const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
/// The MAC every system sends forwarded frames to. Not the sink's own:
/// veth does the receiver's kernel work on the sender's core, so frames to
/// s0's MAC would make the DUT pay for the sink's IP stack. The sink reads
/// in promiscuous mode.
const SINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x5e];

fn mac_of(lab: &Lab, ns: &str, ifname: &str) -> Result<[u8; 6], String> {
    let out = lab
        .exec(ns, &["cat", &format!("/sys/class/net/{ifname}/address")])
        .map_err(|e| e.0)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = [0u8; 6];
    for (i, p) in text.trim().split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).map_err(|e| e.to_string())?;
    }
    Ok(m)
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn network() -> Result<Net, String> {
    let mut lab = Lab::new();
    let g = lab.ns("g").map_err(|e| e.0)?;
    let d = lab.ns("d").map_err(|e| e.0)?;
    let s = lab.ns("s").map_err(|e| e.0)?;
    for ns in [&g, &d, &s] {
        lab.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            .map_err(|e| e.0)?;
        lab.exec(
            ns,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        )
        .map_err(|e| e.0)?;
    }
    lab.veth(&g, "g0", &d, "d0").map_err(|e| e.0)?;
    lab.veth(&d, "d1", &s, "s0").map_err(|e| e.0)?;
    let g0 = mac_of(&lab, &g, "g0")?;
    let d0 = mac_of(&lab, &d, "d0")?;
    Ok(Net {
        lab,
        g,
        d,
        s,
        g0,
        d0,
        s0: SINK_MAC,
        dst: GATEWAY_MAC,
    })
}

/// Frames for a system: IPv4/UDP to random routed destinations, optionally
/// under one MPLS label.
fn frames(n: &Net, dests: &[u32], mpls: bool, src: [u8; 4]) -> Vec<Vec<u8>> {
    let g = gen_opts();
    dests
        .iter()
        .flat_map(|d| (0..g.flows).map(move |flow| (d, flow as u16)))
        .map(|(d, flow)| {
            let mut f = vec![0u8; g.size + if mpls { 4 } else { 0 }];
            f[0..6].copy_from_slice(&n.dst);
            f[6..12].copy_from_slice(&n.g0);
            let mut at = 12;
            if mpls {
                f[12..14].copy_from_slice(&0x8847u16.to_be_bytes());
                f[14..18].copy_from_slice(&((POP_LABEL << 12) | 0x100 | 64).to_be_bytes());
                at = 16;
            } else {
                f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            }
            let ip = at + 2;
            let ip_len = (f.len() - ip) as u16;
            let hdr = [
                0x45,
                0,
                (ip_len >> 8) as u8,
                ip_len as u8,
                0,
                0,
                0x40,
                0,
                64,
                17,
                0,
                0,
                src[0],
                src[1],
                src[2],
                src[3],
                (d >> 24) as u8,
                (d >> 16) as u8,
                (d >> 8) as u8,
                *d as u8,
            ];
            f[ip..ip + 20].copy_from_slice(&hdr);
            let c = dataplane::wire::checksum::checksum(&f[ip..ip + 20]);
            f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
            let udp = ip + 20;
            let ulen = (f.len() - udp) as u16;
            let sport = 12345u16.wrapping_add(flow);
            f[udp..udp + 8].copy_from_slice(&[
                (sport >> 8) as u8,
                sport as u8,
                0x30,
                0x3a,
                (ulen >> 8) as u8,
                ulen as u8,
                0,
                0,
            ]);
            f
        })
        .collect()
}

struct Trial {
    offered_pps: f64,
    rx_pps: f64,
    loss: f64,
    hist: Histogram<u64>,
}

/// Send `frames` at `rate` pps (None: as fast as possible) for `secs`.
fn trial(n: &Net, frames: &[Vec<u8>], rate: Option<f64>, secs: f64) -> Result<Trial, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let sink = {
        let (stop, received) = (stop.clone(), received.clone());
        n.lab
            .in_ns(&n.s, move || {
                let mut port =
                    AfPacketPort::open("s0", &AfPacketOptions::default()).expect("sink socket");
                let mut bufs: Vec<PacketBuf> = (0..64).map(|_| PacketBuf::new()).collect();
                let mut h =
                    Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
                let mut got = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = port.rx_burst(&mut bufs);
                    if k == 0 {
                        // Give the core back: on a small machine the sink
                        // shares it with the generator and the DUT.
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    let now = start.elapsed().as_nanos() as u64;
                    for b in &bufs[..k] {
                        let f = b.frame();
                        if f.len() < 16 {
                            continue;
                        }
                        let t = &f[f.len() - 16..];
                        if u32::from_be_bytes([t[0], t[1], t[2], t[3]]) != MAGIC {
                            continue;
                        }
                        got += 1;
                        let ts = u64::from_be_bytes(t[8..16].try_into().unwrap_or([0; 8]));
                        let _ = h.record(now.saturating_sub(ts).max(1));
                    }
                }
                received.store(got, Ordering::Relaxed);
                h
            })
            .map_err(|e| e.to_string())?
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut frames: Vec<Vec<u8>> = frames.to_vec();
    let gen = n
        .lab
        .in_ns(&n.g, move || {
            let afpacket = || AfPacketPort::open_tx_only("g0").expect("generator socket");
            let mut port = match gen_opts().generator {
                Generator::AfXdp => match AfXdpTx::open("g0", 0) {
                    Ok(p) => GenPort::AfXdp(p),
                    Err(e) => {
                        eprintln!("bench: {e}; generating with AF_PACKET instead");
                        GenPort::AfPacket(afpacket())
                    }
                },
                Generator::AfPacket => GenPort::AfPacket(afpacket()),
            };
            let t0 = Instant::now();
            let mut sent = 0u64;
            let mut i = 0usize;
            while t0.elapsed().as_secs_f64() < secs {
                if let Some(r) = rate {
                    let due = (t0.elapsed().as_secs_f64() * r) as u64;
                    if sent >= due {
                        // Ahead of the schedule: sleep rather than spin when
                        // the next burst is more than ~100 µs away.
                        if (sent - due) as f64 > r * 1e-4 {
                            std::thread::sleep(Duration::from_micros(50));
                        } else {
                            std::hint::spin_loop();
                        }
                        continue;
                    }
                }
                let ts = start.elapsed().as_nanos() as u64;
                let burst = 32.min(frames.len());
                let mut refs: Vec<&[u8]> = Vec::with_capacity(burst);
                let nf = frames.len();
                for k in 0..burst {
                    let f = &mut frames[(i + k) % nf];
                    let l = f.len();
                    f[l - 16..l - 12].copy_from_slice(&MAGIC.to_be_bytes());
                    f[l - 12..l - 8]
                        .copy_from_slice(&((sent as u32).wrapping_add(k as u32)).to_be_bytes());
                    f[l - 8..].copy_from_slice(&ts.to_be_bytes());
                }
                for k in 0..burst {
                    refs.push(&frames[(i + k) % frames.len()]);
                }
                let took = match &mut port {
                    GenPort::AfXdp(p) => p.tx_burst(&refs),
                    GenPort::AfPacket(p) => p.tx_burst(&refs),
                };
                sent += took as u64;
                i = (i + took) % frames.len();
            }
            let elapsed = t0.elapsed().as_secs_f64();
            if let GenPort::AfXdp(p) = &mut port {
                // Frames still on the ring count as sent: push them out.
                p.flush(100_000);
            }
            (sent, elapsed)
        })
        .map_err(|e| e.to_string())?;
    let (sent, elapsed) = gen
        .join()
        .map_err(|_| "generator thread failed".to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let hist = sink.join().map_err(|_| "sink thread failed".to_string())?;
    let rx = received.load(Ordering::Relaxed);
    Ok(Trial {
        offered_pps: sent as f64 / elapsed,
        rx_pps: rx as f64 / elapsed,
        loss: if sent == 0 {
            1.0
        } else {
            1.0 - rx as f64 / sent as f64
        },
        hist,
    })
}

fn cpu_mhz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

struct Result_ {
    ndr: f64,
    max_offered: f64,
    rx_at_max: f64,
    cycles: Option<f64>,
    lat: Option<(f64, f64, f64)>,
}

fn measure(n: &Net, frames: &[Vec<u8>], pid: Option<u32>, secs: f64) -> Result<Result_, String> {
    if let Some(rate) = gen_opts().rate {
        // One trial at the asked rate: "ndr" is that rate if nothing was
        // lost, else 0; latency from that trial.
        let _ = trial(n, frames, Some(10_000.0), 0.3)?;
        let c0 = pid.and_then(crate::cpu_seconds);
        let t = trial(n, frames, Some(rate), secs)?;
        let c1 = pid.and_then(crate::cpu_seconds);
        let cycles = match (c0, c1) {
            (Some(a), Some(b)) if t.rx_pps > 0.0 => {
                Some((b - a) * cpu_mhz() * 1e6 / (t.rx_pps * secs))
            }
            _ => None,
        };
        let h = &t.hist;
        println!(
            "  at {:.3} Mpps offered: received {:.3} Mpps, loss {:.4} %",
            t.offered_pps / 1e6,
            t.rx_pps / 1e6,
            t.loss * 100.0
        );
        return Ok(Result_ {
            ndr: if t.loss <= 1e-4 { t.offered_pps } else { 0.0 },
            max_offered: t.offered_pps,
            rx_at_max: t.rx_pps,
            cycles,
            lat: Some((
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.value_at_quantile(0.999) as f64 / 1e3,
            )),
        });
    }
    // Warm up (ARP, caches), then the generator's maximum.
    let _ = trial(n, frames, Some(10_000.0), 0.3)?;
    let c0 = pid.and_then(crate::cpu_seconds);
    let max = trial(n, frames, None, secs)?;
    let c1 = pid.and_then(crate::cpu_seconds);
    let cycles = match (c0, c1) {
        (Some(a), Some(b)) if max.rx_pps > 0.0 => {
            Some((b - a) * cpu_mhz() * 1e6 / (max.rx_pps * secs))
        }
        _ => None,
    };
    let (max_offered, rx_at_max) = (max.offered_pps, max.rx_pps);
    let (mut lo, mut hi) = (0.0f64, max.offered_pps);
    let mut best: Option<Trial> = None;
    if max.loss <= 1e-4 {
        lo = max.offered_pps;
        best = Some(max);
    } else {
        for _ in 0..7 {
            let mid = (lo + hi) / 2.0;
            let mut t = trial(n, frames, Some(mid), secs)?;
            for _ in 0..gen_opts().retries {
                if t.loss <= 1e-4 {
                    break;
                }
                t = trial(n, frames, Some(mid), secs)?;
            }
            if t.loss <= 1e-4 {
                lo = mid;
                best = Some(t);
            } else {
                hi = mid;
            }
        }
    }
    let lat = best.as_ref().map(|b| {
        let h = &b.hist;
        (
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3,
        )
    });
    Ok(Result_ {
        ndr: lo,
        max_offered,
        rx_at_max,
        cycles,
        lat,
    })
}

fn which(prog: &str) -> Option<String> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

fn start_vpnfwd(n: &mut Net, dir: &Path, name: &str, config: String) -> Result<u32, String> {
    let d = n.d.clone();
    let (pid, log) = crate::spawn_vpnfwd(&mut n.lab, &d, dir, name, &config)?;
    // Wait until it has loaded the routes and opened its ports.
    let ok = Lab::wait_until(Duration::from_secs(120), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" forwarding ")
    });
    if !ok {
        return Err(format!(
            "vpnfwd did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    Ok(pid)
}

/// dpdk-testpmd MAC forwarding between d0 and d1 over `vdev`: without huge
/// pages for `net_af_packet` (as a trial user would), with them for
/// `net_af_xdp` (in memory, no files left behind).
fn run_testpmd(
    testpmd: &str,
    vdev: &str,
    dir: &Path,
    dests: &[u32],
    secs: f64,
) -> Result<Result_, String> {
    let mut n = network()?;
    let prefix = format!("vpnfwdbench{}", std::process::id());
    let peer = format!("1,{}", mac_text(&n.s0));
    let log = dir.join(format!("testpmd-{vdev}.log"));
    let d = n.d.clone();
    let v0 = format!("--vdev={vdev}0,iface=d0");
    let v1 = format!("--vdev={vdev}1,iface=d1");
    let mut args = vec![testpmd, "-l", "0,1", "--no-pci", "--file-prefix", &prefix];
    if vdev == "net_af_packet" {
        args.extend(["--no-huge", "-m", "512"]);
    } else {
        args.push("--in-memory");
    }
    args.extend([
        v0.as_str(),
        v1.as_str(),
        "--",
        "--forward-mode=mac",
        "--eth-peer",
        &peer,
        "--total-num-mbufs=16384",
        "--stats-period",
        "60",
    ]);
    let pid = n.lab.spawn(&d, &args, &log).map_err(|e| e.0)?;
    let ok = Lab::wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("forwards packets")
    });
    if !ok {
        return Err(format!(
            "testpmd did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    let fr = frames(&n, dests, false, [10, 0, 0, 1]);
    let r = measure(&n, &fr, Some(pid), secs);
    n.lab.stop(pid, Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    r
}

/// Open vSwitch's userspace datapath (`datapath_type=netdev`), started in
/// the DUT namespace with its own database and run directory, with the
/// OpenFlow rules bagpipe-bgp installs: per prefix, push the label and
/// rewrite L2 (push); or pop label 100 then look the prefix up (pop).
fn run_ovs(
    sys: &str,
    pop: bool,
    dir: &Path,
    routes: &[gen::Route],
    dests: &[u32],
    secs: f64,
) -> Result<Result_, String> {
    let mut n = network()?;
    let d = n.d.clone();
    let od = dir.join(sys);
    std::fs::create_dir_all(&od).map_err(|e| e.to_string())?;
    let od_s = od.to_str().unwrap_or("").to_string();
    let db = format!("{od_s}/conf.db");
    let sock = format!("unix:{od_s}/db.sock");
    let env = |v: &mut Vec<String>| {
        let mut a = vec![
            "env".to_string(),
            format!("OVS_RUNDIR={od_s}"),
            format!("OVS_DBDIR={od_s}"),
            format!("OVS_LOGDIR={od_s}"),
        ];
        a.append(v);
        a
    };
    let run = |n: &Net, v: Vec<&str>| -> Result<(), String> {
        let mut v: Vec<String> = v.into_iter().map(str::to_string).collect();
        let a = env(&mut v);
        let r: Vec<&str> = a.iter().map(String::as_str).collect();
        n.lab.exec(&n.d, &r).map(|_| ()).map_err(|e| e.0)
    };
    run(
        &n,
        vec![
            "ovsdb-tool",
            "create",
            &db,
            "/usr/share/openvswitch/vswitch.ovsschema",
        ],
    )?;
    let remote = format!("--remote=p{}", &sock);
    let mut v: Vec<String> = ["ovsdb-server", &db, &remote]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let a = env(&mut v);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let dbpid = n
        .lab
        .spawn(&d, &a, &od.join("ovsdb-server.out"))
        .map_err(|e| e.0)?;
    let db_sock = od.join("db.sock");
    if !Lab::wait_until(Duration::from_secs(10), || db_sock.exists()) {
        return Err("ovsdb-server did not start".into());
    }
    let vsctl = |n: &Net, args: &[&str]| -> Result<(), String> {
        let db_arg = format!("--db={sock}");
        let mut v = vec!["ovs-vsctl", db_arg.as_str(), "--timeout=20"];
        v.extend_from_slice(args);
        run(n, v)
    };
    vsctl(&n, &["--no-wait", "init"])?;
    let mut v: Vec<String> = ["ovs-vswitchd", sock.as_str()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let a = env(&mut v);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let swpid = n
        .lab
        .spawn(&d, &a, &od.join("ovs-vswitchd.out"))
        .map_err(|e| e.0)?;
    vsctl(
        &n,
        &[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ],
    )?;
    vsctl(
        &n,
        &[
            "add-port",
            "br0",
            "d0",
            "--",
            "set",
            "interface",
            "d0",
            "ofport_request=1",
        ],
    )?;
    vsctl(
        &n,
        &[
            "add-port",
            "br0",
            "d1",
            "--",
            "set",
            "interface",
            "d1",
            "ofport_request=2",
        ],
    )?;
    // The routes covering the destinations, longest first by priority.
    let mut flows = String::new();
    let mut seen = std::collections::HashSet::new();
    let (d1, s0) = (mac_text(&mac_of(&n.lab, &d, "d1")?), mac_text(&n.s0));
    for dst in dests {
        let best = routes
            .iter()
            .filter(|r| {
                r.len == 0
                    || ((r.prefix >> 96) as u32) == dst & (u32::MAX << (32 - u32::from(r.len)))
            })
            .max_by_key(|r| r.len);
        let Some(r) = best else { continue };
        if !seen.insert((r.prefix, r.len)) {
            continue;
        }
        let a = std::net::Ipv4Addr::from((r.prefix >> 96) as u32);
        let prio = 100 + u32::from(r.len);
        if pop {
            flows.push_str(&format!(
                "table=1,priority={prio},ip,nw_dst={a}/{},actions=mod_dl_src:{d1},mod_dl_dst:{s0},dec_ttl,output:2\n",
                r.len
            ));
        } else {
            flows.push_str(&format!(
                "table=0,priority={prio},in_port=1,ip,nw_dst={a}/{},actions=push_mpls:0x8847,set_field:1000->mpls_label,mod_dl_src:{d1},mod_dl_dst:{s0},output:2\n",
                r.len
            ));
        }
    }
    if pop {
        flows.push_str(&format!(
            "table=0,priority=100,in_port=1,mpls,mpls_label={POP_LABEL},mpls_bos=1,actions=pop_mpls:0x0800,resubmit(,1)\n"
        ));
    }
    let ff = od.join("flows.txt");
    std::fs::write(&ff, &flows).map_err(|e| e.to_string())?;
    run(&n, vec!["ovs-ofctl", "del-flows", "br0"])?;
    run(
        &n,
        vec!["ovs-ofctl", "add-flows", "br0", ff.to_str().unwrap_or("")],
    )?;
    println!(
        "  {sys}: {} OpenFlow rules on a netdev bridge",
        flows.lines().count()
    );
    if pop {
        n.dst = n.d0;
    }
    let fr = frames(&n, dests, pop, [10, 0, 0, 1]);
    let r = measure(&n, &fr, Some(swpid), secs);
    n.lab.stop(swpid, Duration::from_secs(5));
    n.lab.stop(dbpid, Duration::from_secs(5));
    r
}

/// Run the benchmark.
pub fn run(opts: &Opts) -> Result<(), String> {
    if !vpnfwd_tests::can_run() {
        return Err("forward needs root (it builds network namespaces)".into());
    }
    let nroutes: usize = opts.num("routes", 1_000_000)?;
    let secs: f64 = opts.num("seconds", 1.0)?;
    let seed: u64 = opts.num("seed", 1)?;
    let compare = opts
        .0
        .get("compare")
        .cloned()
        .unwrap_or_else(|| "kernel".into());
    let backend = opts
        .0
        .get("backend")
        .cloned()
        .unwrap_or_else(|| "afpacket".into());
    // `--dut-core N`: pin vpnfwd's worker to core N.
    let cores = match opts.0.get("dut-core") {
        None => String::new(),
        Some(c) => {
            let c: usize = c
                .parse()
                .map_err(|_| format!("--dut-core: a core number, not {c:?}"))?;
            format!("cores = [{c}]\n")
        }
    };
    let dataplane = match backend.as_str() {
        "afpacket" => format!("[dataplane]\nidle = \"busy\"\n{cores}"),
        "dpdk" => {
            let driver = match opts.0.get("vdev").map(String::as_str) {
                None | Some("net_af_xdp") => "af_xdp",
                Some("net_af_packet") => "af_packet",
                Some(v) => return Err(format!("--vdev: net_af_xdp or net_af_packet, not {v:?}")),
            };
            format!("[dataplane]\nidle = \"busy\"\nbackend = \"dpdk\"\n{cores}\n[dataplane.dpdk]\ndriver = \"{driver}\"\n")
        }
        b => return Err(format!("--backend: afpacket or dpdk, not {b:?}")),
    };
    let size: usize = opts.num("size", 64)?;
    if !(64..=1500).contains(&size) {
        return Err("--size: 64 to 1500 bytes".into());
    }
    let flows: usize = opts.num("flows", 1)?;
    let ndest: usize = opts.num("destinations", 1024)?;
    if flows == 0 || ndest == 0 || flows * ndest > 1 << 20 {
        return Err("--flows and --destinations: positive, their product at most 2^20".into());
    }
    let rate: Option<f64> = match opts.0.get("rate") {
        None => None,
        Some(v) => Some(
            v.parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0)
                .ok_or_else(|| format!("--rate: packets per second, not {v:?}"))?,
        ),
    };
    let generator = match opts.0.get("generator").map(String::as_str) {
        None | Some("afxdp") => Generator::AfXdp,
        Some("afpacket") => Generator::AfPacket,
        Some(g) => return Err(format!("--generator: afxdp or afpacket, not {g:?}")),
    };
    let retries: usize = opts.num("retries", 0)?;
    let rounds: usize = opts.num("rounds", 1)?;
    if rounds == 0 || rounds > 20 || retries > 10 {
        return Err("--rounds: 1 to 20; --retries: 0 to 10".into());
    }
    let _ = GEN.set(GenOpts {
        generator,
        size,
        flows,
        rate,
        retries,
    });
    let routes = gen::table(nroutes, false, 1, seed);
    let dests: Vec<u32> = gen::keys(&routes, (4 * ndest).max(4096), false, seed ^ 3)
        .into_iter()
        .map(|k| (k >> 96) as u32)
        .collect();
    // Only destinations a route covers (the 10 % random keys may miss).
    let covered = |d: u32| {
        routes.iter().any(|r| {
            r.len == 0 || ((r.prefix >> 96) as u32) == d & (u32::MAX << (32 - u32::from(r.len)))
        })
    };
    let dests: Vec<u32> = dests
        .into_iter()
        .filter(|d| covered(*d))
        .take(ndest)
        .collect();
    let scratch = crate::ScratchDir::new("vpnfwd-forward")?;
    let dir = scratch.0.clone();
    let route_file = dir.join("routes.txt");
    let mut text = String::with_capacity(nroutes * 20);
    for r in &routes {
        let a = std::net::Ipv4Addr::from((r.prefix >> 96) as u32);
        text.push_str(&format!("{a}/{}\n", r.len));
    }
    std::fs::write(&route_file, &text).map_err(|e| e.to_string())?;
    println!(
        "forward: {nroutes} routes, {} destinations × {flows} flows, {size}-byte frames, {secs} s trials{}, vpnfwd on {backend}",
        dests.len(),
        rate.map_or(String::new(), |r| format!(" at {:.3} Mpps", r / 1e6))
    );
    let mut results = serde_json::Map::new();
    // Every system once per round, the rounds one after the other, so that
    // the systems alternate; each system's figures are its median round's.
    let mut rounds_of: Vec<(String, Vec<Result_>)> = Vec::new();
    for round in 0..rounds {
        if rounds > 1 {
            println!("round {}", round + 1);
        }
        let mut table: Vec<(String, Result_)> = Vec::new();

        // vpnfwd, push: access port d0 → uplink d1, MPLS over Ethernet.
        for (name, pop) in [("vpnfwd", false), ("vpnfwd-pop", true)] {
            let mut n = network()?;
            let (access, uplink, host, peer) = if pop {
                ("d1", "d0", n.s0, n.g0)
            } else {
                ("d0", "d1", n.g0, n.s0)
            };
            let target = if pop {
                format!("port = \"{access}\"")
            } else {
                format!(
                    "label = 1000\npe = \"192.0.2.2\"\nnexthop_mac = \"{}\"",
                    mac_text(&n.s0)
                )
            };
            let _ = peer;
            if pop {
                // Labelled frames go to the uplink's own MAC, as from a PE.
                n.dst = n.d0;
            }
            let config = format!(
                "{dataplane}\n[[vrf]]\nname = \"v\"\nlabel = {POP_LABEL}\n\n[uplink]\ninterface = \"{uplink}\"\naddress = \"192.0.2.1\"\n\n[[port]]\ninterface = \"{access}\"\nvrf = \"v\"\nmac = \"{}\"\nrouter_mac = \"{}\"\n\n[[route_file]]\nvrf = \"v\"\npath = \"{}\"\n{target}\n",
                mac_text(&host),
                mac_text(&n.dst),
                route_file.display()
            );
            let pid = start_vpnfwd(&mut n, &dir, name, config)?;
            let fr = frames(&n, &dests, pop, [10, 0, 0, 1]);
            let r = measure(&n, &fr, Some(pid), secs)?;
            // Where the packets went: the counters vpnfwd logs as it stops
            // (its workers' and, with DPDK, each device's).
            n.lab.stop(pid, Duration::from_secs(10));
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            for l in log
                .lines()
                .filter(|l| l.contains(" counters ") || l.contains("ipackets="))
            {
                let msg = l.split_once("INFO ").map_or(l, |(_, m)| m);
                println!("    {}", msg.split_once(": ").map_or(msg, |(_, m)| m));
            }
            table.push((name.to_string(), r));
        }
        if compare.split(',').any(|c| c == "kernel") {
            let mut n = network()?;
            // The kernel routes only what is addressed to its interface.
            n.dst = n.d0;
            let d = &n.d;
            for cmd in [
                vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                vec!["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"],
                vec!["ip", "addr", "add", "10.255.0.1/30", "dev", "d0"],
                vec!["ip", "addr", "add", "10.255.1.1/30", "dev", "d1"],
            ] {
                n.lab.exec(d, &cmd).map_err(|e| e.0)?;
            }
            let s0 = mac_text(&n.s0);
            n.lab
                .exec(
                    d,
                    &[
                        "ip",
                        "neigh",
                        "replace",
                        "10.255.1.2",
                        "lladdr",
                        &s0,
                        "dev",
                        "d1",
                        "nud",
                        "permanent",
                    ],
                )
                .map_err(|e| e.0)?;
            let batch = dir.join("kernel-routes.batch");
            let mut b = String::with_capacity(nroutes * 40);
            for r in &routes {
                let a = std::net::Ipv4Addr::from((r.prefix >> 96) as u32);
                b.push_str(&format!("route replace {a}/{} via 10.255.1.2\n", r.len));
            }
            std::fs::write(&batch, b).map_err(|e| e.to_string())?;
            n.lab
                .exec(d, &["ip", "-batch", batch.to_str().unwrap_or("")])
                .map_err(|e| e.0)?;
            let fr = frames(&n, &dests, false, [10, 255, 0, 2]);
            let r = measure(&n, &fr, None, secs)?;
            table.push(("kernel".to_string(), r));
        }
        for (sys, vdev) in [
            ("testpmd-afpacket", "net_af_packet"),
            ("testpmd-afxdp", "net_af_xdp"),
        ] {
            if !compare.split(',').any(|c| c == sys) {
                continue;
            }
            match which("dpdk-testpmd") {
                None => println!("{sys}: skipped, dpdk-testpmd not found (Debian package dpdk)"),
                Some(testpmd) => {
                    let r = run_testpmd(&testpmd, vdev, &dir, &dests, secs)?;
                    table.push((sys.to_string(), r));
                }
            }
        }
        for (sys, pop) in [("ovs", false), ("ovs-pop", true)] {
            if !compare.split(',').any(|c| c == sys) {
                continue;
            }
            if which("ovs-vswitchd").is_none() {
                println!(
                    "{sys}: skipped, ovs-vswitchd not found (Debian package openvswitch-switch)"
                );
                continue;
            }
            let r = run_ovs(sys, pop, &dir, &routes, &dests, secs)?;
            table.push((sys.to_string(), r));
        }
        for (name, r) in table {
            if rounds > 1 {
                println!("  {name}: NDR {:.3} Mpps", r.ndr / 1e6);
            }
            match rounds_of.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(r),
                None => rounds_of.push((name, vec![r])),
            }
        }
    }
    let table: Vec<(String, Result_)> = rounds_of
        .into_iter()
        .map(|(name, mut v)| {
            v.sort_by(|a, b| a.ndr.total_cmp(&b.ndr));
            let mid = v.len() / 2;
            (name, v.swap_remove(mid))
        })
        .collect();
    println!(
        "{:<17} {:>10} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "system", "NDR Mpps", "max offered", "rx at max", "cyc/pkt", "p50 us", "p99 us", "p99.9 us"
    );
    for (name, r) in &table {
        let (p50, p99, p999) = r.lat.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        println!(
            "{name:<17} {:>10.3} {:>12.3} {:>10.3} {:>10} {p50:>9.1} {p99:>9.1} {p999:>9.1}{}",
            r.ndr / 1e6,
            r.max_offered / 1e6,
            r.rx_at_max / 1e6,
            r.cycles.map_or("-".into(), |c| format!("{c:.0}")),
            if gen_opts().rate.is_some() {
                "  (fixed rate)"
            } else if r.ndr >= 0.98 * r.max_offered {
                "  (generator-bound)"
            } else {
                ""
            }
        );
        results.insert(
            name.clone(),
            json!({
                "ndr_mpps": (r.ndr / 1e3).round() / 1e3,
                "max_offered_mpps": (r.max_offered / 1e3).round() / 1e3,
                "rx_at_max_mpps": (r.rx_at_max / 1e3).round() / 1e3,
                "cycles_per_packet": r.cycles.map(|c| c.round()),
                "generator_bound": gen_opts().rate.is_none() && r.ndr >= 0.98 * r.max_offered,
                "latency_us": r.lat.map(|(a, b, c)| json!({"p50": a, "p99": b, "p999": c})),
            }),
        );
    }
    drop(scratch);
    println!("{}", json!({ "results": results }));
    Ok(())
}
