//! The BGP finite state machine of RFC 4271 §8, with no I/O: events in,
//! actions out. Timers are events too; the session layer owns the clocks and
//! the socket, and carries out the actions in order.
//!
//! Covered: the six states and their transitions for the mandatory events,
//! OPEN validation and capability negotiation (hold time = minimum of both
//! sides, §4.2; peer AS and 4-octet AS, RFC 6793; multiprotocol families,
//! RFC 4760; route refresh; ADD-PATH, RFC 7911), and connection-collision
//! resolution (§6.8) as a pure function.

use super::wire::{
    err, nlri::Afi, nlri::Safi, Capability, Context, Message, Notification, Open, Update,
};
use std::net::Ipv4Addr;

/// FSM states (§8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Refusing connections.
    Idle,
    /// Waiting for an outgoing TCP connection to complete.
    Connect,
    /// Listening for the peer's connection.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for a KEEPALIVE.
    OpenConfirm,
    /// Exchanging UPDATEs.
    Established,
}

/// The timers the FSM asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// ConnectRetryTimer.
    ConnectRetry,
    /// HoldTimer.
    Hold,
    /// KeepaliveTimer.
    Keepalive,
}

/// Inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ManualStart (event 1), actively connecting.
    Start,
    /// ManualStart with PassiveTcpEstablishment (event 4): only listen.
    StartPassive,
    /// ManualStop (event 2).
    Stop,
    /// A TCP connection is up, either way (events 16/17).
    TcpConnected,
    /// The TCP connection failed or closed (event 18).
    TcpFailed,
    /// A timer expired (events 9, 10, 11).
    TimerExpired(Timer),
    /// A message arrived, decoded.
    Received(Message),
    /// A message arrived that did not decode (events 21, 22, 28).
    Malformed(Notification),
    /// The router ends the session with this NOTIFICATION (a Cease, e.g.
    /// maximum prefixes reached, RFC 4486) and waits [`IDLE_HOLD`] seconds
    /// before connecting again.
    Cease(Notification),
}

/// Seconds a session stays Idle after we ceased it.
pub const IDLE_HOLD: u16 = 60;

/// What the session layer must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection.
    Disconnect,
    /// Send a message.
    Send(Message),
    /// (Re)start a timer for this many seconds (0: stop it).
    SetTimer(Timer, u16),
    /// The session is up with these parameters.
    Up(Negotiated),
    /// The session went down. `graceful` is true when it ended without a
    /// NOTIFICATION either way (the TCP connection failed), the case in
    /// which a graceful-restart helper keeps the peer's routes (RFC 4724
    /// §4.2).
    Down {
        /// Why.
        reason: String,
        /// No NOTIFICATION was sent or received.
        graceful: bool,
    },
    /// Hand an UPDATE to the RIB.
    Update(Update),
    /// The peer asked for a route refresh of this family.
    RefreshRequested(Afi, Safi),
}

/// A peer's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Our AS.
    pub local_as: u32,
    /// The peer's AS (checked against its OPEN).
    pub remote_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose (0, or ≥ 3 seconds).
    pub hold_time: u16,
    /// Seconds between connection attempts.
    pub connect_retry: u16,
    /// Families we offer.
    pub families: Vec<(Afi, Safi)>,
    /// Families for which we accept ADD-PATH path identifiers.
    pub add_path_receive: Vec<(Afi, Safi)>,
    /// Never connect; wait for the peer (PassiveTcpEstablishment, §8.1.1).
    pub passive: bool,
    /// Restart time announced in our graceful-restart capability (RFC 4724;
    /// we are a receiving speaker/helper and announce no family); 0 leaves
    /// the capability out.
    pub graceful_restart_time: u16,
}

