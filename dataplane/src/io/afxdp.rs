//! AF_XDP transmit sockets: frames go from a user-memory area (UMEM) to the
//! driver through a descriptor ring, without a per-packet system call.
//!
//! ```text
//!  UMEM: FRAMES chunks of CHUNK bytes (one anonymous mapping)
//!  TX ring          (we produce)  descriptors {addr, len} of filled chunks
//!  completion ring  (kernel produces)  addresses of chunks it is done with
//! ```
//!
//! A transmit burst copies each frame into a free chunk, publishes the
//! descriptors with one release store of the producer index, and kicks the
//! kernel with one `sendto`. Chunks come back through the completion ring
//! and are reused. The socket binds in copy mode (`XDP_COPY`), which every
//! driver supports (veth included) and which needs no XDP program for
//! transmit. The benchmark generator uses it to offer more than an AF_PACKET
//! socket can on the same core.
//!
//! All `unsafe` of the AF_XDP back-end is in this module.
#![allow(unsafe_code)]

use super::afpacket::{if_index, setsockopt};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per UMEM chunk (one frame each).
const CHUNK: u32 = 2048;
/// Chunks in the UMEM.
const FRAMES: u32 = 1024;
/// Descriptors in the transmit and completion rings (powers of two).
const RING: u32 = 512;

/// Why an AF_XDP socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// No interface of that name.
    #[error("interface {0:?} not found")]
    NoInterface(String),
    /// A system call failed.
    #[error("AF_XDP {step} on {ifname}: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The interface.
        ifname: String,
        /// The OS error.
        source: io::Error,
    },
}

/// `struct xdp_desc`.
#[repr(C)]
#[derive(Clone, Copy)]
struct XdpDesc {
    addr: u64,
    len: u32,
    options: u32,
}

/// One mapped ring: producer and consumer indices and the entries.
struct Ring {
    map: *mut u8,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    desc: *mut u8,
}

