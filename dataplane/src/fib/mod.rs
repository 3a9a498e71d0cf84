//! Forwarding tables: ports, VRFs with IPv4/IPv6 LPM, nexthops and labels.
//!
//! One writer ([`Fib`], owned by the control thread) and many readers
//! ([`FibReader`], one per worker). Readers never wait: every table is an
//! RCU structure over [`crate::rcu`], and every update is published with
//! a single atomic store. Updates are incremental (see [`lpm`]).

pub mod lpm;
pub mod nexthop;
pub(crate) mod poptrie;

pub use lpm::{Lpm, LpmError, LpmShared, LpmStats, MAX_NEXTHOP};
pub use nexthop::{Encap, L2Rewrite, Nexthop, RemoteNexthop, Rewrite};
pub use poptrie::NO_ROUTE;

use crate::rcu::{Domain, Guard, Reader, SlotArray};
use crate::wire::mpls::Label;
use crate::wire::MacAddr;
use lpm::IntMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A VRF's identifier inside the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VrfId(pub u32);

/// A nexthop's identifier (below 2^31).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexthopId(u32);

impl NexthopId {
    /// A nexthop id, if below 2^31.
    pub const fn new(v: u32) -> Option<NexthopId> {
        if v <= MAX_NEXTHOP {
            Some(NexthopId(v))
        } else {
            None
        }
    }
    /// The raw id.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// A dataplane port (an interface of the packet I/O layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// Largest number of ports.
pub const MAX_PORTS: u16 = 256;
/// Largest number of VRFs.
pub const MAX_VRFS: u32 = 1 << 16;
/// Largest number of nexthops.
pub const MAX_NEXTHOPS: u32 = 1 << 22;

/// What arrives on a (port, VLAN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRole {
    /// A local attachment (VM, container, CE) in a VRF.
    Access(AccessPort),
    /// The core-facing uplink carrying MPLS.
    Uplink(UplinkPort),
}

/// A local attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPort {
    /// The VRF its packets are looked up in.
    pub vrf: VrfId,
    /// The router's MAC on this port (the gateway MAC hosts send to).
    pub router_mac: MacAddr,
    /// The attached host's MAC; frames from another source MAC are dropped.
    pub host_mac: Option<MacAddr>,
    /// Source addresses the host may use (anti-spoofing); empty allows any.
    pub allowed_v4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 source prefixes the host may use; empty allows any.
    pub allowed_v6: Vec<(Ipv6Addr, u8)>,
    /// The gateway address the router answers ARP for.
    pub gateway_v4: Option<Ipv4Addr>,
    /// The gateway address the router answers neighbour solicitations for.
    pub gateway_v6: Option<Ipv6Addr>,
}

impl AccessPort {
    /// True if `ip` is an allowed source.
    pub fn allows_v4(&self, ip: Ipv4Addr) -> bool {
        self.allowed_v4.is_empty()
            || self.allowed_v4.iter().any(|(p, l)| {
                let m = if *l == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(*l))
                };
                u32::from(ip) & m == u32::from(*p) & m
            })
    }
    /// True if `ip` is an allowed IPv6 source.
    pub fn allows_v6(&self, ip: Ipv6Addr) -> bool {
        self.allowed_v6.is_empty()
            || self.allowed_v6.iter().any(|(p, l)| {
                let m = if *l == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(*l))
                };
                u128::from(ip) & m == u128::from(*p) & m
            })
    }
}

/// The core-facing uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkPort {
    /// The router's MAC on the uplink.
    pub router_mac: MacAddr,
    /// The router's tunnel endpoint address (GRE and UDP are accepted to it).
    pub local_v4: Option<Ipv4Addr>,
}

/// What a VPN label means (RFC 4364 §4.3.2: per-VRF or per-attachment labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelAction {
    /// Pop and look the packet up in a VRF.
    VrfLookup(VrfId),
    /// Pop and send to a nexthop without an IP lookup.
    Nexthop(NexthopId),
}

