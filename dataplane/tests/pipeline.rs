//! The pipeline on golden frames (dataplane/testdata/golden.py, scapy 2.8.0)
//! and on malformed input.

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use dataplane::fib::*;
use dataplane::io::PacketBuf;
use dataplane::pipeline::{Counters, Exception, OutBatches, Pipeline, RateLimit, Reason, Verdict};
use dataplane::wire::mpls::Label;
use dataplane::wire::MacAddr;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

const ACCESS: PortId = PortId(0);
const UPLINK: PortId = PortId(1);
const ACCESS_VLAN: PortId = PortId(2);

fn mac(s: &str) -> MacAddr {
    s.parse().expect("mac literal")
}

fn golden() -> HashMap<String, Vec<u8>> {
    include_str!("../testdata/golden.txt")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| {
            let bytes = (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[i..i + 2], 16).expect("hex"))
                .collect();
            (k.to_string(), bytes)
        })
        .collect()
}

fn lbl(v: u32) -> Label {
    Label::new(v).expect("20-bit label")
}

fn nh(v: u32) -> NexthopId {
    NexthopId::new(v).expect("nexthop id")
}

/// Access port 0 (untagged) and port 2 (VLAN 100) in VRF 1, uplink port 1.
fn topology() -> Fib {
    let mut fib = Fib::new();
    let vrf = VrfId(1);
    fib.add_vrf(vrf).expect("vrf");
    let access = |host: &str| AccessPort {
        vrf,
        router_mac: mac("02:00:00:00:00:fe"),
        host_mac: Some(mac(host)),
        allowed_v4: vec![],
        allowed_v6: vec![],
        gateway_v4: Some("10.1.0.254".parse().expect("ip")),
        gateway_v6: Some("2001:db8:1::fe".parse().expect("ip")),
    };
    let mut a0 = access("02:00:00:00:00:01");
    a0.allowed_v4 = vec![("10.1.0.0".parse().expect("ip"), 24)];
    a0.allowed_v6 = vec![("2001:db8:1::".parse().expect("ip"), 64)];
    fib.set_port(ACCESS, 0, Some(PortRole::Access(a0)))
        .expect("port");
    fib.set_port(
        ACCESS_VLAN,
        100,
        Some(PortRole::Access(access("02:00:00:00:00:02"))),
    )
    .expect("port");
    fib.set_port(
        UPLINK,
        0,
        Some(PortRole::Uplink(UplinkPort {
            router_mac: mac("02:00:00:00:01:fe"),
            local_v4: Some("192.0.2.1".parse().expect("ip")),
        })),
    )
    .expect("port");
    let l2 = L2Rewrite {
        dst: mac("02:00:00:00:02:fe"),
        src: mac("02:00:00:00:01:fe"),
        vlan: None,
    };
    let (me, peer) = (
        "192.0.2.1".parse().expect("ip"),
        "192.0.2.2".parse().expect("ip"),
    );
    let remote = |label, encap| Nexthop::Remote(RemoteNexthop::new(UPLINK, lbl(label), encap, l2));
    fib.set_nexthop(
        nh(10),
        remote(
            1000,
            Encap::Ethernet {
                transport: Some(lbl(2000)),
            },
        ),
    )
    .expect("nh");
    fib.set_nexthop(nh(11), remote(1001, Encap::Gre { src: me, dst: peer }))
        .expect("nh");
    fib.set_nexthop(nh(12), remote(1002, Encap::Udp { src: me, dst: peer }))
        .expect("nh");
    fib.set_nexthop(
        nh(20),
        Nexthop::Local {
            port: ACCESS_VLAN,
            l2: L2Rewrite {
                dst: mac("02:00:00:00:00:02"),
                src: mac("02:00:00:00:00:fe"),
                vlan: Some(100),
            },
        },
    )
    .expect("nh");
    fib.insert_v4(vrf, "10.2.0.0".parse().expect("ip"), 16, nh(10))
        .expect("route");
    fib.insert_v4(vrf, "10.3.0.0".parse().expect("ip"), 16, nh(11))
        .expect("route");
    fib.insert_v4(vrf, "10.4.0.0".parse().expect("ip"), 16, nh(12))
        .expect("route");
    fib.insert_v4(vrf, "10.1.1.0".parse().expect("ip"), 24, nh(20))
        .expect("route");
    fib.insert_v6(vrf, "2001:db8:2::".parse().expect("ip"), 48, nh(10))
        .expect("route");
    fib.set_label(lbl(500), Some(LabelAction::VrfLookup(vrf)))
        .expect("label");
    fib.set_label(lbl(501), Some(LabelAction::Nexthop(nh(20))))
        .expect("label");
    fib
}

