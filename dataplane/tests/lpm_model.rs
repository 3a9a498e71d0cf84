//! The LPM against a linear-scan model, under interleaved inserts and deletes.

use dataplane::fib::{Lpm, NO_ROUTE};
use dataplane::rcu::Domain;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    Insert(u128, u8, u32),
    Remove(u128, u8),
}

fn model_lookup(routes: &[(u128, u8, u32)], ip: u128, bits: u32) -> u32 {
    routes
        .iter()
        .filter(|(p, l, _)| {
            let m = if *l == 0 {
                0
            } else {
                u128::MAX << (bits - u32::from(*l))
            };
            ip & m == *p
        })
        .max_by_key(|(_, l, _)| *l)
        .map_or(NO_ROUTE, |r| r.2)
}

fn mask(p: u128, len: u8, bits: u32) -> u128 {
    if len == 0 {
        0
    } else {
        p & (u128::MAX << (bits - u32::from(len)))
    }
}

/// Addresses clustered in a few regions so that prefixes nest and collide.
fn addr(bits: u32) -> impl Strategy<Value = u128> {
    let top = prop::sample::select(vec![0x0au128, 0x0b, 0xc0, 0x20]);
    (top, 0u128..16, any::<u128>(), 0usize..3).prop_map(move |(t, mid, r, spread)| {
        // Keep the top 8 bits from a small set, the next 8 from a tiny range,
        // and randomise the rest only sometimes.
        let rand_bits = [bits - 16, (bits - 16) / 2, 4][spread];
        let low = r & ((1u128 << rand_bits) - 1);
        (t << (bits - 8)) | (mid << (bits - 16)) | low
    })
}

fn ops(bits: u32) -> impl Strategy<Value = Vec<Op>> {
    let lens: Vec<u8> = if bits == 32 {
        vec![
            0, 1, 7, 8, 9, 12, 15, 16, 17, 20, 22, 24, 24, 24, 25, 28, 31, 32,
        ]
    } else {
        vec![
            0, 3, 8, 16, 17, 29, 32, 33, 40, 44, 48, 48, 48, 56, 64, 65, 96, 127, 128,
        ]
    };
    let op = (
        addr(bits),
        prop::sample::select(lens),
        // Mostly few nexthops (routes shadow each other), some around and
        // beyond the largest an inline (solo) slot word holds.
        prop_oneof![
            6 => 0u32..8,
            1 => 4_194_300u32..4_194_310,
            1 => Just(1u32 << 30),
        ],
        any::<bool>(),
    )
        .prop_map(move |(a, l, nh, ins)| {
            let p = mask(a, l, bits);
            if ins || l == 0 {
                Op::Insert(p, l, nh)
            } else {
                Op::Remove(p, l)
            }
        });
    prop::collection::vec(op, 1..120)
}

