//! `vpnfwd.toml`: the dataplane, VRFs, ports and static routes.
//!
//! Every field is checked when the file is loaded; an error names the
//! section, the entry and the field, so an operator can fix the file without
//! reading the code.

use dataplane::wire::mpls::Label;
use dataplane::wire::MacAddr;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Packet I/O and workers.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// VRFs.
    #[serde(default, rename = "vrf")]
    pub vrfs: Vec<VrfConfig>,
    /// The core-facing uplink.
    pub uplink: Option<UplinkConfig>,
    /// Local attachments.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// Static routes.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The BGP speaker.
    pub bgp: Option<BgpConfig>,
    /// The REST API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Bulk static routes: one prefix per line of a file, all to one target.
    #[serde(default, rename = "route_file")]
    pub route_files: Vec<RouteFileConfig>,
}

/// `[[route_file]]`: many prefixes with one target, read at start-up (not
/// on reload). The target is either a local `port` (its interface name) or
/// a remote PE (`label`, `pe`, `encap`, `nexthop_mac`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFileConfig {
    /// VRF name.
    pub vrf: String,
    /// File with one prefix per line (`#` comments and blank lines allowed).
    pub path: String,
    /// Local port interface the prefixes are reached through.
    pub port: Option<String>,
    /// Remote target: VPN label.
    pub label: Option<u32>,
    /// Remote target: PE address.
    pub pe: Option<Ipv4Addr>,
    /// Remote target: encapsulation.
    #[serde(default)]
    pub encap: EncapKind,
    /// Remote target: next-hop MAC on the uplink.
    pub nexthop_mac: Option<String>,
}

/// `[dataplane]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// Packet I/O back-end: `afpacket` (the default).
    #[serde(default)]
    pub backend: Backend,
    /// Cores for the workers, one worker per core (default: one unpinned worker).
    #[serde(default)]
    pub cores: Vec<usize>,
    /// `busy` (poll continuously, the default) or `sleep` (yield when idle).
    #[serde(default)]
    pub idle: IdleMode,
    /// How the AF_PACKET back-end transmits: `af_xdp` (the default: an
    /// AF_XDP socket per worker on the interface's queue of that number,
    /// falling back to `sendmmsg` where it cannot be opened) or `sendmmsg`.
    #[serde(default)]
    pub tx: TxMode,
    /// DPDK settings (`backend = "dpdk"`).
    pub dpdk: Option<DpdkConfig>,
}

/// How the AF_PACKET back-end transmits.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TxMode {
    /// AF_XDP (copy mode), falling back to `sendmmsg`.
    #[default]
    AfXdp,
    /// `sendmmsg` on the AF_PACKET socket.
    Sendmmsg,
}

/// Packet I/O back-ends.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// AF_PACKET (TPACKET_V3).
    #[default]
    Afpacket,
    /// DPDK poll-mode drivers (a build with the `dpdk` feature).
    Dpdk,
}

/// `[dataplane.dpdk]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DpdkConfig {
    /// The driver each interface is opened with: `af_xdp` (the default) or
    /// `af_packet`.
    #[serde(default)]
    pub driver: DpdkDriver,
    /// Device strings by interface name, replacing the generated
    /// `net_af_xdp<N>,iface=<interface>` (e.g. to set `queue_count`).
    #[serde(default)]
    pub devargs: std::collections::BTreeMap<String, String>,
    /// Run without huge pages (trials only).
    #[serde(default)]
    pub no_huge: bool,
    /// Memory EAL reserves up front, in MiB (0, the default: take huge
    /// pages as needed).
    #[serde(default)]
    pub memory_mb: usize,
    /// Packet buffers in the pool.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// The uplink's kernel twin: a tap interface of this name holding the
    /// router's own address, for BGP and ARP while DPDK owns the uplink.
    /// Default `vpnfwd0` with `af_xdp`; none with `af_packet` (the kernel
    /// keeps seeing the interface's traffic).
    pub kernel_interface: Option<String>,
    /// Address (with prefix length) given to the kernel twin, e.g.
    /// `192.0.2.1/24`.
    pub kernel_address: Option<String>,
    /// Further EAL arguments.
    #[serde(default)]
    pub eal_args: Vec<String>,
}

