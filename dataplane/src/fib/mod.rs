//! Forwarding tables: ports, VRFs with IPv4/IPv6 LPM, nexthops and labels.
//!
//! One writer ([`Fib`], owned by the control thread) and many readers
//! ([`FibReader`], one per worker). Readers never wait: every table is an
//! RCU structure over [`crate::rcu`], and every update is published with
//! a single atomic store. Updates are incremental (see [`lpm`]). Batches of
//! route changes are applied by a thread of the writer's own, in order,
//! while the control thread prepares the next batch.

mod arena;
pub mod lpm;
pub mod nexthop;
pub(crate) mod poptrie;
mod sparse;

pub use lpm::{Lpm, LpmError, LpmShared, LpmStats, SlotWord, MAX_NEXTHOP};
pub use nexthop::{Encap, L2Rewrite, Nexthop, RemoteNexthop, Rewrite};
pub use poptrie::NO_ROUTE;

use crate::rcu::{Domain, Guard, Reader, SlotArray};
use crate::wire::mpls::Label;
use crate::wire::MacAddr;
use lpm::IntMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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

/// The VRFs' LPM writers, by VRF id.
type Tables = IntMap<u32, (Lpm, Lpm)>;

/// One route change of a batch: `prefix` is the IPv4 address (in the low
/// 32 bits) or the IPv6 one, as words (24 bytes in all rather than 48 with
/// a u128's alignment); `nh` [`NO_ROUTE`] removes.
#[derive(Debug, Clone, Copy)]
struct RouteOp {
    vrf: u32,
    nh: u32,
    prefix: [u32; 4],
    v6: bool,
    len: u8,
}

impl RouteOp {
    fn new(vrf: VrfId, v6: bool, prefix: u128, len: u8, nh: Option<NexthopId>) -> RouteOp {
        RouteOp {
            vrf: vrf.0,
            nh: nh.map_or(NO_ROUTE, |n| n.0),
            prefix: [
                (prefix >> 96) as u32,
                (prefix >> 64) as u32,
                (prefix >> 32) as u32,
                prefix as u32,
            ],
            v6,
            len,
        }
    }

    fn prefix(&self) -> u128 {
        self.prefix
            .iter()
            .fold(0u128, |acc, w| (acc << 32) | u128::from(*w))
    }

    fn nh(&self) -> Option<u32> {
        (self.nh != NO_ROUTE).then_some(self.nh)
    }
}

/// Apply a validated route change.
fn apply(t: &mut Tables, op: &RouteOp) -> Result<Option<u32>, FibError> {
    let (v4, v6) = t.get_mut(&op.vrf).ok_or(FibError::NoVrf(VrfId(op.vrf)))?;
    let p = op.prefix();
    Ok(match (op.v6, op.nh()) {
        (false, Some(nh)) => v4.insert_v4(p as u32, op.len, nh)?,
        (false, None) => v4.remove_v4(p as u32, op.len)?,
        (true, Some(nh)) => v6.insert_v6(p, op.len, nh)?,
        (true, None) => v6.remove_v6(p, op.len)?,
    })
}

/// The LPM a change goes to.
fn lpm_of(t: &mut Tables, vrf: u32, v6: bool) -> Option<&mut Lpm> {
    t.get_mut(&vrf).map(|(v4, v6t)| if v6 { v6t } else { v4 })
}

/// Apply validated changes in order; each run of changes to one LPM
/// finds it once and retires what it unlinked once, at its end.
fn apply_all(t: &mut Tables, ops: &[RouteOp]) {
    let mut i = 0;
    while let Some(first) = ops.get(i) {
        let (vrf, v6) = (first.vrf, first.v6);
        let end = ops[i..]
            .iter()
            .position(|o| o.vrf != vrf || o.v6 != v6)
            .map_or(ops.len(), |n| i + n);
        if let Some(l) = lpm_of(t, vrf, v6) {
            l.hold_retired();
            for op in &ops[i..end] {
                // Checked when queued.
                let p = if v6 { op.prefix() } else { op.prefix() << 96 };
                l.set_checked(p, op.len, op.nh());
            }
            l.flush_retired();
        }
        i = end;
    }
}

