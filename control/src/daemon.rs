//! `vpnfwd run`: build the tables from the configuration, open the ports,
//! start the workers and serve exceptions until SIGINT or SIGTERM.
//!
//! The control thread decides every change to the tables (the route
//! changes of a batch of UPDATEs reach the LPMs through the tables' own
//! applier thread, see [`dataplane::fib::Fib::begin_batch`]). It answers ARP for
//! each port's gateway address (proxy, as bagpipe-bgp does) and echo
//! requests to it, and sends ICMP time-exceeded for expired packets, all
//! from the exception queue the workers fill.

use crate::bgp::fsm::PeerConfig;
use crate::bgp::session::{self, SessionEvent};
use crate::bgp::wire::{Afi, Message, Safi};
use crate::config::{parse_mac, parse_prefix, Config, EncapKind, IdleMode};
use crate::exceptions::Responder;
use crate::fxmap::FxMap;
use crate::neighbor::{Change, Neighbors};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use dataplane::fib::*;
use dataplane::io::afpacket::{AfPacketOptions, AfPacketPort};
use dataplane::io::afxdp::AfXdpTx;
use dataplane::pipeline::{Counters, Exception, Pipeline, RateLimit, Reason};
use dataplane::wire::mpls::Label;
use dataplane::wire::MacAddr;
use dataplane::worker::{self, AfPacketXdpTx, Idle, PacketIo, WorkerConfig};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An interface problem.
    #[error("{0}")]
    Io(#[from] dataplane::io::afpacket::AfPacketError),
    /// A table refused an entry.
    #[error("{at}: {source}")]
    Fib {
        /// Which configuration entry.
        at: String,
        /// Why.
        source: FibError,
    },
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

fn fib_err(at: impl Into<String>) -> impl FnOnce(FibError) -> StartError {
    let at = at.into();
    move |source| StartError::Fib { at, source }
}

/// [`fib_err`] with the context built only when there is an error.
fn fib_err_with(at: impl FnOnce() -> String) -> impl FnOnce(FibError) -> StartError {
    move |source| StartError::Fib { at: at(), source }
}

/// The interface's MAC address, from sysfs.
pub fn interface_mac(ifname: &str) -> Option<MacAddr> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// What the control thread knows about each port for answering exceptions.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// Interface name.
    pub interface: String,
    /// Router MAC per VLAN, gateway addresses per VLAN.
    pub access: HashMap<
        u16,
        (
            MacAddr,
            Option<std::net::Ipv4Addr>,
            Option<std::net::Ipv6Addr>,
        ),
    >,
}

/// Tables built from a configuration.
pub struct Built {
    /// The writer.
    pub fib: Fib,
    /// Port ids by interface name.
    pub ports: Vec<(PortId, String)>,
    /// Per-port exception context.
    pub info: HashMap<PortId, PortInfo>,
    /// The remote routes installed, for reloads.
    pub routes: RouteSet,
}

mod routes;
pub use routes::{RouteDiff, RouteSet};

