//! The DPDK back-end's ports: the EAL, one device per interface with a
//! queue pair per worker and a pool per device, the uplink's kernel twin
//! (`net_tap`) for the router's own traffic, and their link state,
//! counters and free buffers for the log and the API.

use super::{PortId, StartError, WorkerPorts};
use crate::config::{Config, DpdkDriver};
use dataplane::io::dpdk::{Device, Eal, EalOptions, Mempool};
use dataplane::wire::MacAddr;
use std::sync::Arc;
use tracing::info;

pub(super) struct DpdkPorts {
    eal: Eal,
    devices: Vec<(PortId, Device)>,
    twin: Option<(PortId, Device)>,
}

fn dpdk_err(e: dataplane::io::dpdk::DpdkError) -> StartError {
    StartError::Other(e.to_string())
}

impl DpdkPorts {
    pub(super) fn open(
        cfg: &Config,
        ports: &[(PortId, String)],
        cores: &[Option<usize>],
        uplink: Option<(PortId, MacAddr)>,
    ) -> Result<DpdkPorts, StartError> {
        let d = cfg.dataplane.dpdk.clone().unwrap_or_default();
        let mut vdevs = Vec::new();
        let mut names = Vec::new();
        for (i, (id, iface)) in ports.iter().enumerate() {
            if !std::path::Path::new("/sys/class/net").join(iface).exists() {
                return Err(StartError::Other(format!(
                    "interface {iface:?} does not exist (check `ip link` and the configuration)"
                )));
            }
            let drv = match d.driver {
                DpdkDriver::AfXdp => "net_af_xdp",
                DpdkDriver::AfPacket => "net_af_packet",
            };
            let v = d
                .devargs
                .get(iface)
                .cloned()
                .unwrap_or_else(|| format!("{drv}{i},iface={iface}"));
            names.push((*id, v.split(',').next().unwrap_or("").to_string()));
            vdevs.push(v);
        }
        let kernel_if = match (&d.kernel_interface, d.driver) {
            (Some(k), _) => Some(k.clone()),
            (None, DpdkDriver::AfXdp) => Some("vpnfwd0".to_string()),
            (None, DpdkDriver::AfPacket) => None,
        };
        let mut twin_name = None;
        if let (Some(k), Some((_, mac))) = (&kernel_if, uplink) {
            vdevs.push(format!("net_tap_kernel,iface={k},mac={mac}"));
            twin_name = Some("net_tap_kernel".to_string());
        }
        let eal = Eal::init(&EalOptions {
            cores: cores.iter().map(|c| c.unwrap_or(0)).collect(),
            vdevs,
            no_huge: d.no_huge,
            memory_mb: d.memory_mb,
            extra: d.eal_args.clone(),
            ..EalOptions::default()
        })
        .map_err(dpdk_err)?;
        let main_socket = eal.socket_id();
        // One pool per device, on the device's NUMA socket: net_af_xdp
        // registers its pool as the socket's UMEM, which two devices
        // cannot share by default.
        let pool = |i: usize, name: &str| -> Result<Arc<Mempool>, StartError> {
            let socket = Device::socket_of(&eal, name, main_socket);
            let pool_name = format!("vpnfwd_pool{i}");
            // Software devices do no DMA: their buffers need not be
            // IOVA-contiguous, and net_af_xdp needs them gap-free.
            let pool = if name.starts_with("net_") {
                Mempool::new_packed(&eal, &pool_name, d.mbufs, socket)
            } else {
                Mempool::new(&eal, &pool_name, d.mbufs, socket)
            };
            Ok(Arc::new(pool.map_err(dpdk_err)?))
        };
        let queues = cores.len().max(1) as u16;
        let mut devices = Vec::new();
        for (i, (id, name)) in names.into_iter().enumerate() {
            let dev = Device::start(&eal, &name, queues, pool(i, &name)?).map_err(dpdk_err)?;
            info!(
                device = name,
                port = dev.port_id(),
                link_up = dev.link().up,
                "DPDK port started"
            );
            devices.push((id, dev));
        }
        let mut twin = None;
        if let (Some(n), Some((up, _)), Some(k)) = (twin_name, uplink, &kernel_if) {
            let dev =
                Device::start(&eal, &n, queues, pool(devices.len(), &n)?).map_err(dpdk_err)?;
            let run = |args: &[&str]| -> Result<(), StartError> {
                let st = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .map_err(|e| StartError::Other(format!("running ip: {e}")))?;
                if st.success() {
                    Ok(())
                } else {
                    Err(StartError::Other(format!("`ip {}` failed", args.join(" "))))
                }
            };
            if let Some(a) = &d.kernel_address {
                run(&["addr", "replace", a, "dev", k])?;
            }
            run(&["link", "set", "dev", k, "up"])?;
            info!(interface = k.as_str(), address = ?d.kernel_address, "kernel twin of the uplink");
            twin = Some((up, dev));
        }
        Ok(DpdkPorts { eal, devices, twin })
    }

    pub(super) fn worker(&mut self, w: usize) -> Result<WorkerPorts, StartError> {
        let mut io: Vec<(PortId, Box<dyn dataplane::worker::PacketIo>)> = Vec::new();
        for (id, dev) in &self.devices {
            io.push((*id, Box::new(dev.queue(w as u16).map_err(dpdk_err)?)));
        }
        let mut kernel: Vec<(PortId, Box<dyn dataplane::worker::PacketIo>)> = Vec::new();
        if let Some((id, dev)) = &self.twin {
            kernel.push((*id, Box::new(dev.queue(w as u16).map_err(dpdk_err)?)));
        }
        Ok((io, kernel))
    }

    pub(super) fn ports_json(&self) -> serde_json::Value {
        self.devices
            .iter()
            .chain(self.twin.iter())
            .map(|(_, d)| {
                let (l, st, pool) = (d.link(), d.stats(), d.pool());
                serde_json::json!({
                    "device": d.name(),
                    "link_up": l.up,
                    "speed_mbps": l.speed_mbps,
                    "ipackets": st.ipackets,
                    "opackets": st.opackets,
                    "imissed": st.imissed,
                    "ierrors": st.ierrors,
                    "oerrors": st.oerrors,
                    "rx_nombuf": st.rx_nombuf,
                    "mbufs": pool.size(),
                    "mbufs_free": pool.available(),
                })
            })
            .collect()
    }

    pub(super) fn log_ports(&self) {
        for d in self.devices.iter().chain(self.twin.iter()).map(|(_, d)| d) {
            let l = d.link();
            let st = d.stats();
            info!(
                device = d.name(),
                link_up = l.up,
                speed_mbps = l.speed_mbps,
                ipackets = st.ipackets,
                opackets = st.opackets,
                imissed = st.imissed,
                ierrors = st.ierrors,
                oerrors = st.oerrors,
                rx_nombuf = st.rx_nombuf,
                "DPDK port"
            );
        }
    }

    pub(super) fn close(self) {
        // With the workers stopped (their buffers gave back the mbufs
        // they held) and the device closed, what is missing from a pool
        // is what the driver keeps (net_af_xdp's fill ring) or a leak.
        for (_, d) in self.devices.into_iter().chain(self.twin) {
            let (name, pool) = (d.name().to_string(), d.pool());
            d.close();
            info!(
                device = name,
                free = pool.available(),
                size = pool.size(),
                "DPDK pool after close"
            );
        }
        self.eal.cleanup();
    }
}
