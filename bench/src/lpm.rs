//! `bench lpm`: vpnfwd's LPM beside a baseline on the same routes and keys.
//!
//! Figures per family: lookups/s on one core (batches of 64 keys, the worker's burst, through a
//! read-side guard, as the pipeline does, for IPv4 and IPv6), bytes per route (the readers'
//! structure; also the process RSS growth, measured the same way for the
//! baseline), and updates/s (withdraw and re-announce of random routes of the
//! full table, one at a time, published to readers). Lookup rates are the
//! best of seven 0.3 s runs, for both tables alike.

use crate::gen::{self, Route};
use crate::{rss_bytes, Opts};
use dataplane::fib::{Lpm, NO_ROUTE};
use dataplane::rcu::Domain;
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

struct Figures {
    lookups_per_sec: f64,
    bytes_per_route: f64,
    rss_bytes_per_route: f64,
    updates_per_sec: f64,
    load_secs: f64,
    checksum: u64,
}

/// Best rate of `trials` runs of about `secs` each (the least-disturbed run
/// on a shared machine), in items per second.
fn time_loop(trials: usize, secs: f64, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = 0f64;
    for _ in 0..trials {
        let start = Instant::now();
        let mut n = 0usize;
        loop {
            n += f();
            let e = start.elapsed().as_secs_f64();
            if e >= secs {
                best = best.max(n as f64 / e);
                break;
            }
        }
    }
    best
}

#[inline(never)]
fn ours(routes: &[Route], keys: &[u128], v6: bool, updates: &[usize]) -> Figures {
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
    let mut reader = d.register();
    let shared = t.shared().clone();
    let keys4: Vec<u32> = keys.iter().map(|k| (k >> 96) as u32).collect();
    let mut out = vec![0u32; keys.len()];
    let lookups_per_sec = time_loop(7, 0.3, || {
        {
            let g = reader.guard();
            if v6 {
                for (ks, os) in keys.chunks(64).zip(out.chunks_mut(64)) {
                    shared.lookup_v6_batch(&g, ks, os);
                }
            } else {
                for (ks, os) in keys4.chunks(64).zip(out.chunks_mut(64)) {
                    shared.lookup_v4_batch(&g, ks, os);
                }
            }
        }
        reader.quiescent();
        black_box(&out);
        keys.len()
    });
    let checksum = out.iter().map(|v| u64::from(*v)).sum();
    let t1 = Instant::now();
    for &i in updates {
        let r = routes[i];
        if v6 {
            t.remove_v6(r.prefix, r.len).expect("valid");
            t.insert_v6(r.prefix, r.len, r.nexthop).expect("valid");
        } else {
            let a = (r.prefix >> 96) as u32;
            t.remove_v4(a, r.len).expect("valid");
            t.insert_v4(a, r.len, r.nexthop).expect("valid");
        }
        reader.quiescent();
    }
    d.collect();
    let updates_per_sec = (2 * updates.len()) as f64 / t1.elapsed().as_secs_f64();
    Figures {
        lookups_per_sec,
        bytes_per_route: fib_bytes as f64 / routes.len() as f64,
        rss_bytes_per_route: rss as f64 / routes.len() as f64,
        updates_per_sec,
        load_secs,
        checksum,
    }
}

#[inline(never)]
fn baseline(routes: &[Route], keys: &[u128], v6: bool, updates: &[usize]) -> Figures {
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut m4: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
    let mut m6: PrefixMap<Ipv6Net, u32> = PrefixMap::new();
    let net4 = |r: &Route| Ipv4Net::new(((r.prefix >> 96) as u32).into(), r.len).expect("valid");
    let net6 = |r: &Route| Ipv6Net::new(r.prefix.into(), r.len).expect("valid");
    for r in routes {
        if v6 {
            m6.insert(net6(r), r.nexthop);
        } else {
            m4.insert(net4(r), r.nexthop);
        }
    }
    let load_secs = t0.elapsed().as_secs_f64();
    let rss = rss_bytes().saturating_sub(rss0);
    let q4: Vec<Ipv4Net> = keys
        .iter()
        .map(|k| Ipv4Net::new(((k >> 96) as u32).into(), 32).expect("host"))
        .collect();
    let q6: Vec<Ipv6Net> = keys
        .iter()
        .map(|k| Ipv6Net::new((*k).into(), 128).expect("host"))
        .collect();
    let mut out = vec![0u32; keys.len()];
    let lookups_per_sec = time_loop(7, 0.3, || {
        if v6 {
            for (q, o) in q6.iter().zip(out.iter_mut()) {
                *o = m6.get_lpm(q).map_or(NO_ROUTE, |(_, v)| *v);
            }
        } else {
            for (q, o) in q4.iter().zip(out.iter_mut()) {
                *o = m4.get_lpm(q).map_or(NO_ROUTE, |(_, v)| *v);
            }
        }
        black_box(&out);
        keys.len()
    });
    let checksum = out.iter().map(|v| u64::from(*v)).sum();
    let t1 = Instant::now();
    for &i in updates {
        let r = &routes[i];
        if v6 {
            m6.remove(&net6(r));
            m6.insert(net6(r), r.nexthop);
        } else {
            m4.remove(&net4(r));
            m4.insert(net4(r), r.nexthop);
        }
    }
    let updates_per_sec = (2 * updates.len()) as f64 / t1.elapsed().as_secs_f64();
    Figures {
        lookups_per_sec,
        bytes_per_route: rss as f64 / routes.len() as f64,
        rss_bytes_per_route: rss as f64 / routes.len() as f64,
        updates_per_sec,
        load_secs,
        checksum,
    }
}