/// Build the tables a configuration describes.
///
/// # Errors
/// [`StartError`] naming the entry that could not be installed.
pub fn build(cfg: &Config) -> Result<Built, StartError> {
    let mut fib = Fib::new();
    let mut ports: Vec<(PortId, String)> = Vec::new();
    let mut info: HashMap<PortId, PortInfo> = HashMap::new();
    let port_id = |name: &str, ports: &mut Vec<(PortId, String)>| -> Result<PortId, StartError> {
        if let Some((id, _)) = ports.iter().find(|(_, n)| n == name) {
            return Ok(*id);
        }
        if ports.len() >= usize::from(MAX_PORTS) {
            return Err(StartError::Other(format!(
                "more than {MAX_PORTS} interfaces"
            )));
        }
        let id = PortId(ports.len() as u16);
        ports.push((id, name.to_string()));
        Ok(id)
    };
    for (i, v) in cfg.vrfs.iter().enumerate() {
        let id = VrfId(i as u32 + 1);
        fib.add_vrf(id)
            .map_err(fib_err(format!("vrf {}", v.name)))?;
        if let Some(l) = v.label {
            let l = Label::new(l)
                .ok_or_else(|| StartError::Other(format!("vrf {}: bad label", v.name)))?;
            fib.set_label(l, Some(LabelAction::VrfLookup(id)))
                .map_err(fib_err(format!("vrf {}.label", v.name)))?;
        }
    }
    let vrf_id = |name: &str| cfg.vrf_index(name).map(|i| VrfId(i as u32 + 1));
    let mut next_nh = 0u32;
    let uplink_mac = match &cfg.uplink {
        Some(u) => {
            let id = port_id(&u.interface, &mut ports)?;
            let mac = match &u.mac {
                Some(m) => parse_mac(m).map_err(StartError::Other)?,
                None => interface_mac(&u.interface).ok_or_else(|| {
                    StartError::Other(format!(
                        "uplink: no MAC for interface {:?}; does it exist?",
                        u.interface
                    ))
                })?,
            };
            fib.set_port(
                id,
                0,
                Some(PortRole::Uplink(UplinkPort {
                    router_mac: mac,
                    local_v4: u.address,
                })),
            )
            .map_err(fib_err("uplink"))?;
            info.insert(
                id,
                PortInfo {
                    interface: u.interface.clone(),
                    access: HashMap::new(),
                },
            );
            Some((id, mac))
        }
        None => None,
    };
    let mut local_nh: HashMap<(String, VrfId), NexthopId> = HashMap::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let at = format!("port[{i}] ({})", p.interface);
        let id = port_id(&p.interface, &mut ports)?;
        let vrf = vrf_id(&p.vrf).ok_or_else(|| StartError::Other(format!("{at}: unknown VRF")))?;
        let host = parse_mac(&p.mac).map_err(StartError::Other)?;
        let router_mac = match &p.router_mac {
            Some(m) => parse_mac(m).map_err(StartError::Other)?,
            None => interface_mac(&p.interface).ok_or_else(|| {
                StartError::Other(format!(
                    "{at}: no MAC for interface {:?}; does it exist?",
                    p.interface
                ))
            })?,
        };
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for a in &p.addresses {
            match parse_prefix(a).map_err(StartError::Other)? {
                (IpAddr::V4(a), l) => v4.push((a, l)),
                (IpAddr::V6(a), l) => v6.push((a, l)),
            }
        }
        fib.set_port(
            id,
            p.vlan,
            Some(PortRole::Access(AccessPort {
                vrf,
                router_mac,
                host_mac: Some(host),
                allowed_v4: v4.clone(),
                allowed_v6: v6.clone(),
                gateway_v4: p.gateway,
                gateway_v6: p.gateway6,
            })),
        )
        .map_err(fib_err(at.clone()))?;
        next_nh += 1;
        let nh = NexthopId::new(next_nh).expect("fewer than 2^31 nexthops");
        local_nh.entry((p.interface.clone(), vrf)).or_insert(nh);
        fib.set_nexthop(
            nh,
            Nexthop::Local {
                port: id,
                l2: L2Rewrite {
                    dst: host,
                    src: router_mac,
                    vlan: (p.vlan != 0).then_some(p.vlan),
                },
            },
        )
        .map_err(fib_err(at.clone()))?;
        for (a, l) in v4 {
            fib.insert_v4(vrf, a, l, nh)
                .map_err(fib_err(format!("{at}.addresses")))?;
        }
        for (a, l) in v6 {
            fib.insert_v6(vrf, a, l, nh)
                .map_err(fib_err(format!("{at}.addresses")))?;
        }
        info.entry(id)
            .or_insert_with(|| PortInfo {
                interface: p.interface.clone(),
                access: HashMap::new(),
            })
            .access
            .insert(p.vlan, (router_mac, p.gateway, p.gateway6));
    }
    for (i, f) in cfg.route_files.iter().enumerate() {
        let at = format!("route_file[{i}] ({})", f.path);
        let vrf = vrf_id(&f.vrf).ok_or_else(|| StartError::Other(format!("{at}: unknown VRF")))?;
        let nh = match (&f.port, f.label, f.pe, &f.nexthop_mac, uplink_mac) {
            (Some(p), ..) => *local_nh
                .get(&(p.clone(), vrf))
                .ok_or_else(|| StartError::Other(format!("{at}: no port {p:?} in that VRF")))?,
            (None, Some(l), Some(pe), Some(m), Some((up, up_mac))) => {
                let label =
                    Label::new(l).ok_or_else(|| StartError::Other(format!("{at}: bad label")))?;
                let encap = match (f.encap, cfg.uplink.as_ref().and_then(|u| u.address)) {
                    (EncapKind::Mpls, _) => Encap::Ethernet { transport: None },
                    (EncapKind::Gre, Some(src)) => Encap::Gre { src, dst: pe },
                    (EncapKind::Udp, Some(src)) => Encap::Udp { src, dst: pe },
                    _ => {
                        return Err(StartError::Other(format!(
                            "{at}: GRE and UDP need uplink.address"
                        )))
                    }
                };
                let l2 = L2Rewrite {
                    dst: parse_mac(m).map_err(StartError::Other)?,
                    src: up_mac,
                    vlan: None,
                };
                next_nh += 1;
                let nh = NexthopId::new(next_nh).expect("fewer than 2^31 nexthops");
                fib.set_nexthop(
                    nh,
                    Nexthop::Remote(RemoteNexthop::new(up, label, encap, l2)),
                )
                .map_err(fib_err(at.clone()))?;
                nh
            }
            _ => {
                return Err(StartError::Other(format!(
                    "{at}: give either port, or label, pe and nexthop_mac"
                )))
            }
        };
        let text = std::fs::read_to_string(&f.path)
            .map_err(|e| StartError::Other(format!("{at}: {e}")))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (a, l) = parse_prefix(line)
                .map_err(|e| StartError::Other(format!("{}:{}: {e}", f.path, n + 1)))?;
            match a {
                IpAddr::V4(a) => fib.insert_v4(vrf, a, l, nh),
                IpAddr::V6(a) => fib.insert_v6(vrf, a, l, nh),
            }
            .map_err(fib_err(format!("{}:{}", f.path, n + 1)))?;
        }
    }
    let mut routes = RouteSet {
        uplink: uplink_mac,
        next_nh,
        ..RouteSet::default()
    };
    routes.apply(&mut fib, cfg)?;
    Ok(Built {
        fib,
        ports,
        info,
        routes,
    })
}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
}