/// What both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Hold time (0: no keepalives).
    pub hold_time: u16,
    /// Keepalive interval (hold time / 3).
    pub keepalive: u16,
    /// The peer's AS.
    pub peer_as: u32,
    /// The peer's identifier.
    pub peer_id: Ipv4Addr,
    /// Families both offered.
    pub families: Vec<(Afi, Safi)>,
    /// The peer supports route refresh.
    pub route_refresh: bool,
    /// The peer's graceful-restart capability, when it sent one and we
    /// announced ours: its restart time and the families whose routes a
    /// helper keeps while it restarts.
    pub graceful_restart: Option<(u16, Vec<(Afi, Safi)>)>,
    /// The families whose forwarding state the peer says it kept through
    /// its restart (F bit set, RFC 4724 §3); a helper removes the stale
    /// routes of the others as soon as the session is back.
    pub forwarding_preserved: Vec<(Afi, Safi)>,
    /// The peer's capabilities, by name, for operators.
    pub capabilities: Vec<String>,
    /// Codec context for this session.
    pub context: Context,
}

/// The state machine for one peer.
#[derive(Debug, Clone)]
pub struct Fsm {
    config: PeerConfig,
    state: State,
    negotiated: Option<Negotiated>,
}

/// OPEN's "large value" for the hold timer before OPENs are exchanged (§8.2.2).
pub const LARGE_HOLD: u16 = 240;

fn families_of(o: &Open) -> Vec<(Afi, Safi)> {
    let mp: Vec<(Afi, Safi)> = o
        .capabilities()
        .filter_map(|c| match c {
            Capability::Multiprotocol(a, s) => Some((*a, *s)),
            _ => None,
        })
        .collect();
    if mp.is_empty() {
        // RFC 4760 §8: no multiprotocol capability means IPv4 unicast.
        vec![(Afi::IPV4, Safi::UNICAST)]
    } else {
        mp
    }
}

impl Fsm {
    /// A machine in Idle.
    pub fn new(config: PeerConfig) -> Fsm {
        Fsm {
            config,
            state: State::Idle,
            negotiated: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What was negotiated, once the peer's OPEN is accepted (OpenConfirm
    /// and Established).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The OPEN we send.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .config
            .families
            .iter()
            .map(|(a, s)| Capability::Multiprotocol(*a, *s))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::FourOctetAs(self.config.local_as));
        if self.config.graceful_restart_time > 0 {
            caps.push(Capability::GracefulRestart {
                flags: 0,
                time: self.config.graceful_restart_time.min(0x0fff),
                families: vec![],
            });
        }
        if !self.config.add_path_receive.is_empty() {
            caps.push(Capability::AddPath(
                self.config
                    .add_path_receive
                    .iter()
                    .map(|(a, s)| (*a, *s, 1))
                    .collect(),
            ));
        }
        Open::new(
            self.config.local_as,
            self.config.hold_time,
            self.config.router_id,
            caps,
        )
    }

    fn go_idle(&mut self, why: String, notify: Option<Notification>) -> Vec<Action> {
        let graceful = notify.is_none();
        self.go_idle_as(why, notify, graceful)
    }

    fn go_idle_as(
        &mut self,
        why: String,
        notify: Option<Notification>,
        graceful: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(n) = notify {
            out.push(Action::Send(Message::Notification {
                code: n.code,
                subcode: n.subcode,
                data: n.data,
            }));
        }
        let was_up = self.state != State::Idle;
        out.push(Action::Disconnect);
        out.push(Action::SetTimer(Timer::Hold, 0));
        out.push(Action::SetTimer(Timer::Keepalive, 0));
        // RFC 4271 §8.2.2: on errors the ConnectRetryTimer restarts the cycle
        // (automatic restart, as every deployed speaker does).
        out.push(Action::SetTimer(
            Timer::ConnectRetry,
            self.config.connect_retry,
        ));
        if was_up {
            out.push(Action::Down {
                reason: why,
                graceful,
            });
        }
        self.state = State::Idle;
        self.negotiated = None;
        out
    }

