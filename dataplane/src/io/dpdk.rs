//! DPDK back-end (cargo feature `dpdk`): EAL start-up, packet pools, ethdev
//! ports polled by the workers, and DPDK's LPM tables as benchmark
//! baselines.
//!
//! EAL is started once per process from [`EalOptions`]. Before handing the
//! arguments to DPDK the common mistakes are checked here (no free huge
//! pages, a missing interface, a malformed device string) so that each
//! gives one line saying what to do; DPDK's own log is captured during
//! start-up and its last line quoted when EAL still refuses. EAL runs with
//! `--in-memory`: nothing is left under `/dev/hugepages` when vpnfwd exits
//! or dies.
//!
//! A [`Device`] is one DPDK port (a PCI NIC, or a `net_af_packet` /
//! `net_af_xdp` / `net_tap` virtual device), configured with one RX and one
//! TX queue per worker (RSS spreads flows). [`DpdkQueue`] is a worker's
//! queue pair and implements the worker's port interface, zero-copy: the
//! worker's [`PacketBuf`]s borrow the received mbufs, the pipeline rewrites
//! each frame in its mbuf's data room, and the mbuf itself is transmitted.
//! Only frames that did not arrive in an mbuf (none on the forwarding
//! path) are copied into fresh ones.
//!
//! All `unsafe` for DPDK lives in this module.
#![allow(unsafe_code)]

use super::PacketBuf;
use dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What went wrong starting or driving DPDK. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// EAL refused to start.
    #[error("DPDK did not start: {0}")]
    Eal(String),
    /// EAL is already running in this process.
    #[error("DPDK is already initialised in this process")]
    AlreadyStarted,
    /// A device could not be found or set up.
    #[error("DPDK device {name}: {msg}")]
    Device {
        /// Device name.
        name: String,
        /// What failed and what to do.
        msg: String,
    },
    /// A pool or table could not be allocated.
    #[error("DPDK memory: {0}")]
    Memory(String),
}

/// How to start EAL.
#[derive(Debug, Clone, Default)]
pub struct EalOptions {
    /// Cores EAL may use (`-l`); empty means core 0. Workers pin themselves.
    pub cores: Vec<usize>,
    /// Virtual devices (`--vdev`), e.g. `net_af_xdp0,iface=eth1`.
    pub vdevs: Vec<String>,
    /// PCI devices to use (`-a`); with none and vdevs given, PCI is off.
    pub allow: Vec<String>,
    /// Run without huge pages (trials only: slower, no IOVA for real NICs).
    pub no_huge: bool,
    /// Memory to reserve, in MiB (`-m`).
    pub memory_mb: usize,
    /// File prefix for EAL's runtime files, so several processes coexist.
    pub file_prefix: Option<String>,
    /// Further EAL arguments, passed as given.
    pub extra: Vec<String>,
}

static STARTED: AtomicBool = AtomicBool::new(false);
static LOG_LOCK: Mutex<()> = Mutex::new(());

/// Free 2 MB (or default-size) huge pages, from /proc/meminfo.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Check one `--vdev` string: a known driver name, then `key=value` pairs,
/// and for the Linux-interface drivers an `iface=` that exists.
pub fn check_vdev(vdev: &str) -> Result<(), String> {
    let mut parts = vdev.split(',');
    let name = parts.next().unwrap_or("");
    const DRIVERS: &[&str] = &[
        "net_af_packet",
        "net_af_xdp",
        "net_tap",
        "net_ring",
        "net_null",
    ];
    let Some(driver) = DRIVERS.iter().find(|d| name.starts_with(**d)) else {
        return Err(format!(
            "vdev {vdev:?}: unknown driver {name:?} (expected one of {})",
            DRIVERS.join(", ")
        ));
    };
    if !name[driver.len()..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "vdev {vdev:?}: device name {name:?} may hold only letters, digits and '_'"
        ));
    }
    let mut iface = None;
    for kv in parts {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("vdev {vdev:?}: {kv:?} is not key=value"));
        };
        if k.is_empty() || v.is_empty() {
            return Err(format!("vdev {vdev:?}: empty key or value in {kv:?}"));
        }
        if k == "iface" {
            iface = Some(v);
        }
    }
    if matches!(*driver, "net_af_packet" | "net_af_xdp") {
        let Some(i) = iface else {
            return Err(format!("vdev {vdev:?}: {driver} needs iface=<interface>"));
        };
        if !std::path::Path::new("/sys/class/net").join(i).exists() {
            return Err(format!(
                "vdev {vdev:?}: interface {i:?} does not exist (check `ip link`)"
            ));
        }
    }
    Ok(())
}

