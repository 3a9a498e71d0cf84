//! A BGP session over TCP: connects to the peer (port 179), frames and
//! decodes messages, runs the [`Fsm`] with real timers, and reports to the
//! control thread over a channel. One thread per peer; the control thread
//! sends UPDATEs back through the peer's outbox.

use super::fsm::{Action, Event, Fsm, PeerConfig, State, Timer};
use super::wire::{self, Context, Message};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a session tells the control thread.
#[derive(Debug)]
pub enum SessionEvent {
    /// The session is Established.
    Up {
        /// The peer.
        peer: IpAddr,
        /// What was negotiated (codec context, families, capabilities,
        /// graceful restart).
        negotiated: Box<super::fsm::Negotiated>,
    },
    /// UPDATEs arrived, in order (those decoded from one read of the
    /// socket, up to [`UPDATE_BATCH`]: one hand-over per batch).
    Updates {
        /// The peer.
        peer: IpAddr,
        /// The messages.
        updates: Vec<wire::Update>,
    },
    /// The peer asked to be sent our routes of a family again (RFC 2918).
    Refresh {
        /// The peer.
        peer: IpAddr,
    },
    /// The session went down: its routes must be withdrawn, or kept as
    /// stale while the peer restarts (RFC 4724).
    Down {
        /// The peer.
        peer: IpAddr,
        /// Why.
        reason: String,
        /// Graceful restart: the peer's restart time and the families to
        /// keep, when the session ended without a NOTIFICATION and both
        /// sides announced the capability.
        restart: Option<(u16, Vec<(super::wire::nlri::Afi, super::wire::nlri::Safi)>)>,
    },
}

/// Most UPDATEs handed to the control thread at once.
pub const UPDATE_BATCH: usize = 64;

struct Session {
    peer: IpAddr,
    /// UPDATEs decoded and not yet handed over.
    pending: Vec<wire::Update>,
    fsm: Fsm,
    timers: [Option<Instant>; 3],
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    ctx: Context,
    events: SyncSender<SessionEvent>,
    /// The peer's graceful-restart capability on the current session.
    restart: Option<(u16, Vec<(super::wire::nlri::Afi, super::wire::nlri::Safi)>)>,
    /// TCP-MD5 and GTSM for this peer.
    prot: super::sockopt::Protection,
}

fn slot(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
    }
}

impl Session {
    /// Hand the decoded UPDATEs to the control thread.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let updates = std::mem::take(&mut self.pending);
            let _ = self.events.send(SessionEvent::Updates {
                peer: self.peer,
                updates,
            });
        }
    }

    fn send(&mut self, m: &Message) -> bool {
        match (self.stream.as_mut(), wire::encode(m, &self.ctx)) {
            (Some(s), Ok(b)) => s.write_all(&b).is_ok(),
            _ => false,
        }
    }

    /// Feed an event and carry out the actions; events the actions raise
    /// (connection up or failed) are fed in turn.
    fn feed(&mut self, ev: Event) {
        let mut queue = vec![ev];
        let mut rounds = 0;
        while let Some(ev) = queue.pop() {
            rounds += 1;
            if rounds > 64 {
                break;
            }
            for a in self.fsm.handle(ev) {
                match a {
                    Action::Connect => {
                        let addr = SocketAddr::new(self.peer, 179);
                        match super::sockopt::connect(addr, &self.prot, Duration::from_secs(3)) {
                            Ok(s) => {
                                let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                                let _ = s.set_nodelay(true);
                                self.stream = Some(s);
                                self.buf.clear();
                                queue.push(Event::TcpConnected);
                            }
                            Err(_) => queue.push(Event::TcpFailed),
                        }
                    }
                    Action::Disconnect => {
                        self.stream = None;
                        self.buf.clear();
                        self.ctx = Context::default();
                    }
                    Action::Send(m) => {
                        if !self.send(&m) && self.stream.is_some() {
                            queue.push(Event::TcpFailed);
                        }
                    }
                    Action::SetTimer(t, secs) => {
                        self.timers[slot(t)] = (secs > 0)
                            .then(|| Instant::now() + Duration::from_secs(u64::from(secs)));
                    }
                    Action::Up(n) => {
                        self.flush();
                        self.ctx = n.context.clone();
                        self.restart = n.graceful_restart.clone();
                        let _ = self.events.send(SessionEvent::Up {
                            peer: self.peer,
                            negotiated: Box::new(n),
                        });
                    }
                    Action::Down { reason, graceful } => {
                        self.flush();
                        let restart = self.restart.take().filter(|_| graceful);
                        let _ = self.events.send(SessionEvent::Down {
                            peer: self.peer,
                            reason,
                            restart,
                        });
                    }
                    Action::Update(update) => {
                        self.pending.push(update);
                        if self.pending.len() >= UPDATE_BATCH {
                            self.flush();
                        }
                    }
                    Action::RefreshRequested(..) => {
                        self.flush();
                        let _ = self.events.send(SessionEvent::Refresh { peer: self.peer });
                    }
                }
            }
        }
    }
}

