//! `bench lpm`: vpnfwd's LPM beside a baseline on the same routes and keys.
//!
//! Figures per family: lookups/s on one core (batches of 64 keys, the worker's burst, through a
//! read-side guard, as the pipeline does, for IPv4 and IPv6), bytes per route (the readers'
//! structure; also the process RSS growth, measured the same way for the
//! baseline), and updates/s (withdraw and re-announce of random routes of the
//! full table, one at a time, published to readers).
//!
//! Both tables are built first; their lookup trials (0.3 s each) then take
//! turns, seven rounds, the order swapped every round, so that both see the
//! same host: a slow spell of a shared machine lands on both, not on one.
//! Each side's rate is its best trial; the summary also prints the median
//! of the rounds' own ratios.

use crate::gen::{self, Route};
use crate::{median, rss_bytes, Opts};
use dataplane::fib::{Lpm, LpmShared, NO_ROUTE};
use dataplane::rcu::{Domain, Reader};
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// Lookup rounds; each round gives every side one trial.
const ROUNDS: usize = 7;
/// Seconds per trial.
const TRIAL_SECS: f64 = 0.3;

struct Figures {
    lookups_per_sec: f64,
    bytes_per_route: f64,
    rss_bytes_per_route: f64,
    updates_per_sec: f64,
    load_secs: f64,
}

/// One table under test, built, answering the run's keys.
trait Side {
    /// The ways this side can look keys up (rte_lpm has two); at least one.
    fn modes(&self) -> &'static [&'static str] {
        &[""]
    }
    /// Look up every key once in mode `mode`; the number of keys.
    fn pass(&mut self, mode: usize) -> usize;
    /// The sum of the last pass's answers.
    fn checksum(&self) -> u64;
    /// Withdraw and re-announce `r`, published to readers.
    fn update(&mut self, r: &Route) -> Result<(), String>;
    /// Whatever the updates leave to finish (memory to reclaim).
    fn settle(&mut self) {}
}

/// Withdraw and re-announce `routes[i]` for each `i`, one at a time, on
/// `side`: route changes per second.
fn churn(side: &mut dyn Side, routes: &[Route], updates: &[usize]) -> Result<f64, String> {
    let t1 = Instant::now();
    for &i in updates {
        side.update(&routes[i])?;
    }
    side.settle();
    Ok((2 * updates.len()) as f64 / t1.elapsed().as_secs_f64())
}

/// A built side with what its build measured.
struct Built {
    side: Box<dyn Side>,
    /// Bytes of the table's structure (or heap growth) per route.
    bytes_per_route: f64,
    rss_bytes_per_route: f64,
    load_secs: f64,
}

/// Items per second of one trial of about `secs`.
fn trial(secs: f64, mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    loop {
        n += f();
        let e = start.elapsed().as_secs_f64();
        if e >= secs {
            return n as f64 / e;
        }
    }
}

fn sum(out: &[u32]) -> u64 {
    out.iter().map(|v| u64::from(*v)).sum()
}

/// Fields drop in order: the reader leaves its domain before the table
/// and the domain go.
struct Ours {
    reader: Reader,
    shared: Arc<LpmShared>,
    t: Lpm,
    d: Domain,
    v6: bool,
    keys: Vec<u128>,
    keys4: Vec<u32>,
    out: Vec<u32>,
}

impl Side for Ours {
    fn pass(&mut self, _mode: usize) -> usize {
        {
            let g = self.reader.guard();
            if self.v6 {
                for (ks, os) in self.keys.chunks(64).zip(self.out.chunks_mut(64)) {
                    self.shared.lookup_v6_batch(&g, ks, os);
                }
            } else {
                for (ks, os) in self.keys4.chunks(64).zip(self.out.chunks_mut(64)) {
                    self.shared.lookup_v4_batch(&g, ks, os);
                }
            }
        }
        self.reader.quiescent();
        black_box(&self.out);
        self.keys.len()
    }