/// DPDK's rte_lpm / rte_lpm6 on the same routes and keys. Lookups: the
/// better of `rte_lpm_lookup_bulk` over batches of 64 and
/// `rte_lpm_lookupx4` (IPv4), `rte_lpm6_lookup_bulk_func` over batches of
/// 64 (IPv6). Memory: bytes DPDK's heap grew by for the table.
#[cfg(feature = "dpdk")]
#[inline(never)]
fn rte(
    eal: &dataplane::io::dpdk::Eal,
    routes: &[Route],
    keys: &[u128],
    v6: bool,
    updates: &[usize],
) -> Result<Figures, String> {
    use dataplane::io::dpdk::{heap_allocated_bytes, RteLpm, RteLpm6};
    let heap0 = heap_allocated_bytes(eal, 0);
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let rules = routes.len() as u32 + 1024;
    let mut out = vec![0u32; keys.len()];
    let (lookups_per_sec, updates_per_sec, heap, rss, load_secs);
    if v6 {
        // Groups of 256 next-level entries: one per distinct 8-bit step
        // below /24 that a route needs, with headroom.
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
        load_secs = t0.elapsed().as_secs_f64();
        heap = heap_allocated_bytes(eal, 0).saturating_sub(heap0);
        rss = rss_bytes().saturating_sub(rss0);
        let k16: Vec<[u8; 16]> = keys.iter().map(|k| k.to_be_bytes()).collect();
        let mut o = vec![0i32; keys.len()];
        lookups_per_sec = time_loop(7, 0.3, || {
            for (ks, os) in k16.chunks(64).zip(o.chunks_mut(64)) {
                t.lookup_bulk(ks, os, NO_ROUTE);
            }
            black_box(&o);
            keys.len()
        });
        for (d, s) in out.iter_mut().zip(&o) {
            *d = *s as u32;
        }
        let t1 = Instant::now();
        for &i in updates {
            let r = routes[i];
            t.delete(r.prefix, r.len)
                .map_err(|e| format!("rte_lpm6_delete: {e}"))?;
            t.add(r.prefix, r.len, r.nexthop)
                .map_err(|e| format!("rte_lpm6_add: {e}"))?;
        }
        updates_per_sec = (2 * updates.len()) as f64 / t1.elapsed().as_secs_f64();
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
        load_secs = t0.elapsed().as_secs_f64();
        heap = heap_allocated_bytes(eal, 0).saturating_sub(heap0);
        rss = rss_bytes().saturating_sub(rss0);
        let keys4: Vec<u32> = keys.iter().map(|k| (k >> 96) as u32).collect();
        let bulk = time_loop(7, 0.3, || {
            for (ks, os) in keys4.chunks(64).zip(out.chunks_mut(64)) {
                t.lookup_bulk(ks, os, NO_ROUTE);
            }
            black_box(&out);
            keys.len()
        });
        let x4 = time_loop(7, 0.3, || {
            t.lookup_x4(&keys4, &mut out, NO_ROUTE);
            black_box(&out);
            keys.len()
        });
        println!(
            "  rte_lpm: lookup_bulk {:.1} M/s, lookupx4 {:.1} M/s",
            bulk / 1e6,
            x4 / 1e6
        );
        lookups_per_sec = bulk.max(x4);
        t.lookup_bulk(&keys4, &mut out, NO_ROUTE);
        let t1 = Instant::now();
        for &i in updates {
            let r = routes[i];
            let a = (r.prefix >> 96) as u32;
            t.delete(a, r.len)
                .map_err(|e| format!("rte_lpm_delete: {e}"))?;
            t.add(a, r.len, r.nexthop)
                .map_err(|e| format!("rte_lpm_add: {e}"))?;
        }
        updates_per_sec = (2 * updates.len()) as f64 / t1.elapsed().as_secs_f64();
    }
    let checksum = out.iter().map(|v| u64::from(*v)).sum();
    Ok(Figures {
        lookups_per_sec,
        bytes_per_route: heap as f64 / routes.len() as f64,
        rss_bytes_per_route: rss as f64 / routes.len() as f64,
        updates_per_sec,
        load_secs,
        checksum,
    })
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

    fn run(
        &self,
        routes: &[Route],
        keys: &[u128],
        v6: bool,
        updates: &[usize],
    ) -> Result<Figures, String> {
        match self {
            Baseline::PrefixTrie => Ok(baseline(routes, keys, v6, updates)),
            #[cfg(feature = "dpdk")]
            Baseline::RteLpm(eal) => rte(eal, routes, keys, v6, updates),
        }
    }
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
    let base = which.run(&routes, &keys, v6, &updates)?;
    let o = ours(&routes, &keys, v6, &updates);
    if o.checksum != base.checksum {
        return Err(format!(
            "{fam}: vpnfwd and the baseline disagree on lookups ({} vs {})",
            o.checksum, base.checksum
        ));
    }
    for (name, f) in [("vpnfwd", &o), (which.name(v6), &base)] {
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
        "  ratio vpnfwd/baseline: lookups {:.2}x, updates {:.2}x",
        o.lookups_per_sec / base.lookups_per_sec,
        o.updates_per_sec / base.updates_per_sec
    );
    Ok((o, base))
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
    let which = Baseline::from_opts(opts)?;
    let (o4, b4) = family(n, false, opts, &which)?;
    let (o6, b6) = family(n6, true, opts, &which)?;
    let mut top = fig(&o4);
    top["ipv6"] = fig(&o6);
    let mut base = fig(&b4);
    base["name"] = json!(which.name(false));
    if !matches!(which, Baseline::PrefixTrie) {
        base["ipv6_name"] = json!(which.name(true));
    }
    base["ipv6"] = fig(&b6);
    top["baseline"] = base;
    println!("{top}");
    Ok(())
}
