//! The routes the daemon installs besides BGP's decisions' own: the
//! configured `[[route]]` entries (applied as diffs on reload) and, for
//! BGP routes, the remote nexthops — one per (label, PE, encapsulation),
//! shared and reference-counted, with the first hop's MAC resolved by ARP —
//! and the ECMP groups of them.

use super::*;

pub(super) type RemoteKey = (
    u32,
    std::net::Ipv4Addr,
    EncapKind,
    Option<u32>,
    Option<String>,
);

/// A BGP route's nexthop: label, remote PE, encapsulation.
type DynKey = (u32, std::net::Ipv4Addr, EncapKind);

fn remote_key(d: DynKey) -> RemoteKey {
    (d.0, d.1, d.2, None, None)
}

/// A remote nexthop as installed, with what is needed to rebuild its
/// rewrite when its first hop's MAC changes.
#[derive(Debug, Clone)]
pub(super) struct RemoteNh {
    id: NexthopId,
    label: Label,
    encap: Encap,
    /// Resolved with ARP through this address (None: MAC configured).
    first_hop: Option<std::net::Ipv4Addr>,
    /// Routes (static and BGP) and ECMP groups using it; at 0 it goes.
    refs: usize,
    /// BGP routes over it alone (kept as routes change; static routes are
    /// recounted at each reload).
    bgp: usize,
}

/// The remote VPN routes of the configuration as installed in the tables,
/// so that a reload applies only the difference, and the ARP state of
/// their first hops.
#[derive(Debug, Default)]
pub struct RouteSet {
    pub(super) uplink: Option<(PortId, MacAddr)>,
    pub(super) gateway: Option<std::net::Ipv4Addr>,
    pub(super) next_nh: u32,
    pub(super) nexthops: FxMap<RemoteKey, RemoteNh>,
    pub(super) installed: FxMap<(VrfId, IpAddr, u8), RemoteKey>,
    /// The key of each remote nexthop, by id. Which nexthop a BGP route
    /// uses is kept by the VPN layer beside the route (see
    /// [`RouteSet::set_bgp`]), not in a map of its own here.
    pub(super) by_id: FxMap<u32, RemoteKey>,
    /// ECMP group nexthops and how many routes use each.
    pub(super) groups: FxMap<Vec<RemoteKey>, (NexthopId, usize)>,
    /// The members of each ECMP group nexthop, by id.
    pub(super) group_members: FxMap<u32, Vec<RemoteKey>>,
    /// First hops being resolved.
    pub neighbors: Neighbors,
    /// The nexthop BGP routes took last, and references taken on it not
    /// yet counted in `nexthops` (see [`RouteSet::flush_hot`]).
    pub(super) hot: Option<Hot>,
}

/// A run of BGP routes over one remote nexthop (an UPDATE's routes share
/// one): each takes its reference here, without a lookup of the nexthop's
/// key (hashing it was about a tenth of the control thread's instructions
/// per route).
#[derive(Debug, Clone, Copy)]
pub(super) struct Hot {
    key: DynKey,
    id: NexthopId,
    /// References taken since the last flush, for `refs` and `bgp` alike.
    pending: usize,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteDiff {
    /// Routes added or changed.
    pub added: usize,
    /// Routes withdrawn.
    pub removed: usize,
}

impl RouteSet {
    /// Remote nexthops installed: one per (label, PE, encapsulation) in
    /// use, and one per ECMP group.
    pub fn nexthops_in_use(&self) -> usize {
        self.nexthops.len() + self.groups.len()
    }

    /// The uplink port and its MAC.
    pub fn uplink(&self) -> Option<(PortId, MacAddr)> {
        self.uplink
    }

    fn nexthop(&self, r: &RemoteNh, mac: Option<MacAddr>) -> Nexthop {
        match (self.uplink, mac) {
            (Some((up, up_mac)), Some(dst)) => Nexthop::Remote(RemoteNexthop::new(
                up,
                r.label,
                r.encap,
                L2Rewrite {
                    dst,
                    src: up_mac,
                    vlan: None,
                },
            )),
            // Unresolved first hop: drop (counted) until ARP answers.
            _ => Nexthop::Unresolved,
        }
    }