/// Apply `ops` to a table and to the model, checking every answer. With
/// `held` > 0 the ops go in runs of that many, each held
/// ([`Lpm::hold_retired`] … [`Lpm::flush_retired`], as the
/// forwarding-table thread applies a batch), and lookups are checked after
/// each run; the previous nexthop each change returns is checked always.
/// `flat`: give the IPv4 table its flat slot array from the start.
fn run(bits: u32, ops: Vec<Op>, probes: Vec<u128>, held: usize, flat: bool) {
    let d = Domain::new();
    let mut t = if bits == 32 {
        Lpm::new_v4(&d)
    } else {
        Lpm::new_v6(&d)
    };
    if flat {
        t.set_flat_at(0);
    }
    let mut model: Vec<(u128, u8, u32)> = Vec::new();
    let shift = 128 - bits;
    for group in ops.chunks(held.max(1)) {
        if held > 0 {
            t.hold_retired();
        }
        for op in group.iter().copied() {
            match op {
                Op::Insert(p, l, nh) => {
                    let r = if bits == 32 {
                        t.insert_v4(p as u32, l, nh)
                    } else {
                        t.insert_v6(p, l, nh)
                    };
                    let old = model
                        .iter()
                        .position(|(mp, ml, _)| *mp == p && *ml == l)
                        .map(|i| model.remove(i).2);
                    assert_eq!(r.expect("valid route"), old);
                    model.push((p, l, nh));
                }
                Op::Remove(p, l) => {
                    let r = if bits == 32 {
                        t.remove_v4(p as u32, l)
                    } else {
                        t.remove_v6(p, l)
                    };
                    let old = model
                        .iter()
                        .position(|(mp, ml, _)| *mp == p && *ml == l)
                        .map(|i| model.remove(i).2);
                    assert_eq!(r.expect("valid route"), old);
                }
            }
        }
        if held > 0 {
            t.flush_retired();
        }
        assert_eq!(t.len(), model.len());
        let mut keys: Vec<u128> = probes.clone();
        // Probe every route's first and last address and their neighbours.
        for (p, l, _) in &model {
            let span = if u32::from(*l) == bits {
                0
            } else {
                u128::MAX >> (128 - (bits - u32::from(*l)))
            };
            keys.extend([*p, p.wrapping_sub(1), p | span, (p | span).wrapping_add(1)]);
        }
        if bits == 128 {
            // The software-pipelined IPv6 batch lookup agrees too.
            let mut out = vec![0u32; keys.len()];
            let mut reader = d.register();
            {
                let g = reader.guard();
                t.shared().lookup_v6_batch(&g, &keys, &mut out);
            }
            for (k, o) in keys.iter().zip(&out) {
                assert_eq!(*o, model_lookup(&model, *k, bits), "v6 batch key {k:#x}");
            }
        }
        if bits == 32 {
            // The software-pipelined batch lookup agrees with the model too.
            let ks: Vec<u32> = keys.iter().map(|k| *k as u32).collect();
            let mut out = vec![0u32; ks.len()];
            let mut reader = d.register();
            {
                let g = reader.guard();
                t.shared().lookup_v4_batch(&g, &ks, &mut out);
            }
            for (k, o) in ks.iter().zip(&out) {
                assert_eq!(
                    *o,
                    model_lookup(&model, u128::from(*k), bits),
                    "batch key {k:#x}"
                );
            }
        }
        for k in keys {
            let k = if bits == 32 { k & 0xffff_ffff } else { k };
            let got = if bits == 32 {
                t.lookup_v4(k as u32)
            } else {
                t.lookup_v6(k)
            };
            assert_eq!(
                got,
                model_lookup(&model, k, bits),
                "key {:#x} (shift {shift})",
                k
            );
        }
    }
    drop(t);
    d.synchronize();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 320, .. ProptestConfig::default() })]

    // Half the cases change the table one change at a time, half in held
    // runs of up to 47 changes (see `run`).
    #[test]
    fn ipv4_lpm_matches_a_linear_scan(
        ops in ops(32),
        probes in prop::collection::vec(addr(32), 8),
        held in prop_oneof![Just(0usize), 1usize..48],
        flat in any::<bool>(),
    ) {
        run(32, ops, probes, held, flat);
    }

    #[test]
    fn ipv6_lpm_matches_a_linear_scan(
        ops in ops(128),
        probes in prop::collection::vec(addr(128), 8),
        held in prop_oneof![Just(0usize), 1usize..48],
    ) {
        run(128, ops, probes, held, false);
    }
}

#[test]
fn prefixes_with_host_bits_or_bad_lengths_are_refused() {
    let d = Domain::new();
    let mut t = Lpm::new_v4(&d);
    assert!(t.insert_v4(0x0a00_0001, 24, 1).is_err());
    assert!(t.insert_v4(0x0a00_0000, 33, 1).is_err());
    assert!(t.insert_v4(0x0a00_0000, 24, 0x8000_0000).is_err());
    assert!(t.is_empty());
}

