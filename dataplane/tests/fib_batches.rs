//! Batched route changes ([`Fib::begin_batch`] … [`Fib::end_batch`]): a
//! second thread applies them, in order, while the writer goes on; the
//! nexthops released during a batch stay installed until its routes are
//! applied and every reader has passed a quiescent state since, so readers
//! never meet a route whose nexthop is gone.

use dataplane::fib::{Fib, Nexthop, NexthopId, VrfId, NO_ROUTE};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const VRF: VrfId = VrfId(1);

fn nh(i: u32) -> NexthopId {
    NexthopId::new(i).expect("nexthop id")
}

/// The /24 number `i` (10.0.0.0/24 onwards) and a host inside it.
fn net(i: u32) -> (Ipv4Addr, Ipv4Addr) {
    let a = 0x0a00_0000 + (i << 8);
    (Ipv4Addr::from(a), Ipv4Addr::from(a + 7))
}

#[test]
fn a_batch_lands_in_order_and_its_released_nexthops_go_after_it() {
    let mut fib = Fib::new();
    fib.add_vrf(VRF).expect("vrf");
    let (a, b) = (nh(1), nh(2));
    fib.set_nexthop(a, Nexthop::Drop).expect("a");
    fib.set_nexthop(b, Nexthop::Unresolved).expect("b");
    let mut model: HashMap<u32, Option<NexthopId>> = HashMap::new();
    for i in 0..2000 {
        fib.insert_v4(VRF, net(i).0, 24, a).expect("insert");
        model.insert(i, Some(a));
    }
    fib.begin_batch();
    for i in 0..2000 {
        // Every route moves to b; a third are removed and put back, a
        // third removed for good; new ones come and go in the same batch.
        let (p, _) = net(i);
        match i % 3 {
            0 => {
                assert_eq!(fib.insert_v4(VRF, p, 24, b).expect("move"), None);
                model.insert(i, Some(b));
            }
            1 => {
                fib.remove_v4(VRF, p, 24).expect("remove");
                fib.insert_v4(VRF, p, 24, b).expect("again");
                model.insert(i, Some(b));
            }
            _ => {
                fib.remove_v4(VRF, p, 24).expect("remove");
                model.insert(i, None);
            }
        }
        let (q, _) = net(10_000 + i);
        fib.insert_v4(VRF, q, 24, b).expect("new");
        fib.remove_v4(VRF, q, 24).expect("gone");
        model.insert(10_000 + i, None);
    }
    // Refused at once, not queued: an unknown VRF or nexthop, host bits.
    assert!(fib.insert_v4(VrfId(9), net(1).0, 24, b).is_err());
    assert!(fib.insert_v4(VRF, net(1).0, 24, nh(77)).is_err());
    assert!(fib.insert_v4(VRF, net(1).1, 24, b).is_err());
    fib.remove_nexthop(a);
    let mut r = fib.reader();
    {
        let v = r.view();
        assert!(v.nexthop(a.get()).is_some(), "a is released with its batch");
    }
    fib.end_batch();
    {
        let v = r.view();
        assert!(
            v.nexthop(a.get()).is_some(),
            "a stays until the batch is known applied"
        );
    }
    fib.wait_applied();
    fib.collect();
    {
        let v = r.view();
        assert!(
            v.nexthop(a.get()).is_some(),
            "a stays while a reader may still act on a route to it"
        );
    }
    r.quiescent();
    fib.collect();
    {
        let v = r.view();
        assert!(v.nexthop(a.get()).is_none(), "a goes after its batch");
    }
    r.offline();
    for (i, want) in &model {
        assert_eq!(fib.lookup_v4(VRF, net(*i).1), *want, "/24 number {i}");
    }
}

