//! The `vpnfwd` command.

use control::config::Config;
use std::process::ExitCode;

const HELP: &str = "\
vpnfwd — a userspace BGP/MPLS IP-VPN provider-edge router

USAGE:
    vpnfwd run --config FILE      Start the router with the configuration in FILE
    vpnfwd check --config FILE    Validate FILE and print what it describes
    vpnfwd peer list [--api ADDR] [--json]  BGP peers of the running router
    vpnfwd peer refresh ADDRESS [--api ADDR] ask a peer for its routes again (RFC 2918)
    vpnfwd route list [--family vpnv4|vpnv6] [--rd RD] [--rt RT] [--api ADDR] [--json]
                                  VPN routes it learned, with the VRFs holding them
    vpnfwd stats [--api ADDR] [--json]  packets forwarded and why others were not;
                                  each DPDK device's link, counters and buffers
    vpnfwd --help                 Show this text

run
    Builds the forwarding tables (VRFs, local ports, static VPN routes),
    opens every configured interface with AF_PACKET, starts one poll-mode
    worker per configured core and answers ARP/ND for each port's gateway.
    Stops cleanly on SIGINT or SIGTERM, printing its counters. SIGHUP
    re-reads FILE and applies changed [[route]] entries without disturbing
    traffic on the others (other sections need a restart). Needs root
    (or CAP_NET_RAW). Exit status 0 after a clean stop, 1 on a start-up
    error (the message names the configuration entry or interface), 2 on a
    usage error.

check
    Parses and validates FILE without touching any interface; exit status 0
    if it is valid, 1 with a message naming the bad field otherwise.