/// Batches of fewer route changes are applied by the control thread
/// itself: handing them over would cost more than it saves.
const APPLIER_MIN: usize = 256;

/// Lock a mutex, recovering it if a panicking holder poisoned it (its
/// data is still consistent: every change under it completes or panics
/// before touching shared state).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Most batches handed over and not yet applied: the control thread goes
/// on deciding while the applier is up to this many batches behind. With
/// one, the two threads waited for each other at every batch whose
/// deciding and applying took unequal times, and a quarter of the two
/// cores stayed idle during a full table's ingest.
const QUEUE_DEPTH: usize = 4;

/// The hand-over between the control thread and the route applier.
#[derive(Debug, Default)]
struct Job {
    /// Batches handed over and waiting for the applier, oldest first.
    queue: std::collections::VecDeque<Vec<RouteOp>>,
    /// Emptied batch vectors (with their capacity) to fill next.
    spares: Vec<Vec<RouteOp>>,
    /// Batches handed over so far.
    handed: u64,
    /// Batches applied so far.
    applied: u64,
    /// The applier is applying a batch.
    busy: bool,
    /// The applier should exit.
    quit: bool,
    /// The applier panicked (a broken invariant): waiting for it would
    /// wait forever.
    failed: bool,
}

/// Marks the job failed if the applier unwinds while applying.
struct FailGuard<'a>(&'a (Mutex<Job>, Condvar));

impl Drop for FailGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut g = lock(&self.0 .0);
            g.busy = false;
            g.failed = true;
            self.0 .1.notify_all();
        }
    }
}