#[test]
fn readers_never_meet_a_route_whose_nexthop_is_gone() {
    const ROUTES: u32 = 3000;
    let mut fib = Fib::new();
    fib.add_vrf(VRF).expect("vrf");
    fib.set_nexthop(nh(1), Nexthop::Drop).expect("nexthop");
    for i in 0..ROUTES {
        fib.insert_v4(VRF, net(i).0, 24, nh(1)).expect("insert");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let mut r = fib.reader();
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut k = t as u32;
                while !stop.load(Ordering::Relaxed) {
                    {
                        let v = r.view();
                        let vrf = v.vrf(VRF).expect("vrf");
                        for _ in 0..64 {
                            k = k.wrapping_mul(2_654_435_761).wrapping_add(1);
                            let host = u32::from(net(k % ROUTES).1);
                            let got = vrf.lookup_v4(host);
                            assert_ne!(got, NO_ROUTE, "a route vanished");
                            assert!(v.nexthop(got).is_some(), "route to removed nexthop {got}");
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    r.quiescent();
                }
                r.offline();
            })
        })
        .collect();
    // Each round moves every route to a fresh nexthop and releases the old
    // one within the same batch.
    for round in 2..60u32 {
        fib.set_nexthop(nh(round), Nexthop::Drop).expect("nexthop");
        fib.begin_batch();
        for i in 0..ROUTES {
            fib.insert_v4(VRF, net(i).0, 24, nh(round)).expect("move");
        }
        fib.remove_nexthop(nh(round - 1));
        fib.end_batch();
        fib.collect();
    }
    fib.wait_applied();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader");
    }
    assert!(seen.load(Ordering::Relaxed) > 0);
    assert_eq!(fib.lookup_v4(VRF, net(5).1), Some(nh(59)));
}

#[test]
fn a_dropped_fib_frees_its_vrfs_tables_and_its_domain() {
    // A VRF's tables were retired into the domain when the FIB went, and
    // they named the domain strongly: neither was ever freed.
    let mut fib = Fib::new();
    let weak = fib.domain().downgrade();
    for v in 1..=3 {
        fib.add_vrf(VrfId(v)).expect("vrf");
    }
    fib.set_nexthop(nh(1), Nexthop::Drop).expect("nexthop");
    fib.begin_batch();
    for i in 0..1000 {
        fib.insert_v4(VrfId(1 + i % 3), net(i).0, 24, nh(1))
            .expect("route");
    }
    fib.end_batch();
    let mut reader = fib.reader();
    assert!(fib.lookup_v4(VrfId(1), net(3).1).is_some());
    reader.quiescent();
    drop(reader);
    fib.remove_vrf(VrfId(2));
    drop(fib);
    assert!(!weak.alive(), "the domain outlived its FIB");
}

/// A batch checks each change against the VRFs and nexthops that exist
/// when it is queued, also right after a change to the same VRF over the
/// same nexthop passed: one that has gone since is refused.
#[test]
fn a_change_to_a_vrf_or_nexthop_that_went_since_the_last_one_is_refused() {
    use dataplane::fib::FibError;
    let mut fib = Fib::new();
    let other = VrfId(2);
    fib.add_vrf(VRF).expect("vrf");
    fib.add_vrf(other).expect("other vrf");
    let (a, b) = (nh(1), nh(2));
    fib.set_nexthop(a, Nexthop::Drop).expect("a");
    fib.set_nexthop(b, Nexthop::Drop).expect("b");
    fib.begin_batch();
    fib.insert_v4(VRF, net(0).0, 24, a).expect("over a");
    fib.end_batch();
    fib.remove_nexthop(a);
    fib.wait_applied();
    fib.collect();
    assert!(fib.reader().view().nexthop(a.get()).is_none(), "a is gone");
    fib.begin_batch();
    assert_eq!(
        fib.insert_v4(VRF, net(1).0, 24, a),
        Err(FibError::NoNexthop(a))
    );
    fib.insert_v4(other, net(2).0, 24, b)
        .expect("into the other vrf");
    fib.end_batch();
    fib.remove_vrf(other);
    fib.begin_batch();
    assert_eq!(
        fib.insert_v4(other, net(3).0, 24, b),
        Err(FibError::NoVrf(other))
    );
    fib.insert_v4(VRF, net(3).0, 24, b).expect("over b");
    fib.end_batch();
    fib.wait_applied();
    assert_eq!(fib.lookup_v4(VRF, net(3).1), Some(b));
    assert_eq!(fib.lookup_v4(VRF, net(1).1), None);
}
