//! Session life cycle against GoBGP (Debian's gobgpd): a peer's graceful
//! restart (RFC 4724) with forwarding kept, hold-timer expiry, a session
//! flap, the maximum-prefix Cease (RFC 4486), and TCP-MD5 (RFC 2385) with
//! GTSM (RFC 5082), and a ROUTE-REFRESH we send (`vpnfwd peer refresh`).
//! One the peer sends is tested with ExaBGP (`bgp_exabgp.rs`), which can
//! send one on demand.
//!
//! ```text
//!  h1 (10.1.1.1) ── p [vpnfwd PE 192.0.2.1] core ══ core [gobgpd 192.0.2.9]
//! ```

mod common;

use common::{read, tmp, VPNFWD};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vpnfwd_tests::Lab;

struct Bed {
    lab: Lab,
    pe: String,
    rr: String,
    h1: String,
    log: PathBuf,
    gobgp_conf: PathBuf,
    gobgp_log: PathBuf,
    gobgp_pid: u32,
}

const GOBGP: &str = r#"
[global.config]
  as = 65001
  router-id = "192.0.2.9"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#;

const GOBGP_GR: &str = r#"
[global.config]
  as = 65001
  router-id = "192.0.2.9"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 60
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
"#;

impl Bed {
    /// The PE (with `bgp_extra` under [bgp] and `peer_extra` under its peer)
    /// and gobgpd with `gobgp` as its configuration, session up.
    fn new(name: &str, gobgp: &str, bgp_extra: &str, peer_extra: &str) -> Bed {
        let common::PeLab {
            mut lab,
            pe,
            peer: rr,
            h1,
        } = common::pe_and_peer("rr", true);
        let h1 = h1.expect("host");
        let gobgp_conf = tmp(&format!("gobgpd-{name}.toml"));
        std::fs::write(&gobgp_conf, gobgp).expect("gobgp config");
        let gobgp_log = tmp(&format!("gobgpd-{name}.log"));
        let gobgp_pid = spawn_gobgp(&mut lab, &rr, &gobgp_conf, &gobgp_log);
        let cfg = common::pe_config(false)
            .replace(
                "router_id = \"192.0.2.1\"\n",
                &format!("router_id = \"192.0.2.1\"\n{bgp_extra}\n"),
            )
            .replace(
                "passive = false\n",
                &format!("passive = false\n{peer_extra}\n"),
            );
        let log = common::start_pe_with(&mut lab, &pe, name, &cfg);
        let b = Bed {
            lab,
            pe,
            rr,
            h1,
            log,
            gobgp_conf,
            gobgp_log,
            gobgp_pid,
        };
        assert!(
            b.wait(30, || b.established() >= 1),
            "no session\n{}",
            b.logs()
        );
        b
    }

    fn logs(&self) -> String {
        format!(
            "vpnfwd:\n{}\ngobgpd:\n{}",
            read(&self.log),
            read(&self.gobgp_log)
        )
    }

    fn wait(&self, secs: u64, f: impl FnMut() -> bool) -> bool {
        Lab::wait_until(Duration::from_secs(secs), f)
    }

    fn established(&self) -> usize {
        read(&self.log).matches("BGP session established").count()
    }

    fn gobgp(&self, args: &[&str]) -> String {
        let mut a = vec!["gobgp"];
        a.extend_from_slice(args);
        self.lab
            .exec(&self.rr, &a)
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_else(|e| e.0)
    }

    fn announce(&self, prefix: &str, label: u32) {
        let l = label.to_string();
        self.gobgp(&[
            "global",
            "rib",
            "-a",
            "vpnv4",
            "add",
            prefix,
            "label",
            &l,
            "rd",
            "65001:9",
            "rt",
            "65001:100",
            "nexthop",
            "192.0.2.9",
        ]);
    }

    /// Our learned routes, as the API has them.
    fn routes(&self) -> Vec<serde_json::Value> {
        let out = self
            .lab
            .stdout(&self.pe, &[VPNFWD, "route", "list", "--json"]);
        serde_json::from_str(&out).unwrap_or_default()
    }