fn default_mbufs() -> u32 {
    8191
}

/// How DPDK opens a Linux interface.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DpdkDriver {
    /// `net_af_xdp`: the interface's frames go to vpnfwd only.
    #[default]
    AfXdp,
    /// `net_af_packet`: vpnfwd and the kernel both see them.
    AfPacket,
}

/// Worker idle behaviour.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdleMode {
    /// Poll continuously.
    #[default]
    Busy,
    /// Sleep briefly when a round finds no packet.
    Sleep,
}

/// `[[vrf]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrfConfig {
    /// Name (referenced by ports and routes).
    pub name: String,
    /// The per-VRF VPN label packets from the core arrive with.
    pub label: Option<u32>,
    /// Route distinguisher for the VRF's exported routes (`asn:n` or `ip:n`).
    pub rd: Option<String>,
    /// Route targets whose VPN routes the VRF imports.
    #[serde(default)]
    pub import_targets: Vec<String>,
    /// Route targets the VRF's routes are exported with.
    #[serde(default)]
    pub export_targets: Vec<String>,
}

/// `[api]`: the REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port (default 127.0.0.1:8082).
    #[serde(default = "default_api")]
    pub listen: std::net::SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api(),
        }
    }
}

/// The API's default address.
pub fn default_api() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8082))
}

/// `[bgp]`: the embedded BGP speaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpConfig {
    /// Our AS.
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose (0 or ≥ 3 seconds).
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// How packets reach the remote PEs of BGP routes.
    #[serde(default)]
    pub encap: EncapKind,
    /// Peers (route reflectors or PEs).
    #[serde(default, rename = "peer")]
    pub peers: Vec<BgpPeerConfig>,
    /// Accept connections from the peers on port 179 too (default true).
    #[serde(default = "yes")]
    pub listen: bool,
    /// Address to listen on (default: all).
    pub listen_address: Option<IpAddr>,
    /// Share a prefix among every best route to distinct PEs (equal up to
    /// the router-id tie-breaker; default true). False installs the single
    /// best path.
    #[serde(default = "yes")]
    pub multipath: bool,
    /// Restart time we announce as a graceful-restart helper (RFC 4724),
    /// in seconds (default 120; 0 leaves the capability out, so peers'
    /// routes are withdrawn as soon as a session drops).
    #[serde(default = "default_restart_time")]
    pub graceful_restart_time: u16,
    /// Offer route-target constraint (RFC 4684) and advertise the route
    /// targets our VRFs import, so that route reflectors send only the VPN
    /// routes we can use (default true).
    #[serde(default = "yes")]
    pub rt_constraint: bool,
}

fn default_restart_time() -> u16 {
    120
}

fn yes() -> bool {
    true
}

fn default_hold() -> u16 {
    90
}

/// `[[bgp.peer]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeerConfig {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's AS.
    pub asn: u32,
    /// Only wait for the peer to connect (no outgoing connection).
    #[serde(default)]
    pub passive: bool,
    /// Most VPN routes accepted from this peer; one more ends the session
    /// with a Cease NOTIFICATION (RFC 4486 subcode 1) and it stays down for
    /// a minute before reconnecting. Absent: no limit.
    pub max_prefixes: Option<u32>,
    /// TCP-MD5 password (RFC 2385), 1 to 80 bytes.
    pub password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only packets that
    /// arrive with 255, i.e. from a directly connected peer.
    #[serde(default)]
    pub ttl_security: bool,
}

/// Parse a route target `asn:n`, `asn4:n` or `a.b.c.d:n` into its extended
/// community (RFC 4360 §4, RFC 5668).
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_route_target(s: &str) -> Result<[u8; 8], String> {
    let (a, n) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not a route target (asn:number or ip:number)"))?;
    let mut b = [0u8; 8];
    b[1] = 0x02;
    if let Ok(ip) = a.parse::<Ipv4Addr>() {
        let n: u16 = n
            .parse()
            .map_err(|_| format!("{s:?}: the number after an IP must fit 16 bits"))?;
        b[0] = 0x01;
        b[2..6].copy_from_slice(&ip.octets());
        b[6..8].copy_from_slice(&n.to_be_bytes());
        return Ok(b);
    }
    let asn: u32 = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not an AS number or IPv4 address"))?;
    match (u16::try_from(asn), n.parse::<u32>()) {
        (Ok(asn), Ok(n)) => {
            b[2..4].copy_from_slice(&asn.to_be_bytes());
            b[4..8].copy_from_slice(&n.to_be_bytes());
        }
        (Err(_), Ok(n)) => {
            let n = u16::try_from(n)
                .map_err(|_| format!("{s:?}: with a 4-octet AS the number must fit 16 bits"))?;
            b[0] = 0x02;
            b[2..6].copy_from_slice(&asn.to_be_bytes());
            b[6..8].copy_from_slice(&n.to_be_bytes());
        }
        (_, Err(_)) => return Err(format!("{s:?}: {n:?} is not a number")),
    }
    Ok(b)
}