/// A VRF's two LPM tables as readers see them.
pub struct VrfFib {
    /// IPv4 routes.
    pub v4: Arc<LpmShared>,
    /// IPv6 routes.
    pub v6: Arc<LpmShared>,
}

/// The tables readers share.
pub struct FibShared {
    domain: Domain,
    ports: SlotArray<PortRole>,
    vrfs: SlotArray<VrfFib>,
    nexthops: SlotArray<Nexthop>,
    labels: SlotArray<LabelAction>,
}

/// Why a FIB update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FibError {
    /// The VRF does not exist.
    #[error("no VRF {0:?}")]
    NoVrf(VrfId),
    /// The VRF id is beyond [`MAX_VRFS`].
    #[error("VRF id {0:?} out of range")]
    VrfRange(VrfId),
    /// Port id beyond [`MAX_PORTS`] or VLAN beyond 4094.
    #[error("port {0:?} vlan {1} out of range")]
    PortRange(PortId, u16),
    /// Nexthop id beyond [`MAX_NEXTHOPS`].
    #[error("nexthop {0:?} out of range")]
    NexthopRange(NexthopId),
    /// A route names a nexthop that is not installed.
    #[error("nexthop {0:?} not installed")]
    NoNexthop(NexthopId),
    /// A label is reserved (0–15).
    #[error("label {0} is reserved")]
    ReservedLabel(Label),
    /// The LPM refused the route.
    #[error(transparent)]
    Lpm(#[from] LpmError),
    /// An ECMP group with no member, or a member that is itself a group.
    #[error("invalid ECMP group: {0}")]
    Ecmp(&'static str),
}

fn port_index(port: PortId, vlan: u16) -> u32 {
    (u32::from(port.0) << 12) | u32::from(vlan)
}

/// The writer: the only one that changes the tables.
pub struct Fib {
    shared: Arc<FibShared>,
    vrfs: IntMap<u32, (Lpm, Lpm)>,
}

impl core::fmt::Debug for Fib {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fib")
            .field("vrfs", &self.vrfs.len())
            .finish()
    }
}

impl Default for Fib {
    fn default() -> Self {
        Self::new()
    }
}

impl Fib {
    /// Empty tables in a new reclamation domain.
    pub fn new() -> Fib {
        let domain = Domain::new();
        Fib {
            shared: Arc::new(FibShared {
                ports: SlotArray::new(&domain, u32::from(MAX_PORTS) << 12),
                vrfs: SlotArray::new(&domain, MAX_VRFS),
                nexthops: SlotArray::new(&domain, MAX_NEXTHOPS),
                labels: SlotArray::new(&domain, Label::MAX + 1),
                domain,
            }),
            vrfs: IntMap::default(),
        }
    }

    /// A reader for a worker thread.
    pub fn reader(&self) -> FibReader {
        FibReader {
            shared: self.shared.clone(),
            qsbr: self.shared.domain.register(),
        }
    }

    /// The reclamation domain.
    pub fn domain(&self) -> &Domain {
        &self.shared.domain
    }

    /// Create a VRF (no-op if it exists).
    ///
    /// # Errors
    /// [`FibError::VrfRange`].
    pub fn add_vrf(&mut self, vrf: VrfId) -> Result<(), FibError> {
        if vrf.0 >= MAX_VRFS {
            return Err(FibError::VrfRange(vrf));
        }
        if self.vrfs.contains_key(&vrf.0) {
            return Ok(());
        }
        let v4 = Lpm::new_v4(&self.shared.domain);
        let v6 = Lpm::new_v6(&self.shared.domain);
        self.shared.vrfs.set(
            vrf.0,
            Some(VrfFib {
                v4: v4.shared().clone(),
                v6: v6.shared().clone(),
            }),
        );
        self.vrfs.insert(vrf.0, (v4, v6));
        Ok(())
    }

    /// Delete a VRF and its routes.
    pub fn remove_vrf(&mut self, vrf: VrfId) {
        if self.vrfs.remove(&vrf.0).is_some() {
            self.shared.vrfs.set(vrf.0, None);
        }
    }