/// The running EAL. Dropping it does not stop DPDK (ports may still be in
/// use); call [`Eal::cleanup`] at exit.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Start EAL. Fails with one line when huge pages are missing (and
    /// `no_huge` is off), a vdev is malformed or names a missing interface,
    /// or DPDK itself refuses (its last log line is quoted).
    pub fn init(opts: &EalOptions) -> Result<Eal, DpdkError> {
        if !opts.no_huge && free_hugepages() == 0 {
            return Err(DpdkError::Eal(
                "no free huge pages: reserve some with \
                 `echo 256 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` \
                 (see hugepages.md), or set no_huge = true for a trial"
                    .into(),
            ));
        }
        for v in &opts.vdevs {
            check_vdev(v).map_err(DpdkError::Eal)?;
        }
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyStarted);
        }
        let mut args: Vec<String> = vec!["vpnfwd".into()];
        let cores = if opts.cores.is_empty() {
            "0".to_string()
        } else {
            opts.cores
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        args.extend(["-l".into(), cores, "--in-memory".into()]);
        if opts.no_huge {
            args.push("--no-huge".into());
        }
        if opts.memory_mb > 0 {
            args.extend(["-m".into(), opts.memory_mb.to_string()]);
        }
        if let Some(p) = &opts.file_prefix {
            args.extend(["--file-prefix".into(), p.clone()]);
        }
        for v in &opts.vdevs {
            args.extend(["--vdev".into(), v.clone()]);
        }
        if opts.allow.is_empty() {
            if !opts.vdevs.is_empty() {
                args.push("--no-pci".into());
            }
        } else {
            for a in &opts.allow {
                args.extend(["-a".into(), a.clone()]);
            }
        }
        args.extend(opts.extra.iter().cloned());
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| DpdkError::Eal("an EAL argument contains a NUL byte".into()))?;
        let mut argv: Vec<*mut libc::c_char> = cargs
            .iter()
            .map(|c| c.as_ptr() as *mut libc::c_char)
            .collect();
        // EAL pins the calling thread to its main lcore, and every thread
        // started from it afterwards would inherit that one core (workers
        // pin themselves; the control and BGP threads must float): keep the
        // affinity we had and put it back.
        // SAFETY: all-zero is a valid (empty) cpu_set_t.
        let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid cpu_set_t of the size passed, for this thread.
        let have_mask = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus)
        } == 0;
        let log = LogCapture::start();
        // SAFETY: argv points at NUL-terminated strings that outlive the
        // call (EAL keeps pointers into them; `cargs` is leaked below on
        // success); EAL is started at most once (STARTED).
        let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        let captured = log.finish();
        if rc < 0 {
            STARTED.store(false, Ordering::SeqCst);
            // SAFETY: reads the calling thread's rte_errno.
            let errno = unsafe { sys::vpnfwd_rte_errno() };
            let last = captured
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            return Err(DpdkError::Eal(format!(
                "{} ({}); check the DPDK device strings and EAL arguments",
                if last.is_empty() {
                    "EAL init failed"
                } else {
                    &last
                },
                strerror(errno)
            )));
        }
        if have_mask {
            // SAFETY: the mask read above, for this thread.
            unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus);
            }
        }
        std::mem::forget(cargs);
        std::mem::forget(argv);
        Ok(Eal { _private: () })
    }

    /// Release DPDK's resources (huge pages, devices). Call once, after
    /// every device was closed and every worker stopped.
    pub fn cleanup(self) {
        // SAFETY: EAL was started; no DPDK object is used after this.
        unsafe {
            sys::rte_eal_cleanup();
        }
    }

    /// The NUMA socket of the calling thread (for pools).
    pub fn socket_id(&self) -> i32 {
        // SAFETY: plain query after EAL start.
        unsafe { sys::rte_socket_id() as i32 }
    }
}

