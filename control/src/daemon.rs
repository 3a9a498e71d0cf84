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
    let mut new_nh = || {
        next_nh += 1;
        NexthopId::new(next_nh).expect("fewer than 2^31 nexthops")
    };
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
        let nh = new_nh();
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
    let mut remote: HashMap<(u32, std::net::Ipv4Addr, EncapKind, Option<u32>, String), NexthopId> =
        HashMap::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let at = format!("route[{i}] ({})", r.prefix);
        let (up, up_mac) =
            uplink_mac.ok_or_else(|| StartError::Other(format!("{at}: no uplink")))?;
        let vrf = vrf_id(&r.vrf).ok_or_else(|| StartError::Other(format!("{at}: unknown VRF")))?;
        let key = (
            r.label,
            r.pe,
            r.encap,
            r.transport_label,
            r.nexthop_mac.clone(),
        );
        let nh = match remote.get(&key) {
            Some(nh) => *nh,
            None => {
                let nh = new_nh();
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
                fib.set_nexthop(
                    nh,
                    Nexthop::Remote(RemoteNexthop::new(up, label, encap, l2)),
                )
                .map_err(fib_err(at.clone()))?;
                remote.insert(key, nh);
                nh
            }
        };
        match parse_prefix(&r.prefix).map_err(StartError::Other)? {
            (IpAddr::V4(a), l) => fib.insert_v4(vrf, a, l, nh),
            (IpAddr::V6(a), l) => fib.insert_v6(vrf, a, l, nh),
        }
        .map_err(fib_err(at))?;
    }
    Ok(Built { fib, ports, info })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[allow(unsafe_code)]
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Run the router until a signal arrives.
///
/// # Errors
/// [`StartError`] when the configuration cannot be applied.
pub fn run(cfg: &Config) -> Result<(), StartError> {
    let built = build(cfg)?;
    let Built { fib, ports, info } = built;
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
