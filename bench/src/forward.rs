//! `bench forward`: forwarding on veth between network namespaces, vpnfwd
//! beside the Linux kernel, in one run.
//!
//! ```text
//!  generator ns ── g0 ═ d0 ── DUT ns ── d1 ═ s0 ── sink ns
//! ```
//!
//! The generator sends 64-byte frames with random destinations over the
//! installed routes (AF_PACKET `sendmmsg`, pre-built frames, rate-paced in
//! bursts of 32); each carries a sequence number and a send timestamp in its
//! last 16 bytes. The sink counts what arrives and records latencies in an
//! HDR histogram. For each system: the no-drop rate (binary search on the
//! offered rate, RFC 2544 style, loss ≤ 0.01 % over one-second trials), the
//! receive rate at the generator's maximum, latency percentiles at the
//! no-drop rate, and the DUT's CPU cycles per packet (its CPU time × the
//! nominal clock ÷ packets; vpnfwd only, the kernel's work is spread over
//! softirqs). Needs root, and `vpnfwd` built next to this binary
//! (`cargo build --release -p control`).
//!
//! Systems: `vpnfwd` (VRF LPM + MPLS push), `vpnfwd-pop` (label pop + VRF
//! LPM), and with `--compare`: `kernel` (plain IPv4 forwarding of the same
//! traffic; the kernel here has no MPLS), `testpmd-afpacket` (dpdk-testpmd
//! MAC forwarding over `net_af_packet` on the same veths, without hugepages:
//! the I/O ceiling).

use crate::gen;
use crate::Opts;
use dataplane::io::afpacket::{AfPacketOptions, AfPacketPort};
use dataplane::io::PacketBuf;
use hdrhistogram::Histogram;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vpnfwd_tests::Lab;

const MAGIC: u32 = 0x7670_6e66;
const FRAME: usize = 64;
const POP_LABEL: u32 = 100;

struct Net {
    lab: Lab,
    g: String,
    d: String,
    s: String,
    g0: [u8; 6],
    d0: [u8; 6],
    s0: [u8; 6],
}

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
    let s0 = mac_of(&lab, &s, "s0")?;
    Ok(Net {
        lab,
        g,
        d,
        s,
        g0,
        d0,
        s0,
    })
}

/// Frames for a system: IPv4/UDP to random routed destinations, optionally
/// under one MPLS label.
fn frames(n: &Net, dests: &[u32], mpls: bool, src: [u8; 4]) -> Vec<Vec<u8>> {
    dests
        .iter()
        .map(|d| {
            let mut f = vec![0u8; FRAME + if mpls { 4 } else { 0 }];
            f[0..6].copy_from_slice(&n.d0);
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
            f[udp..udp + 8].copy_from_slice(&[
                0x30,
                0x39,
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
                        std::thread::yield_now();
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
            let mut port = AfPacketPort::open_tx_only("g0").expect("generator socket");
            let t0 = Instant::now();
            let mut sent = 0u64;
            let mut i = 0usize;
            while t0.elapsed().as_secs_f64() < secs {
                if let Some(r) = rate {
                    let due = (t0.elapsed().as_secs_f64() * r) as u64;
                    if sent >= due {
                        std::hint::spin_loop();
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
                let took = port.tx_burst(&refs);
                sent += took as u64;
                i = (i + burst) % frames.len();
            }
            (sent, t0.elapsed().as_secs_f64())
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
            let t = trial(n, frames, Some(mid), secs)?;
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

fn vpnfwd_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.with_file_name("vpnfwd");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build --release -p control`",
            p.display()
        ))
    }
}

fn start_vpnfwd(n: &mut Net, dir: &Path, name: &str, config: String) -> Result<u32, String> {
    let bin = vpnfwd_binary()?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = dir.join(format!("{name}.log"));
    let d = n.d.clone();
    let pid = n
        .lab
        .spawn(
            &d,
            &[
                bin.to_str().unwrap_or("vpnfwd"),
                "run",
                "--config",
                path.to_str().unwrap_or(""),
            ],
            &log,
        )
        .map_err(|e| e.0)?;
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
    let routes = gen::table(nroutes, false, 1, seed);
    let dests: Vec<u32> = gen::keys(&routes, 4096, false, seed ^ 3)
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
        .take(1024)
        .collect();
    let dir = std::env::temp_dir().join(format!("vpnfwd-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let route_file = dir.join("routes.txt");
    let mut text = String::with_capacity(nroutes * 20);
    for r in &routes {
        let a = std::net::Ipv4Addr::from((r.prefix >> 96) as u32);
        text.push_str(&format!("{a}/{}\n", r.len));
    }
    std::fs::write(&route_file, &text).map_err(|e| e.to_string())?;
    println!(
        "forward: {nroutes} routes, {} destinations, 64-byte frames, {secs} s trials",
        dests.len()
    );
    let mut results = serde_json::Map::new();
    let mut table = Vec::new();

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
        let config = format!(
            "[dataplane]\nidle = \"busy\"\n\n[[vrf]]\nname = \"v\"\nlabel = {POP_LABEL}\n\n[uplink]\ninterface = \"{uplink}\"\naddress = \"192.0.2.1\"\n\n[[port]]\ninterface = \"{access}\"\nvrf = \"v\"\nmac = \"{}\"\n\n[[route_file]]\nvrf = \"v\"\npath = \"{}\"\n{target}\n",
            mac_text(&host),
            route_file.display()
        );
        let pid = start_vpnfwd(&mut n, &dir, name, config)?;
        let fr = frames(&n, &dests, pop, [10, 0, 0, 1]);
        let r = measure(&n, &fr, Some(pid), secs)?;
        table.push((name.to_string(), r));
    }
    if compare.split(',').any(|c| c == "kernel") {
        let n = network()?;
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
    if compare.split(',').any(|c| c == "testpmd-afpacket") {
        match which("dpdk-testpmd") {
            None => println!(
                "testpmd-afpacket: skipped, dpdk-testpmd not found (Debian package dpdk-dev)"
            ),
            Some(testpmd) => {
                let mut n = network()?;
                let prefix = format!("vpnfwdbench{}", std::process::id());
                let peer = format!("1,{}", mac_text(&n.s0));
                let log = dir.join("testpmd.log");
                let d = n.d.clone();
                let args = [
                    testpmd.as_str(),
                    "-l",
                    "0,1",
                    "--no-huge",
                    "-m",
                    "512",
                    "--no-pci",
                    "--file-prefix",
                    &prefix,
                    "--vdev=net_af_packet0,iface=d0",
                    "--vdev=net_af_packet1,iface=d1",
                    "--",
                    "--forward-mode=mac",
                    "--eth-peer",
                    &peer,
                    "--total-num-mbufs=16384",
                    "--stats-period",
                    "60",
                ];
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
                let fr = frames(&n, &dests, false, [10, 0, 0, 1]);
                let r = measure(&n, &fr, Some(pid), secs);
                n.lab.stop(pid, Duration::from_secs(5));
                let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
                table.push(("testpmd-afpacket".to_string(), r?));
            }
        }
    }
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
            if r.ndr >= 0.98 * r.max_offered {
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
                "generator_bound": r.ndr >= 0.98 * r.max_offered,
                "latency_us": r.lat.map(|(a, b, c)| json!({"p50": a, "p99": b, "p999": c})),
            }),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", json!({ "results": results }));
    Ok(())
}