    fn negotiate(&self, o: &Open) -> Result<Negotiated, Notification> {
        let peer_as = o.asn();
        if peer_as != self.config.remote_as {
            return Err(Notification::new(
                err::OPEN,
                err::OPEN_BAD_AS,
                o.my_as.to_be_bytes().to_vec(),
                format!("peer AS {peer_as}, expected {}", self.config.remote_as),
            ));
        }
        if o.bgp_id == self.config.router_id && self.config.local_as == peer_as {
            return Err(Notification::new(
                err::OPEN,
                err::OPEN_BAD_ID,
                vec![],
                "peer uses our BGP identifier",
            ));
        }
        let hold_time = self.config.hold_time.min(o.hold_time);
        let theirs = families_of(o);
        let families: Vec<(Afi, Safi)> = self
            .config
            .families
            .iter()
            .copied()
            .filter(|f| theirs.contains(f))
            .collect();
        let four_octet_as = o
            .capabilities()
            .any(|c| matches!(c, Capability::FourOctetAs(_)));
        let route_refresh = o.capabilities().any(|c| {
            matches!(
                c,
                Capability::RouteRefresh | Capability::EnhancedRouteRefresh
            )
        });
        let graceful_restart = o
            .capabilities()
            .find_map(|c| match c {
                Capability::GracefulRestart { time, families, .. } => {
                    Some((*time, families.iter().map(|(a, s, _)| (*a, *s)).collect()))
                }
                _ => None,
            })
            .filter(|_| self.config.graceful_restart_time > 0);
        let forwarding_preserved = o
            .capabilities()
            .filter_map(|c| match c {
                Capability::GracefulRestart { families, .. } => Some(families.clone()),
                _ => None,
            })
            .flatten()
            .filter(|(_, _, flags)| flags & 0x80 != 0)
            .map(|(a, s, _)| (a, s))
            .collect();
        let capabilities = o.capabilities().map(capability_name).collect();
        // We receive path ids where we asked to and the peer offers to send.
        let add_path: Vec<(Afi, Safi)> = o
            .capabilities()
            .filter_map(|c| match c {
                Capability::AddPath(l) => Some(l.clone()),
                _ => None,
            })
            .flatten()
            .filter(|(a, s, mode)| {
                mode & 2 != 0 && self.config.add_path_receive.contains(&(*a, *s))
            })
            .map(|(a, s, _)| (a, s))
            .collect();
        Ok(Negotiated {
            hold_time,
            keepalive: hold_time / 3,
            peer_as,
            peer_id: o.bgp_id,
            families,
            route_refresh,
            graceful_restart,
            forwarding_preserved,
            capabilities,
            context: Context {
                four_octet_as,
                add_path,
            },
        })
    }

