//! parse ∘ emit = identity for every wire view's `Repr`.

use dataplane::wire::mpls::{Entry, Label};
use dataplane::wire::{arp, ethernet, gre, ipv4, ipv6, udp, MacAddr};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

proptest! {
    #[test]
    fn ethernet_repr_round_trips(dst in mac(), src in mac(), vlan in prop::option::of(1u16..4095), et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x8847, 0x0806])) {
        let r = ethernet::Repr { dst, src, vlan, ethertype: et };
        let mut b = vec![0xa5; r.header_len()];
        r.emit(&mut b);
        let f = ethernet::Frame::new_checked(&b[..]).expect("emitted header is complete");
        prop_assert_eq!(ethernet::Repr::parse(&f).expect("valid"), r);
    }

    #[test]
    fn ipv4_repr_round_trips(src in any::<u32>(), dst in any::<u32>(), protocol in any::<u8>(), payload_len in 0u16..1400, ttl in any::<u8>(), dscp_ecn in any::<u8>(), ident in any::<u16>(), dont_frag in any::<bool>()) {
        let r = ipv4::Repr { src: Ipv4Addr::from(src), dst: Ipv4Addr::from(dst), protocol, payload_len, ttl, dscp_ecn, ident, dont_frag };
        let mut b = vec![0xa5; 20 + usize::from(payload_len)];
        r.emit(&mut b);
        let p = ipv4::Packet::new_checked(&b[..]).expect("valid");
        prop_assert_eq!(ipv4::Repr::parse(&p).expect("checksum verifies"), r);
    }

    #[test]
    fn ipv6_repr_round_trips(src in any::<u128>(), dst in any::<u128>(), next_header in any::<u8>(), payload_len in 0u16..1400, hop_limit in any::<u8>(), traffic_class in any::<u8>(), flow_label in 0u32..(1 << 20)) {
        let r = ipv6::Repr { src: Ipv6Addr::from(src), dst: Ipv6Addr::from(dst), next_header, payload_len, hop_limit, traffic_class, flow_label };
        let mut b = vec![0xa5; 40 + usize::from(payload_len)];
        r.emit(&mut b);
        prop_assert_eq!(ipv6::Repr::parse(&ipv6::Packet::new_checked(&b[..]).expect("valid")), r);
    }

    #[test]
    fn udp_gre_mpls_and_arp_round_trip(sp in any::<u16>(), dp in any::<u16>(), len in 0u16..512, key in prop::option::of(any::<u32>()), proto in any::<u16>(), label in 0u32..(1 << 20), tc in 0u8..8, bos in any::<bool>(), ttl in any::<u8>(), a in mac(), b in mac(), ip1 in any::<u32>(), ip2 in any::<u32>(), reply in any::<bool>()) {
        let u = udp::Repr { src_port: sp, dst_port: dp, payload_len: len };
        let mut buf = vec![0xa5; 8 + usize::from(len)];
        u.emit(&mut buf);
        prop_assert_eq!(udp::Repr::parse(&udp::Packet::new_checked(&buf[..]).expect("valid")), u);

        let g = gre::Repr { protocol: proto, key };
        let mut buf = vec![0xa5; g.header_len()];
        g.emit(&mut buf);
        prop_assert_eq!(gre::Repr::parse(&gre::Packet::new_checked(&buf[..]).expect("valid")), g);

        let e = Entry { label: Label::new(label).expect("20 bits"), tc, bos, ttl };
        let mut buf = [0xa5u8; 4];
        e.emit(&mut buf);
        prop_assert_eq!(Entry::parse(&buf).expect("4 bytes"), e);

        let r = arp::Repr {
            operation: if reply { arp::Operation::Reply } else { arp::Operation::Request },
            sender_mac: a, sender_ip: Ipv4Addr::from(ip1), target_mac: b, target_ip: Ipv4Addr::from(ip2),
        };
        let mut buf = [0xa5u8; arp::PACKET_LEN];
        r.emit(&mut buf);
        prop_assert_eq!(arp::Repr::parse(&buf).expect("valid"), r);
    }
}