    /// Apply a neighbour change to every nexthop through that address.
    pub fn neighbor_changed(&mut self, fib: &mut Fib, change: Change) {
        let (ip, mac) = match change {
            Change::Resolved(ip, mac) => (ip, Some(mac)),
            Change::Lost(ip) => (ip, None),
        };
        let affected: Vec<RemoteNh> = self
            .nexthops
            .values()
            .filter(|n| n.first_hop == Some(ip))
            .cloned()
            .collect();
        for n in affected {
            let nh = self.nexthop(&n, mac);
            // The id was accepted when first installed; replacing cannot fail.
            let _ = fib.set_nexthop(n.id, nh);
        }
    }

    fn ensure_nexthop(
        &mut self,
        fib: &mut Fib,
        key: &RemoteKey,
        me: Option<std::net::Ipv4Addr>,
        at: &str,
    ) -> Result<NexthopId, StartError> {
        if let Some(n) = self.nexthops.get(key) {
            return Ok(n.id);
        }
        let (label, pe, encap_kind, transport, mac) = key.clone();
        let label =
            Label::new(label).ok_or_else(|| StartError::Other(format!("{at}: bad label")))?;
        let encap = match (encap_kind, me) {
            (EncapKind::Mpls, _) => Encap::Ethernet {
                transport: transport.and_then(Label::new),
            },
            (EncapKind::Gre, Some(src)) => Encap::Gre { src, dst: pe },
            (EncapKind::Udp, Some(src)) => Encap::Udp { src, dst: pe },
            _ => {
                return Err(StartError::Other(format!(
                    "{at}: GRE and UDP need uplink.address"
                )))
            }
        };
        if self.uplink.is_none() {
            return Err(StartError::Other(format!("{at}: no uplink")));
        }
        self.next_nh += 1;
        let id = NexthopId::new(self.next_nh)
            .ok_or_else(|| StartError::Other("nexthop ids exhausted".into()))?;
        let (first_hop, mac) = match &mac {
            Some(m) => (None, Some(parse_mac(m).map_err(StartError::Other)?)),
            None => {
                let hop = self.gateway.unwrap_or(pe);
                self.neighbors.want(hop);
                (Some(hop), self.neighbors.mac(hop))
            }
        };
        let rn = RemoteNh {
            id,
            label,
            encap,
            first_hop,
            refs: 0,
            bgp: 0,
        };
        fib.set_nexthop(id, self.nexthop(&rn, mac))
            .map_err(fib_err(at.to_string()))?;
        self.nexthops.insert(key.clone(), rn);
        self.by_id.insert(id.get(), key.clone());
        Ok(id)
    }

    /// Count the references the hot nexthop took into its entry. Done
    /// before anything reads or lowers a count.
    fn flush_hot(&mut self) {
        if let Some(h) = &mut self.hot {
            if h.pending > 0 {
                if let Some(n) = self.nexthops.get_mut(&remote_key(h.key)) {
                    n.refs += h.pending;
                    n.bgp += h.pending;
                }
                h.pending = 0;
            }
        }
    }

    /// Recount every route's nexthop and drop the nexthops nothing uses
    /// (after a reload; BGP changes keep the counts incrementally).
    fn gc_nexthops(&mut self, fib: &mut Fib) {
        self.flush_hot();
        for n in self.nexthops.values_mut() {
            n.refs = n.bgp;
        }
        for k in self.installed.values() {
            if let Some(n) = self.nexthops.get_mut(k) {
                n.refs += 1;
            }
        }
        // Each ECMP group holds one reference on each of its members.
        for members in self.groups.keys() {
            for k in members {
                if let Some(n) = self.nexthops.get_mut(k) {
                    n.refs += 1;
                }
            }
        }
        let unused: Vec<RemoteKey> = self
            .nexthops
            .iter()
            .filter(|(_, n)| n.refs == 0)
            .map(|(k, _)| k.clone())
            .collect();
        for k in unused {
            self.drop_nexthop(fib, &k);
        }
    }

    fn drop_nexthop(&mut self, fib: &mut Fib, k: &RemoteKey) {
        if self.hot.is_some_and(|h| remote_key(h.key) == *k) {
            debug_assert_eq!(self.hot.map(|h| h.pending), Some(0), "flushed first");
            self.hot = None;
        }
        if let Some(n) = self.nexthops.remove(k) {
            fib.remove_nexthop(n.id);
            self.by_id.remove(&n.id.get());
            if let Some(hop) = n.first_hop {
                if !self.nexthops.values().any(|o| o.first_hop == Some(hop)) {
                    self.neighbors.forget(hop);
                }
            }
        }
    }

