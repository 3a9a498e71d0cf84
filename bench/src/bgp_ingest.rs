//! `bench bgp-ingest`: how fast a BGP speaker takes in a full VPNv4 feed.
//!
//! A feeder pre-encodes N VPNv4 routes (the synthetic IPv4 table's
//! prefixes, spread over 1000 route distinguishers and route targets, each
//! UPDATE packing the routes of one target up to 4096 bytes) and, once the
//! session is up, writes them to the receiver as fast as TCP takes them. The
//! receiver runs in its own network namespace. Completion is detected the
//! same way for every receiver: a cheap counter polled every 100 ms (or
//! `--poll-ms`, the same for all)
//! (vpnfwd: its log's held-routes count; gobgpd: `gobgp neighbor` Accepted;
//! BIRD: `birdc show protocols all` imported). Reported: seconds from the
//! first UPDATE to the last route held, routes/s, the receiver's peak RSS
//! and CPU seconds, for each of `--rounds` rounds (3 by default; each
//! round runs every target once, in turn) and their medians, which the
//! JSON line carries. vpnfwd takes the routes into its VPN table, its 1000
//! VRFs (each importing one target) and the forwarding tables.

use crate::gen;
use crate::{median, Opts};
use control::bgp::wire::{
    self, nlri::Nlri, Afi, Attr, Context, Message, Open, Origin, Prefix, RouteDistinguisher, Safi,
    Update, VpnPrefix,
};
use dataplane::wire::mpls::Label;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use vpnfwd_tests::Lab;

const GROUPS: u32 = 1000;
const FEEDER: &str = "192.0.2.9";
const RECEIVER: &str = "192.0.2.1";

fn rt(i: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[1] = 2;
    b[2..4].copy_from_slice(&65001u16.to_be_bytes());
    b[4..8].copy_from_slice(&(i + 1).to_be_bytes());
    b
}

/// The UPDATEs of the feed: the routes spread over [`GROUPS`] RDs, labels
/// and route targets, each UPDATE packing up to 250 routes of one group.
pub(crate) fn updates(routes: &[gen::Route]) -> Vec<Update> {
    let mut by_group: Vec<Vec<Nlri>> = vec![Vec::new(); GROUPS as usize];
    for (i, r) in routes.iter().enumerate() {
        let g = (i as u32) % GROUPS;
        by_group[g as usize].push(Nlri::Vpn(VpnPrefix {
            path_id: None,
            label: Label::new(16 + g).expect("label"),
            rd: RouteDistinguisher::as2(65001, g + 1),
            prefix: Prefix::new(Ipv4Addr::from((r.prefix >> 96) as u32).into(), r.len)
                .expect("prefix"),
        }));
    }
    let mut out = Vec::new();
    for (g, nlri) in by_group.into_iter().enumerate() {
        // About 4000 bytes per UPDATE: 15 bytes per route plus attributes.
        for part in nlri.chunks(250) {
            let mut nh = vec![0u8; 8];
            nh.extend_from_slice(&FEEDER.parse::<Ipv4Addr>().expect("ip").octets());
            out.push(Update::with_attrs(vec![
                Attr::Origin(Origin::Igp),
                Attr::AsPath(vec![]),
                Attr::LocalPref(100),
                Attr::ExtCommunities(vec![rt(g as u32)]),
                Attr::MpReach {
                    afi: Afi::IPV4,
                    safi: Safi::MPLS_VPN,
                    nexthop: nh,
                    nlri: part.to_vec(),
                },
            ]));
        }
    }
    out
}