#[test]
fn a_default_route_in_a_small_table_costs_no_segment() {
    let d = Domain::new();
    let mut t = Lpm::new_v4(&d);
    t.insert_v4(0, 0, 7).expect("default");
    assert_eq!(t.lookup_v4(0x0102_0304), 7);
    assert_eq!(t.fib_bytes(), 2048);
    t.insert_v4(0x0a00_0000, 24, 8).expect("route");
    assert_eq!(t.lookup_v4(0x0a00_0005), 8);
    assert_eq!(t.lookup_v4(0x0a00_0105), 7);
    assert!(t.fib_bytes() < 16 * 1024, "{}", t.fib_bytes());
}

/// An IPv4 block (/18) whose only longer route fits its slot word holds it
/// there, with the block's default, instead of in a chunk; it gets a chunk
/// when a second route arrives or a nexthop does not fit, and the word
/// follows its default. Checked in a sparse /8 and in a dense one.
#[test]
fn a_block_with_one_long_route_holds_it_in_its_slot_word() {
    for dense in [false, true] {
        let d = Domain::new();
        let mut t = Lpm::new_v4(&d);
        if dense {
            // Routes in 200 blocks of 10/8 make its segment dense.
            for i in 0..200u32 {
                t.insert_v4(0x0a80_0000 | (i << 14), 24, 100 + i)
                    .expect("filler");
            }
            assert_eq!(t.stats().segments, 1, "{:?}", t.stats());
        }
        let solos = |t: &Lpm| t.stats().solos - if dense { 200 } else { 0 };
        t.insert_v4(0x0a01_0200, 24, 5).expect("route");
        assert_eq!((solos(&t), t.stats().chunks), (1, 0), "{:?}", t.stats());
        assert_eq!(t.lookup_v4(0x0a01_0209), 5);
        assert_eq!(t.lookup_v4(0x0a01_0309), NO_ROUTE);
        // A covering route becomes the word's default, and goes again.
        t.insert_v4(0x0a00_0000, 8, 7).expect("cover");
        assert_eq!(t.lookup_v4(0x0a01_0309), 7);
        assert_eq!(t.lookup_v4(0x0a01_0209), 5);
        t.insert_v4(0x0a01_0000, 16, 8).expect("cover");
        assert_eq!(t.lookup_v4(0x0a01_0309), 8);
        t.remove_v4(0x0a01_0000, 16).expect("uncover");
        assert_eq!(t.lookup_v4(0x0a01_0309), 7);
        // A second route in the block: a chunk; gone again: the word.
        t.insert_v4(0x0a01_0280, 25, 9).expect("more specific");
        assert_eq!((solos(&t), t.stats().chunks), (0, 1), "{:?}", t.stats());
        assert_eq!(t.lookup_v4(0x0a01_0281), 9);
        assert_eq!(t.lookup_v4(0x0a01_0201), 5);
        t.remove_v4(0x0a01_0280, 25).expect("remove");
        assert_eq!((solos(&t), t.stats().chunks), (1, 0), "{:?}", t.stats());
        assert_eq!(t.lookup_v4(0x0a01_0281), 5);
        // A default whose nexthop does not fit the word: a chunk.
        t.insert_v4(0x0a01_0000, 16, 1 << 30).expect("big cover");
        assert_eq!((solos(&t), t.stats().chunks), (0, 1), "{:?}", t.stats());
        assert_eq!(t.lookup_v4(0x0a01_0309), 1 << 30);
        assert_eq!(t.lookup_v4(0x0a01_0209), 5);
        t.remove_v4(0x0a01_0000, 16).expect("uncover");
        assert_eq!((solos(&t), t.stats().chunks), (1, 0), "{:?}", t.stats());
        assert_eq!(t.lookup_v4(0x0a01_0309), 7);
        // A route whose nexthop does not fit: a chunk.
        t.insert_v4(0x0a01_0200, 24, (1 << 22) - 1)
            .expect("big route");
        assert_eq!((solos(&t), t.stats().chunks), (0, 1), "{:?}", t.stats());
        assert_eq!(t.lookup_v4(0x0a01_0209), (1 << 22) - 1);
        t.insert_v4(0x0a01_0200, 24, 5).expect("route");
        assert_eq!((solos(&t), t.stats().chunks), (1, 0), "{:?}", t.stats());
        // The batch lookup reads the words alike.
        let keys = [0x0a01_0209u32, 0x0a01_0309, 0x0b00_0000];
        let mut out = [0u32; 3];
        let mut reader = d.register();
        {
            let g = reader.guard();
            t.shared().lookup_v4_batch(&g, &keys, &mut out);
        }
        assert_eq!(out, [5, 7, NO_ROUTE]);
        t.remove_v4(0x0a01_0200, 24).expect("remove");
        assert_eq!(solos(&t), 0);
        assert_eq!(t.lookup_v4(0x0a01_0209), 7);
        drop(reader);
        drop(t);
        d.synchronize();
    }
}