    fn has(&self, prefix: &str) -> Option<serde_json::Value> {
        self.routes().into_iter().find(|r| r["prefix"] == prefix)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.gobgp_pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// MPLS labels of the frames that reach the peer while h1 pings `dst`.
    fn labels_towards(&self, dst: &str) -> Vec<u32> {
        let cap = self
            .lab
            .capture(&self.rr, "core", Duration::from_secs(3), 200)
            .expect("capture");
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..3 {
            let _ = self
                .lab
                .succeeds(&self.h1, &["ping", "-c", "1", "-W", "1", dst]);
        }
        cap.join()
            .expect("capture")
            .iter()
            .filter(|f| f.get(12..14) == Some(&[0x88, 0x47]))
            .filter_map(|f| {
                f.get(14..18)
                    .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) >> 12)
            })
            .collect()
    }
}

fn spawn_gobgp(lab: &mut Lab, ns: &str, conf: &std::path::Path, log: &std::path::Path) -> u32 {
    lab.spawn(
        ns,
        &["gobgpd", "-t", "toml", "-f", conf.to_str().expect("utf-8")],
        log,
    )
    .expect("gobgpd")
}

fn ready() -> bool {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root for network namespaces");
        return false;
    }
    true
}

#[test]
fn routes_and_forwarding_survive_the_peers_graceful_restart() {
    if !ready() {
        return;
    }
    let mut b = Bed::new("gr", GOBGP_GR, "", "");
    assert!(
        read(&b.log).contains("graceful-restart(60s)"),
        "GoBGP announced graceful restart\n{}",
        b.logs()
    );
    b.announce("10.9.0.0/24", 3000);
    b.announce("10.8.0.0/24", 3001);
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_some()
            && b.has("10.8.0.0/24").is_some()),
        "routes learned\n{}",
        b.logs()
    );
    assert!(b.wait(10, || b
        .lab
        .succeeds(&b.h1, &["ping", "-c", "1", "-W", "1", "10.1.1.254"])));
    // GoBGP dies without a NOTIFICATION: its routes stay, marked stale,
    // and traffic keeps flowing to its PE with its label.
    b.signal("-KILL");
    assert!(
        b.wait(10, || read(&b.log).contains("peer restarting gracefully")),
        "{}",
        b.logs()
    );
    assert!(
        b.wait(5, || b
            .has("10.9.0.0/24")
            .is_some_and(|r| r["stale"] == true)),
        "route kept through the restart, marked stale: {:?}",
        b.routes()
    );
    assert!(b.has("10.8.0.0/24").is_some());
    let labels = b.labels_towards("10.9.0.5");
    assert!(
        labels.contains(&3000),
        "forwarding with the stale route: {labels:?}\n{}",
        b.logs()
    );
    // GoBGP comes back and announces only one of the two again: after its
    // End-of-RIB the other is gone, the re-announced one is fresh.
    let pid = spawn_gobgp(&mut b.lab, &b.rr.clone(), &b.gobgp_conf, &b.gobgp_log);
    b.gobgp_pid = pid;
    assert!(
        b.wait(30, || b.established() >= 2),
        "no second session\n{}",
        b.logs()
    );
    b.announce("10.9.0.0/24", 3000);
    assert!(
        b.wait(15, || {
            b.has("10.8.0.0/24").is_none()
                && b.has("10.9.0.0/24").is_some_and(|r| r["stale"] == false)
        }),
        "stale route swept, re-announced one fresh: {:?}\n{}",
        b.routes(),
        b.logs()
    );
    assert!(read(&b.log).contains("End-of-RIB"), "{}", b.logs());
}