/// Bytes allocated from DPDK's heap on `socket` (tables, pools).
pub fn heap_allocated_bytes(_eal: &Eal, socket: i32) -> u64 {
    let mut st = sys::rte_malloc_socket_stats::default();
    // SAFETY: EAL running; valid out-pointer.
    let rc = unsafe { sys::rte_malloc_get_socket_stats(socket, &mut st) };
    if rc < 0 {
        0
    } else {
        st.heap_allocsz_bytes as u64
    }
}

fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string.
    unsafe { CStr::from_ptr(sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// Sends DPDK's log to a memory stream for the duration of start-up, so its
/// last line can be quoted in an error, then back to stderr.
struct LogCapture {
    file: *mut libc::FILE,
    buf: *mut libc::c_char,
    len: libc::size_t,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl LogCapture {
    fn start() -> Box<LogCapture> {
        let lock = LOG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = Box::new(LogCapture {
            file: std::ptr::null_mut(),
            buf: std::ptr::null_mut(),
            len: 0,
            _lock: lock,
        });
        // SAFETY: open_memstream stores into the boxed (address-stable)
        // fields, which outlive the stream (closed in finish).
        c.file = unsafe { libc::open_memstream(&mut c.buf, &mut c.len) };
        if !c.file.is_null() {
            // SAFETY: a valid FILE*; DPDK writes its log there until reset.
            unsafe { sys::rte_openlog_stream(c.file.cast()) };
        }
        c
    }

    // Boxed on purpose: the stream writes through pointers into it.
    #[allow(clippy::boxed_local)]
    fn finish(mut self: Box<Self>) -> String {
        if self.file.is_null() {
            return String::new();
        }
        // SAFETY: restore stderr logging before closing our stream; the
        // buffer is valid after fclose and freed here once.
        unsafe {
            sys::rte_openlog_stream(std::ptr::null_mut());
            libc::fclose(self.file);
            self.file = std::ptr::null_mut();
            let s = if self.buf.is_null() {
                String::new()
            } else {
                let bytes = std::slice::from_raw_parts(self.buf.cast::<u8>(), self.len);
                let s = String::from_utf8_lossy(bytes).into_owned();
                libc::free(self.buf.cast());
                s
            };
            self.buf = std::ptr::null_mut();
            s
        }
    }
}

/// A packet-buffer pool.
#[derive(Debug)]
pub struct Mempool {
    ptr: *mut sys::rte_mempool,
    size: u32,
}

// SAFETY: DPDK mempools are multi-thread safe (per-lcore caches plus a
// lock-free ring); the pointer is only freed on drop.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// A pool of `n` mbufs of the default 2 KiB data room.
    pub fn new(_eal: &Eal, name: &str, n: u32, socket: i32) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Memory("bad pool name".into()))?;
        // SAFETY: EAL is running (witnessed by `_eal`); the name is
        // NUL-terminated and copied by DPDK.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                256,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        Self::created(ptr, n)
    }

    /// As [`Mempool::new`], with the buffers back to back and no gaps at
    /// page boundaries: for software devices that do no DMA. `net_af_xdp`
    /// needs it: it registers the span of `n` buffers from the first as its
    /// UMEM, so with the default layout (no buffer across a huge-page
    /// boundary, hence gaps) the pool's last buffers lie outside it and
    /// frames sent from them vanish.
    pub fn new_packed(_eal: &Eal, name: &str, n: u32, socket: i32) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Memory("bad pool name".into()))?;
        // SAFETY: EAL is running (witnessed by `_eal`); the name is
        // NUL-terminated and copied by DPDK.
        let ptr = unsafe {
            sys::vpnfwd_pktmbuf_pool_create_packed(
                cname.as_ptr(),
                n,
                256,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        Self::created(ptr, n)
    }

    /// The pool a create call returned, or its failure (rte_errno).
    fn created(ptr: *mut sys::rte_mempool, n: u32) -> Result<Mempool, DpdkError> {
        if ptr.is_null() {
            // SAFETY: reads this thread's rte_errno.
            let e = unsafe { sys::vpnfwd_rte_errno() };
            return Err(DpdkError::Memory(format!(
                "cannot create a pool of {n} packet buffers: {} (reserve more huge pages or raise memory_mb)",
                strerror(e)
            )));
        }
        Ok(Mempool { ptr, size: n })
    }

    /// Buffers in the pool, free or not.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Buffers currently free in the pool.
    pub fn available(&self) -> u32 {
        // SAFETY: a live pool.
        unsafe { sys::rte_mempool_avail_count(self.ptr) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is ours and no device uses it any more (devices
        // hold an Arc to it and are closed first).
        unsafe { sys::rte_mempool_free(self.ptr) }
    }
}

/// Link state of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Link up.
    pub up: bool,
    /// Speed in Mb/s (0 if unknown).
    pub speed_mbps: u32,
}

/// A device's hardware counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Frames the device dropped for lack of RX descriptors or buffers.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// RX buffer allocation failures.
    pub rx_nombuf: u64,
}