    fn vrf(&mut self, vrf: VrfId) -> Result<&mut (Lpm, Lpm), FibError> {
        self.vrfs.get_mut(&vrf.0).ok_or(FibError::NoVrf(vrf))
    }

    fn check_nh(&self, nh: NexthopId) -> Result<(), FibError> {
        if self.shared.nexthops.get_writer(nh.0).is_none() {
            return Err(FibError::NoNexthop(nh));
        }
        Ok(())
    }

    /// Insert or replace an IPv4 route.
    ///
    /// # Errors
    /// Unknown VRF or nexthop, or an invalid prefix.
    pub fn insert_v4(
        &mut self,
        vrf: VrfId,
        prefix: Ipv4Addr,
        len: u8,
        nh: NexthopId,
    ) -> Result<Option<NexthopId>, FibError> {
        self.check_nh(nh)?;
        let old = self.vrf(vrf)?.0.insert_v4(prefix.into(), len, nh.0)?;
        Ok(old.map(NexthopId))
    }

    /// Remove an IPv4 route.
    ///
    /// # Errors
    /// Unknown VRF or an invalid prefix.
    pub fn remove_v4(
        &mut self,
        vrf: VrfId,
        prefix: Ipv4Addr,
        len: u8,
    ) -> Result<Option<NexthopId>, FibError> {
        Ok(self
            .vrf(vrf)?
            .0
            .remove_v4(prefix.into(), len)?
            .map(NexthopId))
    }

    /// Insert or replace an IPv6 route.
    ///
    /// # Errors
    /// Unknown VRF or nexthop, or an invalid prefix.
    pub fn insert_v6(
        &mut self,
        vrf: VrfId,
        prefix: Ipv6Addr,
        len: u8,
        nh: NexthopId,
    ) -> Result<Option<NexthopId>, FibError> {
        self.check_nh(nh)?;
        let old = self.vrf(vrf)?.1.insert_v6(prefix.into(), len, nh.0)?;
        Ok(old.map(NexthopId))
    }

    /// Remove an IPv6 route.
    ///
    /// # Errors
    /// Unknown VRF or an invalid prefix.
    pub fn remove_v6(
        &mut self,
        vrf: VrfId,
        prefix: Ipv6Addr,
        len: u8,
    ) -> Result<Option<NexthopId>, FibError> {
        Ok(self
            .vrf(vrf)?
            .1
            .remove_v6(prefix.into(), len)?
            .map(NexthopId))
    }

    /// Install or replace a nexthop.
    ///
    /// # Errors
    /// Id out of range; ECMP members missing or nested.
    pub fn set_nexthop(&mut self, id: NexthopId, nh: Nexthop) -> Result<(), FibError> {
        if id.0 >= MAX_NEXTHOPS {
            return Err(FibError::NexthopRange(id));
        }
        if let Nexthop::Ecmp(members) = &nh {
            if members.is_empty() {
                return Err(FibError::Ecmp("no member"));
            }
            for m in members {
                match self.shared.nexthops.get_writer(m.0) {
                    None => return Err(FibError::NoNexthop(*m)),
                    Some(Nexthop::Ecmp(_)) => return Err(FibError::Ecmp("nested group")),
                    Some(_) => {}
                }
            }
        }
        self.shared.nexthops.set(id.0, Some(nh));
        Ok(())
    }

    /// Remove a nexthop. Routes still pointing at it drop their packets
    /// (counted as `NoNexthop`) until replaced.
    pub fn remove_nexthop(&mut self, id: NexthopId) {
        self.shared.nexthops.set(id.0, None);
    }

    /// Bind a VPN label.
    ///
    /// # Errors
    /// Reserved labels (0–15).
    pub fn set_label(&mut self, label: Label, action: Option<LabelAction>) -> Result<(), FibError> {
        if label.value() < Label::FIRST_UNRESERVED {
            return Err(FibError::ReservedLabel(label));
        }
        self.shared.labels.set(label.value(), action);
        Ok(())
    }