/// A /8 whose blocks form few runs gets a sparse segment; it turns dense
/// when its runs outgrow the list, and goes away with its last route.
/// Lookups (single and batched) agree with the model at every step.
#[test]
fn sparse_segments_turn_dense_and_go_away_with_their_routes() {
    let d = Domain::new();
    let mut t = Lpm::new_v4(&d);
    let mut model: Vec<(u128, u8, u32)> = Vec::new();
    let check = |t: &Lpm, model: &[(u128, u8, u32)]| {
        let mut keys: Vec<u32> = vec![0x0a00_0000, 0x0aff_ffff, 0x0b00_0000, 0x09ff_ffff];
        for (p, l, _) in model {
            let a = (*p >> 96) as u32;
            let span = if *l == 32 { 0 } else { u32::MAX >> l };
            keys.extend([a, a | span, a.wrapping_sub(1), (a | span).wrapping_add(1)]);
        }
        let mut out = vec![0u32; keys.len()];
        let mut r = d.register();
        {
            let g = r.guard();
            t.shared().lookup_v4_batch(&g, &keys, &mut out);
        }
        for (k, o) in keys.iter().zip(&out) {
            let want = model_lookup(model, u128::from(*k) << 96, 128);
            assert_eq!(t.lookup_v4(*k), want, "key {k:#x}");
            assert_eq!(*o, want, "batch key {k:#x}");
        }
    };
    let add = |t: &mut Lpm, model: &mut Vec<(u128, u8, u32)>, a: u32, l: u8, nh: u32| {
        t.insert_v4(a, l, nh).expect("route");
        model.retain(|(p, ml, _)| !(*p == u128::from(a) << 96 && *ml == l));
        model.push((u128::from(a) << 96, l, nh));
    };
    add(&mut t, &mut model, 0, 4, 1);
    // 40 /24s in 40 blocks of 10/8: sparse, its list long enough past the
    // twenty-fourth to carry directories. Checked after each.
    for i in 0..40u32 {
        add(
            &mut t,
            &mut model,
            0x0a00_0000 | (i * 977 % 1024) << 14,
            24,
            10 + i,
        );
        check(&t, &model);
    }
    let st = t.stats();
    assert_eq!((st.segments, st.sparse_segments), (0, 1), "{st:?}");
    assert!(t.fib_bytes() < 2048 + 2048 + 40 * 200, "{}", t.fib_bytes());
    assert!(
        t.fib_bytes() < 2048 + 8192,
        "cheaper than one dense segment"
    );
    // A default-ish change above it reaches the listed chunks and the rest.
    add(&mut t, &mut model, 0x0800_0000, 6, 2);
    check(&t, &model);
    // A /12 and a /18 inside 10/8: runs of leaves, still sparse.
    add(&mut t, &mut model, 0x0a10_0000, 12, 3);
    add(&mut t, &mut model, 0x0a20_0000, 18, 4);
    check(&t, &model);
    let st = t.stats();
    assert_eq!((st.segments, st.sparse_segments), (0, 1), "{st:?}");
    // 11/8: sparse, then more runs than a list holds: dense.
    for i in 0..100u32 {
        add(
            &mut t,
            &mut model,
            0x0b00_0000 | (i * 7 % 1024) << 14 | 0x100,
            24,
            100 + i,
        );
        if i == 10 {
            let st = t.stats();
            assert_eq!((st.segments, st.sparse_segments), (0, 2), "{st:?}");
        }
    }
    check(&t, &model);
    let st = t.stats();
    assert_eq!((st.segments, st.sparse_segments), (1, 1), "{st:?}");
    // Many /18s scattered over 12/8 also make it dense.
    for i in 0..80u32 {
        add(
            &mut t,
            &mut model,
            0x0c00_0000 | (i * 11 % 1024) << 14,
            18,
            300 + i,
        );
    }
    check(&t, &model);
    assert_eq!(t.stats().segments, 2);
    // Everything in 10/8 and 11/8 goes: so do their segments.
    for (p, l, _) in model.clone() {
        if (0x0a..=0x0c).contains(&(p >> 120)) {
            t.remove_v4((p >> 96) as u32, l).expect("remove");
            model.retain(|(mp, ml, _)| !(*mp == p && *ml == l));
        }
    }
    check(&t, &model);
    let st = t.stats();
    assert_eq!((st.segments, st.sparse_segments), (0, 0), "{st:?}");
    // IPv6 too: a few /48s in one /8 stay sparse.
    let mut t6 = Lpm::new_v6(&d);
    for i in 0..20u128 {
        t6.insert_v6((0x2001_0db8u128 << 96) | (i << 80), 48, i as u32)
            .expect("route");
    }
    for i in 0..20u128 {
        assert_eq!(
            t6.lookup_v6((0x2001_0db8u128 << 96) | (i << 80) | 5),
            i as u32
        );
    }
    assert_eq!(t6.stats().sparse_segments, 1);
    drop(t);
    drop(t6);
    d.synchronize();
}