/// The receiver's configuration: [`GROUPS`] VRFs, each importing one of
/// the feed's targets, and the feeder as its iBGP peer.
pub(crate) fn receiver_config() -> String {
    let mut cfg = String::from("[dataplane]\nidle = \"sleep\"\n\n[uplink]\ninterface = \"core\"\naddress = \"192.0.2.1\"\n\n");
    for g in 0..GROUPS {
        cfg.push_str(&format!(
            "[[vrf]]\nname = \"v{g}\"\nimport_targets = [\"65001:{}\"]\n\n",
            g + 1
        ));
    }
    cfg.push_str(&format!("[bgp]\nasn = 65001\nrouter_id = \"{RECEIVER}\"\nhold_time = 180\n\n[[bgp.peer]]\naddress = \"{FEEDER}\"\nasn = 65001\npassive = true\n"));
    cfg
}

/// The feeder's peer address.
pub(crate) fn feeder() -> std::net::IpAddr {
    FEEDER.parse().expect("ip")
}

/// Pre-encoded UPDATE messages for `routes`.
fn feed(routes: &[gen::Route]) -> Vec<u8> {
    let ctx = Context {
        four_octet_as: true,
        ..Context::default()
    };
    let mut out = Vec::new();
    for u in updates(routes) {
        out.extend(wire::encode(&Message::Update(u), &ctx).expect("fits 4096 bytes"));
    }
    out
}

fn proc_stat(pid: u32) -> (f64, u64) {
    let cpu = crate::cpu_seconds(pid).unwrap_or(0.0);
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (cpu, hwm * 1024)
}

/// When the feed began, and the receiver's threads' CPU seconds then.
type Started = (Instant, Vec<(String, f64)>);

struct Outcome {
    seconds: f64,
    cpu: f64,
    rss: u64,
    /// The receiver's busiest threads and their CPU seconds from the first
    /// UPDATE on.
    threads: Vec<(String, f64)>,
}

/// Connect as 65001 to the receiver, bring the session up, send `bytes`,
/// and wait until `held()` reaches `n`.
fn drive(
    lab: &Lab,
    feeder_ns: &str,
    bytes: Vec<u8>,
    n: usize,
    poll: Duration,
    pid: u32,
    mut held: impl FnMut() -> usize,
) -> Result<Outcome, String> {
    let t = lab
        .in_ns(feeder_ns, move || -> Result<Started, String> {
            let mut s = None;
            for _ in 0..100 {
                match TcpStream::connect_timeout(
                    &format!("{RECEIVER}:179").parse().expect("addr"),
                    Duration::from_secs(1),
                ) {
                    Ok(c) => {
                        s = Some(c);
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            let mut s = s.ok_or("receiver never accepted the connection")?;
            let ctx = Context::default();
            let open = Open::new(
                65001,
                180,
                FEEDER.parse().expect("ip"),
                vec![
                    wire::Capability::Multiprotocol(Afi::IPV4, Safi::MPLS_VPN),
                    wire::Capability::RouteRefresh,
                ],
            );
            s.write_all(&wire::encode(&Message::Open(open), &ctx).expect("open"))
                .map_err(|e| e.to_string())?;
            s.write_all(&wire::encode(&Message::Keepalive, &ctx).expect("keepalive"))
                .map_err(|e| e.to_string())?;
            // Drain what the receiver sends until its KEEPALIVE has come.
            let mut r = s.try_clone().map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(10);
            r.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let mut seen_keepalive = false;
            while !seen_keepalive && Instant::now() < deadline {
                if let Ok(k) = r.read(&mut buf) {
                    got.extend_from_slice(&buf[..k]);
                }
                let mut at = 0;
                while let Ok(Some(len)) = wire::frame_len(&got[at..]) {
                    if got.len() < at + len {
                        break;
                    }
                    seen_keepalive |= got[at + 18] == 4;
                    at += len;
                }
            }
            if !seen_keepalive {
                return Err("no KEEPALIVE from the receiver".into());
            }
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = r.set_read_timeout(None);
                while let Ok(k) = r.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                }
            });
            // The receiver's threads' CPU so far (start-up, the session's
            // opening), so that the feed's share can be told apart.
            let before = crate::thread_cpu_seconds(&pid.to_string());
            let start = Instant::now();
            s.write_all(&bytes).map_err(|e| e.to_string())?;
            // Keep the session alive until the caller is done.
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(20));
                if s.write_all(
                    &wire::encode(&Message::Keepalive, &Context::default()).unwrap_or_default(),
                )
                .is_err()
                {
                    break;
                }
            });
            Ok((start, before))
        })
        .map_err(|e| e.to_string())?;
    let (start, before) = t.join().map_err(|_| "feeder thread failed".to_string())??;
    let deadline = start + Duration::from_secs(600);
    loop {
        if held() >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} routes after 600 s", held()));
        }
        std::thread::sleep(poll);
    }
    let seconds = start.elapsed().as_secs_f64();
    let (cpu, rss) = proc_stat(pid);
    let mut threads: Vec<(String, f64)> = crate::thread_cpu_seconds(&pid.to_string())
        .into_iter()
        .map(|(name, secs)| {
            let was = before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, s)| *s);
            (name, (secs - was).max(0.0))
        })
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    threads.truncate(4);
    Ok(Outcome {
        seconds,
        cpu,
        rss,
        threads,
    })
}