    fn unref(&mut self, fib: &mut Fib, k: &RemoteKey) {
        self.flush_hot();
        if let Some(n) = self.nexthops.get_mut(k) {
            n.refs = n.refs.saturating_sub(1);
            if n.refs == 0 {
                self.drop_nexthop(fib, k);
            }
        }
    }

    /// Install a route learned from BGP for `prefix` in `vrf` over
    /// `members` (label, remote PE, encapsulation): one remote PE, or
    /// several as an ECMP group (the flow hash picks a member per flow);
    /// none withdraws it. `old` is the nexthop the route had installed (as
    /// this returned last time); the caller keeps it beside the route, so
    /// the tables need no map from every BGP route to its nexthop. Returns
    /// the nexthop now installed.
    ///
    /// # Errors
    /// [`StartError`] if the tables refuse it; the route then keeps `old`.
    pub fn set_bgp(
        &mut self,
        fib: &mut Fib,
        vrf: VrfId,
        prefix: (IpAddr, u8),
        members: &[(u32, std::net::Ipv4Addr, EncapKind)],
        me: Option<std::net::Ipv4Addr>,
        old: Option<NexthopId>,
    ) -> Result<Option<NexthopId>, StartError> {
        let at = || format!("BGP route {}/{}", prefix.0, prefix.1);
        let want = match members {
            [] => None,
            [one] => match &mut self.hot {
                Some(h) if h.key == *one => {
                    if Some(h.id) == old {
                        return Ok(old);
                    }
                    h.pending += 1;
                    Some(h.id)
                }
                _ => {
                    self.flush_hot();
                    let key = remote_key(*one);
                    let n = match self.nexthops.get_mut(&key) {
                        Some(n) if Some(n.id) == old => return Ok(old),
                        Some(n) => n,
                        None => {
                            self.ensure_nexthop(fib, &key, me, &at())?;
                            match self.nexthops.get_mut(&key) {
                                Some(n) => n,
                                None => return Err(StartError::Other(format!("{}: lost", at()))),
                            }
                        }
                    };
                    n.refs += 1;
                    n.bgp += 1;
                    let id = n.id;
                    self.hot = Some(Hot {
                        key: *one,
                        id,
                        pending: 0,
                    });
                    Some(id)
                }
            },
            many => {
                let mut keys: Vec<RemoteKey> = many.iter().map(|m| remote_key(*m)).collect();
                keys.sort();
                keys.dedup();
                keys.truncate(dataplane::fib::nexthop::MAX_ECMP);
                if let Some((id, _)) = self.groups.get(&keys) {
                    if Some(*id) == old {
                        return Ok(old);
                    }
                }
                Some(self.group_ref(fib, keys, me, &at)?)
            }
        };
        let done = match (want, prefix.0) {
            (Some(id), IpAddr::V4(a)) => fib.insert_v4(vrf, a, prefix.1, id).map(|_| ()),
            (Some(id), IpAddr::V6(a)) => fib.insert_v6(vrf, a, prefix.1, id).map(|_| ()),
            (None, _) if old.is_none() => Ok(()),
            (None, IpAddr::V4(a)) => fib.remove_v4(vrf, a, prefix.1).map(|_| ()),
            (None, IpAddr::V6(a)) => fib.remove_v6(vrf, a, prefix.1).map(|_| ()),
        };
        if let Err(e) = done {
            if let Some(id) = want {
                self.release(fib, id);
            }
            return Err(fib_err_with(at)(e));
        }
        if let Some(o) = old {
            self.release(fib, o);
        }
        Ok(want)
    }