/// glibc's malloc keeps small freed blocks in fast bins, all merged at once
/// whenever a larger block is asked for. The tables' writer frees small
/// objects in bursts (after each grace period) while it allocates segments
/// of every size, and those merges took a tenth of its time. Without fast
/// bins freed blocks are merged as they go; the per-thread cache still
/// serves the most common sizes. [`run`] calls it first; a benchmark that
/// drives the tables in its own process calls it too.
#[allow(unsafe_code)]
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's parameters (under its locks),
    // before the threads that allocate most are started.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

#[allow(unsafe_code)]
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to atomics, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Apply the `[[route]]` changes of the file at `path`.
fn reload(path: &str, running: &mut Config, routes: &mut RouteSet, fib: &mut Fib) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            warn!(path, error = %e, "reload refused, nothing changed");
            return;
        }
    };
    let same = |a: &Config, b: &Config| {
        format!("{:?}{:?}{:?}{:?}", a.dataplane, a.vrfs, a.uplink, a.ports)
            == format!("{:?}{:?}{:?}{:?}", b.dataplane, b.vrfs, b.uplink, b.ports)
    };
    if !same(running, &new) {
        warn!(
            path,
            "reload refused, nothing changed: only [[route]] entries change without a restart"
        );
        return;
    }
    match routes.apply(fib, &new) {
        Ok(d) => {
            info!(path, added = d.added, removed = d.removed, "reloaded");
            *running = new;
        }
        Err(e) => error!(path, error = %e, "reload stopped part-way"),
    }
}

/// Per-worker port handles; one instance for the daemon's lifetime.
type WorkerPorts = (
    Vec<(PortId, Box<dyn PacketIo>)>,
    Vec<(PortId, Box<dyn PacketIo>)>,
);

/// The packet I/O back-end's ports, opened once and split per worker.
enum PortSetup {
    /// AF_PACKET: each worker opens its own sockets (one fanout group per
    /// interface when there are several workers).
    AfPacket {
        ports: Vec<(PortId, String)>,
        fanout: Option<u16>,
        xdp_tx: bool,
        /// Each receive ring's kernel counters.
        rings: Vec<dataplane::io::afpacket::RingStats>,
    },
    /// DPDK: one device per interface with a queue pair per worker, and
    /// the uplink's kernel twin.
    #[cfg(feature = "dpdk")]
    Dpdk(dpdk_setup::DpdkPorts),
}

impl PortSetup {
    fn open(
        cfg: &Config,
        ports: &[(PortId, String)],
        cores: &[Option<usize>],
        uplink: Option<(PortId, MacAddr)>,
    ) -> Result<PortSetup, StartError> {
        match cfg.dataplane.backend {
            crate::config::Backend::Afpacket => Ok(PortSetup::AfPacket {
                ports: ports.to_vec(),
                fanout: (cores.len() > 1).then_some((std::process::id() & 0xffff) as u16),
                xdp_tx: cfg.dataplane.tx == crate::config::TxMode::AfXdp,
                rings: Vec::new(),
            }),
            #[cfg(feature = "dpdk")]
            crate::config::Backend::Dpdk => Ok(PortSetup::Dpdk(dpdk_setup::DpdkPorts::open(
                cfg, ports, cores, uplink,
            )?)),
            #[cfg(not(feature = "dpdk"))]
            crate::config::Backend::Dpdk => {
                let _ = uplink;
                Err(StartError::Other(
                    "this vpnfwd was built without DPDK (build with --features dpdk)".into(),
                ))
            }
        }
    }

    /// Worker `w`'s ports and kernel twins.
    fn worker(&mut self, w: usize) -> Result<WorkerPorts, StartError> {
        match self {
            PortSetup::AfPacket {
                ports,
                fanout,
                xdp_tx,
                rings,
            } => {
                let mut io: Vec<(PortId, Box<dyn PacketIo>)> = Vec::new();
                for (id, name) in ports.iter() {
                    let opts = AfPacketOptions {
                        fanout_group: *fanout,
                        ..AfPacketOptions::default()
                    };
                    let rx = AfPacketPort::open(name, &opts)?;
                    if let Ok(r) = rx.ring_stats() {
                        rings.push(r);
                    }
                    // AF_XDP transmit on the queue numbered as the worker;
                    // where the interface lacks it (or another port of the
                    // same interface holds it), sendmmsg.
                    let tx = if *xdp_tx {
                        match AfXdpTx::open(name, w as u32) {
                            Ok(tx) => {
                                info!(
                                    interface = name.as_str(),
                                    worker = w,
                                    "port transmits with AF_XDP"
                                );
                                Some(tx)
                            }
                            Err(e) => {
                                info!(
                                    interface = name.as_str(),
                                    worker = w,
                                    "transmitting with sendmmsg: {e}"
                                );
                                None
                            }
                        }
                    } else {
                        None
                    };
                    match tx {
                        Some(tx) => io.push((*id, Box::new(AfPacketXdpTx { rx, tx }))),
                        None => io.push((*id, Box::new(rx))),
                    }
                }
                Ok((io, Vec::new()))
            }
            #[cfg(feature = "dpdk")]
            PortSetup::Dpdk(d) => d.worker(w),
        }
    }