/// One started DPDK port.
#[derive(Debug)]
pub struct Device {
    port: u16,
    name: String,
    queues: u16,
    pool: std::sync::Arc<Mempool>,
}

const RX_DESC: u16 = 4096;
const TX_DESC: u16 = 1024;

impl Device {
    /// Find the device called `name` (a vdev name such as `net_af_xdp0` or a
    /// PCI address), configure `queues` RX/TX queue pairs fed from `pool`,
    /// enable promiscuous mode and start it.
    pub fn start(
        _eal: &Eal,
        name: &str,
        queues: u16,
        pool: std::sync::Arc<Mempool>,
    ) -> Result<Device, DpdkError> {
        let err = |msg: String| DpdkError::Device {
            name: name.to_string(),
            msg,
        };
        let cname = CString::new(name).map_err(|_| err("name contains a NUL byte".into()))?;
        let mut port = 0u16;
        // SAFETY: EAL is running; `port` is a valid out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) };
        if rc != 0 {
            return Err(err(
                "no such DPDK port (is it in the vdev list or the PCI allow list?)".into(),
            ));
        }
        let queues = queues.max(1);
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
        if rc != 0 {
            return Err(err(format!("cannot read device info: {}", strerror(-rc))));
        }
        if queues > info.max_rx_queues || queues > info.max_tx_queues {
            return Err(err(format!(
                "{queues} queues asked, the device has {} RX / {} TX (use fewer cores or give the interface more channels with `ethtool -L`)",
                info.max_rx_queues, info.max_tx_queues
            )));
        }
        let mut conf = sys::rte_eth_conf::default();
        if queues > 1 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            // IPv4/IPv6 with and without TCP/UDP ports (RTE_ETH_RSS_* bits
            // 2..=15), as far as the device supports them.
            conf.rx_adv_conf.rss_conf.rss_hf = 0xfffc & info.flow_type_rss_offloads;
        }
        // SAFETY: valid port, conf lives across the call.
        let rc = unsafe { sys::rte_eth_dev_configure(port, queues, queues, &conf) };
        if rc != 0 {
            return Err(err(format!("configure failed: {}", strerror(-rc))));
        }
        // SAFETY: valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..queues {
            // SAFETY: valid port/queue; null conf selects the driver's
            // defaults; the pool outlives the device (Arc held).
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    port,
                    q,
                    RX_DESC.min(info.rx_desc_lim.nb_max.max(1)),
                    socket,
                    std::ptr::null(),
                    pool.ptr,
                )
            };
            if rc != 0 {
                return Err(err(format!("RX queue {q} setup failed: {}", strerror(-rc))));
            }
            // SAFETY: as above.
            let rc = unsafe {
                sys::rte_eth_tx_queue_setup(
                    port,
                    q,
                    TX_DESC.min(info.tx_desc_lim.nb_max.max(1)),
                    socket,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(err(format!("TX queue {q} setup failed: {}", strerror(-rc))));
            }
        }
        // SAFETY: configured port.
        let rc = unsafe { sys::rte_eth_dev_start(port) };
        if rc != 0 {
            return Err(err(format!("start failed: {}", strerror(-rc))));
        }
        // SAFETY: started port. Promiscuous mode is best effort (some
        // virtual devices do not support it and are promiscuous anyway).
        unsafe {
            sys::rte_eth_promiscuous_enable(port);
        }
        Ok(Device {
            port,
            name: name.to_string(),
            queues,
            pool,
        })
    }

    /// The NUMA socket of the device called `name` (for its pool), or
    /// `fallback` when DPDK does not know it (virtual devices).
    pub fn socket_of(_eal: &Eal, name: &str, fallback: i32) -> i32 {
        let Ok(cname) = CString::new(name) else {
            return fallback;
        };
        let mut port = 0u16;
        // SAFETY: EAL is running; `port` is a valid out-pointer.
        if unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) } != 0 {
            return fallback;
        }
        // SAFETY: a valid port id.
        let s = unsafe { sys::rte_eth_dev_socket_id(port) };
        if s < 0 {
            fallback
        } else {
            s
        }
    }

    /// The DPDK port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid port and out-pointer.
        unsafe {
            sys::rte_eth_macaddr_get(self.port, &mut a);
        }
        a.addr_bytes
    }

    /// Link state without waiting.
    pub fn link(&self) -> LinkStatus {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid port and out-pointer.
        unsafe {
            sys::rte_eth_link_get_nowait(self.port, &mut l);
        }
        LinkStatus {
            up: l.link_status() != 0,
            speed_mbps: l.link_speed,
        }
    }

    /// The device's counters.
    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port and out-pointer.
        unsafe {
            sys::rte_eth_stats_get(self.port, &mut s);
        }
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Queue pair `q` for one worker. Each queue must be polled by one
    /// thread only; handing out the same queue twice fails.
    pub fn queue(&self, q: u16) -> Result<DpdkQueue, DpdkError> {
        if q >= self.queues {
            return Err(DpdkError::Device {
                name: self.name.clone(),
                msg: format!("queue {q} out of range ({} configured)", self.queues),
            });
        }
        Ok(DpdkQueue {
            port: self.port,
            queue: q,
            pool: self.pool.clone(),
            mbufs: [std::ptr::null_mut(); BURST],
        })
    }

    /// The device's packet-buffer pool.
    pub fn pool(&self) -> std::sync::Arc<Mempool> {
        self.pool.clone()
    }

    /// Stop and close the device (workers must have stopped polling it).
    pub fn close(self) {
        // SAFETY: no queue of this port is polled any more (caller's
        // contract); stop then close releases its buffers.
        unsafe {
            sys::rte_eth_dev_stop(self.port);
            sys::rte_eth_dev_close(self.port);
        }
    }
}

