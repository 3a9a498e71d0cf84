//! Poll-mode workers: one thread per core, pinned, polling its ports in
//! bursts through the pipeline.
//!
//! Each loop iteration: receive a burst from each port, run it through the
//! [`Pipeline`], hand each output batch to its port, then announce a
//! quiescent state so the control thread can reclaim table memory. Busy-poll
//! by default; with [`Idle::Sleep`] the worker goes offline and sleeps
//! after an empty round, longer after each further one (up to
//! [`SLEEP_BACKOFF`] times the base), for laptops and CI.

use crate::fib::{FibReader, PortId};
use crate::io::afpacket::AfPacketPort;
use crate::io::mem::MemPort;
use crate::io::PacketBuf;
use crate::pipeline::{OutBatches, Pipeline, Reason, Verdict, MAX_BURST};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port a worker can poll.
pub trait PacketIo: Send {
    /// Receive up to `bufs.len()` frames.
    fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize;
    /// Transmit frames; returns how many were taken.
    fn tx_burst(&mut self, frames: &[&[u8]]) -> usize;
    /// Transmit the frames of `bufs` at `idx`; returns how many were taken.
    /// A port that can send a buffer's storage itself (a DPDK mbuf the
    /// frame was received in) takes it out of the buffer; the default
    /// copies the frames through [`PacketIo::tx_burst`].
    fn tx_bufs(&mut self, bufs: &mut [PacketBuf], idx: &[u8]) -> usize {
        let mut took = 0;
        for chunk in idx.chunks(MAX_BURST) {
            let frames: arrayvec::ArrayVec<&[u8], MAX_BURST> = chunk
                .iter()
                .filter_map(|i| bufs.get(usize::from(*i)).map(PacketBuf::frame))
                .collect();
            took += self.tx_burst(&frames);
        }
        took
    }
}

impl PacketIo for AfPacketPort {
    fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize {
        AfPacketPort::rx_burst(self, bufs)
    }
    fn tx_burst(&mut self, frames: &[&[u8]]) -> usize {
        AfPacketPort::tx_burst(self, frames)
    }
}

/// An AF_PACKET receive ring with an AF_XDP transmit socket: `sendmmsg`
/// costs a socket buffer and a full `dev_queue_xmit` per frame, an AF_XDP
/// ring one kick per burst.
pub struct AfPacketXdpTx {
    /// Receives.
    pub rx: AfPacketPort,
    /// Transmits.
    pub tx: crate::io::afxdp::AfXdpTx,
}

impl PacketIo for AfPacketXdpTx {
    fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize {
        self.rx.rx_burst(bufs)
    }
    fn tx_burst(&mut self, frames: &[&[u8]]) -> usize {
        self.tx.tx_burst(frames)
    }
}

#[cfg(feature = "dpdk")]
impl PacketIo for crate::io::dpdk::DpdkQueue {
    fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize {
        crate::io::dpdk::DpdkQueue::rx_burst(self, bufs)
    }
    fn tx_burst(&mut self, frames: &[&[u8]]) -> usize {
        crate::io::dpdk::DpdkQueue::tx_burst(self, frames)
    }
    fn tx_bufs(&mut self, bufs: &mut [PacketBuf], idx: &[u8]) -> usize {
        crate::io::dpdk::DpdkQueue::tx_bufs(self, bufs, idx)
    }
}

impl PacketIo for MemPort {
    fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize {
        MemPort::rx_burst(self, bufs)
    }
    fn tx_burst(&mut self, frames: &[&[u8]]) -> usize {
        for f in frames {
            self.tx_frame(f);
        }
        frames.len()
    }
}

/// What a worker does when a round finds no packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// Keep polling (lowest latency, one core at 100 %).
    #[default]
    Busy,
    /// Go offline and sleep: this long after a round with packets, twice
    /// as long after each further empty round, up to [`SLEEP_BACKOFF`]
    /// times this long.
    Sleep(Duration),
}

/// How many times its base an idle worker's sleep grows to.
pub const SLEEP_BACKOFF: u32 = 8;

/// The sleep after `current` (or the first, `None`) in a run of empty
/// rounds, for a base of `base`.
pub fn next_sleep(current: Option<Duration>, base: Duration) -> Duration {
    match current {
        None => base,
        Some(c) => (c * 2).min(base * SLEEP_BACKOFF),
    }
}