CONFIGURATION (TOML)
    [dataplane]  backend = \"afpacket\" | \"dpdk\", cores = [1], idle = \"busy\" | \"sleep\",
                 tx = \"af_xdp\" | \"sendmmsg\" (how AF_PACKET ports transmit;
                 af_xdp uses the interface's queue numbered as the worker
                 and falls back to sendmmsg where that fails)
    [dataplane.dpdk]  driver = \"af_xdp\" | \"af_packet\", kernel_interface,
                 kernel_address (the router's address on the uplink's kernel
                 twin), mbufs, memory_mb, no_huge, eal_args, [devargs] by
                 interface (needs a build with --features dpdk; hugepages.md)
    [[vrf]]      name, label (per-VRF VPN label for traffic from the core)
    [uplink]     interface, mac (default: the interface's), address (tunnel endpoint)
    [[port]]     interface, vlan, vrf, mac (the host's), addresses, gateway,
                 gateway6, router_mac
    [[route]]    vrf, prefix, label, pe, encap = \"mpls\" | \"gre\" | \"udp\",
                 transport_label, nexthop_mac (absent: resolved with ARP)
    [uplink]     gateway (first hop towards all remote PEs, for a routed core)
    [bgp]        asn, router_id, hold_time, encap, listen, listen_address,
                 multipath (default true: ECMP over equal best paths),
                 graceful_restart_time (default 120, 0: off),
                 rt_constraint (default true: RFC 4684 membership, and
                 peers that negotiate it get only the VRFs they ask for);
                 [[bgp.peer]] address, asn, passive, max_prefixes,
                 password (TCP-MD5), ttl_security (GTSM: TTL 255 only)
    [api]        listen (default 127.0.0.1:8082)

peer list, route list
    Ask the running router's REST API (default 127.0.0.1:8082, see [api]
    listen) and print a table (--json: the API's answer as is). peer list
    shows each peer's state and for how long, VPNv4/VPNv6 routes received
    and accepted (carrying a route target some VRF imports), routes kept
    stale through a graceful restart, and the capabilities it announced.
    Exit status 1 if the API cannot be reached.

stats
    The workers' counters summed: frames received and sent (and of those,
    refused by a full transmit ring), and each reason frames were not
    forwarded (exc_no_route, exc_ttl_expired, …; the exceptions handed to
    the router itself count here too). With AF_PACKET, one line per
    receive ring: frames the kernel queued to it and frames it dropped
    with the ring full. With DPDK, one line per device: link, frames in
    and out, frames the device missed, errors, buffer allocation failures,
    and free buffers of its pool.

ENVIRONMENT
    VPNFWD_LOG   log level: error, warn, info (default), debug, trace
";

/// Seconds as `1d02h`, `3h04m`, `5m06s` or `7s`.
fn duration_text(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Structured logs on standard error; the level comes from `VPNFWD_LOG`
/// (error, warn, info — the default — debug or trace).
fn init_logging() {
    let level = match std::env::var("VPNFWD_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    if let Err(e) = dataplane::check_cpu() {
        eprintln!("vpnfwd: {e}");
        return ExitCode::from(1);
    }
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = |msg: &str| {
        eprintln!("vpnfwd: {msg}\n\n{HELP}");
        ExitCode::from(2)
    };
    let Some(cmd) = args.first() else {
        return usage("missing command");
    };
    if cmd == "--help" || cmd == "-h" || cmd == "help" {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if cmd == "peer" || cmd == "route" || cmd == "stats" {
        return match cli(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vpnfwd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("--config"), Some(path)) if args.len() == 3 => path,
        _ => return usage("expected --config FILE"),
    };
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vpnfwd: {config}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cmd.as_str() {
        "check" => {
            println!(
                "{config}: valid: {} VRF(s), {} port(s), {} route(s), uplink {}",
                cfg.vrfs.len(),
                cfg.ports.len(),
                cfg.routes.len(),
                cfg.uplink.as_ref().map_or("none", |u| u.interface.as_str())
            );
            ExitCode::SUCCESS
        }
        "run" => match control::daemon::run(config, &cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vpnfwd: {e}");
                ExitCode::FAILURE
            }
        },
        other => usage(&format!("unknown command {other:?}")),
    }
}

/// `vpnfwd stats [--api ADDR] [--json]`.
fn stats(args: &[String]) -> Result<(), String> {
    let mut api = control::config::default_api();
    let mut json = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--api" => {
                let v = it.next().ok_or("--api needs a value")?;
                api = v
                    .parse()
                    .map_err(|_| format!("--api: {v:?} is not address:port"))?;
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let body = control::api::get(api, "/stats")?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("bad answer from the API: {e}"))?;
    let p = &v["packets"];
    println!(
        "workers {}, frames received {}, sent {} (refused by the ports {}); VPN routes {}, nexthops {}",
        v["workers"], p["rx"], p["tx"], p["tx_refused"], v["vpn_routes"], v["nexthops"]
    );
    let reasons: Vec<String> = p["not_forwarded"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
                .map(|(r, n)| format!("{r}={n}"))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "not forwarded: {}",
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons.join(" ")
        }
    );
    let ports = v["ports"].as_array().cloned().unwrap_or_default();
    let (rings, ports): (Vec<_>, Vec<_>) = ports
        .into_iter()
        .partition(|p| p.get("ring_packets").is_some());
    if !rings.is_empty() {
        println!("{:<18} {:>14} {:>12}", "INTERFACE", "RING RX", "RING DROPS");
        for r in rings {
            println!(
                "{:<18} {:>14} {:>12}",
                r["interface"].as_str().unwrap_or(""),
                r["ring_packets"],
                r["ring_drops"]
            );
        }
    }
    if !ports.is_empty() {
        println!(
            "{:<18} {:<5} {:>12} {:>12} {:>10} {:>8} {:>8} {:>13}",
            "DEVICE", "LINK", "RX", "TX", "MISSED", "ERRORS", "NO-MBUF", "MBUFS FREE"
        );
        for d in ports {
            println!(
                "{:<18} {:<5} {:>12} {:>12} {:>10} {:>8} {:>8} {:>13}",
                d["device"].as_str().unwrap_or(""),
                if d["link_up"].as_bool() == Some(true) {
                    "up"
                } else {
                    "down"
                },
                d["ipackets"],
                d["opackets"],
                d["imissed"],
                d["ierrors"].as_u64().unwrap_or(0) + d["oerrors"].as_u64().unwrap_or(0),
                d["rx_nombuf"],
                format!("{}/{}", d["mbufs_free"], d["mbufs"])
            );
        }
    }
    Ok(())
}

