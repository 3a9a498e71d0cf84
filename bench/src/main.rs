//! vpnfwd benchmark harness.
//!
//! ```text
//! bench lpm      --routes N [--seed S] [--nexthops K] [--v6-routes M] [--baseline prefix-trie|rte_lpm]
//!                [--keys K] [--distinct-keys D] [--family ipv4|ipv6|both]
//! bench pipeline --routes N [--seed S] [--seconds T]
//! bench forward  --routes N [--compare kernel,testpmd-afpacket,testpmd-afxdp,ovs,ovs-pop]
//!                [--backend afpacket|dpdk] [--vdev net_af_xdp|net_af_packet]
//!                [--size B] [--destinations N] [--flows N] [--rate PPS] [--dut-core N]
//!                [--generator afxdp|afpacket] [--seconds T]   (root)
//! bench bgp-ingest --routes N [--target vpnfwd,gobgpd,bird,frr] [--rounds R] [--poll-ms P]   (root)
//! bench route-install --routes N [--rounds R] [--seed S]
//! ```
//! Each prints a human summary and, as its last line, one JSON object.

mod bgp_ingest;
mod forward;
mod gen;
mod lpm;
mod pipeline;
mod route_install;

use std::collections::HashMap;
use std::process::ExitCode;

/// Parsed `--key value` options.
pub struct Opts(pub HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            let val = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            m.insert(key.to_string(), val.clone());
        }
        Ok(Opts(m))
    }

    /// A numeric option with a default.
    pub fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: not a number: {v:?}")),
        }
    }
}

/// The median of `v` (the mean of the middle two of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

const USAGE: &str =
    "usage: bench <lpm|pipeline|forward|bgp-ingest|route-install> [--routes N] [--seed S] [...]";

fn main() -> ExitCode {
    if let Err(e) = dataplane::check_cpu() {
        eprintln!("bench: {e}");
        return ExitCode::from(1);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match cmd.as_str() {
        "lpm" => lpm::run(&opts),
        "pipeline" => pipeline::run(&opts),
        "forward" => forward::run(&opts),
        "bgp-ingest" => bgp_ingest::run(&opts),
        "route-install" => route_install::run(&opts),
        _ => Err(format!("unknown benchmark {cmd:?}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A directory of this process's own under the system's temporary
/// directory, removed with everything in it when dropped: a run that stops
/// on an error leaves nothing behind either.
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    /// Create `<tmp>/<name>-<pid>`.
    ///
    /// # Errors
    /// The directory could not be created.
    pub fn new(name: &str) -> Result<ScratchDir, String> {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Start `target/release/vpnfwd` (beside this binary) in namespace `ns`
/// of `lab` with `config`, written with its log to `dir` as `name`.toml and
/// `name`.log; its pid and log's path.
pub fn spawn_vpnfwd(
    lab: &mut vpnfwd_tests::Lab,
    ns: &str,
    dir: &std::path::Path,
    name: &str,
    config: &str,
) -> Result<(u32, std::path::PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("vpnfwd");
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release -p control`",
            bin.display()
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = dir.join(format!("{name}.log"));
    let pid = lab
        .spawn(
            ns,
            &[
                bin.to_str().unwrap_or("vpnfwd"),
                "run",
                "--config",
                path.to_str().unwrap_or(""),
            ],
            &log,
        )
        .map_err(|e| e.0)?;
    Ok((pid, log))
}

/// Resident set size of this process in bytes (Linux), for memory deltas.
pub fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// User plus system CPU seconds a process has used (Linux, 100 Hz ticks).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User plus system CPU seconds from the text of a `/proc/.../stat` file
/// (a process's or a thread's).
pub fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds of each thread of process `pid` (`self` for this one) by
/// thread name, threads of one name summed, from the scheduler's
/// nanosecond counts (`schedstat`): a thread's share of a run shorter than
/// a second is lost in the 10 ms ticks of `stat`.
pub fn thread_cpu_seconds(pid: &str) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for e in dir.flatten() {
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let secs = std::fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |ns| ns / 1e9);
        let name = name.trim();
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, t)) => *t += secs,
            None => by_name.push((name.to_string(), secs)),
        }
    }
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_name
}