    /// Feed one event; returns the actions to carry out in order.
    pub fn handle(&mut self, ev: Event) -> Vec<Action> {
        use State::*;
        let fsm_error = |st: State| {
            Some(Notification::new(
                err::FSM,
                match st {
                    OpenSent => 1,
                    OpenConfirm => 2,
                    Established => 3,
                    _ => 0,
                },
                vec![],
                "unexpected message",
            ))
        };
        match (self.state, ev) {
            (Idle, Event::Start) => {
                self.state = Connect;
                vec![
                    Action::SetTimer(Timer::ConnectRetry, self.config.connect_retry),
                    Action::Connect,
                ]
            }
            (Idle, Event::StartPassive) => {
                self.state = Active;
                vec![Action::SetTimer(
                    Timer::ConnectRetry,
                    self.config.connect_retry,
                )]
            }
            (Idle, Event::TimerExpired(Timer::ConnectRetry)) if self.config.passive => {
                self.state = Active;
                vec![Action::SetTimer(
                    Timer::ConnectRetry,
                    self.config.connect_retry,
                )]
            }
            (Active, Event::TimerExpired(Timer::ConnectRetry)) if self.config.passive => {
                vec![Action::SetTimer(
                    Timer::ConnectRetry,
                    self.config.connect_retry,
                )]
            }
            (Idle, Event::TimerExpired(Timer::ConnectRetry)) => {
                // Automatic restart after an error.
                self.state = Connect;
                vec![
                    Action::SetTimer(Timer::ConnectRetry, self.config.connect_retry),
                    Action::Connect,
                ]
            }
            (Idle, _) => vec![],
            (_, Event::Stop) => {
                let mut out = self.go_idle(
                    "stopped by the operator".into(),
                    Some(Notification::new(
                        err::CEASE,
                        2,
                        vec![],
                        "administrative shutdown",
                    )),
                );
                // A manual stop does not restart.
                out.retain(|a| {
                    *a != Action::SetTimer(Timer::ConnectRetry, self.config.connect_retry)
                });
                out.push(Action::SetTimer(Timer::ConnectRetry, 0));
                out
            }
            (Connect | Active, Event::TcpConnected) => {
                self.state = OpenSent;
                vec![
                    Action::SetTimer(Timer::ConnectRetry, 0),
                    Action::Send(Message::Open(self.open())),
                    Action::SetTimer(Timer::Hold, LARGE_HOLD),
                ]
            }
            (Connect | Active, Event::TimerExpired(Timer::ConnectRetry)) => {
                self.state = Connect;
                vec![
                    Action::Disconnect,
                    Action::SetTimer(Timer::ConnectRetry, self.config.connect_retry),
                    Action::Connect,
                ]
            }
            (Connect, Event::TcpFailed) => {
                // §8.2.2 Connect, event 18: wait in Active for the retry.
                self.state = Active;
                vec![Action::Disconnect]
            }
            (Active, Event::TcpFailed) => vec![Action::Disconnect],
            (OpenSent, Event::TcpFailed) => {
                // §8.2.2 OpenSent, event 18: back to Active.
                self.state = Active;
                vec![
                    Action::Disconnect,
                    Action::SetTimer(Timer::Hold, 0),
                    Action::SetTimer(Timer::ConnectRetry, self.config.connect_retry),
                ]
            }
            (OpenSent, Event::Received(Message::Open(o))) => match self.negotiate(&o) {
                Ok(n) => {
                    self.state = OpenConfirm;
                    let mut out = vec![Action::Send(Message::Keepalive)];
                    out.push(Action::SetTimer(Timer::Hold, n.hold_time));
                    out.push(Action::SetTimer(Timer::Keepalive, n.keepalive));
                    self.negotiated = Some(n);
                    out
                }
                Err(notify) => self.go_idle(notify.reason.clone(), Some(notify)),
            },
            (OpenConfirm, Event::Received(Message::Keepalive)) => {
                self.state = Established;
                let n = self.negotiated.clone().expect("negotiated in OpenSent");
                vec![Action::SetTimer(Timer::Hold, n.hold_time), Action::Up(n)]
            }
            (Established, Event::Received(Message::Keepalive)) => {
                vec![Action::SetTimer(
                    Timer::Hold,
                    self.negotiated.as_ref().map_or(0, |n| n.hold_time),
                )]
            }
            (Established, Event::Received(Message::Update(u))) => {
                vec![
                    Action::SetTimer(
                        Timer::Hold,
                        self.negotiated.as_ref().map_or(0, |n| n.hold_time),
                    ),
                    Action::Update(u),
                ]
            }
            (Established, Event::Received(Message::RouteRefresh { afi, safi, .. })) => {
                vec![Action::RefreshRequested(afi, safi)]
            }
            (OpenConfirm | Established, Event::TimerExpired(Timer::Keepalive)) => {
                vec![
                    Action::Send(Message::Keepalive),
                    Action::SetTimer(
                        Timer::Keepalive,
                        self.negotiated.as_ref().map_or(0, |n| n.keepalive),
                    ),
                ]
            }
            (OpenSent | OpenConfirm | Established, Event::TimerExpired(Timer::Hold)) => self
                .go_idle(
                    "hold timer expired".into(),
                    Some(Notification::new(
                        err::HOLD_TIMER,
                        0,
                        vec![],
                        "hold timer expired",
                    )),
                ),
            (_, Event::Received(Message::Notification { code, subcode, .. })) => self.go_idle_as(
                format!("peer sent NOTIFICATION {code}/{subcode}"),
                None,
                false,
            ),
            (_, Event::Cease(n)) => {
                let mut out = self.go_idle(n.reason.clone(), Some(n));
                for a in &mut out {
                    if let Action::SetTimer(Timer::ConnectRetry, t) = a {
                        *t = IDLE_HOLD;
                    }
                }
                out
            }
            (_, Event::Malformed(n)) => self.go_idle(n.reason.clone(), Some(n)),
            (OpenConfirm | Established, Event::TcpFailed) => {
                self.go_idle("connection lost".into(), None)
            }
            (st @ (OpenSent | OpenConfirm | Established), Event::Received(_)) => {
                self.go_idle(format!("unexpected message in {st:?}"), fsm_error(st))
            }
            (_, _) => vec![],
        }
    }
}