    fn checksum(&self) -> u64 {
        sum(&self.out)
    }

    fn update(&mut self, r: &Route) -> Result<(), String> {
        let res = if self.v6 {
            self.t
                .remove_v6(r.prefix, r.len)
                .and_then(|_| self.t.insert_v6(r.prefix, r.len, r.nexthop))
        } else {
            let a = (r.prefix >> 96) as u32;
            self.t
                .remove_v4(a, r.len)
                .and_then(|_| self.t.insert_v4(a, r.len, r.nexthop))
        };
        res.map_err(|e| format!("vpnfwd update: {e}"))?;
        self.reader.quiescent();
        Ok(())
    }

    fn settle(&mut self) {
        self.d.collect();
    }
}

#[inline(never)]
fn ours(routes: &[Route], keys: &[u128], v6: bool) -> Built {
    let d = Domain::new();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut t = if v6 { Lpm::new_v6(&d) } else { Lpm::new_v4(&d) };
    for r in routes {
        let res = if v6 {
            t.insert_v6(r.prefix, r.len, r.nexthop)
        } else {
            t.insert_v4((r.prefix >> 96) as u32, r.len, r.nexthop)
        };
        res.expect("generated routes are valid");
    }
    d.collect();
    let load_secs = t0.elapsed().as_secs_f64();
    let rss = rss_bytes().saturating_sub(rss0);
    let fib_bytes = t.fib_bytes();
    println!("  vpnfwd structure: {:?}", t.stats());
    let reader = d.register();
    let shared = t.shared().clone();
    Built {
        side: Box::new(Ours {
            reader,
            shared,
            t,
            d,
            v6,
            keys: keys.to_vec(),
            keys4: keys.iter().map(|k| (k >> 96) as u32).collect(),
            out: vec![0u32; keys.len()],
        }),
        bytes_per_route: fib_bytes as f64 / routes.len() as f64,
        rss_bytes_per_route: rss as f64 / routes.len() as f64,
        load_secs,
    }
}

struct Trie {
    m4: PrefixMap<Ipv4Net, u32>,
    m6: PrefixMap<Ipv6Net, u32>,
    v6: bool,
    q4: Vec<Ipv4Net>,
    q6: Vec<Ipv6Net>,
    out: Vec<u32>,
}

fn net4(r: &Route) -> Ipv4Net {
    Ipv4Net::new(((r.prefix >> 96) as u32).into(), r.len).expect("valid")
}

fn net6(r: &Route) -> Ipv6Net {
    Ipv6Net::new(r.prefix.into(), r.len).expect("valid")
}

impl Side for Trie {
    fn pass(&mut self, _mode: usize) -> usize {
        if self.v6 {
            for (q, o) in self.q6.iter().zip(self.out.iter_mut()) {
                *o = self.m6.get_lpm(q).map_or(NO_ROUTE, |(_, v)| *v);
            }
        } else {
            for (q, o) in self.q4.iter().zip(self.out.iter_mut()) {
                *o = self.m4.get_lpm(q).map_or(NO_ROUTE, |(_, v)| *v);
            }
        }
        black_box(&self.out);
        self.out.len()
    }

    fn checksum(&self) -> u64 {
        sum(&self.out)
    }

    fn update(&mut self, r: &Route) -> Result<(), String> {
        if self.v6 {
            self.m6.remove(&net6(r));
            self.m6.insert(net6(r), r.nexthop);
        } else {
            self.m4.remove(&net4(r));
            self.m4.insert(net4(r), r.nexthop);
        }
        Ok(())
    }
}