/// A seeded xorshift generator for the churn tests.
fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Churn in one /8 that keeps its sparse segment near and past the size
/// at which it carries directories: lookups, single and batched, agree
/// with the model every few changes.
#[test]
fn a_churning_sparse_segment_agrees_with_the_model() {
    let d = Domain::new();
    let mut t = Lpm::new_v4(&d);
    let mut model: Vec<(u128, u8, u32)> = Vec::new();
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
    let mut r = d.register();
    let lens = [16u8, 20, 22, 24, 24, 24, 24, 28];
    for step in 0..1500 {
        let len = lens[(next() % lens.len() as u64) as usize];
        let a = 0x0a00_0000u32 | (next() as u32 & 0x00ff_ffff);
        let a = if len == 32 { a } else { a & !(u32::MAX >> len) };
        let key = (u128::from(a) << 96, len);
        // The /8 holds between 35 and 50 routes once filled.
        if model.len() < 35 || (model.len() < 50 && next().is_multiple_of(2)) {
            let nh = (next() % 50) as u32;
            t.insert_v4(a, len, nh).expect("route");
            model.retain(|(p, l, _)| (*p, *l) != key);
            model.push((key.0, len, nh));
        } else {
            let i = (next() % model.len() as u64) as usize;
            let (p, l, _) = model.swap_remove(i);
            t.remove_v4((p >> 96) as u32, l).expect("remove");
        }
        if step % 10 != 0 {
            continue;
        }
        // More keys than the batch lookup keeps in flight (its ring of
        // 256), so its steady state and wrap-around are checked too.
        let mut keys: Vec<u32> = (0..300)
            .map(|_| 0x0a00_0000 | (next() as u32 & 0x00ff_ffff))
            .collect();
        for (p, l, _) in &model {
            let a = (*p >> 96) as u32;
            keys.extend([a, a | (u32::MAX >> l), a.wrapping_sub(1)]);
        }
        let mut out = vec![0u32; keys.len()];
        {
            let g = r.guard();
            t.shared().lookup_v4_batch(&g, &keys, &mut out);
        }
        for (k, o) in keys.iter().zip(&out) {
            let want = model_lookup(&model, u128::from(*k) << 96, 128);
            assert_eq!(t.lookup_v4(*k), want, "step {step} key {k:#x}");
            assert_eq!(*o, want, "step {step} batch key {k:#x}");
        }
        r.quiescent();
    }
    // It stayed sparse, and long enough for directories.
    let st = t.stats();
    assert_eq!((st.segments, st.sparse_segments), (0, 1), "{st:?}");
    assert!(model.len() > 30, "{}", model.len());
    drop(r);
    drop(t);
    d.synchronize();
}

