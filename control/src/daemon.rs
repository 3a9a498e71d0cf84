//! `vpnfwd run`: build the tables from the configuration, open the ports,
//! start the workers and serve exceptions until SIGINT or SIGTERM.
//!
//! The control thread is the only writer of the tables. It answers ARP for
//! each port's gateway address (proxy, as bagpipe-bgp does) and echo
//! requests to it, and sends ICMP time-exceeded for expired packets, all
//! from the exception queue the workers fill.

use crate::config::{parse_mac, parse_prefix, Config, EncapKind, IdleMode};
use crate::exceptions::Responder;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use dataplane::fib::*;
use dataplane::io::afpacket::{AfPacketOptions, AfPacketPort};
use dataplane::pipeline::{Counters, Exception, Pipeline, RateLimit, Reason};
use dataplane::wire::mpls::Label;
use dataplane::wire::MacAddr;
use dataplane::worker::{self, Idle, PacketIo, WorkerConfig};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

type RemoteKey = (u32, std::net::Ipv4Addr, EncapKind, Option<u32>, String);

/// The remote VPN routes of the configuration as installed in the tables,
/// so that a reload applies only the difference.
#[derive(Debug, Default)]
pub struct RouteSet {
    uplink: Option<(PortId, MacAddr)>,
    next_nh: u32,
    nexthops: HashMap<RemoteKey, NexthopId>,
    installed: HashMap<(VrfId, IpAddr, u8), RemoteKey>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteDiff {
    /// Routes added or changed.
    pub added: usize,
    /// Routes withdrawn.
    pub removed: usize,
}

impl RouteSet {
    /// Make the tables hold exactly `cfg`'s routes: install what is new or
    /// changed, withdraw what is gone, drop nexthops nothing uses.
    ///
    /// # Errors
    /// [`StartError`] naming the route that could not be installed; routes
    /// before it are applied.
    pub fn apply(&mut self, fib: &mut Fib, cfg: &Config) -> Result<RouteDiff, StartError> {
        let vrf_id = |name: &str| cfg.vrf_index(name).map(|i| VrfId(i as u32 + 1));
        let mut want: HashMap<(VrfId, IpAddr, u8), (RemoteKey, usize)> = HashMap::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            let at = format!("route[{i}] ({})", r.prefix);
            let vrf =
                vrf_id(&r.vrf).ok_or_else(|| StartError::Other(format!("{at}: unknown VRF")))?;
            let (a, l) =
                parse_prefix(&r.prefix).map_err(|e| StartError::Other(format!("{at}: {e}")))?;
            let key = (
                r.label,
                r.pe,
                r.encap,
                r.transport_label,
                r.nexthop_mac.clone(),
            );
            want.insert((vrf, a, l), (key, i));
        }
        let mut diff = RouteDiff::default();
        let gone: Vec<(VrfId, IpAddr, u8)> = self
            .installed
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            let (vrf, a, l) = k;
            match a {
                IpAddr::V4(a) => fib.remove_v4(vrf, a, l),
                IpAddr::V6(a) => fib.remove_v6(vrf, a, l),
            }
            .map_err(fib_err(format!("withdrawing {a}/{l}")))?;
            self.installed.remove(&k);
            diff.removed += 1;
        }
        for (k, (key, i)) in want {
            if self.installed.get(&k) == Some(&key) {
                continue;
            }
            let r = &cfg.routes[i];
            let at = format!("route[{i}] ({})", r.prefix);
            let nh = match self.nexthops.get(&key) {
                Some(nh) => *nh,
                None => {
                    let (up, up_mac) = self
                        .uplink
                        .ok_or_else(|| StartError::Other(format!("{at}: no uplink")))?;
                    let label = Label::new(r.label)
                        .ok_or_else(|| StartError::Other(format!("{at}: bad label")))?;
                    let me = cfg.uplink.as_ref().and_then(|u| u.address);
                    let encap = match (r.encap, me) {
                        (EncapKind::Mpls, _) => Encap::Ethernet {
                            transport: r.transport_label.and_then(Label::new),
                        },
                        (EncapKind::Gre, Some(src)) => Encap::Gre { src, dst: r.pe },
                        (EncapKind::Udp, Some(src)) => Encap::Udp { src, dst: r.pe },
                        _ => {
                            return Err(StartError::Other(format!(
                                "{at}: GRE and UDP need uplink.address"
                            )))
                        }
                    };
                    let l2 = L2Rewrite {
                        dst: parse_mac(&r.nexthop_mac).map_err(StartError::Other)?,
                        src: up_mac,
                        vlan: None,
                    };
                    self.next_nh += 1;
                    let nh = NexthopId::new(self.next_nh)
                        .ok_or_else(|| StartError::Other("nexthop ids exhausted".into()))?;
                    fib.set_nexthop(
                        nh,
                        Nexthop::Remote(RemoteNexthop::new(up, label, encap, l2)),
                    )
                    .map_err(fib_err(at.clone()))?;
                    self.nexthops.insert(key.clone(), nh);
                    nh
                }
            };
            let (vrf, a, l) = k;
            match a {
                IpAddr::V4(a) => fib.insert_v4(vrf, a, l, nh),
                IpAddr::V6(a) => fib.insert_v6(vrf, a, l, nh),
            }
            .map_err(fib_err(at))?;
            self.installed.insert(k, key);
            diff.added += 1;
        }
        let used: std::collections::HashSet<&RemoteKey> = self.installed.values().collect();
        let unused: Vec<RemoteKey> = self
            .nexthops
            .keys()
            .filter(|k| !used.contains(k))
            .cloned()
            .collect();
        for k in unused {
            if let Some(nh) = self.nexthops.remove(&k) {
                fib.remove_nexthop(nh);
            }
        }
        Ok(diff)
    }
}

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
            eprintln!("vpnfwd: reload refused, nothing changed: {path}: {e}");
            return;
        }
    };
    let same = |a: &Config, b: &Config| {
        format!("{:?}{:?}{:?}{:?}", a.dataplane, a.vrfs, a.uplink, a.ports)
            == format!("{:?}{:?}{:?}{:?}", b.dataplane, b.vrfs, b.uplink, b.ports)
    };
    if !same(running, &new) {
        eprintln!("vpnfwd: reload refused, nothing changed: only [[route]] entries change without a restart");
        return;
    }
    match routes.apply(fib, &new) {
        Ok(d) => {
            eprintln!(
                "vpnfwd: reloaded {path}: +{} -{} routes",
                d.added, d.removed
            );
            *running = new;
        }
        Err(e) => eprintln!("vpnfwd: reload stopped part-way: {e}"),
    }
}

