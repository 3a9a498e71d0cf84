//! AF_PACKET ports: a TPACKET_V3 memory-mapped receive ring and batched
//! transmit with `sendmmsg`, on any Linux interface (veth included).
//!
//! The receive ring is a set of blocks the kernel fills and hands over with a
//! status word; the worker copies each frame into one of its own buffers
//! (frames keep headroom for label pushes) and returns the block. VLAN tags
//! that the kernel stripped into the frame's metadata are put back, so the
//! pipeline always sees the frame as it was on the wire. Several workers can
//! share an interface through `PACKET_FANOUT` (flow hash). Transmit bypasses
//! the qdisc layer (`PACKET_QDISC_BYPASS`), and the socket ignores its own
//! transmitted frames (`PACKET_IGNORE_OUTGOING`).
//!
//! All `unsafe` of the AF_PACKET back-end is in this module.
#![allow(unsafe_code)]

use super::PacketBuf;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};

const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// `struct tpacket_req3`.
#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

/// `struct tpacket_block_desc` with its `tpacket_hdr_v1`.
#[repr(C)]
struct BlockDesc {
    version: u32,
    offset_to_priv: u32,
    block_status: AtomicU32,
    num_pkts: u32,
    offset_to_first_pkt: u32,
    blk_len: u32,
}

/// The start of `struct tpacket3_hdr`.
#[repr(C)]
struct Tpacket3Hdr {
    next_offset: u32,
    sec: u32,
    nsec: u32,
    snaplen: u32,
    len: u32,
    status: u32,
    mac: u16,
    net: u16,
    rxhash: u32,
    vlan_tci: u32,
    vlan_tpid: u16,
    padding: u16,
}

/// Ring and socket options.
#[derive(Debug, Clone, Copy)]
pub struct AfPacketOptions {
    /// Bytes per ring block (a power of two, multiple of the page size).
    pub block_size: u32,
    /// Number of ring blocks.
    pub block_nr: u32,
    /// Milliseconds after which the kernel hands over a partly filled block.
    pub block_timeout_ms: u32,
    /// Join this fanout group (hash distribution over the group's sockets).
    pub fanout_group: Option<u16>,
    /// Put the interface in promiscuous mode.
    pub promiscuous: bool,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            block_size: 1 << 18,
            block_nr: 16,
            block_timeout_ms: 1,
            fanout_group: None,
            promiscuous: true,
        }
    }
}

/// Errors opening a port, naming the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// No such interface.
    #[error("interface {0:?} not found")]
    NoInterface(String),
    /// A system call failed.
    #[error("{step} on {ifname}: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The interface.
        ifname: String,
        /// The OS error.
        source: io::Error,
    },
}

/// One AF_PACKET socket bound to an interface.
pub struct AfPacketPort {
    fd: OwnedFd,
    ifname: String,
    ring: *mut u8,
    ring_len: usize,
    block_size: usize,
    block_nr: usize,
    block: usize,
    /// Within the current block: packets left and the next packet's offset.
    left: u32,
    next: usize,
    /// Frames dropped because they did not fit a buffer.
    pub oversize: u64,
}

// SAFETY: the ring mapping and the socket belong to this value alone; moving
// it to another thread moves them along.
unsafe impl Send for AfPacketPort {}

impl core::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("ifname", &self.ifname)
            .finish()
    }
}

fn sys(step: &'static str, ifname: &str) -> AfPacketError {
    AfPacketError::Sys {
        step,
        ifname: ifname.to_string(),
        source: io::Error::last_os_error(),
    }
}

pub(super) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> libc::c_int {
    // SAFETY: `val` is a valid, initialised `T` for the duration of the call and
    // its size is passed alongside.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            core::mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

/// The kernel's counters of one AF_PACKET receive ring (frames it put in
/// the ring, frames it dropped because the ring was full), read from the
/// control thread through a duplicate of the socket while a worker polls
/// the ring. The kernel resets them on each read; they are summed here.
#[derive(Debug)]
pub struct RingStats {
    fd: OwnedFd,
    /// The interface.
    pub ifname: String,
    packets: u64,
    drops: u64,
}

impl RingStats {
    /// Frames the kernel queued to the ring, and dropped, since it opened.
    pub fn read(&mut self) -> (u64, u64) {
        /// `struct tpacket_stats_v3`.
        #[repr(C)]
        #[derive(Default)]
        struct Stats {
            packets: u32,
            drops: u32,
            freeze_q_cnt: u32,
        }
        let mut st = Stats::default();
        let mut len = core::mem::size_of::<Stats>() as libc::socklen_t;
        // SAFETY: `st` is a writable `tpacket_stats_v3` of `len` bytes; the
        // kernel writes at most `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            // tp_packets counts the dropped frames too.
            self.packets += u64::from(st.packets.saturating_sub(st.drops));
            self.drops += u64::from(st.drops);
        }
        (self.packets, self.drops)
    }
}