/// A thread that applies batches of route changes to the LPMs while the
/// control thread goes on deciding the next batch.
#[derive(Debug)]
struct Applier {
    job: Arc<(Mutex<Job>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Applier {
    fn start(tables: Arc<Mutex<Tables>>) -> std::io::Result<Applier> {
        let job: Arc<(Mutex<Job>, Condvar)> = Arc::default();
        let j = job.clone();
        let thread = std::thread::Builder::new()
            .name("vpnfwd-fib".into())
            .spawn(move || loop {
                let mut ops = {
                    let mut g = lock(&j.0);
                    while g.queue.is_empty() && !g.quit {
                        g =
                            j.1.wait(g)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    let Some(ops) = g.queue.pop_front() else {
                        return;
                    };
                    g.busy = true;
                    ops
                };
                let guard = FailGuard(&j);
                apply_all(&mut lock(&tables), &ops);
                drop(guard);
                ops.clear();
                let mut g = lock(&j.0);
                if g.spares.len() < QUEUE_DEPTH {
                    g.spares.push(ops);
                }
                g.busy = false;
                g.applied += 1;
                j.1.notify_all();
            })?;
        Ok(Applier {
            job,
            thread: Some(thread),
        })
    }

    /// Wait until no batch is queued or being applied.
    fn idle(&self) {
        let mut g = lock(&self.job.0);
        while (!g.queue.is_empty() || g.busy) && !g.failed {
            g = self
                .job
                .1
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        assert!(!g.failed, "the forwarding-table thread failed");
    }

    /// True if no batch is queued or being applied, or if the applier
    /// failed (so that a caller goes on to [`Applier::idle`], which says
    /// so).
    fn is_idle(&self) -> bool {
        let g = lock(&self.job.0);
        g.failed || (g.queue.is_empty() && !g.busy)
    }

    /// How many batches have been applied.
    fn applied(&self) -> u64 {
        lock(&self.job.0).applied
    }

    /// Queue `ops` behind the batches already handed over, first waiting
    /// while [`QUEUE_DEPTH`] of them wait; returns the batch's number
    /// (counting from 1) and an empty vector to fill next.
    fn hand(&self, ops: Vec<RouteOp>) -> (u64, Vec<RouteOp>) {
        let mut g = lock(&self.job.0);
        while g.queue.len() >= QUEUE_DEPTH && !g.failed {
            g = self
                .job
                .1
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        assert!(!g.failed, "the forwarding-table thread failed");
        g.queue.push_back(ops);
        g.handed += 1;
        let n = g.handed;
        let spare = g.spares.pop().unwrap_or_default();
        self.job.1.notify_all();
        (n, spare)
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        lock(&self.job.0).quit = true;
        self.job.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer: the only one that changes the tables.
///
/// Route changes can be batched ([`Fib::begin_batch`] …
/// [`Fib::end_batch`]): they are checked at once and queued, and a second
/// thread applies the batches to the LPMs, in order, while the control
/// thread goes on with the next ones (up to a few batches ahead). A
/// removed nexthop stays installed until the routes of its batch are
/// applied and every reader has passed a quiescent state since, so no
/// reader meets a route whose nexthop is gone. Every other change, and
/// every lookup, first waits for the batches in flight:
/// outside batches the tables behave as if each change were applied on the
/// spot.
pub struct Fib {
    /// First, so that it stops before the tables go.
    applier: Option<Applier>,
    shared: Arc<FibShared>,
    tables: Arc<Mutex<Tables>>,
    /// The VRFs that exist (to check queued routes without the tables).
    vrf_ids: IntMap<u32, ()>,
    /// The open batch, if any.
    batch: Option<Vec<RouteOp>>,
    /// Nexthops removed during the open batch.
    removals: Vec<u32>,
    /// Nexthops to remove once the batch of each number (see
    /// [`Applier::hand`]) is applied, oldest batch first.
    in_flight_removals: std::collections::VecDeque<(u64, Vec<u32>)>,
    /// An empty vector for the next batch.
    spare: Vec<RouteOp>,
    /// The VRF and the nexthop the last queued change was checked
    /// against (u32::MAX: none); a run of changes to one VRF over one
    /// nexthop checks them once. Forgotten when either goes.
    checked: (u32, u32),
}

impl core::fmt::Debug for Fib {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fib")
            .field("vrfs", &self.vrf_ids.len())
            .field("batch", &self.batch.as_ref().map(Vec::len))
            .finish()
    }
}

impl Default for Fib {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fib {
    fn drop(&mut self) {
        self.end_batch();
        self.wait_applied();
    }
}

impl Fib {
    /// Empty tables in a new reclamation domain.
    pub fn new() -> Fib {
        let domain = Domain::new();
        Fib {
            applier: None,
            shared: Arc::new(FibShared {
                ports: SlotArray::new(&domain, u32::from(MAX_PORTS) << 12),
                vrfs: SlotArray::new(&domain, MAX_VRFS),
                nexthops: SlotArray::new(&domain, MAX_NEXTHOPS),
                labels: SlotArray::new(&domain, Label::MAX + 1),
                domain,
            }),
            tables: Arc::default(),
            vrf_ids: IntMap::default(),
            batch: None,
            removals: Vec::new(),
            in_flight_removals: std::collections::VecDeque::new(),
            spare: Vec::new(),
            checked: (u32::MAX, u32::MAX),
        }
    }

    /// A reader for a worker thread.
    pub fn reader(&self) -> FibReader {
        FibReader {
            shared: self.shared.clone(),
            qsbr: self.shared.domain.register(),
        }
    }

    /// The tables' reclamation domain.
    pub fn domain(&self) -> &Domain {
        &self.shared.domain
    }

    /// Start queueing route changes (no-op if a batch is open).
    pub fn begin_batch(&mut self) {
        if self.batch.is_none() {
            self.batch = Some(std::mem::take(&mut self.spare));
        }
    }

    /// Close the open batch: hand its route changes to the applier thread
    /// (or, for a small batch, apply them here) and return. The nexthops
    /// removed during it go once its routes are applied.
    pub fn end_batch(&mut self) {
        let Some(mut ops) = self.batch.take() else {
            return;
        };
        let applier = if ops.len() < APPLIER_MIN {
            None
        } else {
            self.applier_ready()
        };
        let Some(a) = applier else {
            // After the batches handed over, in order.
            self.wait_applied();
            apply_all(&mut lock(&self.tables), &ops);
            for id in std::mem::take(&mut self.removals) {
                self.clear_nexthop(id);
            }
            ops.clear();
            self.spare = ops;
            return;
        };
        let (n, spare) = a.hand(ops);
        self.spare = spare;
        let removed = std::mem::take(&mut self.removals);
        if !removed.is_empty() {
            self.in_flight_removals.push_back((n, removed));
        }
        self.remove_released();
    }

    /// Remove the nexthops released during batches applied by now.
    fn remove_released(&mut self) {
        if self.in_flight_removals.is_empty() {
            return;
        }
        let applied = self.applier.as_ref().map_or(u64::MAX, Applier::applied);
        while self
            .in_flight_removals
            .front()
            .is_some_and(|(n, _)| *n <= applied)
        {
            if let Some((_, ids)) = self.in_flight_removals.pop_front() {
                for id in ids {
                    self.clear_nexthop(id);
                }
            }
        }
    }

    /// The applier thread, started on first use; None if no thread can be
    /// started (batches are then applied by the caller).
    fn applier_ready(&mut self) -> Option<&Applier> {
        if self.applier.is_none() {
            self.applier = Applier::start(self.tables.clone()).ok();
        }
        self.applier.as_ref()
    }

    /// Wait until every closed batch is applied (and the nexthops released
    /// during it removed): what the tables hold then is everything changed
    /// before the open batch, if any.
    pub fn wait_applied(&mut self) {
        if let Some(a) = &self.applier {
            a.idle();
        }
        for (_, ids) in std::mem::take(&mut self.in_flight_removals) {
            for id in ids {
                self.clear_nexthop(id);
            }
        }
    }

    /// True if every closed batch is applied (without waiting for it).
    pub fn is_applied(&self) -> bool {
        self.applier.as_ref().is_none_or(Applier::is_idle)
    }

    /// The LPMs, once no batch is in flight.
    fn tables(&self) -> MutexGuard<'_, Tables> {
        if let Some(a) = &self.applier {
            a.idle();
        }
        lock(&self.tables)
    }

    /// Create a VRF (no-op if it exists).
    ///
    /// # Errors
    /// [`FibError::VrfRange`].
    pub fn add_vrf(&mut self, vrf: VrfId) -> Result<(), FibError> {
        if vrf.0 >= MAX_VRFS {
            return Err(FibError::VrfRange(vrf));
        }
        if self.vrf_ids.contains_key(&vrf.0) {
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
        self.tables().insert(vrf.0, (v4, v6));
        self.vrf_ids.insert(vrf.0, ());
        Ok(())
    }

    /// Delete a VRF and its routes (closing the open batch first).
    pub fn remove_vrf(&mut self, vrf: VrfId) {
        self.end_batch();
        self.wait_applied();
        self.checked.0 = u32::MAX;
        if self.vrf_ids.remove(&vrf.0).is_some() {
            self.shared.vrfs.set(vrf.0, None);
            self.tables().remove(&vrf.0);
        }
    }

    fn check_nh(&self, nh: NexthopId) -> Result<(), FibError> {
        if self.shared.nexthops.get_writer(nh.0).is_none() {
            return Err(FibError::NoNexthop(nh));
        }
        Ok(())
    }

    /// Check a route change and queue it in the open batch (returning
    /// `Ok(None)`: the previous nexthop is not known yet), or apply it now.
    fn route(&mut self, op: RouteOp) -> Result<Option<NexthopId>, FibError> {
        if let Some(nh) = op.nh() {
            if nh != self.checked.1 {
                self.check_nh(NexthopId(nh))?;
                self.checked.1 = nh;
            }
        }
        if let Some(ops) = &mut self.batch {
            if op.vrf != self.checked.0 {
                if !self.vrf_ids.contains_key(&op.vrf) {
                    return Err(FibError::NoVrf(VrfId(op.vrf)));
                }
                self.checked.0 = op.vrf;
            }
            let (max, p) = if op.v6 {
                (128, op.prefix())
            } else {
                (32, op.prefix() << 96)
            };
            lpm::validate(max, p, op.len, op.nh())?;
            ops.push(op);
            return Ok(None);
        }
        self.wait_applied();
        Ok(apply(&mut lock(&self.tables), &op)?.map(NexthopId))
    }

    /// Insert or replace an IPv4 route; returns the previous nexthop
    /// (always None inside a batch).
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
        self.route(RouteOp::new(
            vrf,
            false,
            u128::from(u32::from(prefix)),
            len,
            Some(nh),
        ))
    }

    /// Remove an IPv4 route; returns its nexthop (always None inside a
    /// batch).
    ///
    /// # Errors
    /// Unknown VRF or an invalid prefix.
    pub fn remove_v4(
        &mut self,
        vrf: VrfId,
        prefix: Ipv4Addr,
        len: u8,
    ) -> Result<Option<NexthopId>, FibError> {
        self.route(RouteOp::new(
            vrf,
            false,
            u128::from(u32::from(prefix)),
            len,
            None,
        ))
    }

    /// Insert or replace an IPv6 route; returns the previous nexthop
    /// (always None inside a batch).
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
        self.route(RouteOp::new(vrf, true, u128::from(prefix), len, Some(nh)))
    }

    /// Remove an IPv6 route; returns its nexthop (always None inside a
    /// batch).
    ///
    /// # Errors
    /// Unknown VRF or an invalid prefix.
    pub fn remove_v6(
        &mut self,
        vrf: VrfId,
        prefix: Ipv6Addr,
        len: u8,
    ) -> Result<Option<NexthopId>, FibError> {
        self.route(RouteOp::new(vrf, true, u128::from(prefix), len, None))
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

    /// Remove a nexthop, once readers are done with what they saw before
    /// (and, inside a batch, once the batch's routes are applied). Routes
    /// still pointing at it then drop their packets (counted as
    /// `NoNexthop`) until replaced.
    ///
    /// Inside a batch the nexthop stays until the batch's routes are
    /// applied (they may be what moves routes off it).
    pub fn remove_nexthop(&mut self, id: NexthopId) {
        if self.checked.1 == id.0 {
            self.checked.1 = u32::MAX;
        }
        if self.batch.is_some() {
            self.removals.push(id.0);
            return;
        }
        self.wait_applied();
        self.clear_nexthop(id.0);
    }

    /// Clear nexthop `id`'s slot once every reader has passed a quiescent
    /// state: a reader that found a route to it just before the route
    /// moved still finds the nexthop.
    fn clear_nexthop(&self, id: u32) {
        let shared = Arc::downgrade(&self.shared);
        self.shared.domain.defer(Box::new(move || {
            if let Some(s) = shared.upgrade() {
                s.nexthops.set(id, None);
            }
        }));
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
    /// Waits for the batch in flight; sees none of the open batch.
    pub fn lookup_v4(&self, vrf: VrfId, ip: Ipv4Addr) -> Option<NexthopId> {
        let v = self.tables().get(&vrf.0)?.0.lookup_v4(ip.into());
        (v != NO_ROUTE).then_some(NexthopId(v))
    }

    /// Lookup from the writer's side (as [`Fib::lookup_v4`]).
    pub fn lookup_v6(&self, vrf: VrfId, ip: Ipv6Addr) -> Option<NexthopId> {
        let v = self.tables().get(&vrf.0)?.1.lookup_v6(ip.into());
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
    /// The first half of an IPv4 lookup: the slot word it goes on from,
    /// with its chunk asked for. [`VrfFib::resolve_v4`] finishes it inside
    /// the same [`FibView`].
    #[inline]
    pub fn slot_v4(&self, ip: u32) -> SlotWord<'_> {
        self.v4.slot_v4(ip)
    }
    /// The second half of an IPv4 lookup, from the word
    /// [`VrfFib::slot_v4`] gave for the same address.
    #[inline]
    pub fn resolve_v4(&self, ip: u32, slot: SlotWord<'_>) -> u32 {
        self.v4.resolve_v4(ip, slot)
    }
    /// IPv6 LPM inside a [`FibView`].
    #[inline]
    pub fn lookup_v6(&self, ip: u128) -> u32 {
        self.v6.lookup_v6_trusted(ip)
    }
}
