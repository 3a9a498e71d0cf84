//! vpnfwd peering with FRR's bgpd (Debian's frr, standalone with `-Z`): FRR
//! decodes the VPNv4 route vpnfwd exports with its RD, label, next hop and
//! route target.

use std::time::Duration;
use vpnfwd_tests::Lab;

mod common;

const FRR_CONF: &str = "
hostname frr
router bgp 65001
 bgp router-id 192.0.2.9
 no bgp default ipv4-unicast
 neighbor 192.0.2.1 remote-as 65001
 address-family ipv4 vpn
  neighbor 192.0.2.1 activate
 exit-address-family
!
";

#[test]
fn frr_decodes_our_vpnv4_route() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: frr,
        ..
    } = common::pe_and_peer("frr", false);
    let d = common::spawn_frr_bgpd(&mut lab, &frr, "frr", FRR_CONF);
    let log = common::start_pe(&mut lab, &pe, "frr-pe", false);
    let show = || {
        lab.stdout(
            &frr,
            &[
                "vtysh",
                "--vty_socket",
                &d,
                "-c",
                "show bgp ipv4 vpn 10.1.1.1/32",
            ],
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(30), || show()
            .contains("entry for 65001:1:10.1.1.1/32")),
        "FRR lacks our route:\n{}\nvpnfwd:\n{}",
        show(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let s = show();
    for want in [
        "192.0.2.1 from 192.0.2.1",
        "Extended Community: RT:65001:100",
        "Remote label: 100",
        "valid, internal",
    ] {
        assert!(s.contains(want), "FRR's view lacks {want:?}:\n{s}");
    }
}

const FRR_CONF_V6: &str = "
hostname frr
router bgp 65001
 bgp router-id 192.0.2.9
 no bgp default ipv4-unicast
 neighbor 192.0.2.1 remote-as 65001
 address-family ipv6 vpn
  neighbor 192.0.2.1 activate
 exit-address-family
!
";

/// VPNv6 (6VPE): FRR decodes our IPv6 route with its RD, label, route
/// target and IPv4-mapped next hop.
#[test]
fn frr_decodes_our_vpnv6_route() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: frr,
        ..
    } = common::pe_and_peer("frr6", false);
    let d = common::spawn_frr_bgpd(&mut lab, &frr, "frr6", FRR_CONF_V6);
    let log = common::start_pe_with(&mut lab, &pe, "frr6-pe", &common::pe_config_v6(false));
    let show = || {
        lab.stdout(
            &frr,
            &[
                "vtysh",
                "--vty_socket",
                &d,
                "-c",
                "show bgp ipv6 vpn 2001:db8:1::1/128",
            ],
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(30), || show()
            .contains("entry for 65001:1:2001:db8:1::1/128")),
        "FRR lacks our VPNv6 route:\n{}\nvpnfwd:\n{}",
        show(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let s = show();
    // FRR prints the IPv4-mapped next hop in hex: ::ffff:c000:201.
    for want in [
        "::ffff:c000:201 from 192.0.2.1",
        "Extended Community: RT:65001:100",
        "Remote label: 100",
        "valid, internal",
    ] {
        assert!(s.contains(want), "FRR's view lacks {want:?}:\n{s}");
    }
}
