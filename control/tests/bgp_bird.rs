//! vpnfwd peering with BIRD 2 (Debian's bird2): BIRD's static VPNv4 route
//! (exported with `next hop keep`, so its label survives, and a route
//! target added by filter) is imported and forwarded with its label; our
//! route lands in BIRD's vpn4 table with its RD, label and target.
//!
//! ```text
//!  h1 (10.1.1.1) ── p [vpnfwd PE 192.0.2.1] core ══ core [BIRD 192.0.2.9]
//! ```

use std::path::PathBuf;
use std::time::Duration;
use vpnfwd_tests::Lab;

const VPNFWD: &str = env!("CARGO_BIN_EXE_vpnfwd");

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vpnfwd-{}-{name}", std::process::id()))
}

const BIRD_CONF: &str = "
router id 192.0.2.9;
vpn4 table vpntab;
protocol device { }
protocol static st {
  vpn4 { table vpntab; };
  route 65001:9 10.9.0.0/24 via 192.0.2.9 mpls 3000;
}
protocol bgp tovpnfwd {
  local 192.0.2.9 as 65001;
  neighbor 192.0.2.1 as 65001;
  vpn4 mpls {
    table vpntab;
    import all;
    export filter { bgp_ext_community.add((rt, 65001, 100)); accept; };
    next hop keep;
  };
}
";

const PE_CONF: &str = r#"
[dataplane]
idle = "sleep"

[[vrf]]
name = "blue"
label = 100
rd = "65001:1"
import_targets = ["65001:100"]
export_targets = ["65001:100"]

[uplink]
interface = "core"
address = "192.0.2.1"

[[port]]
interface = "p"
vrf = "blue"
mac = "02:00:00:00:01:01"
addresses = ["10.1.1.1/32"]
gateway = "10.1.1.254"

[bgp]
asn = 65001
router_id = "192.0.2.1"

[[bgp.peer]]
address = "192.0.2.9"
asn = 65001
"#;

#[test]
fn vpnv4_routes_flow_both_ways_with_bird() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut lab = Lab::new();
    let pe = lab.ns("pe").expect("ns");
    let bird = lab.ns("bird").expect("ns");
    let h1 = lab.ns("h1").expect("ns");
    lab.exec(&pe, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        .expect("sysctl");
    lab.veth(&pe, "core", &bird, "core").expect("veth");
    lab.veth(&pe, "p", &h1, "eth0").expect("veth");
    lab.exec(&pe, &["ip", "addr", "add", "192.0.2.1/24", "dev", "core"])
        .expect("addr");
    lab.exec(&bird, &["ip", "addr", "add", "192.0.2.9/24", "dev", "core"])
        .expect("addr");
    for cmd in [
        vec!["ip", "link", "set", "eth0", "address", "02:00:00:00:01:01"],
        vec!["ip", "addr", "add", "10.1.1.1/24", "dev", "eth0"],
        vec!["ip", "route", "add", "default", "via", "10.1.1.254"],
    ] {
        lab.exec(&h1, &cmd).expect("host");
    }
    let bconf = tmp("bird.conf");
    std::fs::write(&bconf, BIRD_CONF).expect("bird config");
    let ctl = tmp("bird.ctl");
    let ctl_s = ctl.to_str().expect("utf-8").to_string();
    let blog = tmp("bird.log");
    lab.spawn(
        &bird,
        &[
            "bird",
            "-f",
            "-c",
            bconf.to_str().expect("utf-8"),
            "-s",
            &ctl_s,
        ],
        &blog,
    )
    .expect("bird");
    let cfg = tmp("bird-pe.toml");
    std::fs::write(&cfg, PE_CONF).expect("config");
    let log = tmp("bird-pe.log");
    lab.spawn(
        &pe,
        &[
            "env",
            "VPNFWD_LOG=debug",
            VPNFWD,
            "run",
            "--config",
            cfg.to_str().expect("utf-8"),
        ],
        &log,
    )
    .expect("vpnfwd");
    let birdc = |args: &[&str]| {
        let mut a = vec!["birdc", "-s", ctl_s.as_str()];
        a.extend_from_slice(args);
        lab.exec(&bird, &a)
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    let text = || {
        format!(
            "vpnfwd:\n{}\nbird:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(&blog).unwrap_or_default()
        )
    };
    assert!(
        Lab::wait_until(Duration::from_secs(40), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("announced=1")),
        "vpnfwd did not learn BIRD's route\n{}\n{}",
        text(),
        birdc(&["show", "protocols", "all", "tovpnfwd"])
    );
    // Our route in BIRD's vpn4 table, with RD, label and target.
    let ours = || {
        birdc(&[
            "show",
            "route",
            "table",
            "vpntab",
            "all",
            "65001:1",
            "10.1.1.1/32",
        ])
    };
    assert!(
        Lab::wait_until(Duration::from_secs(10), || ours()
            .contains("BGP.mpls_label_stack: 100")),
        "BIRD lacks our route:\n{}\n{}",
        ours(),
        text()
    );
    let r = ours();
    assert!(
        r.contains("BGP.ext_community: (rt, 65001, 100)")
            && r.contains("BGP.next_hop: 192.0.2.1")
            && r.contains("65001:1 10.1.1.1/32"),
        "fields of our route in BIRD: {r}"
    );
    // BIRD's route forwarded with its label.
    assert!(
        Lab::wait_until(Duration::from_secs(10), || lab
            .succeeds(&h1, &["ping", "-c", "1", "-W", "1", "10.1.1.254"])),
        "gateway"
    );
    let cap = lab
        .capture(&bird, "core", Duration::from_secs(3), 200)
        .expect("capture");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let _ = lab.succeeds(&h1, &["ping", "-c", "1", "-W", "1", "10.9.0.5"]);
    }
    let labels: Vec<u32> = cap
        .join()
        .expect("capture")
        .iter()
        .filter(|f| f.get(12..14) == Some(&[0x88, 0x47]))
        .filter_map(|f| {
            f.get(14..18)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) >> 12)
        })
        .collect();
    assert!(
        labels.contains(&3000),
        "no frame with BIRD's label 3000: {labels:?}\n{}",
        text()
    );
}
