//! One writer churns routes while readers look up continuously: every answer
//! must be one some state of the table could give, never a torn one, and
//! reclamation must not free what a reader holds.

use dataplane::fib::{Lpm, NO_ROUTE};
use dataplane::rcu::Domain;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn covers(p: u128, l: u8, k: u128, bits: u32) -> bool {
    let m = if l == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(l))
    };
    let _ = bits;
    k & m == p
}

fn routes(rng: &mut Rng, n: usize, bits: u32, nh_base: u32) -> Vec<(u128, u8, u32)> {
    let lens: &[u8] = if bits == 32 {
        &[8, 12, 16, 20, 22, 24, 24, 24, 28, 32]
    } else {
        &[16, 29, 32, 40, 48, 48, 56, 64, 96, 128]
    };
    (0..n)
        .map(|i| {
            let l = lens[(rng.next() % lens.len() as u64) as usize];
            // Cluster under two /8s so that routes nest.
            let top = [0x0au128, 0x2a][(rng.next() % 2) as usize] << 120;
            let raw = top | (u128::from(rng.next()) << 56 >> 8) | u128::from(rng.next() >> 8);
            let m = u128::MAX << (128 - u32::from(l));
            (raw & m, l, nh_base + i as u32)
        })
        .collect()
}

/// `flat`: an IPv4 table whose flat slot array the writer keeps taking
/// away and giving back while it churns.
fn churn(bits: u32, flat: bool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(bits));
    let stable = routes(&mut rng, 1500, bits, 0);
    let mut churned = routes(&mut rng, 1500, bits, 100_000);
    churned.retain(|c| !stable.iter().any(|s| s.0 == c.0 && s.1 == c.1));
    churned.sort_by_key(|r| (r.0, r.1));
    churned.dedup_by_key(|r| (r.0, r.1));
    // Probe keys: route edges plus random addresses under the same /8s.
    let mut keys: Vec<u128> = stable.iter().chain(&churned).map(|r| r.0 | 1).collect();
    for _ in 0..2000 {
        let top = [0x0au128, 0x2a][(rng.next() % 2) as usize] << 120;
        keys.push(top | (u128::from(rng.next()) << 56 >> 8) | u128::from(rng.next()));
    }
    let valid: Vec<Vec<u32>> = keys
        .iter()
        .map(|k| {
            let best = stable
                .iter()
                .filter(|r| covers(r.0, r.1, *k, bits))
                .max_by_key(|r| r.1);
            let (blen, bnh) = best.map_or((-1i32, NO_ROUTE), |r| (i32::from(r.1), r.2));
            let mut v = vec![bnh];
            v.extend(
                churned
                    .iter()
                    .filter(|r| covers(r.0, r.1, *k, bits) && i32::from(r.1) > blen)
                    .map(|r| r.2),
            );
            v
        })
        .collect();
    let to_key = move |k: u128| if bits == 32 { k >> 96 } else { k };
    let d = Domain::new();
    let mut t = if bits == 32 {
        Lpm::new_v4(&d)
    } else {
        Lpm::new_v6(&d)
    };
    let put = |t: &mut Lpm, r: &(u128, u8, u32), on: bool| {
        let res = match (bits, on) {
            (32, true) => t.insert_v4((r.0 >> 96) as u32, r.1, r.2),
            (32, false) => t.remove_v4((r.0 >> 96) as u32, r.1),
            (_, true) => t.insert_v6(r.0, r.1, r.2),
            (_, false) => t.remove_v6(r.0, r.1),
        };
        res.expect("valid route");
    };
    for r in &stable {
        put(&mut t, r, true);
    }
    let shared = t.shared().clone();
    let keys = Arc::new(keys);
    let valid = Arc::new(valid);
    let done = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut reader = d.register();
            let (shared, keys, valid, done, lookups) = (
                shared.clone(),
                keys.clone(),
                valid.clone(),
                done.clone(),
                lookups.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                let keys4: Vec<u32> = keys.iter().map(|k| to_key(*k) as u32).collect();
                let mut out = vec![0u32; keys4.len()];
                while !done.load(Ordering::Relaxed) {
                    if bits == 32 {
                        // The batch lookup, too.
                        {
                            let g = reader.guard();
                            shared.lookup_v4_batch(&g, &keys4, &mut out);
                        }
                        reader.quiescent();
                        for ((k, ok), got) in keys.iter().zip(valid.iter()).zip(&out) {
                            assert!(ok.contains(got), "batch key {k:#x}: {got} not in {ok:?}");
                        }
                        n += out.len() as u64;
                    }
                    {
                        let g = reader.guard();
                        for (k, ok) in keys.iter().zip(valid.iter()) {
                            let got = if bits == 32 {
                                shared.lookup_v4(&g, to_key(*k) as u32)
                            } else {
                                shared.lookup_v6(&g, *k)
                            };
                            assert!(ok.contains(&got), "key {k:#x}: {got} not in {ok:?}");
                            n += 1;
                        }
                    }
                    reader.quiescent();
                }
                lookups.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let mut on = vec![false; churned.len()];
    for n in 0..30_000 {
        if flat && n % 500 == 0 {
            t.set_flat_at(if n % 1000 == 0 { 0 } else { usize::MAX });
            assert_eq!(t.stats().flat, n % 1000 == 0);
        }
        let i = (rng.next() % churned.len() as u64) as usize;
        on[i] = !on[i];
        put(&mut t, &churned[i], on[i]);
        d.collect();
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader found no torn answer");
    }
    assert!(lookups.load(Ordering::Relaxed) > 0);
    // After the churn, the table equals a fresh one with the same routes.
    for (k, ok) in keys.iter().zip(valid.iter()) {
        let got = if bits == 32 {
            t.lookup_v4(to_key(*k) as u32)
        } else {
            t.lookup_v6(*k)
        };
        let expect = stable
            .iter()
            .chain(churned.iter().zip(&on).filter(|(_, o)| **o).map(|(r, _)| r))
            .filter(|r| covers(r.0, r.1, *k, bits))
            .max_by_key(|r| r.1)
            .map_or(NO_ROUTE, |r| r.2);
        assert_eq!(got, expect);
        assert!(ok.contains(&got));
    }
    drop(t);
    drop(shared);
    d.synchronize();
    assert_eq!(d.pending(), 0);
}

#[test]
fn ipv4_readers_see_before_or_after_answers_while_a_writer_churns() {
    churn(32, false);
}

#[test]
fn ipv4_readers_see_before_or_after_answers_as_the_flat_array_comes_and_goes() {
    churn(32, true);
}

#[test]
fn ipv6_readers_see_before_or_after_answers_while_a_writer_churns() {
    churn(128, false);
}