/// Parse a route distinguisher `asn:n` (type 0 or 2) or `a.b.c.d:n` (type 1).
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_rd(s: &str) -> Result<crate::bgp::wire::RouteDistinguisher, String> {
    use crate::bgp::wire::RouteDistinguisher as Rd;
    let (a, n) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not a route distinguisher"))?;
    if let Ok(ip) = a.parse::<Ipv4Addr>() {
        return n
            .parse::<u16>()
            .map(|n| Rd::ip(ip, n))
            .map_err(|_| format!("{s:?}: number must fit 16 bits"));
    }
    let asn: u32 = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not an AS number or IPv4 address"))?;
    let n: u32 = n
        .parse()
        .map_err(|_| format!("{s:?}: {n:?} is not a number"))?;
    match u16::try_from(asn) {
        Ok(asn) => Ok(Rd::as2(asn, n)),
        Err(_) => u16::try_from(n)
            .map(|n| Rd::as4(asn, n))
            .map_err(|_| format!("{s:?}: with a 4-octet AS the number must fit 16 bits")),
    }
}

/// `[uplink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Interface name.
    pub interface: String,
    /// Router MAC on the uplink (default: the interface's).
    pub mac: Option<String>,
    /// Our tunnel endpoint address (GRE and UDP are accepted to it; ARP
    /// requests are sent from it).
    pub address: Option<Ipv4Addr>,
    /// First hop towards every remote PE (a routed core); absent when the
    /// PEs are directly connected.
    pub gateway: Option<Ipv4Addr>,
}

/// `[[port]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Interface name.
    pub interface: String,
    /// 802.1Q VLAN (0 or absent: untagged).
    #[serde(default)]
    pub vlan: u16,
    /// VRF name.
    pub vrf: String,
    /// The attached host's MAC.
    pub mac: String,
    /// Addresses or prefixes reachable through the host (also its allowed sources).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// IPv4 gateway address the router answers ARP for.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 gateway address the router answers neighbour solicitations for.
    pub gateway6: Option<Ipv6Addr>,
    /// Router MAC on this port (default: the interface's).
    pub router_mac: Option<String>,
}

/// `[[route]]`: a remote VPN route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// VRF name.
    pub vrf: String,
    /// Prefix, e.g. `10.2.0.0/16` or `2001:db8:2::/48`.
    pub prefix: String,
    /// VPN label the remote PE advertised.
    pub label: u32,
    /// Remote PE address.
    pub pe: Ipv4Addr,
    /// `mpls` (over Ethernet), `gre` or `udp`.
    #[serde(default)]
    pub encap: EncapKind,
    /// Transport label (MPLS over Ethernet only).
    pub transport_label: Option<u32>,
    /// MAC of the next hop on the uplink; resolved with ARP when absent.
    pub nexthop_mac: Option<String>,
}

/// Encapsulations.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EncapKind {
    /// MPLS over Ethernet.
    #[default]
    Mpls,
    /// MPLS-over-GRE (RFC 4023).
    Gre,
    /// MPLS-over-UDP (RFC 7510).
    Udp,
}

/// A configuration error, naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a field of the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value that parses but is not valid.
    #[error("{at}: {msg}")]
    Invalid {
        /// Section, entry and field.
        at: String,
        /// What is wrong.
        msg: String,
    },
}

fn invalid(at: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        at: at.into(),
        msg: msg.into(),
    }
}