/// Run a session until `stop` is set. Messages in `outbox` are sent while
/// Established. Connections the peer opens to us arrive on `incoming` (from
/// [`listen`]); one is taken when the session has no connection past
/// Active (a simplified collision rule: a session that is already opening
/// or Established keeps its connection, RFC 4271 §6.8).
#[allow(clippy::too_many_arguments)]
pub fn run(
    peer: IpAddr,
    cfg: PeerConfig,
    prot: super::sockopt::Protection,
    events: SyncSender<SessionEvent>,
    outbox: Receiver<Message>,
    incoming: Receiver<TcpStream>,
    passive: bool,
    stop: Arc<AtomicBool>,
) {
    let mut s = Session {
        peer,
        pending: Vec::new(),
        fsm: Fsm::new(cfg),
        timers: [None; 3],
        stream: None,
        buf: Vec::new(),
        ctx: Context::default(),
        events,
        restart: None,
        prot,
    };
    s.feed(if passive {
        Event::StartPassive
    } else {
        Event::Start
    });
    let mut chunk = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        while let Ok(st) = incoming.try_recv() {
            if matches!(s.fsm.state(), State::Idle | State::Connect | State::Active) {
                if s.prot.ttl_security {
                    use std::os::fd::AsRawFd;
                    let v6 = st.peer_addr().is_ok_and(|a| a.is_ipv6());
                    if let Err(e) = super::sockopt::set_gtsm(st.as_raw_fd(), v6) {
                        tracing::warn!(%peer, error = %e, "GTSM not set; connection refused");
                        continue;
                    }
                }
                let _ = st.set_read_timeout(Some(Duration::from_millis(50)));
                let _ = st.set_nodelay(true);
                s.stream = Some(st);
                s.buf.clear();
                if s.fsm.state() == State::Idle {
                    s.feed(Event::StartPassive);
                }
                s.feed(Event::TcpConnected);
            }
            // Otherwise the new connection is dropped (closed).
        }
        let now = Instant::now();
        for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            if s.timers[slot(t)].is_some_and(|d| now >= d) {
                s.timers[slot(t)] = None;
                s.feed(Event::TimerExpired(t));
            }
        }
        let read = match s.stream.as_mut() {
            Some(st) => Some(st.read(&mut chunk)),
            None => {
                std::thread::sleep(Duration::from_millis(50));
                None
            }
        };
        match read {
            Some(Ok(0)) => s.feed(Event::TcpFailed),
            Some(Ok(n)) => s.buf.extend_from_slice(&chunk[..n]),
            Some(Err(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Some(Err(_)) => s.feed(Event::TcpFailed),
            None => {}
        }
        // Every whole message in the buffer, then the rest moves to its
        // front once.
        let mut at = 0;
        loop {
            match wire::frame_len(&s.buf[at..]) {
                Ok(Some(len)) if s.buf.len() - at >= len => {
                    let ev = match wire::decode(&s.buf[at..at + len], &s.ctx) {
                        Ok(m) => Event::Received(m),
                        Err(n) => Event::Malformed(n),
                    };
                    at += len;
                    s.feed(ev);
                    if s.buf.is_empty() {
                        // The connection was dropped or reset meanwhile.
                        at = 0;
                        break;
                    }
                }
                Ok(_) => break,
                Err(n) => {
                    s.buf.clear();
                    at = 0;
                    s.feed(Event::Malformed(n));
                    break;
                }
            }
        }
        s.buf.drain(..at.min(s.buf.len()));
        s.flush();
        if s.fsm.state() == State::Established {
            while let Ok(m) = outbox.try_recv() {
                // A NOTIFICATION from the control thread ends the session
                // (a Cease such as maximum prefixes reached).
                if let Message::Notification {
                    code,
                    subcode,
                    data,
                } = m
                {
                    s.feed(Event::Cease(super::wire::Notification::new(
                        code,
                        subcode,
                        data,
                        format!("ceased by the router ({code}/{subcode})"),
                    )));
                    break;
                }
                if !s.send(&m) {
                    s.feed(Event::TcpFailed);
                    break;
                }
            }
        }
    }
    let _ = s.send(&Message::Notification {
        code: 6,
        subcode: 2,
        data: vec![],
    });
}

/// Accept BGP connections on `addr` (port 179) and hand each to the session
/// of the peer it comes from; connections from unknown addresses are closed.
pub fn listen(
    addr: SocketAddr,
    peers: std::collections::HashMap<IpAddr, Sender<TcpStream>>,
    md5_keys: Vec<(IpAddr, Vec<u8>)>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let l = std::net::TcpListener::bind(addr)?;
    super::sockopt::protect_listener(&l, md5_keys.iter().map(|(a, k)| (*a, k.as_slice())))?;
    l.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, from)) => {
                    let _ = s.set_nonblocking(false);
                    // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6.
                    match peers.get(&from.ip().to_canonical()) {
                        Some(tx) => {
                            let _ = tx.send(s);
                        }
                        None => {
                            tracing::warn!(%from, "BGP connection from an unconfigured address refused")
                        }
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }))
}