    /// Configure what a (port, VLAN) is; VLAN 0 means untagged.
    ///
    /// # Errors
    /// Port or VLAN out of range.
    pub fn set_port(
        &mut self,
        port: PortId,
        vlan: u16,
        role: Option<PortRole>,
    ) -> Result<(), FibError> {
        if port.0 >= MAX_PORTS || vlan > 4094 {
            return Err(FibError::PortRange(port, vlan));
        }
        self.shared.ports.set(port_index(port, vlan), role);
        Ok(())
    }

    /// Lookup from the writer's side (for the CLI's `fib lookup`).
    pub fn lookup_v4(&self, vrf: VrfId, ip: Ipv4Addr) -> Option<NexthopId> {
        let v = self.vrfs.get(&vrf.0)?.0.lookup_v4(ip.into());
        (v != NO_ROUTE).then_some(NexthopId(v))
    }

    /// Lookup from the writer's side.
    pub fn lookup_v6(&self, vrf: VrfId, ip: Ipv6Addr) -> Option<NexthopId> {
        let v = self.vrfs.get(&vrf.0)?.1.lookup_v6(ip.into());
        (v != NO_ROUTE).then_some(NexthopId(v))
    }

    /// Free retired memory readers no longer hold; returns what is pending.
    pub fn collect(&self) -> usize {
        self.shared.domain.collect()
    }
}

/// A worker's read access to the tables.
pub struct FibReader {
    shared: Arc<FibShared>,
    qsbr: Reader,
}

impl core::fmt::Debug for FibReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FibReader")
            .field("qsbr", &self.qsbr)
            .finish()
    }
}

impl FibReader {
    /// Announce a quiescent state (once per poll-loop iteration).
    #[inline]
    pub fn quiescent(&mut self) {
        self.qsbr.quiescent();
    }

    /// Go offline (before sleeping) so the writer need not wait.
    pub fn offline(&mut self) {
        self.qsbr.offline();
    }

    /// Open a read-side view for one burst.
    #[inline]
    pub fn view(&mut self) -> FibView<'_> {
        let g = self.qsbr.guard();
        FibView {
            shared: &self.shared,
            _guard: g,
        }
    }
}

/// The tables as seen during one burst.
pub struct FibView<'r> {
    shared: &'r FibShared,
    _guard: Guard<'r>,
}

impl FibView<'_> {
    /// What a (port, VLAN) is.
    #[inline]
    pub fn port(&self, port: PortId, vlan: u16) -> Option<&PortRole> {
        self.shared
            .ports
            .get_unchecked_domain(port_index(port, vlan))
    }
    /// A VRF's tables.
    #[inline]
    pub fn vrf(&self, vrf: VrfId) -> Option<&VrfFib> {
        self.shared.vrfs.get_unchecked_domain(vrf.0)
    }
    /// A nexthop.
    #[inline]
    pub fn nexthop(&self, id: u32) -> Option<&Nexthop> {
        self.shared.nexthops.get_unchecked_domain(id)
    }
    /// Start fetching a nexthop.
    #[inline]
    pub fn prefetch_nexthop(&self, id: u32) {
        self.shared.nexthops.prefetch_entry(id);
    }
    /// What a label means.
    #[inline]
    pub fn label(&self, label: u32) -> Option<LabelAction> {
        self.shared.labels.get_unchecked_domain(label).copied()
    }
}

impl VrfFib {
    /// IPv4 LPM inside a [`FibView`].
    #[inline]
    pub fn lookup_v4(&self, ip: u32) -> u32 {
        self.v4.lookup_v4_trusted(ip)
    }
    /// Start fetching the segment slot an IPv4 lookup of `ip` will read.
    #[inline]
    pub fn prefetch_slot_v4(&self, ip: u32) {
        self.v4.prefetch_slot_v4(ip);
    }
    /// Start fetching the chunk an IPv4 lookup of `ip` will read (the
    /// segment slot should already be cached).
    #[inline]
    pub fn prefetch_v4(&self, ip: u32) {
        self.v4.prefetch_v4(ip);
    }
    /// IPv6 LPM inside a [`FibView`].
    #[inline]
    pub fn lookup_v6(&self, ip: u128) -> u32 {
        self.v6.lookup_v6_trusted(ip)
    }
}