const BURST: usize = 64;

/// One worker's RX/TX queue pair on a [`Device`].
pub struct DpdkQueue {
    port: u16,
    queue: u16,
    pool: std::sync::Arc<Mempool>,
    mbufs: [*mut sys::rte_mbuf; BURST],
}

// SAFETY: a queue pair is used by one thread at a time (moved to its
// worker); DPDK queues are not shared between DpdkQueue values.
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    /// Receive up to `bufs.len()` frames, zero-copy: each buffer borrows
    /// its mbuf (given back when the buffer is refilled or dropped, or sent
    /// by [`DpdkQueue::tx_bufs`]). Multi-segment frames (jumbo frames on
    /// scattered RX) are dropped.
    pub fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize {
        let want = bufs.len().min(BURST) as u16;
        // SAFETY: a started port/queue polled by this thread only; the
        // array has room for `want` pointers.
        let n =
            unsafe { sys::vpnfwd_rx_burst(self.port, self.queue, self.mbufs.as_mut_ptr(), want) };
        let mut got = 0;
        for i in 0..usize::from(n) {
            let m = self.mbufs[i];
            // SAFETY: DPDK returned `n` valid mbufs, now ours: each is
            // either freed here or handed to a buffer, which owns its data
            // room (`buf_len` bytes at `buf_addr`) until it gives it back.
            unsafe {
                let (Some(h), Some(base)) = (
                    std::ptr::NonNull::new(m),
                    std::ptr::NonNull::new((*m).buf_addr.cast::<u8>()),
                ) else {
                    continue;
                };
                if (*m).nb_segs != 1 {
                    sys::vpnfwd_pktmbuf_free(m);
                    continue;
                }
                let (cap, off, len) = ((*m).buf_len, (*m).data_off, (*m).data_len);
                if bufs[got].attach(h.cast(), &MBUF, base, cap, off, len) {
                    got += 1;
                }
            }
        }
        got
    }

    /// Transmit the frames of `bufs` at `idx`: a frame received in an mbuf
    /// goes out in that mbuf (taken from its buffer), any other is copied
    /// into a fresh one. Returns how many the device took; the rest are
    /// freed.
    pub fn tx_bufs(&mut self, bufs: &mut [PacketBuf], idx: &[u8]) -> usize {
        let mut sent = 0;
        for chunk in idx.chunks(BURST) {
            let mut ready = 0;
            for &i in chunk {
                let Some(b) = bufs.get_mut(usize::from(i)) else {
                    continue;
                };
                let (head, len) = (b.headroom() as u16, b.len() as u16);
                let m = match b.detach_from(&MBUF) {
                    // SAFETY: the buffer held this mbuf (attached in
                    // rx_burst) and handed it over; its data room holds the
                    // frame at `head` for `len` bytes (the buffer checked
                    // both against `buf_len`).
                    Some(h) => unsafe {
                        let m = h.as_ptr().cast::<sys::rte_mbuf>();
                        (*m).data_off = head;
                        (*m).data_len = len;
                        (*m).pkt_len = u32::from(len);
                        (*m).ol_flags = 0;
                        m
                    },
                    None => match self.copy_out(b.frame()) {
                        Some(m) => m,
                        None => continue,
                    },
                };
                self.mbufs[ready] = m;
                ready += 1;
            }
            sent += self.send(ready);
        }
        sent
    }

    /// A fresh mbuf holding a copy of `frame`, or None if the pool is
    /// empty or the frame does not fit.
    fn copy_out(&mut self, frame: &[u8]) -> Option<*mut sys::rte_mbuf> {
        // SAFETY: the pool is live for the queue's lifetime.
        let m = unsafe { sys::vpnfwd_pktmbuf_alloc(self.pool.ptr) };
        if m.is_null() {
            return None;
        }
        // SAFETY: a freshly allocated single-segment mbuf; the data room is
        // checked by set_len before copying.
        unsafe {
            let dst = match u16::try_from(frame.len()) {
                Ok(len) => sys::vpnfwd_pktmbuf_set_len(m, len),
                Err(_) => std::ptr::null_mut(),
            };
            if dst.is_null() {
                sys::vpnfwd_pktmbuf_free(m);
                return None;
            }
            std::ptr::copy_nonoverlapping(frame.as_ptr(), dst.cast::<u8>(), frame.len());
        }
        Some(m)
    }

    /// Hand the first `ready` mbufs of `self.mbufs` to the device; free
    /// those it does not take. Returns how many it took.
    fn send(&mut self, ready: usize) -> usize {
        if ready == 0 {
            return 0;
        }
        // SAFETY: `ready` valid mbufs; the device takes ownership of those
        // it accepts, we free the rest.
        let took = unsafe {
            sys::vpnfwd_tx_burst(self.port, self.queue, self.mbufs.as_mut_ptr(), ready as u16)
        };
        for i in usize::from(took)..ready {
            // SAFETY: not taken by the device, still ours.
            unsafe { sys::vpnfwd_pktmbuf_free(self.mbufs[i]) };
        }
        usize::from(took)
    }

    /// Transmit frames, copying each into a fresh mbuf. Returns how many
    /// the device took.
    pub fn tx_burst(&mut self, frames: &[&[u8]]) -> usize {
        let mut sent = 0;
        for chunk in frames.chunks(BURST) {
            let mut ready = 0;
            for f in chunk {
                if let Some(m) = self.copy_out(f) {
                    self.mbufs[ready] = m;
                    ready += 1;
                }
            }
            sent += self.send(ready);
        }
        sent
    }
}