    /// One more route over the ECMP group of `keys` (sorted), created if
    /// new; its id.
    fn group_ref(
        &mut self,
        fib: &mut Fib,
        keys: Vec<RemoteKey>,
        me: Option<std::net::Ipv4Addr>,
        at: &dyn Fn() -> String,
    ) -> Result<NexthopId, StartError> {
        if let Some((id, n)) = self.groups.get_mut(&keys) {
            *n += 1;
            return Ok(*id);
        }
        let mut ids = arrayvec::ArrayVec::new();
        for (i, m) in keys.iter().enumerate() {
            match self.ensure_nexthop(fib, m, me, &at()) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for k in &keys[..i] {
                        self.unref(fib, k);
                    }
                    return Err(e);
                }
            }
            if let Some(n) = self.nexthops.get_mut(m) {
                n.refs += 1;
            }
        }
        self.next_nh += 1;
        let made = NexthopId::new(self.next_nh)
            .ok_or_else(|| StartError::Other("nexthop ids exhausted".into()))
            .and_then(|id| {
                fib.set_nexthop(id, Nexthop::Ecmp(ids))
                    .map(|_| id)
                    .map_err(fib_err_with(at))
            });
        match made {
            Ok(id) => {
                self.groups.insert(keys.clone(), (id, 1));
                self.group_members.insert(id.get(), keys);
                Ok(id)
            }
            Err(e) => {
                for m in &keys {
                    self.unref(fib, m);
                }
                Err(e)
            }
        }
    }

    /// A BGP route stopped using nexthop `id` (a remote PE or a group).
    fn release(&mut self, fib: &mut Fib, id: NexthopId) {
        self.flush_hot();
        if let Some(members) = self.group_members.get(&id.get()).cloned() {
            self.group_unref(fib, &members);
            return;
        }
        let Some(key) = self.by_id.get(&id.get()).cloned() else {
            return;
        };
        if let Some(n) = self.nexthops.get_mut(&key) {
            n.bgp = n.bgp.saturating_sub(1);
        }
        self.unref(fib, &key);
    }

    fn group_unref(&mut self, fib: &mut Fib, members: &[RemoteKey]) {
        let Some((id, n)) = self.groups.get_mut(members) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        let id = *id;
        self.groups.remove(members);
        self.group_members.remove(&id.get());
        fib.remove_nexthop(id);
        for m in members {
            self.unref(fib, m);
        }
    }

    /// Make the tables hold exactly `cfg`'s routes: install what is new or
    /// changed, withdraw what is gone, drop nexthops nothing uses.
    ///
    /// # Errors
    /// [`StartError`] naming the route that could not be installed; routes
    /// before it are applied.
    pub fn apply(&mut self, fib: &mut Fib, cfg: &Config) -> Result<RouteDiff, StartError> {
        self.gateway = cfg.uplink.as_ref().and_then(|u| u.gateway);
        let vrf_id = |name: &str| cfg.vrf_index(name).map(|i| VrfId(i as u32 + 1));
        let mut want: HashMap<(VrfId, IpAddr, u8), (RemoteKey, usize)> = HashMap::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            let at = format!("route[{i}] ({})", r.prefix);
            let vrf =
                vrf_id(&r.vrf).ok_or_else(|| StartError::Other(format!("{at}: unknown VRF")))?;
            let (a, l) =
                parse_prefix(&r.prefix).map_err(|e| StartError::Other(format!("{at}: {e}")))?;
            let key = (
                r.label,
                r.pe,
                r.encap,
                r.transport_label,
                r.nexthop_mac.clone(),
            );
            want.insert((vrf, a, l), (key, i));
        }
        let mut diff = RouteDiff::default();
        let gone: Vec<(VrfId, IpAddr, u8)> = self
            .installed
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            let (vrf, a, l) = k;
            match a {
                IpAddr::V4(a) => fib.remove_v4(vrf, a, l),
                IpAddr::V6(a) => fib.remove_v6(vrf, a, l),
            }
            .map_err(fib_err(format!("withdrawing {a}/{l}")))?;
            self.installed.remove(&k);
            diff.removed += 1;
        }
        for (k, (key, i)) in want {
            if self.installed.get(&k) == Some(&key) {
                continue;
            }
            let r = &cfg.routes[i];
            let at = format!("route[{i}] ({})", r.prefix);
            let me = cfg.uplink.as_ref().and_then(|u| u.address);
            let nh = self.ensure_nexthop(fib, &key, me, &at)?;
            let (vrf, a, l) = k;
            match a {
                IpAddr::V4(a) => fib.insert_v4(vrf, a, l, nh),
                IpAddr::V6(a) => fib.insert_v6(vrf, a, l, nh),
            }
            .map_err(fib_err(at))?;
            self.installed.insert(k, key);
            diff.added += 1;
        }
        self.gc_nexthops(fib);
        Ok(diff)
    }
}