#[inline(never)]
fn trie(routes: &[Route], keys: &[u128], v6: bool) -> Built {
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut m4: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
    let mut m6: PrefixMap<Ipv6Net, u32> = PrefixMap::new();
    for r in routes {
        if v6 {
            m6.insert(net6(r), r.nexthop);
        } else {
            m4.insert(net4(r), r.nexthop);
        }
    }
    let load_secs = t0.elapsed().as_secs_f64();
    let rss = rss_bytes().saturating_sub(rss0);
    let (q4, q6) = if v6 {
        let q6 = keys
            .iter()
            .map(|k| Ipv6Net::new((*k).into(), 128).expect("host"))
            .collect();
        (Vec::new(), q6)
    } else {
        let q4 = keys
            .iter()
            .map(|k| Ipv4Net::new(((k >> 96) as u32).into(), 32).expect("host"))
            .collect();
        (q4, Vec::new())
    };
    Built {
        side: Box::new(Trie {
            m4,
            m6,
            v6,
            q4,
            q6,
            out: vec![0u32; keys.len()],
        }),
        bytes_per_route: rss as f64 / routes.len() as f64,
        rss_bytes_per_route: rss as f64 / routes.len() as f64,
        load_secs,
    }
}

#[cfg(feature = "dpdk")]
mod rte {
    use super::{sum, Built, Route, Side};
    use crate::rss_bytes;
    use dataplane::fib::NO_ROUTE;
    use dataplane::io::dpdk::{heap_allocated_bytes, Eal, RteLpm, RteLpm6};
    use std::hint::black_box;
    use std::time::Instant;

    /// rte_lpm: `rte_lpm_lookup_bulk` over batches of 64, or
    /// `rte_lpm_lookupx4` (SSE) over the whole stream.
    struct Rte4 {
        t: RteLpm,
        keys4: Vec<u32>,
        out: Vec<u32>,
    }

    impl Side for Rte4 {
        fn modes(&self) -> &'static [&'static str] {
            &["lookup_bulk", "lookupx4"]
        }

        fn pass(&mut self, mode: usize) -> usize {
            if mode == 0 {
                for (ks, os) in self.keys4.chunks(64).zip(self.out.chunks_mut(64)) {
                    self.t.lookup_bulk(ks, os, NO_ROUTE);
                }
            } else {
                self.t.lookup_x4(&self.keys4, &mut self.out, NO_ROUTE);
            }
            black_box(&self.out);
            self.keys4.len()
        }

        fn checksum(&self) -> u64 {
            sum(&self.out)
        }