/// Received mbufs lent to [`PacketBuf`]s.
static MBUF: super::ExtStorage = super::ExtStorage {
    release: release_mbuf,
};

/// Give a received mbuf back to its pool.
///
/// # Safety
/// `h` is an mbuf this process owns, released once.
unsafe fn release_mbuf(h: std::ptr::NonNull<std::ffi::c_void>) {
    // SAFETY: the caller's contract.
    unsafe { sys::vpnfwd_pktmbuf_free(h.as_ptr().cast()) }
}

/// DPDK's IPv4 LPM (`rte_lpm`, DIR-24-8), for benchmarks against ours.
pub struct RteLpm {
    ptr: *mut sys::rte_lpm,
}

impl RteLpm {
    /// A table for `max_rules` routes with `tbl8s` second-level groups.
    pub fn new(_eal: &Eal, name: &str, max_rules: u32, tbl8s: u32) -> Result<RteLpm, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Memory("bad name".into()))?;
        let cfg = sys::rte_lpm_config {
            max_rules,
            number_tbl8s: tbl8s,
            flags: 0,
        };
        // SAFETY: EAL running; name and config live across the call.
        let ptr = unsafe { sys::rte_lpm_create(cname.as_ptr(), 0, &cfg) };
        if ptr.is_null() {
            return Err(DpdkError::Memory(format!(
                "rte_lpm_create failed: {}",
                // SAFETY: this thread's rte_errno.
                strerror(unsafe { sys::vpnfwd_rte_errno() })
            )));
        }
        Ok(RteLpm { ptr })
    }

    /// Add a route (next hop < 2^24).
    pub fn add(&mut self, ip: u32, depth: u8, nh: u32) -> Result<(), i32> {
        // SAFETY: live table, single writer (&mut).
        let rc = unsafe { sys::rte_lpm_add(self.ptr, ip, depth, nh) };
        if rc < 0 {
            Err(rc)
        } else {
            Ok(())
        }
    }

    /// Delete a route.
    pub fn delete(&mut self, ip: u32, depth: u8) -> Result<(), i32> {
        // SAFETY: live table, single writer (&mut).
        let rc = unsafe { sys::rte_lpm_delete(self.ptr, ip, depth) };
        if rc < 0 {
            Err(rc)
        } else {
            Ok(())
        }
    }

    /// Bulk lookup: `out[i]` is the next hop or `miss`.
    pub fn lookup_bulk(&self, ips: &[u32], out: &mut [u32], miss: u32) {
        let n = ips.len().min(out.len());
        // SAFETY: live table; both slices hold n elements.
        unsafe {
            sys::vpnfwd_lpm_lookup_bulk(self.ptr, ips.as_ptr(), out.as_mut_ptr(), n as u32);
        }
        for o in &mut out[..n] {
            *o = if *o & 0x0100_0000 != 0 {
                *o & 0x00ff_ffff
            } else {
                miss
            };
        }
    }

    /// Lookup four at a time (`rte_lpm_lookupx4`, SSE); `ips.len()` is
    /// rounded down to a multiple of 4.
    pub fn lookup_x4(&self, ips: &[u32], out: &mut [u32], miss: u32) {
        let n = ips.len().min(out.len()) & !3;
        // SAFETY: live table; both slices hold n elements, n % 4 == 0.
        unsafe {
            sys::vpnfwd_lpm_lookupx4(self.ptr, ips.as_ptr(), out.as_mut_ptr(), n as u32, miss);
        }
    }
}