/// Changes held in runs (as the forwarding-table thread applies a batch:
/// [`Lpm::hold_retired`] … [`Lpm::flush_retired`]) change each sparse
/// /8's runs in an unpublished draft, built into a segment and published
/// once at the end.
/// After every run the table agrees with the model, through /8s that turn
/// dense, go away and come back inside a run, while a reader looks up
/// throughout.
#[test]
fn runs_of_held_changes_publish_what_the_model_holds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let d = Domain::new();
    let mut t = Lpm::new_v4(&d);
    let shared = t.shared().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (d, shared, stop) = (d.clone(), shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut r = d.register();
            let mut k = 1u32;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                {
                    let g = r.guard();
                    for _ in 0..256 {
                        k = k.wrapping_mul(2_654_435_761).wrapping_add(12_345);
                        let ip = 0x0a00_0000 | (k & 0x03ff_ffff);
                        let v = shared.lookup_v4(&g, ip);
                        assert!(v == NO_ROUTE || v < 64, "torn answer {v}");
                        n += 1;
                    }
                }
                r.quiescent();
            }
            n
        })
    };
    let mut model: Vec<(u128, u8, u32)> = Vec::new();
    let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
    let lens = [8u8, 12, 16, 18, 20, 22, 24, 24, 24, 24, 26, 32];
    for run in 0..300 {
        t.hold_retired();
        // Mostly short runs; now and then one that fills a /8 past the
        // sparse limit, or empties one.
        let (n, fill) = match run % 50 {
            20 => (300, true),
            _ => ((next() % 40) as usize + 1, false),
        };
        for _ in 0..n {
            let len = if fill {
                24
            } else {
                lens[(next() % lens.len() as u64) as usize]
            };
            // Four /8s: 10 to 13 (fills go to 11).
            let top = if fill { 11 } else { 10 + (next() % 4) as u32 };
            let a = (top << 24) | (next() as u32 & 0x00ff_ffff);
            let a = if len == 32 { a } else { a & !(u32::MAX >> len) };
            let key = (u128::from(a) << 96, len);
            let grow = model.len() < 60 || fill || next().is_multiple_of(3);
            if grow {
                let nh = (next() % 64) as u32;
                t.insert_v4(a, len, nh).expect("route");
                model.retain(|(p, l, _)| (*p, *l) != key);
                model.push((key.0, len, nh));
            } else if !model.is_empty() {
                let i = (next() % model.len() as u64) as usize;
                let (p, l, _) = model.swap_remove(i);
                t.remove_v4((p >> 96) as u32, l).expect("remove");
            }
        }
        if run % 50 == 40 {
            // Empty /8 11 inside a run (its segment goes; a draft with it).
            for (p, l, _) in model.iter().filter(|(p, _, _)| (p >> 120) == 11) {
                t.remove_v4((*p >> 96) as u32, *l).expect("remove");
            }
            model.retain(|(p, _, _)| (p >> 120) != 11);
        }
        t.flush_retired();
        let mut keys: Vec<u32> = (0..200)
            .map(|_| 0x0a00_0000 | (next() as u32 & 0x03ff_ffff))
            .collect();
        for (p, l, _) in &model {
            let a = (*p >> 96) as u32;
            keys.extend([
                a,
                a | u32::MAX.checked_shr(u32::from(*l)).unwrap_or(0),
                a.wrapping_sub(1),
            ]);
        }
        for k in keys {
            let want = model_lookup(&model, u128::from(k) << 96, 128);
            assert_eq!(t.lookup_v4(k), want, "run {run} key {k:#x}");
        }
        d.collect();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("reader") > 0);
    drop(t);
    d.synchronize();
}
