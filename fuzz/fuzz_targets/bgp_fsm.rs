//! Any sequence of session events — starts and stops, TCP coming and
//! going, timers, messages of any content (decoded from the input, OPENs
//! with any capabilities among them), malformed ones and ceases — through
//! the RFC 4271 state machine. Nothing may panic, and what it asks the
//! session to do must agree with its state: the session is reported up
//! only on reaching Established, down only on leaving it, and UPDATEs are
//! handed on only while Established.
#![no_main]

use control::bgp::fsm::{Action, Event, Fsm, PeerConfig, State, Timer};
use control::bgp::wire::{decode, Afi, Context, Notification, Safi};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    let mut fsm = Fsm::new(PeerConfig {
        local_as: 65001,
        remote_as: if cfg & 1 == 0 { 65001 } else { 65002 },
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        hold_time: [0, 3, 90, 180][usize::from(cfg >> 1 & 3)],
        connect_retry: 5,
        families: vec![(Afi::IPV4, Safi::MPLS_VPN), (Afi::IPV6, Safi::MPLS_VPN)],
        add_path_receive: if cfg & 8 != 0 {
            vec![(Afi::IPV4, Safi::MPLS_VPN)]
        } else {
            vec![]
        },
        passive: cfg & 16 != 0,
        graceful_restart_time: if cfg & 32 != 0 { 120 } else { 0 },
    });
    let mut steps = 0;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        steps += 1;
        if steps > 200 {
            break;
        }
        let ev = match op % 12 {
            0 => Event::Start,
            1 => Event::StartPassive,
            2 => Event::Stop,
            3 | 4 => Event::TcpConnected,
            5 => Event::TcpFailed,
            6 => Event::TimerExpired(
                [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive][usize::from(op >> 4) % 3],
            ),
            7 => Event::Malformed(Notification::new(1 + op % 6, op >> 4, vec![], "fuzz")),
            8 => Event::Cease(Notification::new(6, 1, vec![], "fuzz")),
            _ => {
                // A message: type and body from the input, decoded with
                // what the session negotiated.
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                let n = usize::from(n).min(tail.len());
                let (body, tail) = tail.split_at(n);
                rest = tail;
                let mut m = vec![0xff; 16];
                m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
                m.push(1 + op / 12 % 5);
                m.extend_from_slice(body);
                let ctx = fsm
                    .negotiated()
                    .map(|n| n.context.clone())
                    .unwrap_or_else(|| Context {
                        four_octet_as: true,
                        ..Context::default()
                    });
                match decode(&m, &ctx) {
                    Ok(msg) => Event::Received(msg),
                    Err(e) => Event::Malformed(e),
                }
            }
        };
        let before = fsm.state();
        let actions = fsm.handle(ev);
        let after = fsm.state();
        for a in &actions {
            match a {
                Action::Up(_) => {
                    assert_eq!(after, State::Established, "up outside Established");
                    assert_ne!(before, State::Established, "up twice");
                }
                Action::Down { .. } => {
                    assert_ne!(after, State::Established, "down while Established");
                }
                Action::Update(_) => {
                    assert_eq!(
                        before,
                        State::Established,
                        "an UPDATE handed on outside Established"
                    );
                }
                _ => {}
            }
        }
        if before == State::Established && after != State::Established {
            assert!(
                actions.iter().any(|a| matches!(a, Action::Down { .. })),
                "left Established without reporting it: {actions:?}"
            );
        }
        assert_eq!(
            fsm.negotiated().is_some(),
            matches!(after, State::OpenConfirm | State::Established),
            "negotiated parameters before the peer's OPEN was accepted or after the session ended"
        );
    }
});
