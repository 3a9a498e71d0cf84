//! `bench route-install`: the BGP ingest's route changes without TCP or
//! decoding. The feed's UPDATEs (as `bench bgp-ingest` sends them: N VPNv4
//! routes over 1000 RDs and targets, 250 per UPDATE), already decoded, go
//! through vpnfwd's VPN RIB, best-path selection, nexthops and 1000 VRFs'
//! forwarding tables in batches of 64 UPDATEs, as the daemon's control
//! thread takes them, with the forwarding-table thread applying each batch
//! while the next is decided. Reported: the time until the tables hold
//! every route, and the CPU time of each of the two threads.

use crate::bgp_ingest;
use crate::gen;
use crate::Opts;
use serde_json::json;
use std::time::Instant;

/// CPU seconds of the calling thread and of this process's threads called
/// `name`.
fn cpu(name: &str) -> (f64, f64) {
    let me = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9);
    let threads = crate::thread_cpu_seconds("self");
    (
        me,
        threads.iter().find(|(t, _)| t == name).map_or(0.0, |t| t.1),
    )
}

/// Run the benchmark.
pub fn run(opts: &Opts) -> Result<(), String> {
    let n: usize = opts.num("routes", 1_000_000)?;
    let rounds: usize = opts.num("rounds", 3)?;
    let routes = gen::table(n, false, 1, opts.num("seed", 1)?);
    let updates = bgp_ingest::updates(&routes);
    // The receiver's configuration, with a MAC for its uplink so that no
    // interface needs to exist.
    let cfg = bgp_ingest::receiver_config().replace(
        "interface = \"core\"",
        "interface = \"core\"\nmac = \"02:00:00:00:00:01\"",
    );
    let cfg = control::config::Config::parse(&cfg).map_err(|e| e.to_string())?;
    control::daemon::tune_allocator();
    let peer = bgp_ingest::feeder();
    println!(
        "route-install: {n} VPNv4 routes in {} UPDATEs, batches of {}, 1000 VRFs",
        updates.len(),
        control::bgp::session::UPDATE_BATCH
    );
    let mut runs = Vec::new();
    for round in 0..rounds {
        let built = control::daemon::build(&cfg).map_err(|e| e.to_string())?;
        let (mut fib, mut routes) = (built.fib, built.routes);
        let mut vpn = control::vpn::Vpn::new(&cfg);
        let (c0, f0) = cpu("vpnfwd-fib");
        let t0 = Instant::now();
        for batch in updates.chunks(control::bgp::session::UPDATE_BATCH) {
            fib.begin_batch();
            for u in batch {
                vpn.on_update(peer, u, &mut routes, &mut fib);
            }
            fib.end_batch();
        }
        fib.wait_applied();
        let secs = t0.elapsed().as_secs_f64();
        let (c1, f1) = cpu("vpnfwd-fib");
        if vpn.learned() != n {
            return Err(format!("only {} of {n} routes held", vpn.learned()));
        }
        println!(
            "  round {round}: {secs:.3} s, {:.0} routes/s, control thread {:.3} s, forwarding-table thread {:.3} s CPU",
            n as f64 / secs,
            c1 - c0,
            f1 - f0
        );
        runs.push((secs, c1 - c0, f1 - f0));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (secs, control_cpu, fib_cpu) = runs[runs.len() / 2];
    println!(
        "{}",
        json!({
            "routes": n,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "routes_per_sec": (n as f64 / secs).round(),
            "control_cpu_seconds": (control_cpu * 1000.0).round() / 1000.0,
            "fib_cpu_seconds": (fib_cpu * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}
