//! vpnfwd peering with ExaBGP (Debian's exabgp 4.2): ExaBGP announces a
//! VPNv4 route that vpnfwd imports, and ExaBGP's JSON decoding of what
//! vpnfwd sends serves as an oracle for our encoder (RD, label, next hop,
//! route target). Once it holds our route, ExaBGP sends a ROUTE-REFRESH
//! (RFC 2918) and gets our routes and End-of-RIB again.

use std::time::Duration;
use vpnfwd_tests::Lab;

mod common;

use common::tmp;

#[test]
fn exabgp_decodes_our_vpnv4_routes_and_we_import_its_own() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: ex,
        ..
    } = common::pe_and_peer("ex", false);
    let json = tmp("exabgp.json");
    // ExaBGP's API process: append every JSON line it is given to a file
    // (ExaBGP depends on python3, so it is there).
    let dump = tmp("exabgp-dump.py");
    std::fs::write(&dump, "import sys\nwith open(sys.argv[1], 'a') as f:\n    for line in sys.stdin:\n        f.write(line)\n        f.flush()\n").expect("dump script");
    // A second API process asks for a route refresh once our route is in.
    let refresher = tmp("exabgp-refresh.py");
    std::fs::write(
        &refresher,
        "import sys, time\nwhile True:\n    time.sleep(0.3)\n    try:\n        if '10.1.1.1/32' in open(sys.argv[1]).read():\n            break\n    except OSError:\n        pass\ntime.sleep(0.5)\nsys.stdout.write('announce route-refresh ipv4 mpls-vpn\\n')\nsys.stdout.flush()\nwhile True:\n    time.sleep(60)\n",
    )
    .expect("refresh script");
    for f in [&json, &dump, &refresher] {
        lab.track(f);
    }
    let conf = tmp("exabgp.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
process dump {{
    run /usr/bin/python3 {dump} {json};
    encoder json;
}}
process refresh {{
    run /usr/bin/python3 {refresher} {json};
    encoder text;
}}
neighbor 192.0.2.1 {{
    router-id 192.0.2.9;
    local-address 192.0.2.9;
    local-as 65001;
    peer-as 65001;
    family {{
        ipv4 mpls-vpn;
    }}
    capability {{
        route-refresh;
    }}
    api {{
        processes [ dump ];
        receive {{
            parsed;
            update;
        }}
    }}
    api {{
        processes [ refresh ];
    }}
    static {{
        route 10.9.0.0/24 rd 65001:9 label 3000 next-hop 192.0.2.9 extended-community [ target:65001:100 ];
    }}
}}
"#,
            dump = dump.display(),
            refresher = refresher.display(),
            json = json.display()
        ),
    )
    .expect("exabgp config");
    let ex_log = tmp("exabgp.log");
    let env_user = "exabgp.daemon.user=root";
    lab.spawn(
        &ex,
        &[
            "env",
            env_user,
            "exabgp.log.destination=stdout",
            "exabgp",
            conf.to_str().expect("utf-8"),
        ],
        &ex_log,
    )
    .expect("exabgp");
    let log = common::start_pe(&mut lab, &pe, "exa-pe", false);
    let text = || {
        format!(
            "vpnfwd:\n{}\nexabgp:\n{}\njson:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(&ex_log).unwrap_or_default(),
            std::fs::read_to_string(&json).unwrap_or_default()
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(40), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("announced=1")),
        "vpnfwd did not learn ExaBGP's route\n{}",
        text()
    );
    assert!(
        Lab::wait_until(Duration::from_secs(20), || std::fs::read_to_string(&json)
            .unwrap_or_default()
            .contains("10.1.1.1/32")),
        "ExaBGP did not decode our route\n{}",
        text()
    );
    let j = std::fs::read_to_string(&json).unwrap_or_default();
    let line = j
        .lines()
        .find(|l| l.contains("10.1.1.1/32"))
        .unwrap_or_default();
    for want in [
        "\"rd\": \"65001:1\"",
        "\"label\": [ [100] ]",
        "\"192.0.2.1\": [",
        "target:65001:100",
        "\"nlri\": \"10.1.1.1/32\"",
    ] {
        assert!(
            line.contains(want),
            "ExaBGP's decoding lacks {want}: {line}"
        );
    }
    // The refresh: our route is sent again, followed by End-of-RIB.
    assert!(
        Lab::wait_until(Duration::from_secs(20), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("route refresh requested")),
        "no ROUTE-REFRESH reached vpnfwd\n{}",
        text()
    );
    assert!(
        Lab::wait_until(Duration::from_secs(10), || std::fs::read_to_string(&json)
            .unwrap_or_default()
            .matches("\"nlri\": \"10.1.1.1/32\"")
            .count()
            >= 2),
        "our route was not sent again after the refresh\n{}",
        text()
    );
}