        fn update(&mut self, r: &Route) -> Result<(), String> {
            let a = (r.prefix >> 96) as u32;
            self.t
                .delete(a, r.len)
                .map_err(|e| format!("rte_lpm_delete: {e}"))?;
            self.t
                .add(a, r.len, r.nexthop)
                .map_err(|e| format!("rte_lpm_add: {e}"))
        }
    }

    /// rte_lpm6: `rte_lpm6_lookup_bulk_func` over batches of 64.
    struct Rte6 {
        t: RteLpm6,
        k16: Vec<[u8; 16]>,
        o: Vec<i32>,
    }

    impl Side for Rte6 {
        fn pass(&mut self, _mode: usize) -> usize {
            for (ks, os) in self.k16.chunks(64).zip(self.o.chunks_mut(64)) {
                self.t.lookup_bulk(ks, os, NO_ROUTE);
            }
            black_box(&self.o);
            self.k16.len()
        }

        fn checksum(&self) -> u64 {
            self.o.iter().map(|v| u64::from(*v as u32)).sum()
        }

        fn update(&mut self, r: &Route) -> Result<(), String> {
            self.t
                .delete(r.prefix, r.len)
                .map_err(|e| format!("rte_lpm6_delete: {e}"))?;
            self.t
                .add(r.prefix, r.len, r.nexthop)
                .map_err(|e| format!("rte_lpm6_add: {e}"))
        }
    }

    /// DPDK's rte_lpm / rte_lpm6 on the same routes and keys. Memory:
    /// bytes DPDK's heap grew by for the table.
    #[inline(never)]
    pub(super) fn build(
        eal: &Eal,
        routes: &[Route],
        keys: &[u128],
        v6: bool,
    ) -> Result<Built, String> {
        let heap0 = heap_allocated_bytes(eal, 0);
        let rss0 = rss_bytes();
        let t0 = Instant::now();
        let rules = routes.len() as u32 + 1024;
        let side: Box<dyn Side> = if v6 {
            // Groups of 256 next-level entries: one per distinct 8-bit
            // step below /24 that a route needs, with headroom.
            let mut steps = std::collections::HashSet::new();
            for r in routes {
                let mut d = 24;
                while d < r.len {
                    steps.insert((d, r.prefix >> (128 - d)));
                    d += 8;
                }
            }
            let tbl8s = (steps.len() as u32).saturating_mul(5) / 4 + 1024;
            let mut t = RteLpm6::new(eal, "bench6", rules, tbl8s).map_err(|e| e.to_string())?;
            for r in routes {
                t.add(r.prefix, r.len, r.nexthop)
                    .map_err(|e| format!("rte_lpm6_add: {e}"))?;
            }
            Box::new(Rte6 {
                t,
                k16: keys.iter().map(|k| k.to_be_bytes()).collect(),
                o: vec![0i32; keys.len()],
            })
        } else {
            let mut blocks = std::collections::HashSet::new();
            for r in routes.iter().filter(|r| r.len > 24) {
                blocks.insert((r.prefix >> 104) as u32);
            }
            let tbl8s = (blocks.len() as u32).saturating_mul(5) / 4 + 256;
            let mut t = RteLpm::new(eal, "bench4", rules, tbl8s).map_err(|e| e.to_string())?;
            for r in routes {
                t.add((r.prefix >> 96) as u32, r.len, r.nexthop)
                    .map_err(|e| format!("rte_lpm_add: {e}"))?;
            }
            Box::new(Rte4 {
                t,
                keys4: keys.iter().map(|k| (k >> 96) as u32).collect(),
                out: vec![0u32; keys.len()],
            })
        };
        let load_secs = t0.elapsed().as_secs_f64();
        let heap = heap_allocated_bytes(eal, 0).saturating_sub(heap0);
        let rss = rss_bytes().saturating_sub(rss0);
        Ok(Built {
            side,
            bytes_per_route: heap as f64 / routes.len() as f64,
            rss_bytes_per_route: rss as f64 / routes.len() as f64,
            load_secs,
        })
    }
}

/// The baseline a run compares against.
enum Baseline {
    PrefixTrie,
    #[cfg(feature = "dpdk")]
    RteLpm(dataplane::io::dpdk::Eal),
}

impl Baseline {
    fn name(&self, v6: bool) -> &'static str {
        let _ = v6;
        match self {
            Baseline::PrefixTrie => "prefix-trie 0.7",
            #[cfg(feature = "dpdk")]
            Baseline::RteLpm(_) if v6 => "DPDK 22.11 rte_lpm6",
            #[cfg(feature = "dpdk")]
            Baseline::RteLpm(_) => "DPDK 22.11 rte_lpm",
        }
    }

    fn from_opts(opts: &Opts) -> Result<Baseline, String> {
        match opts.0.get("baseline").map(String::as_str) {
            None | Some("prefix-trie") => Ok(Baseline::PrefixTrie),
            #[cfg(feature = "dpdk")]
            Some("rte_lpm") => {
                use dataplane::io::dpdk::{free_hugepages, Eal, EalOptions};
                // Huge pages when reserved (rte_lpm's natural habitat),
                // else plain memory.
                let no_huge = free_hugepages() == 0;
                let eal = Eal::init(&EalOptions {
                    cores: vec![0],
                    no_huge,
                    memory_mb: opts.num("dpdk-memory-mb", 900)?,
                    extra: vec!["--no-pci".into(), "--log-level=*:warning".into()],
                    ..EalOptions::default()
                })
                .map_err(|e| e.to_string())?;
                println!(
                    "DPDK EAL up ({})",
                    if no_huge { "no huge pages" } else { "2 MB huge pages" }
                );
                Ok(Baseline::RteLpm(eal))
            }
            #[cfg(not(feature = "dpdk"))]
            Some("rte_lpm") => Err(
                "--baseline rte_lpm needs the DPDK build: cargo run --release -p bench --features dpdk -- lpm ...".into(),
            ),
            Some(other) => Err(format!(
                "--baseline: unknown {other:?} (prefix-trie or rte_lpm)"
            )),
        }
    }

    fn build(&self, routes: &[Route], keys: &[u128], v6: bool) -> Result<Built, String> {
        match self {
            Baseline::PrefixTrie => Ok(trie(routes, keys, v6)),
            #[cfg(feature = "dpdk")]
            Baseline::RteLpm(eal) => rte::build(eal, routes, keys, v6),
        }
    }
}