struct Bed {
    fib: Fib,
    reader: FibReader,
    pipe: Pipeline,
    counters: Arc<CachePadded<Counters>>,
    exc: Arc<ArrayQueue<Exception>>,
}

impl Bed {
    fn new() -> Bed {
        let fib = topology();
        let reader = fib.reader();
        let counters = Arc::new(CachePadded::new(Counters::default()));
        let exc = Arc::new(ArrayQueue::new(64));
        let pipe = Pipeline::new(counters.clone(), exc.clone(), RateLimit::default());
        Bed {
            fib,
            reader,
            pipe,
            counters,
            exc,
        }
    }

    fn run(&mut self, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut bufs = [PacketBuf::new()];
        assert!(bufs[0].fill(frame));
        let mut verdicts = [Verdict::Stop(Reason::Truncated)];
        let mut out = OutBatches::new();
        {
            let view = self.reader.view();
            self.pipe
                .process(&view, port, &mut bufs, &mut verdicts, &mut out, 1);
        }
        self.reader.quiescent();
        (verdicts[0], bufs[0].frame().to_vec())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn push_over_each_encapsulation_matches_the_golden_frames() {
    let g = golden();
    let mut bed = Bed::new();
    for enc in ["eth", "gre", "udp", "v6"] {
        let (v, out) = bed.run(ACCESS, &g[&format!("push_in_{enc}")]);
        assert_eq!(v, Verdict::Tx(UPLINK), "{enc}");
        assert_eq!(
            hex(&out),
            hex(&g[&format!("push_out_{enc}")]),
            "push over {enc}"
        );
    }
}

#[test]
fn pop_from_each_encapsulation_matches_the_golden_frame() {
    let g = golden();
    let mut bed = Bed::new();
    for enc in ["eth", "gre", "udp", "direct"] {
        let (v, out) = bed.run(UPLINK, &g[&format!("pop_in_{enc}")]);
        assert_eq!(v, Verdict::Tx(ACCESS_VLAN), "{enc}");
        assert_eq!(hex(&out), hex(&g["pop_out"]), "pop from {enc}");
    }
    assert_eq!(
        bed.counters.tx.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[test]
fn every_truncation_of_every_golden_input_is_counted_as_truncated() {
    let g = golden();
    let mut bed = Bed::new();
    for (name, frame) in g.iter().filter(|(k, _)| k.contains("_in_")) {
        let port = if name.starts_with("pop") {
            UPLINK
        } else {
            ACCESS
        };
        for n in 0..frame.len() {
            let (v, _) = bed.run(port, &frame[..n]);
            assert_eq!(v, Verdict::Stop(Reason::Truncated), "{name} cut at {n}");
        }
    }
    assert!(bed.counters.get(Reason::Truncated) > 500);
}

fn ipv4_checksum(f: &mut [u8], at: usize) {
    let hl = usize::from(f[at] & 0xf) * 4;
    f[at + 10] = 0;
    f[at + 11] = 0;
    let c = dataplane::wire::checksum::checksum(&f[at..at + hl]);
    f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn malformed_headers_are_counted_under_their_reason() {
    let g = golden();
    let mut bed = Bed::new();
    let base = g["push_in_eth"].clone();
    let mut cases: Vec<(&str, Vec<u8>, PortId, Reason)> = Vec::new();
    let mut f = base.clone();
    f[14] = 0x44;
    cases.push(("ihl 4", f, ACCESS, Reason::Ipv4Header));
    let mut f = base.clone();
    f[14] = 0x46;
    f.splice(34..34, [1u8, 1, 1, 1]);
    let tl = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&tl.to_be_bytes());
    ipv4_checksum(&mut f, 14);
    cases.push(("options", f, ACCESS, Reason::Ipv4Options));
    let mut f = base.clone();
    f[24] ^= 0xff;
    cases.push(("checksum", f, ACCESS, Reason::Ipv4Checksum));
    for ttl in [0u8, 1] {
        let mut f = base.clone();
        f[22] = ttl;
        ipv4_checksum(&mut f, 14);
        cases.push(("ttl", f, ACCESS, Reason::TtlExpired));
    }
    let mut f = base.clone();
    f[26..30].copy_from_slice(&[10, 9, 0, 1]);
    ipv4_checksum(&mut f, 14);
    cases.push(("spoofed source", f, ACCESS, Reason::Spoofed));
    let mut f = base.clone();
    f[6] = 0x0e;
    cases.push(("spoofed mac", f, ACCESS, Reason::Spoofed));
    let mut f = base.clone();
    f[30..34].copy_from_slice(&[172, 16, 0, 1]);
    ipv4_checksum(&mut f, 14);
    cases.push(("no route", f, ACCESS, Reason::NoRoute));
    let mut f = base.clone();
    f.splice(12..12, [0x81u8, 0, 0, 100, 0x81, 0, 0, 200]);
    cases.push(("vlan in vlan", f, ACCESS_VLAN, Reason::VlanInVlan));
    let mut f = base.clone();
    f.splice(12..12, [0x81u8, 0, 0, 7]);
    cases.push(("unknown vlan", f, ACCESS, Reason::UnknownPort));
    // MPLS: unknown label, explicit nulls deeper than allowed, label not at bottom.
    let pop = g["pop_in_eth"].clone();
    let mut f = pop.clone();
    f[14..18].copy_from_slice(&((777u32 << 12) | 0x100 | 40).to_be_bytes());
    cases.push(("unknown label", f, UPLINK, Reason::UnknownLabel));
    let mut f = pop.clone();
    for _ in 0..5 {
        f.splice(14..14, 40u32.to_be_bytes());
    }
    cases.push(("deep stack", f, UPLINK, Reason::LabelStack));
    let mut f = pop.clone();
    f[16] &= !1;
    f.splice(18..18, ((600u32 << 12) | 0x100 | 40).to_be_bytes());
    cases.push(("vpn label not at bottom", f, UPLINK, Reason::LabelStack));
    let mut f = pop.clone();
    f[17] = 1;
    cases.push(("mpls ttl 1", f, UPLINK, Reason::TtlExpired));
    let mut f = g["pop_in_gre"].clone();
    f[36..38].copy_from_slice(&[0x08, 0x00]);
    cases.push(("gre carrying ipv4", f, UPLINK, Reason::Gre));
    let mut f = g["pop_in_gre"].clone();
    f[20..22].copy_from_slice(&[0x20, 0x00]);
    ipv4_checksum(&mut f, 14);
    cases.push(("fragmented gre", f, UPLINK, Reason::Fragment));
    let mut f = pop.clone();
    f[0] = 0x04;
    cases.push(("wrong mac", f, UPLINK, Reason::NotForUs));
    let mut f = base.clone();
    f[12..14].copy_from_slice(&[0x88, 0xcc]);
    cases.push(("lldp", f, ACCESS, Reason::UnsupportedEthertype));
    for (name, frame, port, reason) in cases {
        let before = bed.counters.get(reason);
        let (v, _) = bed.run(port, &frame);
        assert_eq!(v, Verdict::Stop(reason), "{name}");
        assert_eq!(bed.counters.get(reason), before + 1, "{name} counted");
    }
    // The TTL, no-route and unknown-label cases reached the exception queue.
    let mut seen = Vec::new();
    while let Some(e) = bed.exc.pop() {
        seen.push(e.reason);
    }
    assert_eq!(seen.iter().filter(|r| **r == Reason::TtlExpired).count(), 3);
    assert!(seen.contains(&Reason::NoRoute));
    assert!(seen.contains(&Reason::UnknownLabel));
}

#[test]
fn arp_and_neighbour_solicitation_for_the_gateway_are_punted() {
    let mut bed = Bed::new();
    // scapy 2.8: Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST1)/ARP(hwsrc=HOST1, psrc="10.1.0.1", pdst="10.1.0.254")
    let mut arp = vec![0xff; 6];
    arp.extend([
        2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 1, 0, 1,
    ]);
    arp.extend([0; 6]);
    arp.extend([10, 1, 0, 254]);
    let (v, _) = bed.run(ACCESS, &arp);
    assert_eq!(v, Verdict::Stop(Reason::ArpGateway));
    let e = bed.exc.pop().expect("queued");
    assert_eq!(
        (e.reason, e.port, e.bytes()),
        (Reason::ArpGateway, ACCESS, &arp[..])
    );
    let mut other = arp.clone();
    other[41] = 7;
    assert_eq!(bed.run(ACCESS, &other).0, Verdict::Stop(Reason::Arp));
    // An ICMPv6 neighbour solicitation (type 135) to the solicited-node group.
    let mut ns = vec![0x33, 0x33, 0xff, 0, 0, 0xfe, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    ns.extend([0x60, 0, 0, 0, 0, 24, 58, 255]);
    ns.extend(
        "2001:db8:1::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    ns.extend(
        "ff02::1:ff00:fe"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    ns.extend([135, 0, 0, 0, 0, 0, 0, 0]);
    ns.extend(
        "2001:db8:1::fe"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    assert_eq!(
        bed.run(ACCESS, &ns).0,
        Verdict::Stop(Reason::NeighborDiscovery)
    );
}

#[test]
fn exceptions_beyond_the_rate_limit_are_dropped_and_counted() {
    let g = golden();
    let mut bed = Bed::new();
    bed.pipe = Pipeline::new(
        bed.counters.clone(),
        bed.exc.clone(),
        RateLimit {
            per_sec: 1,
            burst: 3,
        },
    );
    let mut f = g["push_in_eth"].clone();
    f[22] = 1;
    ipv4_checksum(&mut f, 14);
    for _ in 0..10 {
        assert_eq!(bed.run(ACCESS, &f).0, Verdict::Stop(Reason::TtlExpired));
    }
    assert_eq!(bed.exc.len(), 3);
    assert_eq!(bed.counters.get(Reason::ExceptionRateLimited), 7);
}

#[test]
fn ecmp_spreads_flows_over_members_and_keeps_a_flow_on_one() {
    let g = golden();
    let mut bed = Bed::new();
    bed.fib
        .set_nexthop(
            nh(30),
            Nexthop::Ecmp([nh(10), nh(11)].into_iter().collect()),
        )
        .expect("group");
    bed.fib
        .insert_v4(VrfId(1), "10.2.0.0".parse().expect("ip"), 16, nh(30))
        .expect("route");
    let mut kinds = std::collections::HashSet::new();
    for port in 0..64u16 {
        let mut f = g["push_in_eth"].clone();
        f[34..36].copy_from_slice(&(1000 + port).to_be_bytes());
        let (v1, o1) = bed.run(ACCESS, &f);
        let (_, o2) = bed.run(ACCESS, &f);
        assert_eq!(v1, Verdict::Tx(UPLINK));
        assert_eq!(o1, o2, "same flow, same member");
        kinds.insert(u16::from_be_bytes([o1[12], o1[13]]));
    }
    assert_eq!(kinds.len(), 2, "both MPLS/Ethernet and GRE members used");
}

#[test]
fn a_removed_vrf_or_nexthop_drops_with_its_reason() {
    let g = golden();
    let mut bed = Bed::new();
    bed.fib.remove_nexthop(nh(10));
    // The nexthop goes once the worker has passed a quiescent state (as
    // it does after each burst) and the writer collects.
    bed.reader.quiescent();
    bed.fib.collect();
    assert_eq!(
        bed.run(ACCESS, &g["push_in_eth"]).0,
        Verdict::Stop(Reason::NoNexthop)
    );
    bed.fib.remove_vrf(VrfId(1));
    assert_eq!(
        bed.run(ACCESS, &g["push_in_gre"]).0,
        Verdict::Stop(Reason::NoVrf)
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_are_counted(frame in prop::collection::vec(any::<u8>(), 0..200), port in 0u16..3) {
        let mut bed = Bed::new();
        let (v, _) = bed.run(PortId(port), &frame);
        if let Verdict::Stop(r) = v {
            prop_assert!(bed.counters.get(r) >= 1);
        }
    }

    #[test]
    fn mutated_golden_frames_never_panic(idx in 0usize..9, pos in 0usize..120, byte in any::<u8>()) {
        let g = golden();
        let mut names: Vec<&String> = g.keys().filter(|k| k.contains("_in_")).collect();
        names.sort();
        let name = names[idx % names.len()];
        let mut f = g[name].clone();
        let p = pos % f.len();
        f[p] = byte;
        let mut bed = Bed::new();
        let port = if name.starts_with("pop") { UPLINK } else { ACCESS };
        let _ = bed.run(port, &f);
        prop_assert_eq!(bed.counters.rx.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

/// A port that takes nothing (its transmit ring always full).
struct Refusing;

impl dataplane::worker::PacketIo for Refusing {
    fn rx_burst(&mut self, _bufs: &mut [PacketBuf]) -> usize {
        0
    }
    fn tx_burst(&mut self, _frames: &[&[u8]]) -> usize {
        0
    }
}

#[test]
fn frames_a_port_refuses_are_counted_while_the_worker_runs() {
    use dataplane::io::mem::MemPort;
    use dataplane::worker::{run, Idle, WorkerConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    let g = golden();
    let fib = topology();
    let counters = Arc::new(CachePadded::new(Counters::default()));
    let pipe = Pipeline::new(
        counters.clone(),
        Arc::new(ArrayQueue::new(64)),
        RateLimit::default(),
    );
    let cfg = WorkerConfig {
        core: None,
        ports: vec![
            (
                ACCESS,
                Box::new(MemPort::replaying(vec![g["push_in_eth"].clone()])),
            ),
            (UPLINK, Box::new(Refusing)),
        ],
        idle: Idle::Busy,
        kernel: vec![],
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (reader, stop) = (fib.reader(), stop.clone());
        std::thread::spawn(move || run(cfg, reader, pipe, stop))
    };
    // Read while it runs: the count is live, not only reported at the end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while counters.tx_refused.load(Ordering::Relaxed) < 1000 && std::time::Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let refused = worker.join().expect("worker");
    assert!(refused >= 1000, "{refused} refused");
    assert_eq!(refused, counters.tx_refused.load(Ordering::Relaxed));
    assert_eq!(
        refused,
        counters.tx.load(Ordering::Relaxed),
        "every push refused"
    );
}

impl Bed {
    /// Run `frames` through the pipeline as one burst on `port`.
    fn run_burst(&mut self, port: PortId, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
        let mut bufs: Vec<PacketBuf> = frames
            .iter()
            .map(|f| {
                let mut b = PacketBuf::new();
                assert!(b.fill(f));
                b
            })
            .collect();
        let mut verdicts = vec![Verdict::Stop(Reason::Truncated); frames.len()];
        let mut out = OutBatches::new();
        {
            let view = self.reader.view();
            self.pipe
                .process(&view, port, &mut bufs, &mut verdicts, &mut out, 1);
        }
        self.reader.quiescent();
        verdicts
            .into_iter()
            .zip(&bufs)
            .map(|(v, b)| (v, b.frame().to_vec()))
            .collect()
    }
}

/// `frame` with its first label stack entry of label `from` relabelled `to`.
fn relabel(frame: &[u8], from: u32, to: u32) -> Vec<u8> {
    let mut f = frame.to_vec();
    let at = (14..f.len() - 4)
        .find(|&i| u32::from_be_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]) >> 12 == from)
        .expect("label in frame");
    let e = u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    f[at..at + 4].copy_from_slice(&((to << 12) | (e & 0xfff)).to_be_bytes());
    f
}

#[test]
fn a_burst_of_mixed_labels_and_vlans_is_forwarded_as_packets_alone_are() {
    let g = golden();
    // Uplink: per-VRF and per-attachment labels, each encapsulation and an
    // unknown label, interleaved so that no two neighbours share a label.
    let unknown = relabel(&g["pop_in_eth"], 500, 777);
    let mut uplink = Vec::new();
    for _ in 0..3 {
        for f in [
            &g["pop_in_eth"],
            &g["pop_in_direct"],
            &unknown,
            &g["pop_in_gre"],
        ] {
            uplink.push(f.clone());
        }
        uplink.push(g["pop_in_udp"].clone());
        uplink.push(g["pop_in_direct"].clone());
    }
    // The access port of VLAN 100: tagged frames and untagged ones (no such
    // port on VLAN 0), alternating, then in runs.
    let mut tagged = g["push_in_eth"].clone();
    tagged[6..12].copy_from_slice(&mac("02:00:00:00:00:02").0);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 100]);
    let untagged = g["push_in_eth"].clone();
    let mut access = Vec::new();
    for i in 0..12 {
        access.push(if i % 2 == 0 || i >= 8 {
            tagged.clone()
        } else {
            untagged.clone()
        });
    }
    for (port, frames) in [(UPLINK, uplink), (ACCESS_VLAN, access)] {
        let alone: Vec<_> = frames.iter().map(|f| Bed::new().run(port, f)).collect();
        let burst = Bed::new().run_burst(port, &frames);
        assert_eq!(burst.len(), alone.len());
        for (i, (b, a)) in burst.iter().zip(&alone).enumerate() {
            assert_eq!(b.0, a.0, "packet {i} on {port:?}");
            assert_eq!(hex(&b.1), hex(&a.1), "packet {i} on {port:?}");
        }
        let verdicts: Vec<_> = burst.iter().map(|(v, _)| *v).collect();
        assert!(
            verdicts.contains(&Verdict::Tx(ACCESS_VLAN)) || verdicts.contains(&Verdict::Tx(UPLINK))
        );
        assert!(verdicts.iter().any(|v| matches!(v, Verdict::Stop(_))));
    }
}