    /// Each AF_PACKET receive ring's kernel counters (frames queued to it,
    /// frames dropped with the ring full), or each DPDK device's link,
    /// hardware counters and free buffers.
    fn ports_json(&mut self) -> serde_json::Value {
        match self {
            PortSetup::AfPacket { rings, .. } => rings
                .iter_mut()
                .map(|r| {
                    let (packets, drops) = r.read();
                    serde_json::json!({
                        "interface": r.ifname,
                        "ring_packets": packets,
                        "ring_drops": drops,
                    })
                })
                .collect(),
            #[cfg(feature = "dpdk")]
            PortSetup::Dpdk(d) => d.ports_json(),
        }
    }

    /// Log each DPDK device's link and hardware counters.
    fn log_ports(&self) {
        match self {
            PortSetup::AfPacket { .. } => {}
            #[cfg(feature = "dpdk")]
            PortSetup::Dpdk(d) => d.log_ports(),
        }
    }

    /// Close devices after the workers stopped.
    fn close(self) {
        match self {
            PortSetup::AfPacket { .. } => {}
            #[cfg(feature = "dpdk")]
            PortSetup::Dpdk(d) => d.close(),
        }
    }
}

#[cfg(feature = "dpdk")]
mod dpdk_setup;

/// How long stale routes wait for a restarted peer's End-of-RIB once its
/// session is back (the stale-path timer of RFC 4724 §4.2).
const STALE_PATH_TIME: Duration = Duration::from_secs(360);

/// A configured peer as the API shows it.
struct PeerView {
    asn: u32,
    state: &'static str,
    since: u64,
    capabilities: Vec<String>,
    families: Vec<(Afi, Safi)>,
    max_prefixes: Option<u32>,
    /// While the peer restarts gracefully: when its stale routes go.
    restart_deadline: Option<Instant>,
    last_down: Option<String>,
    /// With route-target constraint: our VPN End-of-RIB waits for the
    /// peer's membership (its RT constraint End-of-RIB), at most until
    /// then, so that a peer keeping our routes through our restart does not
    /// drop those it has not asked for yet.
    vpn_eor_due: Option<Instant>,
}

/// The longest our VPN End-of-RIB waits for a peer's membership.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(30);