/// A capability's name as operators know it.
pub fn capability_name(c: &Capability) -> String {
    match c {
        Capability::Multiprotocol(a, s) => format!("mp({})", family_name(*a, *s)),
        Capability::RouteRefresh => "route-refresh".into(),
        Capability::EnhancedRouteRefresh => "enhanced-route-refresh".into(),
        Capability::ExtendedNexthop(_) => "extended-nexthop".into(),
        Capability::GracefulRestart { time, .. } => format!("graceful-restart({time}s)"),
        Capability::FourOctetAs(_) => "4-octet-as".into(),
        Capability::AddPath(_) => "add-path".into(),
        // Capabilities we do not act on, by their IANA names.
        Capability::Unknown(code, _) => match code {
            6 => "extended-message".into(),
            9 => "bgp-role".into(),
            71 => "long-lived-graceful-restart".into(),
            73 => "fqdn".into(),
            75 => "software-version".into(),
            128 => "route-refresh(pre-standard)".into(),
            _ => format!("unknown({code})"),
        },
    }
}

/// A family's name: ipv4-unicast, vpnv4, ipv4-rtc, ...
pub fn family_name(a: Afi, s: Safi) -> String {
    match (a, s) {
        (Afi::IPV4, Safi::MPLS_VPN) => "vpnv4".into(),
        (Afi::IPV6, Safi::MPLS_VPN) => "vpnv6".into(),
        (Afi::IPV4, Safi::UNICAST) => "ipv4-unicast".into(),
        (Afi::IPV6, Safi::UNICAST) => "ipv6-unicast".into(),
        (Afi::IPV4, Safi::RT_CONSTRAINT) => "rtc".into(),
        (a, s) => format!("{}/{}", a.0, s.0),
    }
}