fn net() -> Result<(Lab, String, String), String> {
    let mut lab = Lab::new();
    let f = lab.ns("feed").map_err(|e| e.0)?;
    let r = lab.ns("recv").map_err(|e| e.0)?;
    lab.veth(&f, "core", &r, "core").map_err(|e| e.0)?;
    lab.exec(
        &f,
        &["ip", "addr", "add", &format!("{FEEDER}/24"), "dev", "core"],
    )
    .map_err(|e| e.0)?;
    lab.exec(
        &r,
        &[
            "ip",
            "addr",
            "add",
            &format!("{RECEIVER}/24"),
            "dev",
            "core",
        ],
    )
    .map_err(|e| e.0)?;
    Ok((lab, f, r))
}

fn last_held(log: &Path) -> usize {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    t.lines()
        .rev()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("held="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One ingest of the feed by `target`, in a fresh pair of namespaces, its
/// files in `dir` (empty).
fn ingest_once(
    target: &str,
    dir: &Path,
    bytes: &[u8],
    n: usize,
    poll: Duration,
) -> Result<Outcome, String> {
    let (mut lab, f, r) = net()?;
    let outcome = match target {
        "vpnfwd" => {
            let (pid, log) = crate::spawn_vpnfwd(&mut lab, &r, dir, "vpnfwd", &receiver_config())?;
            let o = drive(&lab, &f, bytes.to_vec(), n, poll, pid, || last_held(&log));
            lab.stop(pid, Duration::from_secs(10));
            o?
        }
        "gobgpd" => {
            let path = dir.join("gobgpd.toml");
            std::fs::write(
                &path,
                format!("[global.config]\n  as = 65001\n  router-id = \"{RECEIVER}\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{FEEDER}\"\n    peer-as = 65001\n  [neighbors.transport.config]\n    passive-mode = true\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"l3vpn-ipv4-unicast\"\n"),
            )
            .map_err(|e| e.to_string())?;
            let log = dir.join("gobgpd.log");
            let pid = lab
                .spawn(
                    &r,
                    &[
                        "gobgpd",
                        "-t",
                        "toml",
                        "-f",
                        path.to_str().unwrap_or(""),
                        "-l",
                        "warn",
                    ],
                    &log,
                )
                .map_err(|e| e.0)?;
            let rr = r.clone();
            let o = drive(&lab, &f, bytes.to_vec(), n, poll, pid, || {
                // `gobgp neighbor`: "Peer AS Up/Down State |#Received Accepted".
                let out = lab
                    .exec(&rr, &["gobgp", "neighbor"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                out.lines()
                    .find(|l| l.starts_with(FEEDER))
                    .and_then(|l| l.split_whitespace().last()?.parse::<usize>().ok())
                    .unwrap_or(0)
            });
            lab.stop(pid, Duration::from_secs(10));
            o?
        }
        "bird" => {
            let path = dir.join("bird.conf");
            let ctl = dir.join("bird.ctl");
            std::fs::write(
                &path,
                format!("router id {RECEIVER};\nvpn4 table vpntab;\nprotocol device {{ }}\nprotocol bgp feed {{\n  local {RECEIVER} as 65001;\n  neighbor {FEEDER} as 65001;\n  passive on;\n  vpn4 mpls {{ table vpntab; import all; export none; }};\n}}\n"),
            )
            .map_err(|e| e.to_string())?;
            let log = dir.join("bird.log");
            let pid = lab
                .spawn(
                    &r,
                    &[
                        "bird",
                        "-f",
                        "-c",
                        path.to_str().unwrap_or(""),
                        "-s",
                        ctl.to_str().unwrap_or(""),
                    ],
                    &log,
                )
                .map_err(|e| e.0)?;
            let rr = r.clone();
            let c = ctl.to_str().unwrap_or("").to_string();
            let o = drive(&lab, &f, bytes.to_vec(), n, poll, pid, || {
                let out = lab
                    .exec(
                        &rr,
                        &["birdc", "-s", &c, "show", "protocols", "all", "feed"],
                    )
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                out.lines()
                    .find(|l| l.contains("imported"))
                    .and_then(|l| l.split_whitespace().find_map(|w| w.parse::<usize>().ok()))
                    .unwrap_or(0)
            });
            lab.stop(pid, Duration::from_secs(10));
            o?
        }
        "frr" => {
            // FRR's bgpd alone (no zebra), as the interop test runs it.
            let fd = dir.join("frr");
            std::fs::create_dir_all(&fd).map_err(|e| e.to_string())?;
            let d = fd.to_str().unwrap_or("").to_string();
            let conf = fd.join("bgpd.conf");
            std::fs::write(
                &conf,
                format!("hostname ingest\nrouter bgp 65001\n bgp router-id {RECEIVER}\n no bgp default ipv4-unicast\n no bgp ebgp-requires-policy\n neighbor {FEEDER} remote-as 65001\n neighbor {FEEDER} passive\n address-family ipv4 vpn\n  neighbor {FEEDER} activate\n exit-address-family\n"),
            )
            .map_err(|e| e.to_string())?;
            let pidf = format!("{d}/bgpd.pid");
            let zs = format!("{d}/zserv");
            let pid = lab
                .spawn(
                    &r,
                    &[
                        "/usr/lib/frr/bgpd",
                        "-Z",
                        "-S",
                        "-n",
                        "-f",
                        conf.to_str().unwrap_or(""),
                        "-i",
                        &pidf,
                        "-z",
                        &zs,
                        "--vty_socket",
                        &d,
                        "-A",
                        "127.0.0.1",
                        "-P",
                        "0",
                    ],
                    &fd.join("bgpd.log"),
                )
                .map_err(|e| e.0)?;
            let rr = r.clone();
            let o = drive(&lab, &f, bytes.to_vec(), n, poll, pid, || {
                let out = lab
                    .exec(
                        &rr,
                        &[
                            "vtysh",
                            "--vty_socket",
                            &d,
                            "-c",
                            "show bgp ipv4 vpn summary json",
                        ],
                    )
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                // One family asked: the peers are at the top level.
                serde_json::from_str::<serde_json::Value>(&out)
                    .ok()
                    .and_then(|v| v["peers"][FEEDER]["pfxRcd"].as_u64())
                    .unwrap_or(0) as usize
            });
            lab.stop(pid, Duration::from_secs(10));
            o?
        }
        other => {
            return Err(format!(
                "unknown target {other:?} (vpnfwd, gobgpd, bird, frr)"
            ))
        }
    };
    Ok(outcome)
}

/// Run the benchmark.
pub fn run(opts: &Opts) -> Result<(), String> {
    if !vpnfwd_tests::can_run() {
        return Err("bgp-ingest needs root (it builds network namespaces)".into());
    }
    let n: usize = opts.num("routes", 1_000_000)?;
    let targets: Vec<String> = opts
        .0
        .get("target")
        .map_or("vpnfwd,gobgpd,bird,frr", String::as_str)
        .split(',')
        .map(str::to_string)
        .collect();
    if let Some(t) = targets
        .iter()
        .find(|t| !["vpnfwd", "gobgpd", "bird", "frr"].contains(&t.as_str()))
    {
        return Err(format!("unknown target {t:?} (vpnfwd, gobgpd, bird, frr)"));
    }
    let poll = Duration::from_millis(opts.num("poll-ms", 100)?);
    if poll.is_zero() {
        return Err("--poll-ms must be at least 1".into());
    }
    let rounds: usize = opts.num("rounds", 3)?;
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let routes = gen::table(n, false, 1, opts.num("seed", 1)?);
    let bytes = feed(&routes);
    println!(
        "bgp-ingest: {n} VPNv4 routes in {} bytes of UPDATEs, {GROUPS} RDs/RTs, {rounds} round(s), targets taking turns",
        bytes.len()
    );
    let scratch = crate::ScratchDir::new("vpnfwd-ingest")?;
    let mut runs: Vec<Vec<Outcome>> = targets.iter().map(|_| Vec::new()).collect();
    // Round-robin: each round runs every target once, so that the
    // machine's slow and fast spells fall on all of them alike.
    for round in 0..rounds {
        for (target, done) in targets.iter().zip(runs.iter_mut()) {
            // A directory of its own per run: its log starts empty.
            let dir = scratch.0.join(format!("{round}-{target}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let outcome = ingest_once(target, &dir, &bytes, n, poll)?;
            println!(
                "  {round}  {target:<8} {:>8.3} s  {:>10.0} routes/s  peak RSS {:>7.1} MiB  CPU {:>6.2} s",
                outcome.seconds,
                n as f64 / outcome.seconds,
                outcome.rss as f64 / (1 << 20) as f64,
                outcome.cpu
            );
            let threads: Vec<String> = outcome
                .threads
                .iter()
                .map(|(name, s)| format!("{name} {s:.3} s"))
                .collect();
            println!(
                "              busiest threads from the first UPDATE on: {}",
                threads.join(", ")
            );
            done.push(outcome);
        }
    }
    drop(scratch);
    let mut results = serde_json::Map::new();
    let mut medians = Vec::new();
    println!("medians of {rounds} round(s):");
    for (target, done) in targets.iter().zip(&runs) {
        let seconds = median(done.iter().map(|o| o.seconds).collect());
        let rss = median(done.iter().map(|o| o.rss as f64).collect()) as u64;
        let cpu = median(done.iter().map(|o| o.cpu).collect());
        println!(
            "  {target:<8} {seconds:>8.3} s  {:>10.0} routes/s  peak RSS {:>7.1} MiB  CPU {cpu:>6.2} s",
            n as f64 / seconds,
            rss as f64 / (1 << 20) as f64,
        );
        medians.push((target.as_str(), seconds, rss));
        results.insert(
            target.to_string(),
            json!({
                "seconds": (seconds * 1000.0).round() / 1000.0,
                "routes_per_sec": (n as f64 / seconds).round(),
                "peak_rss_bytes": rss,
                "cpu_seconds": cpu,
                "rounds_seconds": done.iter().map(|o| (o.seconds * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            }),
        );
    }
    if let Some((_, ours, our_rss)) = medians.iter().find(|m| m.0 == "vpnfwd") {
        let others = medians.iter().filter(|m| m.0 != "vpnfwd");
        if let Some((name, best, _)) = others.clone().min_by(|a, b| a.1.total_cmp(&b.1)) {
            let least_rss = others.map(|m| m.2).min().unwrap_or(0);
            println!(
                "vpnfwd: {:.2}x the fastest other ({name}), peak RSS {:.2}x the least other's",
                best / ours,
                *our_rss as f64 / least_rss.max(1) as f64
            );
        }
    }
    println!("{}", json!({ "results": results }));
    Ok(())
}