/// Run the router with the configuration at `path` until SIGINT or SIGTERM.
/// SIGHUP re-reads the file and applies the changes to the `[[route]]`
/// entries (other sections need a restart; a reload that changes them, or
/// that does not validate, is refused with a message and changes nothing).
///
/// # Errors
/// [`StartError`] when the configuration cannot be applied.
pub fn run(path: &str, cfg: &Config) -> Result<(), StartError> {
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
    let fanout = (cores.len() > 1).then_some((std::process::id() & 0xffff) as u16);
    let idle = match cfg.dataplane.idle {
        IdleMode::Busy => Idle::Busy,
        IdleMode::Sleep => Idle::Sleep(Duration::from_micros(200)),
    };
    let exceptions = Arc::new(ArrayQueue::<Exception>::new(1024));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut all_counters = Vec::new();
    for core in cores {
        let mut io: Vec<(PortId, Box<dyn PacketIo>)> = Vec::new();
        for (id, name) in &ports {
            let opts = AfPacketOptions {
                fanout_group: fanout,
                ..AfPacketOptions::default()
            };
            io.push((*id, Box::new(AfPacketPort::open(name, &opts)?)));
        }
        let counters = Arc::new(CachePadded::new(Counters::default()));
        all_counters.push(counters.clone());
        let pipe = Pipeline::new(counters, exceptions.clone(), RateLimit::default());
        let reader = fib.reader();
        let stop = stop.clone();
        let wc = WorkerConfig {
            core,
            ports: io,
            idle,
        };
        workers.push(
            std::thread::Builder::new()
                .name(format!("vpnfwd-worker{}", workers.len()))
                .spawn(move || worker::run(wc, reader, pipe, stop))
                .map_err(|e| StartError::Other(format!("starting a worker: {e}")))?,
        );
    }
    let mut responder = Responder::new(&info)?;
    install_signal_handlers();
    eprintln!(
        "vpnfwd: forwarding on {} interface(s), {} VRF(s), {} worker(s)",
        ports.len(),
        cfg.vrfs.len(),
        workers.len()
    );
    let mut last_stats = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        let mut did = false;
        while let Some(e) = exceptions.pop() {
            responder.handle(&e);
            did = true;
        }
        if RELOAD.swap(false, Ordering::SeqCst) {
            reload(path, &mut running, &mut routes, &mut fib);
            did = true;
        }
        fib.collect();
        if !did {
            std::thread::sleep(Duration::from_micros(500));
        }
        if last_stats.elapsed() > Duration::from_secs(60) {
            last_stats = Instant::now();
            log_counters(&all_counters);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    log_counters(&all_counters);
    eprintln!("vpnfwd: stopped");
    Ok(())
}

fn log_counters(all: &[Arc<CachePadded<Counters>>]) {
    let rx: u64 = all.iter().map(|c| c.rx.load(Ordering::Relaxed)).sum();
    let tx: u64 = all.iter().map(|c| c.tx.load(Ordering::Relaxed)).sum();
    let mut line = format!("vpnfwd: rx {rx} tx {tx}");
    for r in Reason::ALL {
        let n: u64 = all.iter().map(|c| c.get(*r)).sum();
        if n > 0 {
            line.push_str(&format!(" {}={n}", r.name()));
        }
    }
    eprintln!("{line}");
}