/// The two sides' lookup trials in turns: each side's best rate (over
/// its modes), and the median of the rounds' ratios ours/baseline.
fn race(o: &mut dyn Side, b: &mut dyn Side, base_name: &str) -> (f64, f64, f64) {
    let bmodes = b.modes();
    let mut best_o = 0f64;
    let mut best_b = vec![0f64; bmodes.len()];
    let mut ratios = Vec::with_capacity(ROUNDS);
    // One pass each first, so that neither side's first trial pays for
    // page faults of its output or lazily built state.
    o.pass(0);
    for m in 0..bmodes.len() {
        b.pass(m);
    }
    for round in 0..ROUNDS {
        let mut ro = 0f64;
        let mut rb = 0f64;
        let mut ours_turn = |o: &mut dyn Side| {
            let r = trial(TRIAL_SECS, || o.pass(0));
            best_o = best_o.max(r);
            ro = r;
        };
        if round % 2 == 0 {
            ours_turn(o);
        }
        for (m, best) in best_b.iter_mut().enumerate() {
            let r = trial(TRIAL_SECS, || b.pass(m));
            *best = best.max(r);
            rb = rb.max(r);
        }
        if round % 2 == 1 {
            ours_turn(o);
        }
        ratios.push(ro / rb);
    }
    if bmodes.len() > 1 {
        let each: Vec<String> = bmodes
            .iter()
            .zip(&best_b)
            .map(|(m, r)| format!("{m} {:.1} M/s", r / 1e6))
            .collect();
        println!("  {base_name}: {}", each.join(", "));
    }
    // The last pass of each side in its first mode, for the checksums.
    o.pass(0);
    b.pass(0);
    let best_b = best_b.into_iter().fold(0f64, f64::max);
    (best_o, best_b, median(ratios))
}

