//! Any frame on any port of a small topology: the pipeline must not panic,
//! and every packet must end with a verdict that is counted.
#![no_main]

use dataplane::fib::*;
use dataplane::io::PacketBuf;
use dataplane::pipeline::{OutBatches, Pipeline, RateLimit, Reason, Verdict};
use dataplane::wire::mpls::Label;
use dataplane::wire::MacAddr;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let mut fib = Fib::new();
    let vrf = VrfId(1);
    fib.add_vrf(vrf).expect("vrf");
    let mac = MacAddr([2, 0, 0, 0, 0, 0xfe]);
    fib.set_port(
        PortId(0),
        0,
        Some(PortRole::Access(AccessPort {
            vrf,
            router_mac: mac,
            host_mac: None,
            allowed_v4: vec![],
            allowed_v6: vec![],
            gateway_v4: Some("10.0.0.254".parse().expect("ip")),
            gateway_v6: None,
        })),
    )
    .expect("port");
    fib.set_port(
        PortId(1),
        0,
        Some(PortRole::Uplink(UplinkPort {
            router_mac: mac,
            local_v4: Some("192.0.2.1".parse().expect("ip")),
        })),
    )
    .expect("uplink");
    let l2 = L2Rewrite {
        dst: MacAddr([2, 0, 0, 0, 0, 1]),
        src: mac,
        vlan: None,
    };
    let nh = NexthopId::new(1).expect("id");
    fib.set_nexthop(
        nh,
        Nexthop::Remote(RemoteNexthop::new(
            PortId(1),
            Label::new(100).expect("label"),
            Encap::Udp {
                src: "192.0.2.1".parse().expect("ip"),
                dst: "192.0.2.2".parse().expect("ip"),
            },
            l2,
        )),
    )
    .expect("nh");
    let local = NexthopId::new(2).expect("id");
    fib.set_nexthop(
        local,
        Nexthop::Local {
            port: PortId(0),
            l2,
        },
    )
    .expect("nh");
    fib.insert_v4(vrf, "0.0.0.0".parse().expect("ip"), 1, nh)
        .expect("route");
    fib.insert_v4(vrf, "128.0.0.0".parse().expect("ip"), 1, local)
        .expect("route");
    fib.insert_v6(vrf, "::".parse().expect("ip"), 0, nh)
        .expect("route");
    fib.set_label(
        Label::new(16).expect("label"),
        Some(LabelAction::VrfLookup(vrf)),
    )
    .expect("label");
    let mut reader = fib.reader();
    let counters = Arc::new(crossbeam_utils_shim::padded());
    let exc = Arc::new(crossbeam_queue_shim::queue());
    let mut pipe = Pipeline::new(counters.clone(), exc, RateLimit::default());
    let mut bufs = [PacketBuf::new()];
    if !bufs[0].fill(&data[1..]) {
        return;
    }
    let mut verdicts = [Verdict::Stop(Reason::Truncated)];
    let mut out = OutBatches::new();
    {
        let view = reader.view();
        pipe.process(
            &view,
            PortId(u16::from(data[0] & 1)),
            &mut bufs,
            &mut verdicts,
            &mut out,
            1,
        );
    }
    reader.quiescent();
    if let Verdict::Stop(r) = verdicts[0] {
        assert!(counters.get(r) >= 1 || r.is_exception());
    }
});

mod crossbeam_utils_shim {
    pub fn padded() -> crossbeam_utils::CachePadded<dataplane::pipeline::Counters> {
        crossbeam_utils::CachePadded::new(dataplane::pipeline::Counters::default())
    }
}

mod crossbeam_queue_shim {
    pub fn queue() -> crossbeam_queue::ArrayQueue<dataplane::pipeline::Exception> {
        crossbeam_queue::ArrayQueue::new(16)
    }
}