#[test]
fn a_silent_peer_is_dropped_when_the_hold_timer_expires_and_comes_back() {
    if !ready() {
        return;
    }
    let b = Bed::new("hold", GOBGP, "hold_time = 3", "");
    b.announce("10.9.0.0/24", 3000);
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_some()),
        "{}",
        b.logs()
    );
    // Frozen: the TCP connection stays up but no KEEPALIVE comes.
    b.signal("-STOP");
    let dropped = b.wait(10, || read(&b.log).contains("hold timer expired"));
    b.signal("-CONT");
    assert!(dropped, "hold timer\n{}", b.logs());
    assert!(
        b.has("10.9.0.0/24").is_none(),
        "routes withdrawn (a NOTIFICATION was sent: no graceful restart)"
    );
    // The peer wakes up, sees our NOTIFICATION and the session returns.
    assert!(
        b.wait(30, || b.established() >= 2),
        "session back\n{}",
        b.logs()
    );
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_some()),
        "routes relearned\n{}",
        b.logs()
    );
}

#[test]
fn a_session_flap_withdraws_the_peers_routes_and_relearns_them() {
    if !ready() {
        return;
    }
    let mut b = Bed::new("flap", GOBGP, "", "");
    b.announce("10.9.0.0/24", 3000);
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_some()),
        "{}",
        b.logs()
    );
    let pid = b.gobgp_pid;
    b.lab.stop(pid, Duration::from_secs(5));
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_none()),
        "withdrawn when the session went down\n{}",
        b.logs()
    );
    assert!(read(&b.log).contains("BGP session down"), "{}", b.logs());
    let labels = b.labels_towards("10.9.0.5");
    assert!(
        !labels.contains(&3000),
        "no more traffic with the withdrawn label: {labels:?}"
    );
    b.gobgp_pid = spawn_gobgp(&mut b.lab, &b.rr.clone(), &b.gobgp_conf, &b.gobgp_log);
    assert!(b.wait(30, || b.established() >= 2), "{}", b.logs());
    b.announce("10.9.0.0/24", 3000);
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_some()),
        "{}",
        b.logs()
    );
    let labels = b.labels_towards("10.9.0.5");
    assert!(labels.contains(&3000), "forwarding again: {labels:?}");
}

#[test]
fn exceeding_max_prefixes_ends_the_session_with_cease_1() {
    if !ready() {
        return;
    }
    let b = Bed::new("maxpfx", GOBGP, "", "max_prefixes = 2");
    b.announce("10.9.0.0/24", 3000);
    b.announce("10.8.0.0/24", 3001);
    assert!(
        b.wait(10, || b.routes().len() == 2),
        "two routes within the limit\n{}",
        b.logs()
    );
    let peers = || b.lab.stdout(&b.pe, &[VPNFWD, "peer", "list"]);
    assert!(
        peers()
            .lines()
            .any(|l| l.contains("192.0.2.9") && l.contains("Established") && l.contains("2/2")),
        "peer list: {}",
        peers()
    );
    b.announce("10.7.0.0/24", 3002);
    assert!(
        b.wait(10, || read(&b.log).contains("maximum prefixes exceeded")),
        "{}",
        b.logs()
    );
    assert!(
        b.wait(10, || read(&b.gobgp_log).contains("\"Code\":6")
            && read(&b.gobgp_log).contains("\"Subcode\":1")),
        "GoBGP got Cease / maximum prefixes\n{}",
        b.logs()
    );
    assert!(b.wait(10, || b.routes().is_empty()), "routes withdrawn");
}

const GOBGP_SECURE: &str = r#"
[global.config]
  as = 65001
  router-id = "192.0.2.9"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
    auth-password = "s3cret-md5"
  [neighbors.ttl-security.config]
    enabled = true
    ttl-min = 255
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#;

#[test]
fn tcp_md5_and_gtsm_protect_the_session() {
    if !ready() {
        return;
    }
    // Same password and GTSM on both sides: the session comes up (GoBGP
    // drops segments that arrive with a TTL below 255 or without the
    // signature, so ours carry both).
    let b = Bed::new(
        "secure",
        GOBGP_SECURE,
        "",
        "password = \"s3cret-md5\"\nttl_security = true",
    );
    b.announce("10.9.0.0/24", 3000);
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_some()),
        "{}",
        b.logs()
    );
}