/// The interface index of `ifname`, if it exists.
pub fn if_index(ifname: &str) -> Option<i32> {
    let c = CString::new(ifname).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx as i32)
}

impl AfPacketPort {
    /// A handle on this ring's kernel counters for another thread.
    ///
    /// # Errors
    /// If the socket cannot be duplicated.
    pub fn ring_stats(&self) -> io::Result<RingStats> {
        Ok(RingStats {
            fd: self.fd.try_clone()?,
            ifname: self.ifname.clone(),
            packets: 0,
            drops: 0,
        })
    }

    /// Open `ifname` for transmit only (no receive ring): the control
    /// thread's way to inject ARP replies and ICMP errors.
    ///
    /// # Errors
    /// As [`AfPacketPort::open`].
    pub fn open_tx_only(ifname: &str) -> Result<AfPacketPort, AfPacketError> {
        Self::open_inner(ifname, &AfPacketOptions::default(), false)
    }

    /// Open `ifname` with a receive ring.
    ///
    /// # Errors
    /// [`AfPacketError`] naming the interface and the failing step (root or
    /// `CAP_NET_RAW` is needed).
    pub fn open(ifname: &str, opts: &AfPacketOptions) -> Result<AfPacketPort, AfPacketError> {
        Self::open_inner(ifname, opts, true)
    }

    fn open_inner(
        ifname: &str,
        opts: &AfPacketOptions,
        with_ring: bool,
    ) -> Result<AfPacketPort, AfPacketError> {
        let ifindex =
            if_index(ifname).ok_or_else(|| AfPacketError::NoInterface(ifname.to_string()))?;
        // A transmit-only socket binds protocol 0 so it receives nothing.
        let proto = if with_ring {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(sys("socket(AF_PACKET)", ifname));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3) != 0 {
            return Err(sys("PACKET_VERSION", ifname));
        }
        let one: libc::c_int = 1;
        // Best effort: older kernels lack these; forwarding still works.
        let _ = setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one);
        let _ = setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        let (ring, ring_len) = if with_ring {
            let frame_size = 2048u32;
            let req = TpacketReq3 {
                block_size: opts.block_size,
                block_nr: opts.block_nr,
                frame_size,
                frame_nr: opts.block_size / frame_size * opts.block_nr,
                retire_blk_tov: opts.block_timeout_ms,
                sizeof_priv: 0,
                feature_req_word: 0,
            };
            if setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req) != 0 {
                return Err(sys("PACKET_RX_RING", ifname));
            }
            let ring_len = opts.block_size as usize * opts.block_nr as usize;
            // SAFETY: mapping the ring the kernel just created for this socket.
            let ring = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    ring_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    0,
                )
            };
            let ring = if ring == libc::MAP_FAILED {
                // MAP_LOCKED fails under a small RLIMIT_MEMLOCK: retry without it.
                // SAFETY: as above.
                let r = unsafe {
                    libc::mmap(
                        core::ptr::null_mut(),
                        ring_len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED | libc::MAP_POPULATE,
                        fd.as_raw_fd(),
                        0,
                    )
                };
                if r == libc::MAP_FAILED {
                    return Err(sys("mmap of the receive ring", ifname));
                }
                r
            } else {
                ring
            };
            (ring, ring_len)
        } else {
            (core::ptr::null_mut(), 0)
        };
        let port = AfPacketPort {
            fd,
            ifname: ifname.to_string(),
            ring: ring.cast(),
            ring_len,
            block_size: opts.block_size as usize,
            block_nr: if with_ring { opts.block_nr as usize } else { 0 },
            block: 0,
            left: 0,
            next: 0,
            oversize: 0,
        };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                port.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                core::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(sys("bind", ifname));
        }
        if opts.promiscuous && with_ring {
            // SAFETY: zeroed packet_mreq is valid.
            let mut mr: libc::packet_mreq = unsafe { core::mem::zeroed() };
            mr.mr_ifindex = ifindex;
            mr.mr_type = libc::PACKET_MR_PROMISC as u16;
            if setsockopt(&port.fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr) != 0 {
                return Err(sys("PACKET_ADD_MEMBERSHIP(promiscuous)", ifname));
            }
        }
        if let Some(group) = opts.fanout_group.filter(|_| with_ring) {
            let arg: libc::c_int = i32::from(group) | ((libc::PACKET_FANOUT_HASH as i32) << 16);
            if setsockopt(&port.fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg) != 0 {
                return Err(sys("PACKET_FANOUT", ifname));
            }
        }
        Ok(port)
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The socket's descriptor (for poll(2) when idling).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn block_desc(&self, i: usize) -> &BlockDesc {
        // SAFETY: block `i` (< block_nr) lies inside the mapping and starts
        // with a `tpacket_block_desc`, which the kernel keeps valid while the
        // mapping exists.
        unsafe { &*self.ring.add(i * self.block_size).cast::<BlockDesc>() }
    }

    /// Receive up to `bufs.len()` frames, copying each into a buffer.
    pub fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> usize {
        if self.ring.is_null() {
            return 0;
        }
        let mut n = 0;
        while n < bufs.len() {
            if self.left == 0 {
                let (status, num, first) = {
                    let bd = self.block_desc(self.block);
                    (
                        bd.block_status.load(Ordering::Acquire),
                        bd.num_pkts,
                        bd.offset_to_first_pkt,
                    )
                };
                if status & TP_STATUS_USER == 0 {
                    break;
                }
                self.left = num;
                self.next = first as usize;
                if self.left == 0 {
                    self.release_block();
                    continue;
                }
            }
            let base = self.block * self.block_size;
            if self.next + core::mem::size_of::<Tpacket3Hdr>() > self.block_size {
                // A corrupt offset: give the block back rather than read past it.
                self.left = 0;
                self.release_block();
                continue;
            }
            // SAFETY: `next` was checked to leave room for the header inside
            // this block, which the kernel handed to us (TP_STATUS_USER).
            let hdr = unsafe { &*self.ring.add(base + self.next).cast::<Tpacket3Hdr>() };
            let mac = usize::from(hdr.mac);
            let snap = hdr.snaplen as usize;
            if self.next + mac + snap <= self.block_size {
                // SAFETY: the frame lies inside the block (checked above).
                let frame = unsafe {
                    core::slice::from_raw_parts(self.ring.add(base + self.next + mac), snap)
                };
                let vlan = (hdr.status & TP_STATUS_VLAN_VALID != 0).then(|| {
                    let tpid = if hdr.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                        hdr.vlan_tpid
                    } else {
                        0x8100
                    };
                    (tpid, hdr.vlan_tci as u16)
                });
                if fill_with_vlan(&mut bufs[n], frame, vlan) {
                    if hdr.status & TP_STATUS_CSUMNOTREADY != 0 {
                        super::complete_l4_checksum(bufs[n].frame_mut());
                    }
                    n += 1;
                } else {
                    self.oversize += 1;
                }
            }
            self.left -= 1;
            if self.left == 0 || hdr.next_offset == 0 {
                self.left = 0;
                self.release_block();
            } else {
                self.next += hdr.next_offset as usize;
            }
        }
        n
    }

    fn release_block(&mut self) {
        let bd = self.block_desc(self.block);
        fence(Ordering::Release);
        bd.block_status.store(TP_STATUS_KERNEL, Ordering::Release);
        self.block = (self.block + 1) % self.block_nr;
    }

    /// Transmit frames with one `sendmmsg` call per 64; returns how many the
    /// kernel took.
    pub fn tx_burst(&mut self, frames: &[&[u8]]) -> usize {
        let mut sent = 0;
        for chunk in frames.chunks(64) {
            let mut iov: [libc::iovec; 64] = [libc::iovec {
                iov_base: core::ptr::null_mut(),
                iov_len: 0,
            }; 64];
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
            let mut msgs: [libc::mmsghdr; 64] = unsafe { core::mem::zeroed() };
            for (i, f) in chunk.iter().enumerate() {
                iov[i] = libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `msgs[..len]` point at `iov` entries that point at live
            // frames for the duration of the call; the socket is bound.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    chunk.len() as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc <= 0 {
                break;
            }
            sent += rc as usize;
            if (rc as usize) < chunk.len() {
                break;
            }
        }
        sent
    }
}