impl Ring {
    /// Map the ring at page offset `pgoff` whose layout `off` describes.
    fn map(
        fd: &OwnedFd,
        off: &libc::xdp_ring_offset,
        entry: usize,
        pgoff: libc::off_t,
    ) -> io::Result<Ring> {
        let map_len = off.desc as usize + RING as usize * entry;
        // SAFETY: a shared mapping of the socket's ring; the kernel checks the
        // offset and length.
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = map.cast::<u8>();
        // SAFETY: the offsets the kernel reported lie inside the mapping, and
        // the index words are 4-aligned u32s the kernel updates atomically.
        unsafe {
            Ok(Ring {
                map,
                map_len,
                producer: map.add(off.producer as usize).cast(),
                consumer: map.add(off.consumer as usize).cast(),
                desc: map.add(off.desc as usize),
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`).
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as `producer`.
        unsafe { &*self.consumer }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped; no reference into it outlives
        // the ring.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}

/// An AF_XDP socket bound to one queue of an interface, for transmit.
pub struct AfXdpTx {
    fd: OwnedFd,
    ifname: String,
    umem: *mut u8,
    umem_len: usize,
    tx: Ring,
    completion: Ring,
    /// Chunks (by address) not in flight.
    free: Vec<u64>,
    /// Kicks the kernel refused for lack of room (it retries on the next).
    pub busy: u64,
}

// SAFETY: the UMEM, the rings and the socket belong to this value alone;
// moving it to another thread moves them along.
unsafe impl Send for AfXdpTx {}

impl core::fmt::Debug for AfXdpTx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AfXdpTx")
            .field("ifname", &self.ifname)
            .finish()
    }
}

impl AfXdpTx {
    /// Open an AF_XDP socket on queue `queue` of `ifname` (copy mode).
    ///
    /// # Errors
    /// [`AfXdpError`] naming the interface and the failing step (root or
    /// `CAP_NET_RAW` and `CAP_IPC_LOCK` are needed; the kernel must have
    /// `CONFIG_XDP_SOCKETS`).
    pub fn open(ifname: &str, queue: u32) -> Result<AfXdpTx, AfXdpError> {
        let sys = |step| AfXdpError::Sys {
            step,
            ifname: ifname.to_string(),
            source: io::Error::last_os_error(),
        };
        let ifindex = if_index(ifname).ok_or_else(|| AfXdpError::NoInterface(ifname.into()))?;
        // SAFETY: plain socket creation.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(sys("socket"));
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = (FRAMES * CHUNK) as usize;
        // SAFETY: an anonymous private mapping; checked below.
        let umem = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if umem == libc::MAP_FAILED {
            return Err(sys("UMEM mmap"));
        }
        let umem = umem.cast::<u8>();
        // From here on, `guard` unmaps the UMEM if a later step fails.
        struct Unmap(*mut u8, usize);
        impl Drop for Unmap {
            fn drop(&mut self) {
                // SAFETY: the mapping made above, not yet handed to a port.
                unsafe {
                    libc::munmap(self.0.cast(), self.1);
                }
            }
        }
        let guard = Unmap(umem, umem_len);
        let reg = libc::xdp_umem_reg {
            addr: umem as u64,
            len: umem_len as u64,
            chunk_size: CHUNK,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        if setsockopt(&fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg) < 0 {
            return Err(sys("UMEM registration"));
        }
        // The kernel wants a fill ring with every UMEM even when nothing is
        // received; it stays empty.
        for (opt, step) in [
            (libc::XDP_UMEM_FILL_RING, "fill ring size"),
            (libc::XDP_UMEM_COMPLETION_RING, "completion ring size"),
            (libc::XDP_TX_RING, "TX ring size"),
        ] {
            if setsockopt(&fd, libc::SOL_XDP, opt, &RING) < 0 {
                return Err(sys(step));
            }
        }
        // SAFETY: an all-zero offsets struct is valid (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { core::mem::zeroed() };
        let mut len = core::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(sys("ring offsets"));
        }
        let tx = Ring::map(
            &fd,
            &off.tx,
            core::mem::size_of::<XdpDesc>(),
            libc::XDP_PGOFF_TX_RING,
        )
        .map_err(|_| sys("TX ring mmap"))?;
        let completion = Ring::map(
            &fd,
            &off.cr,
            8,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        )
        .map_err(|_| sys("completion ring mmap"))?;
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY,
            sxdp_ifindex: ifindex as u32,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                core::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sys("bind"));
        }
        core::mem::forget(guard);
        Ok(AfXdpTx {
            fd,
            ifname: ifname.to_string(),
            umem,
            umem_len,
            tx,
            completion,
            free: (0..u64::from(FRAMES))
                .map(|i| i * u64::from(CHUNK))
                .collect(),
            busy: 0,
        })
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Take back the chunks the kernel has sent.
    fn reap(&mut self) {
        let prod = self.completion.producer().load(Ordering::Acquire);
        let mut cons = self.completion.consumer().load(Ordering::Relaxed);
        while cons != prod {
            let at = (cons & (RING - 1)) as usize * 8;
            // SAFETY: entry `at` lies in the mapped ring; the kernel wrote it
            // before publishing `prod` (acquire above).
            let addr = unsafe { self.completion.desc.add(at).cast::<u64>().read_volatile() };
            if addr < self.umem_len as u64 {
                self.free.push(addr & !u64::from(CHUNK - 1));
            }
            cons = cons.wrapping_add(1);
        }
        self.completion.consumer().store(cons, Ordering::Release);
    }

    /// Transmit frames (copied into the UMEM); returns how many were queued.
    /// Frames longer than a chunk are skipped and not counted.
    pub fn tx_burst(&mut self, frames: &[&[u8]]) -> usize {
        self.reap();
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let cons = self.tx.consumer().load(Ordering::Acquire);
        let room = RING - prod.wrapping_sub(cons);
        let mut n = 0u32;
        for f in frames {
            if n == room {
                break;
            }
            if f.len() > CHUNK as usize {
                continue;
            }
            let Some(addr) = self.free.pop() else { break };
            // SAFETY: `addr` is a free chunk inside the UMEM (the kernel is
            // not reading it), CHUNK bytes long, and `f` fits.
            unsafe {
                core::ptr::copy_nonoverlapping(f.as_ptr(), self.umem.add(addr as usize), f.len());
            }
            let d = XdpDesc {
                addr,
                len: f.len() as u32,
                options: 0,
            };
            let at = (prod.wrapping_add(n) & (RING - 1)) as usize;
            // SAFETY: slot `at` of the TX ring is ours (between consumer and
            // producer + room) and inside the mapping.
            unsafe {
                self.tx.desc.cast::<XdpDesc>().add(at).write_volatile(d);
            }
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        self.tx
            .producer()
            .store(prod.wrapping_add(n), Ordering::Release);
        self.kick();
        n as usize
    }

    /// Tell the kernel there is work on the TX ring. In copy mode one kick
    /// sends at most 32 descriptors, so kick again (a few times at most)
    /// until the kernel has taken everything produced.
    fn kick(&mut self) {
        let prod = self.tx.producer().load(Ordering::Relaxed);
        for _ in 0..(RING / 32) {
            // SAFETY: a zero-length send on our own bound socket.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    core::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    core::ptr::null(),
                    0,
                )
            };
            if self.tx.consumer().load(Ordering::Acquire) == prod {
                return;
            }
            if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                // EBUSY/ENOBUFS: the device queue is full; the descriptors
                // stay on the ring for the next kick.
                self.busy += 1;
                return;
            }
            // EAGAIN: 32 sent and more to go, or the completion ring is
            // full; make room there before the next kick.
            self.reap();
        }
    }

    /// Frames queued and not yet sent.
    pub fn in_flight(&mut self) -> usize {
        self.reap();
        FRAMES as usize - self.free.len()
    }

    /// Kick the kernel until every queued frame is sent or `tries` kicks
    /// went by; returns the frames still in flight.
    pub fn flush(&mut self, tries: usize) -> usize {
        for _ in 0..tries {
            if self.in_flight() == 0 {
                return 0;
            }
            self.kick();
        }
        self.in_flight()
    }
}

impl Drop for AfXdpTx {
    fn drop(&mut self) {
        // The rings unmap themselves and the socket closes after this body.
        // Unmapping the UMEM first is safe: its registration pinned the
        // pages, which the kernel releases only when the socket goes.
        // SAFETY: the mapping made in `open`; nothing of ours references it
        // after this value.
        unsafe {
            libc::munmap(self.umem.cast(), self.umem_len);
        }
    }
}
