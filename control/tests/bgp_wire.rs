//! The BGP codec: golden messages decoded and re-encoded byte for byte,
//! RFC 7606 error handling case by case, and encode∘decode identity.

use control::bgp::wire::attr::{code, PathAttr};
use control::bgp::wire::nlri::Nlri;
use control::bgp::wire::*;
use dataplane::wire::mpls::Label;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn hex(s: &str) -> Vec<u8> {
    let d: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    d.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

fn four() -> Context {
    Context {
        four_octet_as: true,
        ..Context::default()
    }
}

// scapy 2.8.0 (contrib.bgp): BGPHeader(type=1)/BGPOpen(my_as=65001, hold_time=90,
// bgp_id="192.0.2.1", opt_params=[MP ipv4/128, route refresh, 4-octet AS 65001]),
// each capability in its own optional parameter.
const OPEN: &str = "ffffffffffffffffffffffffffffffff00310104fde9005ac000020114020601040001008002020200020641040000fde9";
// scapy 2.8.0: BGPUpdate with ORIGIN IGP, AS_PATH (4-octet) 65001 65002,
// NEXT_HOP 192.0.2.1, MED 10, LOCAL_PREF 200, COMMUNITIES 65000:100, NLRI
// 10.1.0.0/16 and 10.2.3.0/24.
const UPDATE: &str = "ffffffffffffffffffffffffffffffff004b020000002d4001010040020a02020000fde90000fdea400304c00002018004040000000a400504000000c8c00804fde80064100a01180a0203";

#[test]
fn a_golden_open_decodes_and_re_encodes_identically() {
    let b = hex(OPEN);
    let Message::Open(o) = decode(&b, &Context::default()).expect("valid") else {
        panic!("not an OPEN")
    };
    assert_eq!(
        (o.my_as, o.hold_time, o.bgp_id),
        (65001, 90, Ipv4Addr::new(192, 0, 2, 1))
    );
    let caps: Vec<&Capability> = o.capabilities().collect();
    assert_eq!(
        caps,
        vec![
            &Capability::Multiprotocol(Afi::IPV4, Safi::MPLS_VPN),
            &Capability::RouteRefresh,
            &Capability::FourOctetAs(65001)
        ]
    );
    assert_eq!(o.asn(), 65001);
    assert_eq!(
        encode(&Message::Open(o), &Context::default()).expect("fits"),
        b
    );
}

#[test]
fn a_golden_update_decodes_and_re_encodes_identically() {
    let b = hex(UPDATE);
    let Message::Update(u) = decode(&b, &four()).expect("valid") else {
        panic!("not an UPDATE")
    };
    assert!(!u.treat_as_withdraw);
    assert_eq!(u.attr(code::ORIGIN), Some(&Attr::Origin(Origin::Igp)));
    assert_eq!(
        u.attr(code::AS_PATH),
        Some(&Attr::AsPath(vec![AsPathSegment::Sequence(vec![
            65001, 65002
        ])]))
    );
    assert_eq!(u.attr(code::MED), Some(&Attr::Med(10)));
    assert_eq!(u.attr(code::LOCAL_PREF), Some(&Attr::LocalPref(200)));
    assert_eq!(
        u.attr(code::COMMUNITIES),
        Some(&Attr::Communities(vec![0xfde8_0064]))
    );
    assert_eq!(u.nlri.len(), 2);
    assert_eq!(encode(&Message::Update(u), &four()).expect("fits"), b);
}

fn vpn_update() -> Update {
    let nlri = vec![Nlri::Vpn(VpnPrefix {
        path_id: None,
        label: Label::new(16000).expect("label"),
        rd: RouteDistinguisher::as2(65000, 100),
        prefix: Prefix::new("10.1.2.0".parse().expect("ip"), 24).expect("prefix"),
    })];
    let mut nh = vec![0u8; 8];
    nh.extend_from_slice(&[192, 0, 2, 1]);
    Update::with_attrs(vec![
        Attr::MpReach {
            afi: Afi::IPV4,
            safi: Safi::MPLS_VPN,
            nexthop: nh,
            nlri,
        },
        Attr::Origin(Origin::Igp),
        Attr::AsPath(vec![]),
        Attr::LocalPref(100),
        // Route target 65000:100 (RFC 4360 §4: type 0x00, subtype 0x02).
        Attr::ExtCommunities(vec![[0x00, 0x02, 0xfd, 0xe8, 0, 0, 0, 100]]),
    ])
}

#[test]
fn a_vpnv4_route_with_a_route_target_round_trips() {
    let u = vpn_update();
    let b = encode(&Message::Update(u.clone()), &four()).expect("fits");
    // The MP_REACH attribute as RFC 4760 §3 and RFC 4364 §4.3.4 lay it out.
    let mp =
        hex("800e 20 0001 80 0c 0000000000000000 c0000201 00 70 03e801 0000fde800000064 0a0102");
    assert!(
        b.windows(mp.len()).any(|w| w == mp.as_slice()),
        "MP_REACH bytes in {b:02x?}"
    );
    assert_eq!(decode(&b, &four()), Ok(Message::Update(u)));
}

fn update_with_attrs(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    m
}

const BASE: &str = "400101 00 400200 400304c0000201";

fn upd(extra: &str) -> Update {
    let attrs = hex(&format!("{BASE}{extra}"));
    match decode(&update_with_attrs(&attrs, &[24, 10, 1, 2]), &four()) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

fn reset(attrs: &str, nlri: &[u8]) -> Notification {
    decode(&update_with_attrs(&hex(attrs), nlri), &four()).expect_err("session reset")
}

#[test]
fn rfc7606_actions_are_applied_per_attribute() {
    // A well-formed base is accepted.
    let ok = upd("");
    assert!(!ok.treat_as_withdraw && ok.discarded.is_empty());
    // ORIGIN out of range → treat-as-withdraw (§7.1).
    assert!(upd_raw("400101 07 400200 400304c0000201").treat_as_withdraw);
    // MED of 3 bytes → treat-as-withdraw (§7.4).
    assert!(upd("800403000001").treat_as_withdraw);
    // LOCAL_PREF with optional flags → treat-as-withdraw (§3.c, §7.5).
    assert!(upd("80050400000064").treat_as_withdraw);
    // ATOMIC_AGGREGATE with a value → attribute discard (§7.6).
    let u = upd("40060101");
    assert!(!u.treat_as_withdraw);
    assert_eq!(u.discarded, vec![code::ATOMIC_AGGREGATE]);
    // AGGREGATOR of the wrong length → attribute discard (§7.7).
    assert_eq!(upd("c0070300fde8").discarded, vec![code::AGGREGATOR]);
    // A second LOCAL_PREF is discarded (§3.g).
    let u = upd("4005040000006440050400000065");
    assert_eq!(u.attr(code::LOCAL_PREF), Some(&Attr::LocalPref(100)));
    assert_eq!(u.discarded, vec![code::LOCAL_PREF]);
    // COMMUNITIES not a multiple of 4 → treat-as-withdraw (§7.8).
    assert!(upd("c00803000001").treat_as_withdraw);
    // EXTENDED_COMMUNITIES not a multiple of 8 → treat-as-withdraw (§7.14).
    assert!(upd("c0100400020000").treat_as_withdraw);
    // An attribute overrunning the attribute list → treat-as-withdraw (§4).
    assert!(upd("c0080800000064").treat_as_withdraw);
    // A missing NEXT_HOP with IPv4 NLRI → treat-as-withdraw (§3.d).
    assert!(upd_raw("400101 00 400200").treat_as_withdraw);
    // Unknown optional attributes are kept.
    let u = upd("c0630201ff");
    assert_eq!(
        u.attr(0x63),
        Some(&Attr::Unknown {
            code: 0x63,
            data: vec![1, 0xff]
        })
    );
}

fn upd_raw(attrs: &str) -> Update {
    match decode(&update_with_attrs(&hex(attrs), &[24, 10, 1, 2]), &four()) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

#[test]
fn errors_that_hide_the_nlri_reset_the_session() {
    // NLRI overrunning the message → 3/10 (§5.3).
    let n = reset(BASE, &[24, 10, 1]);
    assert_eq!((n.code, n.subcode), (3, 10));
    // Duplicate MP_UNREACH → 3/1 (§3.g).
    let n = reset(&format!("{BASE}800f03000180800f03000180"), &[]);
    assert_eq!((n.code, n.subcode), (3, 1));
    // MP_REACH whose NLRI is malformed → reset (§7.11).
    let n = reset(&format!("{BASE}800e0a000180 04 c0000201 00 ff"), &[]);
    assert_eq!(n.code, 3);
    // Unrecognised well-known attribute → 3/2 (RFC 4271 §6.3).
    let n = reset(&format!("{BASE}406301ff"), &[24, 10, 1, 2]);
    assert_eq!(
        (n.code, n.subcode, n.data.clone()),
        (3, 2, vec![0x40, 0x63])
    );
    // Withdrawn routes overrunning the message → 3/1.
    let mut m = update_with_attrs(&hex(BASE), &[]);
    m[19] = 0xff;
    assert_eq!(decode(&m, &four()).expect_err("reset").subcode, 1);
}

#[test]
fn header_and_open_errors_carry_their_codes() {
    let mut k = vec![0xff; 16];
    k.extend_from_slice(&[0, 19, 4]);
    assert_eq!(decode(&k, &four()), Ok(Message::Keepalive));
    let mut bad = k.clone();
    bad[3] = 0;
    assert_eq!(
        decode(&bad, &four()).expect_err("marker").subcode,
        err::HDR_NOT_SYNC
    );
    let mut bad = k.clone();
    bad[18] = 9;
    assert_eq!(
        decode(&bad, &four()).expect_err("type").subcode,
        err::HDR_BAD_TYPE
    );
    let mut bad = k.clone();
    bad[17] = 18;
    assert_eq!(
        decode(&bad, &four()).expect_err("length").subcode,
        err::HDR_BAD_LENGTH
    );
    let mut long = k.clone();
    long[17] = 20;
    long.push(0);
    assert_eq!(
        decode(&long, &four()).expect_err("keepalive body").subcode,
        err::HDR_BAD_LENGTH
    );
    let o = hex(OPEN);
    let mut v3 = o.clone();
    v3[19] = 3;
    let n = decode(&v3, &four()).expect_err("version");
    assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
    let mut hold = o.clone();
    hold[22..24].copy_from_slice(&[0, 2]);
    assert_eq!(
        decode(&hold, &four()).expect_err("hold").subcode,
        err::OPEN_HOLD_TIME
    );
    let mut id = o.clone();
    id[24..28].fill(0);
    assert_eq!(
        decode(&id, &four()).expect_err("id").subcode,
        err::OPEN_BAD_ID
    );
}

#[test]
fn route_refresh_and_notification_round_trip() {
    for m in [
        Message::RouteRefresh {
            afi: Afi::IPV4,
            safi: Safi::MPLS_VPN,
            subtype: 0,
        },
        Message::Notification {
            code: 6,
            subcode: 2,
            data: vec![],
        },
    ] {
        let b = encode(&m, &four()).expect("fits");
        assert_eq!(decode(&b, &four()), Ok(m));
    }
}

fn vpn_nlri() -> impl Strategy<Value = Nlri> {
    (
        any::<u32>(),
        16u32..(1 << 20),
        any::<u16>(),
        any::<u32>(),
        0u8..=32,
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(a, l, asn, n, len, id)| {
            Nlri::Vpn(VpnPrefix {
                path_id: id,
                label: Label::new(l).expect("20 bits"),
                rd: RouteDistinguisher::as2(asn, n),
                prefix: Prefix::new(Ipv4Addr::from(a).into(), len).expect("prefix"),
            })
        })
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity_for_vpn_updates(
        nlri in prop::collection::vec(vpn_nlri().prop_map(|n| match n { Nlri::Vpn(mut v) => { v.path_id = None; Nlri::Vpn(v) } other => other }), 1..20),
        lp in any::<u32>(), med in any::<u32>(), asns in prop::collection::vec(any::<u32>(), 0..10),
        rts in prop::collection::vec(any::<[u8; 8]>(), 1..5),
    ) {
        let mut nh = vec![0u8; 8];
        nh.extend_from_slice(&[192, 0, 2, 1]);
        let u = Update::with_attrs(vec![
            Attr::Origin(Origin::Incomplete),
            Attr::AsPath(if asns.is_empty() { vec![] } else { vec![AsPathSegment::Sequence(asns)] }),
            Attr::Med(med),
            Attr::LocalPref(lp),
            Attr::ExtCommunities(rts),
            Attr::MpReach { afi: Afi::IPV4, safi: Safi::MPLS_VPN, nexthop: nh, nlri },
        ]);
        let b = encode(&Message::Update(u.clone()), &four()).expect("fits");
        let Ok(Message::Update(mut d)) = decode(&b, &four()) else { panic!("decodes") };
        // Re-encoding the decoded message gives the same bytes...
        prop_assert_eq!(encode(&Message::Update(d.clone()), &four()).expect("fits"), b);
        // ...and the same values (the encoder may have set Extended Length).
        for pa in d.attrs.iter_mut() {
            pa.flags &= !control::bgp::wire::attr::flag::EXT_LEN;
        }
        prop_assert_eq!(d, u);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(body in prop::collection::vec(any::<u8>(), 0..300), ty in 1u8..6) {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        m.push(ty);
        m.extend_from_slice(&body);
        let _ = decode(&m, &four());
        let _ = decode(&m, &Context::default());
    }
}

#[test]
fn path_attrs_keep_their_wire_flags() {
    // MED sent with Extended Length although short: re-encoded the same way.
    let u = upd("901000040000000a".replace("9010", "9004").as_str());
    let pa: &PathAttr = u
        .attrs
        .iter()
        .find(|a| a.attr.code() == code::MED)
        .expect("MED");
    assert_eq!(pa.flags, 0x90);
    let b = encode(&Message::Update(u.clone()), &four()).expect("fits");
    assert!(b.windows(6).any(|w| w == [0x90, 4, 0, 4, 0, 0]));
}

/// The messages GoBGP 3.10, BIRD 2.0.12 and FRR 8.4 sent in live sessions
/// (`control/testdata/peers/`, captured by `bgp_peer_golden.rs`) decode and
/// re-encode byte for byte, without the speakers installed.
#[test]
fn captures_from_real_speakers_reencode_byte_identically() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/peers");
    let mut files = 0;
    let mut messages = 0;
    for e in std::fs::read_dir(&dir).expect("testdata/peers") {
        let path = e.expect("entry").path();
        if path.extension().and_then(|x| x.to_str()) != Some("hex") {
            continue;
        }
        files += 1;
        for line in std::fs::read_to_string(&path).expect("read").lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (h, four) = line.split_once(' ').expect("hex and context");
            let raw: Vec<u8> = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
                .collect();
            let ctx = control::bgp::wire::Context {
                four_octet_as: four == "4",
                ..Default::default()
            };
            let m = control::bgp::wire::decode(&raw, &ctx)
                .unwrap_or_else(|n| panic!("{}: {h}: {}", path.display(), n.reason));
            let again = control::bgp::wire::encode(&m, &ctx).expect("encode");
            assert_eq!(again, raw, "{}: {m:?}", path.display());
            messages += 1;
        }
    }
    assert_eq!(files, 3, "gobgpd, BIRD and FRR captures");
    assert!(messages >= 12, "{messages} messages");
}