/// VPNv6 (6VPE) with ExaBGP: its JSON decoding of our IPv6 route (RD,
/// label, IPv4-mapped next hop, route target), and its VPNv6 route
/// imported by us with its RD, label and PE.
#[test]
fn exabgp_decodes_our_vpnv6_route_and_we_import_its_own() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let common::PeLab {
        mut lab,
        pe,
        peer: ex,
        ..
    } = common::pe_and_peer("ex6", false);
    let json = tmp("exabgp6.json");
    let dump = tmp("exabgp6-dump.py");
    std::fs::write(&dump, "import sys\nwith open(sys.argv[1], 'a') as f:\n    for line in sys.stdin:\n        f.write(line)\n        f.flush()\n").expect("dump script");
    lab.track(&json);
    lab.track(&dump);
    let conf = tmp("exabgp6.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
process dump {{
    run /usr/bin/python3 {dump} {json};
    encoder json;
}}
neighbor 192.0.2.1 {{
    router-id 192.0.2.9;
    local-address 192.0.2.9;
    local-as 65001;
    peer-as 65001;
    family {{
        ipv6 mpls-vpn;
    }}
    api {{
        processes [ dump ];
        receive {{
            parsed;
            update;
        }}
    }}
    static {{
        route 2001:db8:9::/64 rd 65001:9 label 3100 next-hop ::ffff:192.0.2.9 extended-community [ target:65001:100 ];
    }}
}}
"#,
            dump = dump.display(),
            json = json.display()
        ),
    )
    .expect("exabgp config");
    let ex_log = tmp("exabgp6.log");
    lab.spawn(
        &ex,
        &[
            "env",
            "exabgp.daemon.user=root",
            "exabgp.log.destination=stdout",
            "exabgp",
            conf.to_str().expect("utf-8"),
        ],
        &ex_log,
    )
    .expect("exabgp");
    let log = common::start_pe_with(&mut lab, &pe, "exa6-pe", &common::pe_config_v6(false));
    let text = || {
        format!(
            "vpnfwd:\n{}\nexabgp:\n{}\njson:\n{}",
            common::read(&log),
            common::read(&ex_log),
            common::read(&json)
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(40), || common::read(&json)
            .contains("2001:db8:1::1/128")),
        "ExaBGP did not decode our VPNv6 route\n{}",
        text()
    );
    let j = common::read(&json);
    let line = j
        .lines()
        .find(|l| l.contains("2001:db8:1::1/128"))
        .unwrap_or_default();
    for want in [
        "\"ipv6 mpls-vpn\"",
        "\"rd\": \"65001:1\"",
        "\"label\": [ [100] ]",
        "::ffff:192.0.2.1",
        "target:65001:100",
    ] {
        assert!(
            line.contains(want),
            "ExaBGP's decoding lacks {want}: {line}"
        );
    }
    let routes = || {
        lab.exec(
            &pe,
            &[
                common::VPNFWD,
                "route",
                "list",
                "--family",
                "vpnv6",
                "--json",
            ],
        )
        .ok()
        .and_then(|o| serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).ok())
        .unwrap_or_default()
    };
    assert!(
        Lab::wait_until(Duration::from_secs(20), || routes()
            .iter()
            .any(|r| r["prefix"] == "2001:db8:9::/64")),
        "we did not import ExaBGP's VPNv6 route: {:?}\n{}",
        routes(),
        text()
    );
    let r = routes()
        .into_iter()
        .find(|r| r["prefix"] == "2001:db8:9::/64")
        .expect("route");
    assert_eq!(r["rd"], "65001:9", "{r}");
    assert_eq!(r["label"], 3100, "{r}");
    assert_eq!(r["nexthop"], "192.0.2.9", "{r}");
    assert_eq!(r["vrfs"], serde_json::json!([1]), "{r}");
}