#[test]
fn a_wrong_md5_password_or_a_peer_without_gtsm_never_gets_a_session() {
    if !ready() {
        return;
    }
    // A wrong password: every segment is dropped by the kernel.
    let wrong = GOBGP_SECURE.replace("s3cret-md5", "other-key");
    let (b1, b2, b3) = std::thread::scope(|sc| {
        let t1 = sc.spawn(|| {
            no_session(
                "badmd5",
                &wrong,
                "password = \"s3cret-md5\"\nttl_security = true",
            )
        });
        // GTSM on our side only, towards an eBGP GoBGP (which sends with
        // TTL 1 to a directly connected external peer): we drop its
        // segments. (GoBGP sends iBGP with TTL 255 anyway.)
        let ebgp = GOBGP.replace("as = 65001\n  router-id", "as = 65009\n  router-id");
        let ebgp2 = ebgp.clone();
        let t2 = sc.spawn(move || no_session_as("nogtsm", &ebgp, "ttl_security = true", 65009));
        // The control: the same eBGP peering without GTSM comes up.
        let t3 = sc.spawn(move || !no_session_as("ebgp-plain", &ebgp2, "", 65009));
        (
            t1.join().expect("t1"),
            t2.join().expect("t2"),
            t3.join().expect("t3"),
        )
    });
    assert!(b1, "a session came up with a wrong TCP-MD5 password");
    assert!(
        b2,
        "a session came up with a peer that does not send TTL 255"
    );
    assert!(b3, "the eBGP control session without GTSM did not come up");
}

/// Start the PE and GoBGP and watch for 12 s: true if no session came up.
fn no_session(name: &str, gobgp: &str, peer_extra: &str) -> bool {
    no_session_as(name, gobgp, peer_extra, 65001)
}

/// [`no_session`] with GoBGP in `peer_as`.
fn no_session_as(name: &str, gobgp: &str, peer_extra: &str, peer_as: u32) -> bool {
    let common::PeLab {
        mut lab,
        pe,
        peer: rr,
        ..
    } = common::pe_and_peer("rr", false);
    common::spawn_gobgpd(&mut lab, &rr, &format!("gobgpd-{name}"), gobgp);
    let cfg = common::pe_config(false)
        .replace(
            "passive = false\n",
            &format!("passive = false\n{peer_extra}\n"),
        )
        .replace(
            "address = \"192.0.2.9\"\nasn = 65001",
            &format!("address = \"192.0.2.9\"\nasn = {peer_as}"),
        );
    let log = common::start_pe_with(&mut lab, &pe, name, &cfg);
    // Both sides retry every few seconds; none may get through.
    !Lab::wait_until(Duration::from_secs(12), || {
        read(&log).contains("BGP session established")
    })
}

#[test]
fn we_ask_the_peer_for_its_routes_again_with_route_refresh() {
    if !ready() {
        return;
    }
    let b = Bed::new("outrefresh", GOBGP, "", "");
    b.announce("10.9.0.0/24", 3000);
    assert!(
        b.wait(10, || b.has("10.9.0.0/24").is_some()),
        "{}",
        b.logs()
    );
    let updates = || read(&b.log).matches("announced=1").count();
    let before = updates();
    let out = b
        .lab
        .exec(&b.pe, &[VPNFWD, "peer", "refresh", "192.0.2.9"])
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_else(|e| e.0);
    assert!(out.contains("vpnv4"), "refresh answer: {out}");
    assert!(
        b.wait(10, || updates() > before),
        "GoBGP did not send its routes again ({before} announcements before)\n{}",
        b.logs()
    );
    assert_eq!(b.established(), 1, "the session stayed up");
    // An address that is not a peer is refused with a message.
    let bad = b
        .lab
        .exec(&b.pe, &[VPNFWD, "peer", "refresh", "192.0.2.77"]);
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.0.contains("not a configured peer")),
        "{bad:?}"
    );
}