fn family(n: usize, v6: bool, opts: &Opts, which: &Baseline) -> Result<(Figures, Figures), String> {
    let seed: u64 = opts.num("seed", 1)?;
    let nexthops: u32 = opts.num("nexthops", 4096)?;
    let nkeys: usize = opts.num("keys", 1 << 20)?;
    let routes = gen::table(n, v6, nexthops, seed);
    let mut keys = gen::keys(&routes, nkeys, v6, seed ^ 0x5eed);
    // `--distinct-keys N`: the stream repeats its first N keys, so that
    // the lines they touch stay cached: the lookup's cost without misses.
    let distinct: usize = opts.num("distinct-keys", keys.len())?;
    if distinct == 0 {
        return Err("--distinct-keys: at least 1".into());
    }
    if distinct < keys.len() {
        let (head, tail) = keys.split_at_mut(distinct);
        for (i, k) in tail.iter_mut().enumerate() {
            *k = head[i % distinct];
        }
    }
    let mut rng = gen::Rng::new(seed ^ 0xabcd);
    let updates: Vec<usize> = (0..n.min(200_000))
        .map(|_| rng.below(n as u64) as usize)
        .collect();
    let fam = if v6 { "IPv6" } else { "IPv4" };
    println!(
        "{fam}: {n} routes, {} keys ({} distinct), {nexthops} nexthops, seed {seed}",
        keys.len(),
        distinct.min(keys.len())
    );
    let base_name = which.name(v6);
    let mut b = which.build(&routes, &keys, v6)?;
    let mut o = ours(&routes, &keys, v6);
    let (lo, lb, ratio_median) = race(o.side.as_mut(), b.side.as_mut(), base_name);
    let (co, cb) = (o.side.checksum(), b.side.checksum());
    if co != cb {
        return Err(format!(
            "{fam}: vpnfwd and the baseline disagree on lookups ({co} vs {cb})"
        ));
    }
    let ub = churn(b.side.as_mut(), &routes, &updates)?;
    let uo = churn(o.side.as_mut(), &routes, &updates)?;
    let figures = |x: &Built, lookups_per_sec, updates_per_sec| Figures {
        lookups_per_sec,
        bytes_per_route: x.bytes_per_route,
        rss_bytes_per_route: x.rss_bytes_per_route,
        updates_per_sec,
        load_secs: x.load_secs,
    };
    let fo = figures(&o, lo, uo);
    let fb = figures(&b, lb, ub);
    for (name, f) in [("vpnfwd", &fo), (base_name, &fb)] {
        println!(
            "  {name:<20} {:>8.1} M lookups/s  {:>6.1} B/route (RSS {:>6.1})  {:>9.0} updates/s  load {:.2} s",
            f.lookups_per_sec / 1e6,
            f.bytes_per_route,
            f.rss_bytes_per_route,
            f.updates_per_sec,
            f.load_secs
        );
    }
    println!(
        "  ratio vpnfwd/baseline: lookups {:.2}x (median of {ROUNDS} rounds in turn {:.2}x), updates {:.2}x",
        fo.lookups_per_sec / fb.lookups_per_sec,
        ratio_median,
        fo.updates_per_sec / fb.updates_per_sec
    );
    Ok((fo, fb))
}

fn fig(f: &Figures) -> serde_json::Value {
    json!({
        "lookups_per_sec": f.lookups_per_sec.round(),
        "bytes_per_route": (f.bytes_per_route * 10.0).round() / 10.0,
        "rss_bytes_per_route": (f.rss_bytes_per_route * 10.0).round() / 10.0,
        "updates_per_sec": f.updates_per_sec.round(),
    })
}

/// Run the benchmark.
pub fn run(opts: &Opts) -> Result<(), String> {
    let n: usize = opts.num("routes", 1_000_000)?;
    let n6: usize = opts.num("v6-routes", 200_000)?;
    if n == 0 || n6 == 0 {
        return Err("--routes and --v6-routes must be positive".into());
    }
    let (v4, v6) = match opts.0.get("family").map(String::as_str) {
        None | Some("both") => (true, true),
        Some("ipv4") => (true, false),
        Some("ipv6") => (false, true),
        Some(other) => return Err(format!("--family: unknown {other:?} (ipv4, ipv6 or both)")),
    };
    let which = Baseline::from_opts(opts)?;
    // A family left out has no figures in the JSON line.
    let mut top = json!({});
    let mut base = json!({});
    if v4 {
        let (o4, b4) = family(n, false, opts, &which)?;
        top = fig(&o4);
        base = fig(&b4);
        base["name"] = json!(which.name(false));
    }
    if v6 {
        let (o6, b6) = family(n6, true, opts, &which)?;
        top["ipv6"] = fig(&o6);
        base["ipv6"] = fig(&b6);
        if !v4 || !matches!(which, Baseline::PrefixTrie) {
            base["ipv6_name"] = json!(which.name(true));
        }
    }
    top["baseline"] = base;
    println!("{top}");
    Ok(())
}