/// Run the router with the configuration at `path` until SIGINT or SIGTERM.
/// SIGHUP re-reads the file and applies the changes to the `[[route]]`
/// entries (other sections need a restart; a reload that changes them, or
/// that does not validate, is refused with a message and changes nothing).
///
/// # Errors
/// [`StartError`] when the configuration cannot be applied.
pub fn run(path: &str, cfg: &Config) -> Result<(), StartError> {
    tune_allocator();
    let built = build(cfg)?;
    let Built {
        mut fib,
        ports,
        info,
        mut routes,
    } = built;
    let mut running = cfg.clone();
    let cores: Vec<Option<usize>> = if cfg.dataplane.cores.is_empty() {
        vec![None]
    } else {
        cfg.dataplane.cores.iter().map(|c| Some(*c)).collect()
    };
    let idle = match cfg.dataplane.idle {
        IdleMode::Busy => Idle::Busy,
        IdleMode::Sleep => Idle::Sleep(Duration::from_micros(200)),
    };
    let exceptions = Arc::new(ArrayQueue::<Exception>::new(1024));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut all_counters = Vec::new();
    let mut io_setup = PortSetup::open(cfg, &ports, &cores, routes.uplink())?;
    for (w, core) in cores.into_iter().enumerate() {
        let (io, kernel) = io_setup.worker(w)?;
        let counters = Arc::new(CachePadded::new(Counters::default()));
        all_counters.push(counters.clone());
        let pipe = Pipeline::new(counters, exceptions.clone(), RateLimit::default());
        let reader = fib.reader();
        let stop = stop.clone();
        let wc = WorkerConfig {
            core,
            ports: io,
            idle,
            kernel,
        };
        workers.push(
            std::thread::Builder::new()
                .name(format!("vpnfwd-worker{}", workers.len()))
                .spawn(move || worker::run(wc, reader, pipe, stop))
                .map_err(|e| StartError::Other(format!("starting a worker: {e}")))?,
        );
    }
    let mut responder = Responder::new(&info)?;
    // BGP: one session thread per peer, reporting over a channel.
    let mut vpn = crate::vpn::Vpn::new(cfg);
    // Bounded: a peer sending faster than the tables absorb is slowed down
    // by TCP instead of queueing decoded UPDATEs in memory (at most this
    // many batches of up to 64 UPDATEs).
    let (bgp_tx, bgp_rx) = std::sync::mpsc::sync_channel::<SessionEvent>(1);
    let bgp_stop = Arc::new(AtomicBool::new(false));
    let mut outboxes: HashMap<IpAddr, (std::sync::mpsc::Sender<Message>, u32)> = HashMap::new();
    let mut sessions = Vec::new();
    let mut incoming_tx = HashMap::new();
    if let Some(b) = &cfg.bgp {
        for p in &b.peers {
            let (tx, rx) = std::sync::mpsc::channel();
            let (in_tx, in_rx) = std::sync::mpsc::channel();
            incoming_tx.insert(p.address, in_tx);
            let pc = PeerConfig {
                local_as: b.asn,
                remote_as: p.asn,
                router_id: b.router_id,
                hold_time: b.hold_time,
                connect_retry: 5,
                families: if b.rt_constraint {
                    vec![
                        (Afi::IPV4, Safi::MPLS_VPN),
                        (Afi::IPV6, Safi::MPLS_VPN),
                        (Afi::IPV4, Safi::RT_CONSTRAINT),
                    ]
                } else {
                    vec![(Afi::IPV4, Safi::MPLS_VPN), (Afi::IPV6, Safi::MPLS_VPN)]
                },
                add_path_receive: vec![],
                passive: p.passive,
                graceful_restart_time: b.graceful_restart_time,
            };
            let (events, stop, peer, passive) =
                (bgp_tx.clone(), bgp_stop.clone(), p.address, p.passive);
            let prot = crate::bgp::sockopt::Protection {
                md5_key: p.password.as_ref().map(|k| k.as_bytes().to_vec()),
                ttl_security: p.ttl_security,
            };
            sessions.push(
                std::thread::Builder::new()
                    .name(format!("bgp-{peer}"))
                    .spawn(move || session::run(peer, pc, prot, events, rx, in_rx, passive, stop))
                    .map_err(|e| StartError::Other(format!("starting a BGP session: {e}")))?,
            );
            outboxes.insert(p.address, (tx, p.asn));
        }
        if b.listen {
            let addr = std::net::SocketAddr::new(
                b.listen_address
                    .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
                179,
            );
            let addr = match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    drop(l);
                    addr
                }
                // No IPv6 in this namespace: listen on IPv4 only.
                Err(_) => {
                    std::net::SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 179)
                }
            };
            let keys: Vec<(IpAddr, Vec<u8>)> = b
                .peers
                .iter()
                .filter_map(|p| Some((p.address, p.password.as_ref()?.as_bytes().to_vec())))
                .collect();
            match session::listen(
                addr,
                std::mem::take(&mut incoming_tx),
                keys,
                bgp_stop.clone(),
            ) {
                Ok(h) => sessions.push(h),
                Err(e) => warn!(%addr, error = %e, "not accepting BGP connections"),
            }
        }
    }
    // The API asks this thread and waits for the answer.
    let (api_tx, api_rx) =
        std::sync::mpsc::channel::<(crate::api::Request, std::sync::mpsc::Sender<String>)>();
    let mut peer_state: std::collections::BTreeMap<IpAddr, PeerView> = cfg
        .bgp
        .iter()
        .flat_map(|b| b.peers.iter())
        .map(|p| {
            (
                p.address,
                PeerView {
                    asn: p.asn,
                    state: "Down",
                    since: now_unix(),
                    capabilities: vec![],
                    families: vec![],
                    max_prefixes: p.max_prefixes,
                    restart_deadline: None,
                    last_down: None,
                    vpn_eor_due: None,
                },
            )
        })
        .collect();
    match crate::api::serve(cfg.api.listen, api_tx, bgp_stop.clone()) {
        Ok(h) => sessions.push(h),
        Err(e) => warn!(addr = %cfg.api.listen, error = %e, "API not served"),
    }
    let answer = |req: crate::api::Request,
                  vpn: &crate::vpn::Vpn,
                  peer_state: &std::collections::BTreeMap<IpAddr, PeerView>|
     -> String {
        match req {
            crate::api::Request::Peers => {
                let peers: Vec<serde_json::Value> = peer_state
                    .iter()
                    .map(|(addr, p)| {
                        let (r4, r6) = vpn.learned_by_family(*addr);
                        let (a4, a6) = vpn.accepted_by_family(*addr);
                        serde_json::json!({
                            "address": addr.to_string(),
                            "asn": p.asn,
                            "state": p.state,
                            "since": p.since,
                            "uptime": now_unix().saturating_sub(p.since),
                            "capabilities": p.capabilities,
                            "received": r4 + r6,
                            "families": {
                                "vpnv4": {"received": r4, "accepted": a4},
                                "vpnv6": {"received": r6, "accepted": a6},
                            },
                            "stale": vpn.stale_from(*addr),
                            "max_prefixes": p.max_prefixes,
                            "last_down": p.last_down,
                        })
                    })
                    .collect();
                serde_json::Value::Array(peers).to_string()
            }
            crate::api::Request::Routes { v6, rd, rt } => {
                serde_json::Value::Array(vpn.routes_json(v6, rd.as_deref(), rt.as_deref()))
                    .to_string()
            }
            // Answered in the loop, which holds the outboxes, counters and
            // ports.
            crate::api::Request::Refresh(_) | crate::api::Request::Stats => String::new(),
        }
    };
    install_signal_handlers();
    info!(
        interfaces = ports.len(),
        vrfs = cfg.vrfs.len(),
        workers = workers.len(),
        "forwarding"
    );
    let mut last_stats = Instant::now();
    let mut bgp_changes = 0usize;
    let mut last_tick = Instant::now() - Duration::from_secs(1);
    let uplink_addr = cfg.uplink.as_ref().and_then(|u| u.address);
    // A BGP event that arrived while the loop waited for work.
    let mut arrived: Option<SessionEvent> = None;
    while !STOP.load(Ordering::SeqCst) {
        let mut did = false;
        while let Some(e) = exceptions.pop() {
            did = true;
            if e.reason != Reason::ArpUplink {
                responder.handle(&e);
                continue;
            }
            // ARP on the uplink: learn the sender, answer for our address.
            let Some((eth, a)) = crate::exceptions::uplink_arp(&e) else {
                continue;
            };
            if let Some(c) = routes
                .neighbors
                .heard(a.sender_ip, a.sender_mac, Instant::now())
            {
                log_neighbor(c);
                routes.neighbor_changed(&mut fib, c);
            }
            if let (Some((up, mac)), Some(me)) = (routes.uplink(), uplink_addr) {
                if a.operation == dataplane::wire::arp::Operation::Request && a.target_ip == me {
                    responder.send(up, &crate::exceptions::arp_reply(&a, &eth, mac, me));
                }
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_millis(100) {
            last_tick = now;
            let (probes, lost) = routes.neighbors.tick(now);
            for c in lost {
                log_neighbor(c);
                routes.neighbor_changed(&mut fib, c);
            }
            if let (Some((up, mac)), Some(me)) = (routes.uplink(), uplink_addr) {
                for ip in probes {
                    responder.send(up, &crate::exceptions::arp_request(mac, me, ip));
                }
            }
        }
        while let Some(ev) = arrived.take().or_else(|| bgp_rx.try_recv().ok()) {
            did = true;
            match ev {
                SessionEvent::Up { peer, negotiated } => {
                    info!(%peer, capabilities = ?negotiated.capabilities, "BGP session established");
                    vpn.peer_up(peer, negotiated.peer_as, negotiated.peer_id);
                    if let Some(p) = peer_state.get_mut(&peer) {
                        p.state = "Established";
                        p.since = now_unix();
                        p.capabilities = negotiated.capabilities.clone();
                        p.families = negotiated.families.clone();
                        if p.restart_deadline.is_some() {
                            if negotiated.graceful_restart.is_some() {
                                // Back from a graceful restart: stale routes
                                // of families whose forwarding state it kept
                                // wait for its End-of-RIB; the others go now.
                                p.restart_deadline = Some(now + STALE_PATH_TIME);
                                for afi in [Afi::IPV4, Afi::IPV6] {
                                    if !negotiated
                                        .forwarding_preserved
                                        .contains(&(afi, Safi::MPLS_VPN))
                                    {
                                        let n =
                                            vpn.sweep_stale(peer, Some(afi), &mut routes, &mut fib);
                                        if n > 0 {
                                            info!(%peer, family = crate::bgp::fsm::family_name(afi, Safi::MPLS_VPN), removed = n, "peer did not keep its forwarding state; stale routes removed");
                                        }
                                    }
                                }
                            } else {
                                p.restart_deadline = None;
                                let n = vpn.sweep_stale(peer, None, &mut routes, &mut fib);
                                info!(%peer, removed = n, "peer came back without graceful restart; stale routes removed");
                            }
                        }
                    }
                    vpn.session_up(peer, &negotiated.families);
                    if let Some((tx, asn)) = outboxes.get(&peer) {
                        // RT membership first (RFC 4684 §6: a reflector
                        // sends VPN routes once it has it), then the routes
                        // (with RT constraint, those of the VRFs the peer
                        // asked for: none yet, more as its membership comes).
                        for m in vpn.rt_membership(*asn, &negotiated.families) {
                            let _ = tx.send(m);
                        }
                        for m in vpn.exports(peer, *asn, &negotiated.families) {
                            let _ = tx.send(m);
                        }
                        let rtc = (Afi::IPV4, Safi::RT_CONSTRAINT);
                        let now_families: Vec<(Afi, Safi)> = if negotiated.families.contains(&rtc) {
                            if let Some(p) = peer_state.get_mut(&peer) {
                                p.vpn_eor_due = Some(now + MEMBERSHIP_WAIT);
                            }
                            vec![rtc]
                        } else {
                            negotiated.families.clone()
                        };
                        for m in crate::vpn::Vpn::end_of_rib_markers(&now_families) {
                            let _ = tx.send(m);
                        }
                    }
                }
                SessionEvent::Updates { peer, updates } => {
                    // The batch's route changes go to the FIB's applier
                    // thread while the next batch is decided.
                    fib.begin_batch();
                    for update in updates {
                        if let Some((afi, safi)) = crate::vpn::Vpn::end_of_rib(&update) {
                            let n = if safi == Safi::MPLS_VPN {
                                vpn.sweep_stale(peer, Some(afi), &mut routes, &mut fib)
                            } else {
                                0
                            };
                            info!(%peer, family = crate::bgp::fsm::family_name(afi, safi), stale_removed = n, "End-of-RIB");
                            // The peer's membership is complete: our VPN
                            // routes for it are sent, say so.
                            if safi == Safi::RT_CONSTRAINT {
                                if let (Some(p), Some((tx, _))) =
                                    (peer_state.get_mut(&peer), outboxes.get(&peer))
                                {
                                    if p.vpn_eor_due.take().is_some() {
                                        send_vpn_eor(tx, &p.families);
                                        info!(%peer, "membership complete; End-of-RIB sent for the VPN families");
                                    }
                                }
                            }
                            if let Some(p) = peer_state.get_mut(&peer) {
                                if vpn.stale_from(peer) == 0 {
                                    p.restart_deadline = None;
                                }
                            }
                            bgp_changes += n;
                            continue;
                        }
                        // Route-target membership: send the VRFs the peer
                        // now asks for, withdraw those it no longer does.
                        if vpn.on_membership(peer, &update) {
                            let families = peer_state
                                .get(&peer)
                                .map(|p| p.families.clone())
                                .unwrap_or_default();
                            if let Some((tx, asn)) = outboxes.get(&peer) {
                                let msgs = vpn.export_changes(peer, *asn, &families);
                                info!(%peer, updates = msgs.len(), "route-target membership changed");
                                for m in msgs {
                                    let _ = tx.send(m);
                                }
                            }
                        }
                        let (a, w) = vpn.on_update(peer, &update, &mut routes, &mut fib);
                        tracing::debug!(%peer, announced = a, withdrawn = w, held = vpn.learned(), "BGP update");
                        bgp_changes += a + w;
                        let limit = peer_state.get(&peer).and_then(|p| p.max_prefixes);
                        if let (Some(max), Some((tx, _))) = (limit, outboxes.get(&peer)) {
                            let held = vpn.learned_from(peer);
                            if held > max as usize {
                                // RFC 4486: Cease, maximum number of prefixes
                                // reached; data: AFI, SAFI, the limit.
                                let mut data = vec![0, 1, 128];
                                data.extend_from_slice(&max.to_be_bytes());
                                warn!(%peer, held, max, "maximum prefixes exceeded; ending the session");
                                let _ = tx.send(Message::Notification {
                                    code: 6,
                                    subcode: 1,
                                    data,
                                });
                            }
                        }
                    }
                    fib.end_batch();
                }
                SessionEvent::Refresh { peer } => {
                    info!(%peer, "route refresh requested");
                    let families = peer_state
                        .get(&peer)
                        .map(|p| p.families.clone())
                        .unwrap_or_default();
                    if let Some((tx, asn)) = outboxes.get(&peer) {
                        for m in vpn.exports(peer, *asn, &families) {
                            let _ = tx.send(m);
                        }
                        for m in crate::vpn::Vpn::end_of_rib_markers(&families) {
                            let _ = tx.send(m);
                        }
                    }
                }
                SessionEvent::Down {
                    peer,
                    reason,
                    restart,
                } => {
                    vpn.session_down(peer);
                    if let Some(p) = peer_state.get_mut(&peer) {
                        p.vpn_eor_due = None;
                    }
                    let p = peer_state.get_mut(&peer);
                    match (restart, p) {
                        (Some((time, families)), Some(p)) if time > 0 => {
                            let (kept, gone) =
                                vpn.peer_restarting(peer, &families, &mut routes, &mut fib);
                            p.state = "Restarting";
                            p.since = now_unix();
                            p.last_down = Some(reason.clone());
                            p.restart_deadline = Some(now + Duration::from_secs(u64::from(time)));
                            warn!(%peer, %reason, kept, withdrawn = gone, restart_time = time, "BGP session down; peer restarting gracefully, its routes kept as stale");
                        }
                        (_, p) => {
                            if let Some(p) = p {
                                p.state = "Down";
                                p.since = now_unix();
                                p.last_down = Some(reason.clone());
                                p.restart_deadline = None;
                            }
                            let n = vpn.peer_down(peer, &mut routes, &mut fib);
                            warn!(%peer, %reason, withdrawn = n, "BGP session down");
                        }
                    }
                }
            }
        }
        for (peer, p) in peer_state.iter_mut() {
            if p.vpn_eor_due.is_some_and(|d| now >= d) {
                p.vpn_eor_due = None;
                if let Some((tx, _)) = outboxes.get(peer) {
                    info!(%peer, "no route-target membership End-of-RIB; sending ours for the VPN families");
                    send_vpn_eor(tx, &p.families);
                }
            }
            if p.restart_deadline.is_some_and(|d| now >= d) {
                p.restart_deadline = None;
                let n = vpn.sweep_stale(*peer, None, &mut routes, &mut fib);
                if n > 0 {
                    warn!(%peer, removed = n, "graceful restart: timer expired, stale routes removed");
                }
            }
        }
        // Questions from the API, answered from the tables as they are now.
        while let Ok((req, reply)) = api_rx.try_recv() {
            did = true;
            if req == crate::api::Request::Stats {
                let body = serde_json::json!({
                    "workers": all_counters.len(),
                    "packets": counters_json(&all_counters),
                    "ports": io_setup.ports_json(),
                    "vpn_routes": vpn.learned(),
                    "nexthops": routes.nexthops_in_use(),
                });
                let _ = reply.send(body.to_string());
                continue;
            }
            if let crate::api::Request::Refresh(peer) = req {
                // ROUTE-REFRESH (RFC 2918) for each VPN family negotiated.
                let body = match (peer_state.get(&peer), outboxes.get(&peer)) {
                    (Some(p), Some((tx, _))) if p.state == "Established" => {
                        let fams: Vec<(Afi, Safi)> = p
                            .families
                            .iter()
                            .copied()
                            .filter(|(_, s)| *s == Safi::MPLS_VPN)
                            .collect();
                        for (afi, safi) in &fams {
                            let _ = tx.send(Message::RouteRefresh {
                                afi: *afi,
                                safi: *safi,
                                subtype: 0,
                            });
                        }
                        info!(%peer, families = fams.len(), "route refresh sent");
                        serde_json::json!({"peer": peer.to_string(), "refreshed": fams.iter().map(|(a, s)| crate::bgp::fsm::family_name(*a, *s)).collect::<Vec<_>>()}).to_string()
                    }
                    (Some(_), Some(_)) => serde_json::json!({"error": format!("session with {peer} is not established")}).to_string(),
                    _ => serde_json::json!({"error": format!("{peer} is not a configured peer")}).to_string(),
                };
                let _ = reply.send(body);
                continue;
            }
            let _ = reply.send(answer(req, &vpn, &peer_state));
        }
        // One summary line per absorbed run of BGP updates (the queue was
        // drained above), once the forwarding tables hold them too. Not
        // waited for: the batches still being applied would stall the
        // next UPDATEs' decisions; the line comes on a later turn.
        if bgp_changes > 0 && fib.is_applied() {
            fib.wait_applied();
            info!(changes = bgp_changes, held = vpn.learned(), "VPN routes");
            bgp_changes = 0;
        }
        if RELOAD.swap(false, Ordering::SeqCst) {
            reload(path, &mut running, &mut routes, &mut fib);
            did = true;
        }
        fib.collect();
        if !did {
            // Nothing to do: wait for BGP (taken up at once when it comes)
            // or for the next look at the other sources.
            match bgp_rx.recv_timeout(Duration::from_micros(500)) {
                Ok(ev) => arrived = Some(ev),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // No session left to send (the loop holds a sender, so
                // not expected): wait as long anyway rather than spin.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        if last_stats.elapsed() > Duration::from_secs(60) {
            last_stats = Instant::now();
            log_counters(&all_counters);
            io_setup.log_ports();
        }
    }
    bgp_stop.store(true, Ordering::SeqCst);
    for s in sessions {
        let _ = s.join();
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    io_setup.log_ports();
    io_setup.close();
    log_counters(&all_counters);
    info!("stopped");
    Ok(())
}

/// Our End-of-RIB for the VPN families negotiated in `families`.
fn send_vpn_eor(tx: &std::sync::mpsc::Sender<Message>, families: &[(Afi, Safi)]) {
    let vpn: Vec<(Afi, Safi)> = families
        .iter()
        .copied()
        .filter(|(_, s)| *s == Safi::MPLS_VPN)
        .collect();
    for m in crate::vpn::Vpn::end_of_rib_markers(&vpn) {
        let _ = tx.send(m);
    }
}

/// The workers' counters summed.
struct Totals {
    rx: u64,
    tx: u64,
    tx_refused: u64,
    /// Each reason a packet was not forwarded, with its count.
    reasons: Vec<(Reason, u64)>,
}

fn totals(all: &[Arc<CachePadded<Counters>>]) -> Totals {
    let sum = |f: &dyn Fn(&Counters) -> u64| -> u64 { all.iter().map(|c| f(c)).sum() };
    Totals {
        rx: sum(&|c| c.rx.load(Ordering::Relaxed)),
        tx: sum(&|c| c.tx.load(Ordering::Relaxed)),
        tx_refused: sum(&|c| c.tx_refused.load(Ordering::Relaxed)),
        reasons: Reason::ALL
            .iter()
            .map(|r| (*r, sum(&|c| c.get(*r))))
            .collect(),
    }
}

/// The counters for `/stats`: received, sent, refused, and every reason a
/// packet was not forwarded (zero or not).
fn counters_json(all: &[Arc<CachePadded<Counters>>]) -> serde_json::Value {
    let t = totals(all);
    let reasons: serde_json::Map<String, serde_json::Value> = t
        .reasons
        .iter()
        .map(|(r, n)| (r.name().to_string(), (*n).into()))
        .collect();
    serde_json::json!({
        "rx": t.rx,
        "tx": t.tx,
        "tx_refused": t.tx_refused,
        "not_forwarded": reasons,
    })
}

fn log_counters(all: &[Arc<CachePadded<Counters>>]) {
    let t = totals(all);
    let reasons: Vec<String> = t
        .reasons
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}={n}", r.name()))
        .collect();
    info!(rx = t.rx, tx = t.tx, tx_refused = t.tx_refused, not_forwarded = %reasons.join(" "), "counters");
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn log_neighbor(c: Change) {
    match c {
        Change::Resolved(ip, mac) => info!(%ip, %mac, "next hop resolved"),
        Change::Lost(ip) => warn!(%ip, "next hop lost"),
    }
}
