//! Per-peer socket protection: TCP-MD5 signatures (RFC 2385) and the
//! Generalized TTL Security Mechanism (GTSM, RFC 5082), set on the
//! connecting socket before `connect` and on the listening socket (MD5 keys)
//! or the accepted one (GTSM).
//!
//! All `unsafe` of the BGP sockets lives here.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

/// A peer's socket options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// TCP-MD5 key (1 to 80 bytes).
    pub md5_key: Option<Vec<u8>>,
    /// GTSM: send with TTL (hop limit) 255 and accept only 255, i.e. a
    /// directly connected peer.
    pub ttl_security: bool,
}

/// `struct tcp_md5sig` of linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid, initialised value of the size passed, and
    // the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(v).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn storage_of(peer: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and
            // suitably aligned for it.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut ss).cast(), sin) };
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut ss).cast(), sin6) };
        }
    }
    ss
}

/// Install (or with no key, remove) the TCP-MD5 key for `peer` on `fd`.
/// A socket family different from the peer's (a dual-stack listener)
/// takes the peer as an IPv4-mapped address.
pub fn set_md5(fd: RawFd, peer: IpAddr, key: Option<&[u8]>, v6_socket: bool) -> io::Result<()> {
    let key = key.unwrap_or(&[]);
    if key.len() > 80 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP-MD5 keys are at most 80 bytes",
        ));
    }
    let addr = match (peer, v6_socket) {
        (IpAddr::V4(a), true) => IpAddr::V6(a.to_ipv6_mapped()),
        (a, _) => a,
    };
    let mut sig = TcpMd5Sig {
        addr: storage_of(addr),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; 80],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// GTSM on a connected or connecting socket: TTL 255 out, 255 required in.
pub fn set_gtsm(fd: RawFd, v6: bool) -> io::Result<()> {
    let ttl: libc::c_int = 255;
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &ttl)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &ttl)
    }
}

/// Connect to `peer` with `prot` applied before the SYN, within `timeout`.
pub fn connect(peer: SocketAddr, prot: &Protection, timeout: Duration) -> io::Result<TcpStream> {
    let v6 = peer.is_ipv6();
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the TcpStream closes
    // it on every path from here.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if let Some(k) = &prot.md5_key {
        set_md5(fd, peer.ip(), Some(k), false)?;
    }
    if prot.ttl_security {
        set_gtsm(fd, v6)?;
    }
    stream.set_nonblocking(true)?;
    let ss = storage_of(peer.ip());
    let mut ss = ss;
    let len = if v6 {
        // SAFETY: the storage holds a sockaddr_in6 written by storage_of.
        unsafe {
            (*std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in6>()).sin6_port =
                peer.port().to_be()
        };
        std::mem::size_of::<libc::sockaddr_in6>()
    } else {
        // SAFETY: the storage holds a sockaddr_in written by storage_of.
        unsafe {
            (*std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in>()).sin_port =
                peer.port().to_be()
        };
        std::mem::size_of::<libc::sockaddr_in>()
    };
    // SAFETY: a valid address of `len` bytes for this socket's family.
    let rc = unsafe { libc::connect(fd, std::ptr::from_ref(&ss).cast(), len as libc::socklen_t) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Install every peer's TCP-MD5 key on a listening socket.
pub fn protect_listener<'a>(
    l: &TcpListener,
    keys: impl Iterator<Item = (IpAddr, &'a [u8])>,
) -> io::Result<()> {
    let v6 = l.local_addr()?.is_ipv6();
    for (peer, key) in keys {
        set_md5(l.as_raw_fd(), peer, Some(key), v6)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_keys_install_on_sockets_and_long_keys_are_refused() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        protect_listener(&l, [(peer, &b"secret"[..])].into_iter()).expect("md5 on listener");
        assert!(set_md5(l.as_raw_fd(), peer, Some(&[0u8; 81]), false).is_err());
        // A signed connection to the signed listener works.
        let addr = l.local_addr().expect("addr");
        let prot = Protection {
            md5_key: Some(b"secret".to_vec()),
            ttl_security: false,
        };
        let s = connect(addr, &prot, Duration::from_secs(2)).expect("signed connect");
        let (a, _) = l.accept().expect("accept");
        set_gtsm(a.as_raw_fd(), false).expect("gtsm");
        drop(s);
        // GTSM towards a listener that answers with TTL 64: its SYN-ACK is
        // below the minimum and dropped.
        let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
        let gtsm = Protection {
            md5_key: None,
            ttl_security: true,
        };
        assert!(connect(
            plain.local_addr().expect("addr"),
            &gtsm,
            Duration::from_millis(300)
        )
        .is_err());
        // An unsigned one is never answered (the SYN is dropped).
        let e = connect(addr, &Protection::default(), Duration::from_millis(300));
        assert!(e.is_err(), "unsigned SYN must be dropped");
    }
}