/// A worker's configuration.
pub struct WorkerConfig {
    /// Core to pin to, if any.
    pub core: Option<usize>,
    /// Ports, by dataplane port id.
    pub ports: Vec<(PortId, Box<dyn PacketIo>)>,
    /// Idle behaviour.
    pub idle: Idle,
    /// Kernel twins: for a port whose driver takes every frame away from
    /// the kernel (AF_XDP, a PCI NIC under DPDK), a tap interface that
    /// holds the router's own address. Frames the pipeline finds addressed
    /// to the router itself (BGP, ARP, neighbour discovery) are copied to
    /// the twin, and everything the kernel sends on the twin goes out of
    /// the port unchanged.
    pub kernel: Vec<(PortId, Box<dyn PacketIo>)>,
}

/// True for the frames a kernel twin receives.
fn for_kernel(v: &Verdict) -> bool {
    matches!(
        v,
        Verdict::Stop(Reason::LocalDelivery | Reason::ArpUplink | Reason::NeighborDiscovery)
    )
}

/// Run a worker until `stop` is set. Returns the number of frames the ports
/// refused on transmit.
pub fn run(
    mut cfg: WorkerConfig,
    mut fib: FibReader,
    mut pipe: Pipeline,
    stop: Arc<AtomicBool>,
) -> u64 {
    if let Some(c) = cfg.core {
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
    let mut bufs: Vec<PacketBuf> = (0..MAX_BURST).map(|_| PacketBuf::new()).collect();
    let mut verdicts = [Verdict::Tx(PortId(0)); MAX_BURST];
    let mut out = OutBatches::new();
    let start = Instant::now();
    let mut tx_refused = 0u64;
    let nports = cfg.ports.len();
    let mut asleep: Option<Duration> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        for p in 0..nports {
            let in_port = cfg.ports[p].0;
            let n = cfg.ports[p].1.rx_burst(&mut bufs);
            if n == 0 {
                continue;
            }
            busy = true;
            let now = start.elapsed().as_nanos() as u64;
            {
                let view = fib.view();
                pipe.process(&view, in_port, &mut bufs[..n], &mut verdicts, &mut out, now);
            }
            if let Some((_, twin)) = cfg.kernel.iter_mut().find(|(id, _)| *id == in_port) {
                let idx: arrayvec::ArrayVec<u8, MAX_BURST> = (0..n)
                    .filter(|i| for_kernel(&verdicts[*i]))
                    .map(|i| i as u8)
                    .collect();
                if !idx.is_empty() {
                    let refused = (idx.len() - twin.tx_bufs(&mut bufs, &idx)) as u64;
                    pipe.count_tx_refused(refused);
                    tx_refused += refused;
                }
            }
            for (port, idx) in out.iter() {
                match cfg.ports.iter_mut().find(|(id, _)| id == port) {
                    Some((_, io)) => {
                        let refused = (idx.len() - io.tx_bufs(&mut bufs, idx)) as u64;
                        pipe.count_tx_refused(refused);
                        tx_refused += refused;
                    }
                    None => {
                        pipe.count_tx_refused(idx.len() as u64);
                        tx_refused += idx.len() as u64;
                    }
                }
            }
        }
        // The kernel's own traffic (BGP, ARP) out of its port, unchanged.
        for k in 0..cfg.kernel.len() {
            let n = cfg.kernel[k].1.rx_burst(&mut bufs);
            if n == 0 {
                continue;
            }
            busy = true;
            let port = cfg.kernel[k].0;
            let idx: arrayvec::ArrayVec<u8, MAX_BURST> = (0..n as u8).collect();
            let refused = match cfg.ports.iter_mut().find(|(id, _)| *id == port) {
                Some((_, io)) => (n - io.tx_bufs(&mut bufs, &idx)) as u64,
                None => n as u64,
            };
            pipe.count_tx_refused(refused);
            tx_refused += refused;
        }
        fib.quiescent();
        if busy {
            asleep = None;
        } else if let Idle::Sleep(d) = cfg.idle {
            let s = next_sleep(asleep, d);
            asleep = Some(s);
            fib.offline();
            std::thread::sleep(s);
        }
    }
    fib.offline();
    tx_refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_worker_sleeps_longer_after_each_empty_round_up_to_a_bound() {
        let base = Duration::from_micros(200);
        let mut s = None;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let n = next_sleep(s, base);
            seen.push(n.as_micros());
            s = Some(n);
        }
        assert_eq!(seen, [200, 400, 800, 1600, 1600, 1600]);
    }
}