/// Parse a prefix `a.b.c.d/len` or `x::/len` (a bare address is a host route).
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match l {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .map_err(|_| format!("{l:?} is not a prefix length"))?,
    };
    if len > max {
        return Err(format!("prefix length {len} exceeds {max}"));
    }
    let host_bits_set = match addr {
        IpAddr::V4(v) => len < 32 && u32::from(v) << len != 0,
        IpAddr::V6(v) => len < 128 && u128::from(v) << len != 0,
    };
    if host_bits_set {
        return Err(format!("{s} has bits set beyond /{len}"));
    }
    Ok((addr, len))
}

/// Parse a MAC address field.
///
/// # Errors
/// A message for a malformed address.
pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

fn label(v: u32, at: &str) -> Result<Label, ConfigError> {
    match Label::new(v) {
        Some(l) if v >= Label::FIRST_UNRESERVED => Ok(l),
        Some(_) => Err(invalid(at, format!("label {v} is reserved (0-15)"))),
        None => Err(invalid(at, format!("label {v} does not fit 20 bits"))),
    }
}

impl Config {
    /// Parse and validate a configuration text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Read, parse and validate a file.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Index of a VRF by name.
    pub fn vrf_index(&self, name: &str) -> Option<usize> {
        self.vrfs.iter().position(|v| v.name == name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut labels = HashSet::new();
        for (i, v) in self.vrfs.iter().enumerate() {
            let at = format!("vrf[{i}] ({})", v.name);
            if v.name.is_empty() {
                return Err(invalid(format!("vrf[{i}].name"), "must not be empty"));
            }
            if !names.insert(v.name.as_str()) {
                return Err(invalid(at, "duplicate VRF name"));
            }
            if let Some(rd) = &v.rd {
                parse_rd(rd).map_err(|e| invalid(format!("{at}.rd"), e))?;
            }
            for t in v.import_targets.iter().chain(&v.export_targets) {
                parse_route_target(t)
                    .map_err(|e| invalid(format!("{at}.import_targets/export_targets"), e))?;
            }
            if !v.export_targets.is_empty() && (v.rd.is_none() || v.label.is_none()) {
                return Err(invalid(at.clone(), "exporting routes needs rd and label"));
            }
            if let Some(l) = v.label {
                label(l, &format!("{at}.label"))?;
                if !labels.insert(l) {
                    return Err(invalid(
                        format!("{at}.label"),
                        format!("label {l} is used by another VRF"),
                    ));
                }
            }
        }
        if let Some(u) = &self.uplink {
            if let Some(m) = &u.mac {
                parse_mac(m).map_err(|e| invalid("uplink.mac", e))?;
            }
        }
        match (&self.dataplane.backend, &self.dataplane.dpdk) {
            (Backend::Afpacket, Some(_)) => {
                return Err(invalid(
                    "dataplane.dpdk",
                    "set only with backend = \"dpdk\"",
                ))
            }
            (Backend::Dpdk, d) => {
                if !cfg!(feature = "dpdk") {
                    return Err(invalid(
                        "dataplane.backend",
                        "this vpnfwd was built without DPDK: build it with `cargo build --release --features dpdk`, or use backend = \"afpacket\"",
                    ));
                }
                let d = d.clone().unwrap_or_default();
                if d.memory_mb != 0 && d.memory_mb < 64 {
                    return Err(invalid(
                        "dataplane.dpdk.memory_mb",
                        "0 (as needed) or at least 64",
                    ));
                }
                if d.mbufs < 1024 {
                    return Err(invalid("dataplane.dpdk.mbufs", "at least 1024"));
                }
                if let Some(a) = &d.kernel_address {
                    let ok = a.split_once('/').is_some_and(|(ip, len)| {
                        match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
                            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
                            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
                            _ => false,
                        }
                    });
                    if !ok {
                        return Err(invalid(
                            "dataplane.dpdk.kernel_address",
                            format!("{a:?} is not an interface address such as 192.0.2.1/24"),
                        ));
                    }
                }
                if let Some(k) = &d.kernel_interface {
                    if k.is_empty() || k.len() > 15 || k.contains(['/', ' ', ',']) {
                        return Err(invalid(
                            "dataplane.dpdk.kernel_interface",
                            "an interface name of 1 to 15 characters without '/', ',' or spaces",
                        ));
                    }
                }
            }
            (Backend::Afpacket, None) => {}
        }
        let mut seen = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let at = format!("port[{i}] ({})", p.interface);
            if self.vrf_index(&p.vrf).is_none() {
                return Err(invalid(
                    format!("{at}.vrf"),
                    format!("no VRF named {:?}", p.vrf),
                ));
            }
            if p.vlan > 4094 {
                return Err(invalid(
                    format!("{at}.vlan"),
                    "VLAN ids are 0 (untagged) to 4094",
                ));
            }
            if !seen.insert((p.interface.as_str(), p.vlan)) {
                return Err(invalid(
                    at,
                    "interface and VLAN already used by another port",
                ));
            }
            if self
                .uplink
                .as_ref()
                .is_some_and(|u| u.interface == p.interface)
            {
                return Err(invalid(at, "interface is the uplink"));
            }
            parse_mac(&p.mac).map_err(|e| invalid(format!("{at}.mac"), e))?;
            if let Some(m) = &p.router_mac {
                parse_mac(m).map_err(|e| invalid(format!("{at}.router_mac"), e))?;
            }
            for a in &p.addresses {
                parse_prefix(a).map_err(|e| invalid(format!("{at}.addresses"), e))?;
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("route[{i}] ({})", r.prefix);
            if self.vrf_index(&r.vrf).is_none() {
                return Err(invalid(
                    format!("{at}.vrf"),
                    format!("no VRF named {:?}", r.vrf),
                ));
            }
            parse_prefix(&r.prefix).map_err(|e| invalid(format!("{at}.prefix"), e))?;
            label(r.label, &format!("{at}.label"))?;
            if let Some(t) = r.transport_label {
                if r.encap != EncapKind::Mpls {
                    return Err(invalid(
                        format!("{at}.transport_label"),
                        "only with encap = \"mpls\"",
                    ));
                }
                label(t, &format!("{at}.transport_label"))?;
            }
            match &r.nexthop_mac {
                Some(m) => {
                    parse_mac(m).map_err(|e| invalid(format!("{at}.nexthop_mac"), e))?;
                }
                None if self.uplink.as_ref().and_then(|u| u.address).is_none() => {
                    return Err(invalid(
                        format!("{at}.nexthop_mac"),
                        "absent, so resolved with ARP, which needs uplink.address",
                    ));
                }
                None => {}
            }
            if self.uplink.is_none() {
                return Err(invalid(at, "remote routes need an [uplink]"));
            }
            if r.encap != EncapKind::Mpls && self.uplink.as_ref().and_then(|u| u.address).is_none()
            {
                return Err(invalid(
                    format!("{at}.encap"),
                    "GRE and UDP need uplink.address",
                ));
            }
        }
        if let Some(b) = &self.bgp {
            for (i, p) in b.peers.iter().enumerate() {
                if let Some(pw) = &p.password {
                    if pw.is_empty() || pw.len() > 80 {
                        return Err(invalid(
                            format!("bgp.peer[{i}].password"),
                            "1 to 80 bytes (TCP-MD5 key)",
                        ));
                    }
                }
                if p.max_prefixes == Some(0) {
                    return Err(invalid(
                        format!("bgp.peer[{i}].max_prefixes"),
                        "at least 1 (leave it out for no limit)",
                    ));
                }
            }
            if b.graceful_restart_time > 4095 {
                return Err(invalid(
                    "bgp.graceful_restart_time",
                    "at most 4095 seconds (12 bits, RFC 4724)",
                ));
            }
            if b.hold_time == 1 || b.hold_time == 2 {
                return Err(invalid("bgp.hold_time", "0 or at least 3 seconds"));
            }
            if b.peers.is_empty() {
                return Err(invalid("bgp", "no [[bgp.peer]]"));
            }
            if self.uplink.as_ref().and_then(|u| u.address).is_none() {
                return Err(invalid(
                    "bgp",
                    "BGP needs uplink.address (the next hop we advertise)",
                ));
            }
        }
        for (i, f) in self.route_files.iter().enumerate() {
            let at = format!("route_file[{i}] ({})", f.path);
            if self.vrf_index(&f.vrf).is_none() {
                return Err(invalid(
                    format!("{at}.vrf"),
                    format!("no VRF named {:?}", f.vrf),
                ));
            }
            match (&f.port, f.label, f.pe, &f.nexthop_mac) {
                (Some(p), None, None, None) => {
                    if !self
                        .ports
                        .iter()
                        .any(|q| &q.interface == p && q.vrf == f.vrf)
                    {
                        return Err(invalid(
                            format!("{at}.port"),
                            format!("no port on {p:?} in VRF {:?}", f.vrf),
                        ));
                    }
                }
                (None, Some(l), Some(_), Some(m)) => {
                    label(l, &format!("{at}.label"))?;
                    parse_mac(m).map_err(|e| invalid(format!("{at}.nexthop_mac"), e))?;
                    if self.uplink.is_none() {
                        return Err(invalid(at, "remote routes need an [uplink]"));
                    }
                    if f.encap != EncapKind::Mpls
                        && self.uplink.as_ref().and_then(|u| u.address).is_none()
                    {
                        return Err(invalid(
                            format!("{at}.encap"),
                            "GRE and UDP need uplink.address",
                        ));
                    }
                }
                _ => {
                    return Err(invalid(
                        at,
                        "give either port, or label, pe and nexthop_mac",
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[dataplane]
idle = "sleep"

[[vrf]]
name = "blue"
label = 100

[uplink]
interface = "up0"
address = "192.0.2.1"

[[port]]
interface = "h1"
vrf = "blue"
mac = "02:00:00:00:00:01"
addresses = ["10.1.1.1/32"]
gateway = "10.1.1.254"

[[route]]
vrf = "blue"
prefix = "10.2.0.0/16"
label = 1000
pe = "192.0.2.2"
encap = "gre"
nexthop_mac = "02:00:00:00:02:fe"
"#;

    #[test]
    fn a_complete_file_parses() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.vrfs.len(), 1);
        assert_eq!(c.dataplane.idle, IdleMode::Sleep);
        assert_eq!(c.routes[0].encap, EncapKind::Gre);
    }

    fn err(text: &str) -> String {
        Config::parse(text).expect_err("invalid").to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(
            err(&GOOD.replace("vrf = \"blue\"\nmac", "vrf = \"red\"\nmac"))
                .contains("port[0] (h1).vrf")
        );
        assert!(err(&GOOD.replace("label = 1000", "label = 2000000"))
            .contains("route[0] (10.2.0.0/16).label"));
        assert!(err(&GOOD.replace("label = 100\n", "label = 3\n")).contains("reserved"));
        assert!(err(&GOOD.replace("10.2.0.0/16", "10.2.0.1/16")).contains("bits set beyond"));
        assert!(
            err(&GOOD.replace("02:00:00:00:00:01", "02:00:00:00:01")).contains("port[0] (h1).mac")
        );
        assert!(err(&GOOD.replace("idle = \"sleep\"", "idle = \"nap\"")).contains("nap"));
        assert!(err(&GOOD.replace("[[port]]", "[[port]]\ncolour = 1")).contains("colour"));
        assert!(err(&GOOD.replace("address = \"192.0.2.1\"\n", ""))
            .contains("GRE and UDP need uplink.address"));
        let arp = GOOD
            .replace("nexthop_mac = \"02:00:00:00:02:fe\"\n", "")
            .replace("encap = \"gre\"", "encap = \"mpls\"");
        assert!(Config::parse(&arp).is_ok());
        assert!(err(&arp.replace("address = \"192.0.2.1\"\n", "")).contains("resolved with ARP"));
    }

    #[test]
    fn bgp_and_dpdk_settings_are_checked_by_field() {
        let bgp = format!(
            "{GOOD}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n\n[[bgp.peer]]\naddress = \"192.0.2.9\"\nasn = 65001\n"
        );
        assert!(Config::parse(&bgp).is_ok());
        let c = Config::parse(&bgp).expect("bgp");
        let b = c.bgp.as_ref().expect("bgp");
        assert!(b.multipath && b.rt_constraint);
        assert_eq!(b.graceful_restart_time, 120);
        let long = "x".repeat(81);
        assert!(err(&format!("{bgp}password = \"{long}\"\n")).contains("bgp.peer[0].password"));
        assert!(err(&format!("{bgp}password = \"\"\n")).contains("bgp.peer[0].password"));
        assert!(Config::parse(&format!("{bgp}password = \"k\"\nttl_security = true\n")).is_ok());
        assert!(err(&format!("{bgp}max_prefixes = 0\n")).contains("bgp.peer[0].max_prefixes"));
        assert!(err(&bgp.replace(
            "router_id = \"192.0.2.1\"\n",
            "router_id = \"192.0.2.1\"\ngraceful_restart_time = 5000\n"
        ))
        .contains("bgp.graceful_restart_time"));
        // DPDK settings only with the DPDK back-end.
        let dp = GOOD.replace(
            "[dataplane]\nidle = \"sleep\"\n",
            "[dataplane]\nidle = \"sleep\"\n\n[dataplane.dpdk]\nmbufs = 4095\n",
        );
        assert!(err(&dp).contains("dataplane.dpdk"));
        let dpdk = dp.replace(
            "idle = \"sleep\"\n",
            "idle = \"sleep\"\nbackend = \"dpdk\"\n",
        );
        if cfg!(feature = "dpdk") {
            assert!(Config::parse(&dpdk).is_ok());
            assert!(
                err(&dpdk.replace("mbufs = 4095", "mbufs = 10")).contains("dataplane.dpdk.mbufs")
            );
            assert!(err(&dpdk.replace("mbufs = 4095", "memory_mb = 8"))
                .contains("dataplane.dpdk.memory_mb"));
            assert!(
                err(&dpdk.replace("mbufs = 4095", "kernel_address = \"192.0.2.1\""))
                    .contains("dataplane.dpdk.kernel_address")
            );
            assert!(
                err(&dpdk.replace("mbufs = 4095", "kernel_interface = \"a/b\""))
                    .contains("dataplane.dpdk.kernel_interface")
            );
            assert!(err(&dpdk.replace("mbufs = 4095", "driver = \"pcap\"")).contains("pcap"));
        } else {
            assert!(err(&dpdk).contains("built without DPDK"));
        }
    }

    #[test]
    fn route_files_name_one_target() {
        let local =
            format!("{GOOD}\n[[route_file]]\nvrf = \"blue\"\npath = \"r.txt\"\nport = \"h1\"\n");
        assert!(Config::parse(&local).is_ok());
        assert!(err(&local.replace("port = \"h1\"", "port = \"h9\"")).contains("no port on \"h9\""));
        let remote = format!("{GOOD}\n[[route_file]]\nvrf = \"blue\"\npath = \"r.txt\"\nlabel = 500\npe = \"192.0.2.9\"\nnexthop_mac = \"02:00:00:00:00:09\"\n");
        assert!(Config::parse(&remote).is_ok());
        assert!(err(&remote.replace("label = 500\n", "")).contains("give either port"));
    }

    #[test]
    fn route_targets_and_distinguishers_parse_in_all_three_forms() {
        assert_eq!(
            parse_route_target("65000:100"),
            Ok([0, 2, 0xfd, 0xe8, 0, 0, 0, 100])
        );
        assert_eq!(
            parse_route_target("192.0.2.1:7"),
            Ok([1, 2, 192, 0, 2, 1, 0, 7])
        );
        assert_eq!(
            parse_route_target("4200000000:7"),
            Ok([2, 2, 0xfa, 0x56, 0xea, 0, 0, 7])
        );
        assert!(parse_route_target("4200000000:70000").is_err());
        assert!(parse_route_target("x:1").is_err());
        assert_eq!(
            parse_rd("65000:100").map(|r| r.to_string()),
            Ok("65000:100".into())
        );
        assert_eq!(
            parse_rd("192.0.2.1:5").map(|r| r.to_string()),
            Ok("192.0.2.1:5".into())
        );
        assert_eq!(
            parse_rd("4200000000:5").map(|r| r.to_string()),
            Ok("4200000000:5".into())
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(
            parse_prefix("10.0.0.0/8"),
            Ok(("10.0.0.0".parse().expect("ip"), 8))
        );
        assert_eq!(
            parse_prefix("2001:db8::1"),
            Ok(("2001:db8::1".parse().expect("ip"), 128))
        );
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("banana/8").is_err());
    }
}