/// Connection collision (§6.8): when two connections reach OpenConfirm,
/// the one initiated by the speaker with the higher BGP identifier survives.
/// Returns true if the connection we initiated should be kept.
pub fn keep_our_connection(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_we_do_not_act_on_go_by_their_iana_names() {
        assert_eq!(capability_name(&Capability::Unknown(73, vec![])), "fqdn");
        assert_eq!(
            capability_name(&Capability::Unknown(9, vec![0])),
            "bgp-role"
        );
        assert_eq!(
            capability_name(&Capability::Unknown(200, vec![])),
            "unknown(200)"
        );
    }

    fn cfg() -> PeerConfig {
        PeerConfig {
            local_as: 65001,
            remote_as: 65002,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            hold_time: 90,
            connect_retry: 5,
            families: vec![(Afi::IPV4, Safi::MPLS_VPN), (Afi::IPV6, Safi::MPLS_VPN)],
            add_path_receive: vec![],
            passive: false,
            graceful_restart_time: 120,
        }
    }

    fn established(f: &mut Fsm, caps: Vec<Capability>) -> Negotiated {
        to_open_sent(f);
        f.handle(Event::Received(peer_open(65002, 90, caps)));
        let a = f.handle(Event::Received(Message::Keepalive));
        match a.last() {
            Some(Action::Up(n)) => n.clone(),
            _ => panic!("no Up: {a:?}"),
        }
    }

    fn down(a: &[Action]) -> Option<bool> {
        a.iter().find_map(|x| match x {
            Action::Down { graceful, .. } => Some(*graceful),
            _ => None,
        })
    }

    #[test]
    fn our_open_announces_graceful_restart_as_a_helper_rfc4724() {
        let f = Fsm::new(cfg());
        let caps: Vec<Capability> = f.open().capabilities().cloned().collect();
        assert!(caps.contains(&Capability::GracefulRestart {
            flags: 0,
            time: 120,
            families: vec![],
        }));
        let f = Fsm::new(PeerConfig {
            graceful_restart_time: 0,
            ..cfg()
        });
        assert!(!f
            .open()
            .capabilities()
            .any(|c| matches!(c, Capability::GracefulRestart { .. })));
    }

    #[test]
    fn a_lost_connection_is_graceful_a_notification_is_not() {
        let gr = Capability::GracefulRestart {
            flags: 0,
            time: 90,
            families: vec![(Afi::IPV4, Safi::MPLS_VPN, 0x80)],
        };
        let mut f = Fsm::new(cfg());
        let n = established(&mut f, vec![gr.clone()]);
        assert_eq!(
            n.graceful_restart,
            Some((90, vec![(Afi::IPV4, Safi::MPLS_VPN)]))
        );
        assert!(n
            .capabilities
            .contains(&"graceful-restart(90s)".to_string()));
        assert_eq!(down(&f.handle(Event::TcpFailed)), Some(true));

        let mut f = Fsm::new(cfg());
        established(&mut f, vec![gr.clone()]);
        let a = f.handle(Event::Received(Message::Notification {
            code: 6,
            subcode: 2,
            data: vec![],
        }));
        assert_eq!(down(&a), Some(false));

        let mut f = Fsm::new(cfg());
        established(&mut f, vec![gr]);
        assert_eq!(
            down(&f.handle(Event::TimerExpired(Timer::Hold))),
            Some(false),
            "hold timer expiry sends a NOTIFICATION"
        );
    }

    #[test]
    fn cease_sends_the_notification_and_holds_off_reconnecting() {
        let mut f = Fsm::new(cfg());
        established(&mut f, vec![]);
        let a = f.handle(Event::Cease(Notification::new(
            6,
            1,
            vec![0, 1, 128],
            "max",
        )));
        assert!(matches!(
            &a[0],
            Action::Send(Message::Notification {
                code: 6,
                subcode: 1,
                ..
            })
        ));
        assert!(a.contains(&Action::SetTimer(Timer::ConnectRetry, IDLE_HOLD)));
        assert_eq!(down(&a), Some(false));
        assert_eq!(f.state(), State::Idle);
    }

    fn peer_open(asn: u32, hold: u16, caps: Vec<Capability>) -> Message {
        Message::Open(Open::new(asn, hold, Ipv4Addr::new(192, 0, 2, 2), caps))
    }

    fn to_open_sent(f: &mut Fsm) {
        f.handle(Event::Start);
        let a = f.handle(Event::TcpConnected);
        assert!(matches!(a[1], Action::Send(Message::Open(_))));
        assert_eq!(f.state(), State::OpenSent);
    }

    #[test]
    fn holdtime_negotiation_uses_the_minimum_rfc4271_4_2() {
        let mut f = Fsm::new(cfg());
        to_open_sent(&mut f);
        let a = f.handle(Event::Received(peer_open(
            65002,
            30,
            vec![Capability::Multiprotocol(Afi::IPV4, Safi::MPLS_VPN)],
        )));
        assert_eq!(f.state(), State::OpenConfirm);
        assert!(a.contains(&Action::SetTimer(Timer::Hold, 30)));
        assert!(a.contains(&Action::SetTimer(Timer::Keepalive, 10)));
        let a = f.handle(Event::Received(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        let Some(Action::Up(n)) = a.last() else {
            panic!("no Up: {a:?}")
        };
        assert_eq!(
            n.families,
            vec![(Afi::IPV4, Safi::MPLS_VPN)],
            "only families both offered"
        );
        assert!(n.context.four_octet_as);
    }

    #[test]
    fn a_wrong_peer_as_is_refused_with_open_error_2_2() {
        let mut f = Fsm::new(cfg());
        to_open_sent(&mut f);
        let a = f.handle(Event::Received(peer_open(65009, 90, vec![])));
        assert_eq!(f.state(), State::Idle);
        assert!(matches!(
            &a[0],
            Action::Send(Message::Notification {
                code: 2,
                subcode: 2,
                ..
            })
        ));
        assert!(a.contains(&Action::Disconnect));
    }

    #[test]
    fn hold_timer_expiry_in_established_sends_4_0_and_goes_idle_rfc4271_8_2_2() {
        let mut f = Fsm::new(cfg());
        to_open_sent(&mut f);
        f.handle(Event::Received(peer_open(65002, 90, vec![])));
        f.handle(Event::Received(Message::Keepalive));
        let a = f.handle(Event::TimerExpired(Timer::Hold));
        assert_eq!(f.state(), State::Idle);
        assert!(matches!(
            &a[0],
            Action::Send(Message::Notification {
                code: 4,
                subcode: 0,
                ..
            })
        ));
        assert!(a.iter().any(|x| matches!(x, Action::Down { .. })));
        // Automatic restart: the retry timer brings it back to Connect.
        let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
        assert_eq!(f.state(), State::Connect);
        assert!(a.contains(&Action::Connect));
    }

    #[test]
    fn an_update_before_established_is_an_fsm_error() {
        let mut f = Fsm::new(cfg());
        to_open_sent(&mut f);
        let a = f.handle(Event::Received(Message::Update(Update::default())));
        assert!(matches!(
            &a[0],
            Action::Send(Message::Notification {
                code: 5,
                subcode: 1,
                ..
            })
        ));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn updates_and_keepalives_in_established_restart_the_hold_timer() {
        let mut f = Fsm::new(cfg());
        to_open_sent(&mut f);
        f.handle(Event::Received(peer_open(65002, 60, vec![])));
        f.handle(Event::Received(Message::Keepalive));
        let a = f.handle(Event::Received(Message::Update(Update::default())));
        assert_eq!(
            a,
            vec![
                Action::SetTimer(Timer::Hold, 60),
                Action::Update(Update::default())
            ]
        );
        let a = f.handle(Event::TimerExpired(Timer::Keepalive));
        assert_eq!(
            a,
            vec![
                Action::Send(Message::Keepalive),
                Action::SetTimer(Timer::Keepalive, 20)
            ]
        );
    }

    #[test]
    fn a_manual_stop_sends_cease_and_does_not_restart() {
        let mut f = Fsm::new(cfg());
        to_open_sent(&mut f);
        let a = f.handle(Event::Stop);
        assert!(matches!(
            &a[0],
            Action::Send(Message::Notification {
                code: 6,
                subcode: 2,
                ..
            })
        ));
        assert_eq!(a.last(), Some(&Action::SetTimer(Timer::ConnectRetry, 0)));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn a_failed_connect_waits_in_active_then_retries() {
        let mut f = Fsm::new(cfg());
        f.handle(Event::Start);
        f.handle(Event::TcpFailed);
        assert_eq!(f.state(), State::Active);
        let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
        assert!(a.contains(&Action::Connect));
        assert_eq!(f.state(), State::Connect);
    }

    #[test]
    fn a_passive_peer_never_connects() {
        let mut c = cfg();
        c.passive = true;
        let mut f = Fsm::new(c);
        f.handle(Event::StartPassive);
        assert_eq!(f.state(), State::Active);
        let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
        assert!(!a.contains(&Action::Connect));
        assert_eq!(f.state(), State::Active);
        f.handle(Event::TcpConnected);
        assert_eq!(f.state(), State::OpenSent);
    }

    #[test]
    fn collision_keeps_the_connection_of_the_higher_identifier_rfc4271_6_8() {
        assert!(keep_our_connection(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 1)
        ));
        assert!(!keep_our_connection(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2)
        ));
    }

    #[test]
    fn add_path_is_used_only_where_we_receive_and_the_peer_sends() {
        let mut c = cfg();
        c.add_path_receive = vec![(Afi::IPV4, Safi::MPLS_VPN)];
        let mut f = Fsm::new(c);
        to_open_sent(&mut f);
        f.handle(Event::Received(peer_open(
            65002,
            90,
            vec![Capability::AddPath(vec![
                (Afi::IPV4, Safi::MPLS_VPN, 2),
                (Afi::IPV6, Safi::MPLS_VPN, 2),
            ])],
        )));
        let n = f.negotiated().expect("negotiated");
        assert_eq!(n.context.add_path, vec![(Afi::IPV4, Safi::MPLS_VPN)]);
    }
}