impl Drop for RteLpm {
    fn drop(&mut self) {
        // SAFETY: ours, freed once.
        unsafe { sys::rte_lpm_free(self.ptr) }
    }
}

/// DPDK's IPv6 LPM (`rte_lpm6`), for benchmarks against ours.
pub struct RteLpm6 {
    ptr: *mut sys::rte_lpm6,
}

impl RteLpm6 {
    /// A table for `max_rules` routes with `tbl8s` groups.
    pub fn new(_eal: &Eal, name: &str, max_rules: u32, tbl8s: u32) -> Result<RteLpm6, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Memory("bad name".into()))?;
        let cfg = sys::rte_lpm6_config {
            max_rules,
            number_tbl8s: tbl8s,
            flags: 0,
        };
        // SAFETY: EAL running; name and config live across the call.
        let ptr = unsafe { sys::rte_lpm6_create(cname.as_ptr(), 0, &cfg) };
        if ptr.is_null() {
            return Err(DpdkError::Memory(format!(
                "rte_lpm6_create failed: {}",
                // SAFETY: this thread's rte_errno.
                strerror(unsafe { sys::vpnfwd_rte_errno() })
            )));
        }
        Ok(RteLpm6 { ptr })
    }

    /// Add a route.
    pub fn add(&mut self, ip: u128, depth: u8, nh: u32) -> Result<(), i32> {
        let b = ip.to_be_bytes();
        // SAFETY: live table, single writer; rte_lpm6 reads 16 bytes.
        let rc = unsafe { sys::rte_lpm6_add(self.ptr, b.as_ptr(), depth, nh) };
        if rc < 0 {
            Err(rc)
        } else {
            Ok(())
        }
    }

    /// Delete a route.
    pub fn delete(&mut self, ip: u128, depth: u8) -> Result<(), i32> {
        let b = ip.to_be_bytes();
        // SAFETY: live table, single writer; rte_lpm6 reads 16 bytes.
        let rc = unsafe { sys::rte_lpm6_delete(self.ptr, b.as_ptr(), depth) };
        if rc < 0 {
            Err(rc)
        } else {
            Ok(())
        }
    }

    /// Bulk lookup of addresses given as 16-byte arrays.
    pub fn lookup_bulk(&self, ips: &[[u8; 16]], out: &mut [i32], miss: u32) {
        let n = ips.len().min(out.len());
        // SAFETY: live table; `ips` is n contiguous 16-byte arrays, the
        // layout rte_lpm6 expects; `out` holds n elements.
        unsafe {
            sys::rte_lpm6_lookup_bulk_func(
                self.ptr,
                ips.as_ptr() as *mut [u8; 16],
                out.as_mut_ptr(),
                n as u32,
            );
        }
        for o in &mut out[..n] {
            if *o < 0 {
                *o = miss as i32;
            }
        }
    }
}

impl Drop for RteLpm6 {
    fn drop(&mut self) {
        // SAFETY: ours, freed once.
        unsafe { sys::rte_lpm6_free(self.ptr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdev_strings_are_checked() {
        assert!(check_vdev("net_null0").is_ok());
        assert!(check_vdev("net_bogus0,iface=lo").is_err());
        assert!(check_vdev("net_af_packet0").is_err(), "needs iface");
        assert!(check_vdev("net_af_packet0,iface=lo").is_ok());
        assert!(check_vdev("net_af_packet0,iface=no-such-if9").is_err());
        assert!(check_vdev("net_af_xdp0,iface").is_err());
        assert!(check_vdev("net_af_xdp-0,iface=lo").is_err());
        assert!(check_vdev("net_tap0,iface=,x=1").is_err());
    }
}
