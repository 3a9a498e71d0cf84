//! The `vpnfwd` command.

use control::config::Config;
use std::process::ExitCode;

const HELP: &str = "\
vpnfwd — a userspace BGP/MPLS IP-VPN provider-edge router

USAGE:
    vpnfwd run --config FILE      Start the router with the configuration in FILE
    vpnfwd check --config FILE    Validate FILE and print what it describes
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
    [dataplane]  backend = \"afpacket\", cores = [1], idle = \"busy\" | \"sleep\"
    [[vrf]]      name, label (per-VRF VPN label for traffic from the core)
    [uplink]     interface, mac (default: the interface's), address (tunnel endpoint)
    [[port]]     interface, vlan, vrf, mac (the host's), addresses, gateway,
                 gateway6, router_mac
    [[route]]    vrf, prefix, label, pe, encap = \"mpls\" | \"gre\" | \"udp\",
                 transport_label, nexthop_mac (absent: resolved with ARP)
    [uplink]     gateway (first hop towards all remote PEs, for a routed core)

ENVIRONMENT
    VPNFWD_LOG   log level: error, warn, info (default), debug, trace
";

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