/// `vpnfwd peer list`, `vpnfwd peer refresh ADDR` and `vpnfwd route list`.
fn cli(args: &[String]) -> Result<(), String> {
    if args[0] == "stats" {
        return stats(args);
    }
    let mut api = control::config::default_api();
    let mut query = Vec::new();
    if args[0] == "peer" && args.get(1).map(String::as_str) == Some("refresh") {
        let peer: std::net::IpAddr = args
            .get(2)
            .ok_or("usage: vpnfwd peer refresh ADDRESS [--api ADDR]")?
            .parse()
            .map_err(|_| "peer refresh: not an IP address".to_string())?;
        if let [flag, v] = &args[3..] {
            if flag != "--api" {
                return Err(format!("unknown option {flag}"));
            }
            api = v
                .parse()
                .map_err(|_| format!("--api: {v:?} is not address:port"))?;
        } else if args.len() > 3 {
            return Err("usage: vpnfwd peer refresh ADDRESS [--api ADDR]".into());
        }
        let body = control::api::post(api, &format!("/peers/{peer}/refresh"))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("bad answer from the API: {e}"))?;
        if let Some(e) = v["error"].as_str() {
            return Err(e.to_string());
        }
        println!("{body}");
        return Ok(());
    }
    if args.get(1).map(String::as_str) != Some("list") {
        return Err(format!("usage: vpnfwd {} list [options]", args[0]));
    }
    let mut it = args[2..].iter();
    let mut json = false;
    while let Some(a) = it.next() {
        if a == "--json" {
            json = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--api" => {
                api = v
                    .parse()
                    .map_err(|_| format!("--api: {v:?} is not address:port"))?
            }
            "--family" | "--rd" | "--rt" if args[0] == "route" => {
                query.push(format!("{}={v}", &a[2..]))
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let path = if args[0] == "peer" {
        "/peers".to_string()
    } else {
        format!("/routes?{}", query.join("&"))
    };
    let body = control::api::get(api, &path)?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&body).map_err(|e| format!("bad answer from the API: {e}"))?;
    if args[0] == "peer" {
        println!(
            "{:<24} {:>10} {:<12} {:>9} {:>15} {:>15} {:>6}  CAPABILITIES",
            "PEER", "AS", "STATE", "FOR", "VPNV4 RCV/ACC", "VPNV6 RCV/ACC", "STALE"
        );
        for r in rows {
            let fam = |f: &str| {
                format!(
                    "{}/{}",
                    r["families"][f]["received"], r["families"][f]["accepted"]
                )
            };
            let caps: Vec<&str> = r["capabilities"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{:<24} {:>10} {:<12} {:>9} {:>15} {:>15} {:>6}  {}",
                r["address"].as_str().unwrap_or(""),
                r["asn"],
                r["state"].as_str().unwrap_or(""),
                duration_text(r["uptime"].as_u64().unwrap_or(0)),
                fam("vpnv4"),
                fam("vpnv6"),
                r["stale"],
                caps.join(" ")
            );
        }
    } else {
        println!(
            "{:<22} {:<20} {:>8} {:<16} {:<24} VRFS",
            "RD", "PREFIX", "LABEL", "NEXT HOP", "ROUTE TARGETS"
        );
        for r in rows {
            let rts: Vec<&str> = r["route_targets"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{:<22} {:<20} {:>8} {:<16} {:<24} {}",
                r["rd"].as_str().unwrap_or(""),
                r["prefix"].as_str().unwrap_or(""),
                r["label"],
                r["nexthop"].as_str().unwrap_or(""),
                rts.join(","),
                r["vrfs"]
            );
        }
    }
    Ok(())
}