/// Copy `frame` into `buf`, re-inserting a stripped VLAN tag into the
/// buffer's headroom (the MAC addresses move 4 bytes forward).
fn fill_with_vlan(buf: &mut PacketBuf, frame: &[u8], vlan: Option<(u16, u16)>) -> bool {
    if !buf.fill(frame) {
        return false;
    }
    let Some((tpid, tci)) = vlan else { return true };
    if frame.len() < 12 || !buf.adjust_front(-4) {
        return false;
    }
    let f = buf.frame_mut();
    f.copy_within(4..16, 0);
    f[12..14].copy_from_slice(&tpid.to_be_bytes());
    f[14..16].copy_from_slice(&tci.to_be_bytes());
    true
}

impl Drop for AfPacketPort {
    fn drop(&mut self) {
        if self.ring.is_null() {
            return;
        }
        // SAFETY: unmapping the ring mapped in `open`; no reference into it
        // outlives `&mut self`.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripped_vlan_tag_is_put_back_after_the_macs() {
        let frame: Vec<u8> = (0u8..20).collect();
        let mut b = PacketBuf::new();
        assert!(fill_with_vlan(&mut b, &frame, Some((0x8100, 100))));
        let mut want = frame[..12].to_vec();
        want.extend([0x81, 0x00, 0x00, 100]);
        want.extend(&frame[12..]);
        assert_eq!(b.frame(), &want[..]);
        assert!(fill_with_vlan(&mut b, &frame, None));
        assert_eq!(b.frame(), &frame[..]);
        assert!(!fill_with_vlan(&mut b, &frame[..8], Some((0x8100, 1))));
    }
}
