//! The VPN RIB (RFC 4364 §4.3, RFC 4271 §9): routes learned from peers
//! kept per (prefix, peer, RD) — the Adj-RIBs-In and the VPN RIB in one map
//! — each pointing at the path attributes of the UPDATE that carried it,
//! shared by every route of that UPDATE; and, per prefix, what each VRF
//! installed for it. The decisions over these routes are [`crate::vpn`]'s.

use crate::bgp::wire::{Prefix, RouteDistinguisher};
use crate::fxmap::{ShardedMap, WordMap};
use dataplane::fib::NexthopId;
use dataplane::slab::Slab;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

/// The path attributes the VPN layer uses, shared by every route of one
/// UPDATE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PathInfo {
    pub(crate) rts: Vec<[u8; 8]>,
    /// The VRFs importing one of `rts`, by index, sorted (found once per
    /// UPDATE; VRFs and their targets change only with a restart).
    pub(crate) vrfs: Vec<u32>,
    pub(crate) local_pref: u32,
    pub(crate) as_path_len: u32,
    pub(crate) origin: u8,
    pub(crate) med: u32,
    /// First AS of the AS_PATH (0 when empty: a route from inside our AS).
    pub(crate) neighbor_as: u32,
    pub(crate) ebgp: bool,
    /// ORIGINATOR_ID when reflected, else the peer's BGP identifier.
    pub(crate) router_id: u32,
    pub(crate) cluster_len: u32,
}

/// What the paths of one UPDATE under one RD share: its path attributes,
/// the RD and the peer that sent them. Paths name theirs by index, so a
/// path takes 12 bytes.
#[derive(Debug, Default)]
pub(crate) struct AttrSet {
    pub(crate) path: Arc<PathInfo>,
    pub(crate) rd: RouteDistinguisher,
    /// The peer, as its index in the RIB's peer list.
    pub(crate) peer: u32,
    /// Paths naming this set (0: the slot is free).
    pub(crate) refs: u32,
}

/// One path of a prefix: a route learned from a peer under an RD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Learned {
    /// Its [`AttrSet`].
    pub(crate) set: u32,
    /// The VPN label (20 bits), and in bit 31 whether the path is stale:
    /// kept through the peer's graceful restart, not yet re-announced.
    pub(crate) label: u32,
    /// The remote PE's address (never 0.0.0.0, which is no next hop).
    pub(crate) pe: NonZeroU32,
}

pub(crate) const STALE: u32 = 1 << 31;

/// How many NLRIs ahead of the one being inserted the RIB prefetches.
pub(crate) const PREFETCH_AHEAD: usize = 8;

impl Learned {
    pub(crate) fn pe(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.pe.get())
    }

    pub(crate) fn label(&self) -> u32 {
        self.label & !STALE
    }

    pub(crate) fn stale(&self) -> bool {
        self.label & STALE != 0
    }

    pub(crate) fn set_stale(&mut self, stale: bool) {
        self.label = if stale {
            self.label | STALE
        } else {
            self.label & !STALE
        };
    }
}

/// Learned routes by prefix: a hash map (one probe per route where an
/// ordered map walks a tree of 48-byte keys). Each prefix's entry holds its
/// paths (the usual single one inline) and what the VRFs install for it, so
/// one probe finds both and no other per-route map is needed.
#[derive(Debug, Default)]
pub(crate) struct Rib {
    pub(crate) by_prefix: Prefixes,
    /// Peers by index (a path names its peer in 4 bytes, not 17).
    pub(crate) peers: Vec<IpAddr>,
    /// Paths held per peer, by index (for limits and the API).
    pub(crate) per_peer: Vec<usize>,
    /// Attribute sets by index.
    pub(crate) sets: Slab<AttrSet>,
    /// Paths of prefixes with several, and installations of prefixes in
    /// several VRFs.
    pub(crate) path_lists: Slab<Vec<Learned>>,
    pub(crate) inst_lists: Slab<Vec<(u32, NexthopId)>>,
    pub(crate) len: usize,
}

/// Entries by prefix, one map per family. An IPv4 prefix shorter than /32
/// is keyed by one word, its address with the bit just after the prefix
/// set (the lowest set bit tells the length), so an entry takes 24 bytes
/// where an (address, length) key would make it 28; host routes (/32) have
/// a map of their own.
#[derive(Debug, Default)]
pub(crate) struct Prefixes {
    pub(crate) v4: WordMap<Entry>,
    pub(crate) hosts: ShardedMap<u32, Entry>,
    pub(crate) v6: ShardedMap<([u8; 16], u8), Entry>,
}

/// Where an IPv4 prefix lives in [`Prefixes`].
pub(crate) enum V4Key {
    /// Shorter than /32: the encoded word.
    Net(u32),
    /// A /32.
    Host(u32),
}

impl Prefixes {
    pub(crate) fn get(&self, p: &Prefix) -> Option<&Entry> {
        match p.addr {
            IpAddr::V4(a) => match v4_key(a, p.len) {
                V4Key::Net(k) => self.v4.get(k),
                V4Key::Host(k) => self.hosts.get(&k),
            },
            IpAddr::V6(a) => self.v6.get(&(a.octets(), p.len)),
        }
    }

    /// Start fetching where `p`'s entry is (IPv4 prefixes shorter than
    /// /32: the bulk of a table).
    pub(crate) fn prefetch(&self, p: &Prefix) {
        if let IpAddr::V4(a) = p.addr {
            if let V4Key::Net(k) = v4_key(a, p.len) {
                self.v4.prefetch(k);
            }
        }
    }

    pub(crate) fn get_mut(&mut self, p: &Prefix) -> Option<&mut Entry> {
        match p.addr {
            IpAddr::V4(a) => match v4_key(a, p.len) {
                V4Key::Net(k) => self.v4.get_mut(k),
                V4Key::Host(k) => self.hosts.get_mut(&k),
            },
            IpAddr::V6(a) => self.v6.get_mut(&(a.octets(), p.len)),
        }
    }

    pub(crate) fn get_or_default(&mut self, p: &Prefix) -> &mut Entry {
        match p.addr {
            IpAddr::V4(a) => match v4_key(a, p.len) {
                V4Key::Net(k) => self.v4.get_or_default(k),
                V4Key::Host(k) => self.hosts.get_or_default(k),
            },
            IpAddr::V6(a) => self.v6.get_or_default((a.octets(), p.len)),
        }
    }

    pub(crate) fn remove(&mut self, p: &Prefix) {
        match p.addr {
            IpAddr::V4(a) => match v4_key(a, p.len) {
                V4Key::Net(k) => self.v4.remove(k),
                V4Key::Host(k) => self.hosts.remove(&k),
            },
            IpAddr::V6(a) => self.v6.remove(&(a.octets(), p.len)),
        };
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Prefix, &Entry)> {
        let v4 = self.v4.iter().map(|(k, e)| (v4_net_prefix(k), e));
        let hosts = self.hosts.iter().map(|(k, e)| (v4_host_prefix(*k), e));
        let v6 = self.v6.iter().map(|(k, e)| (v6_prefix(k), e));
        v4.chain(hosts).chain(v6)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Prefix, &mut Entry)> {
        let v4 = self.v4.iter_mut().map(|(k, e)| (v4_net_prefix(k), e));
        let hosts = self.hosts.iter_mut().map(|(k, e)| (v4_host_prefix(*k), e));
        let v6 = self.v6.iter_mut().map(|(k, e)| (v6_prefix(k), e));
        v4.chain(hosts).chain(v6)
    }
}

/// The key of IPv4 prefix `a`/`len` (host bits ignored).
pub(crate) fn v4_key(a: Ipv4Addr, len: u8) -> V4Key {
    let a = u32::from(a);
    match len {
        32.. => V4Key::Host(a),
        0 => V4Key::Net(1 << 31),
        l => V4Key::Net((a & (u32::MAX << (32 - l))) | (1 << (31 - l))),
    }
}

/// The prefix of an encoded IPv4 key (see [`Prefixes`]).
pub(crate) fn v4_net_prefix(k: u32) -> Prefix {
    let low = k.trailing_zeros().min(31);
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::from(k & !(1 << low))),
        len: (31 - low) as u8,
    }
}

pub(crate) fn v4_host_prefix(k: u32) -> Prefix {
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::from(k)),
        len: 32,
    }
}

pub(crate) fn v6_prefix(k: &([u8; 16], u8)) -> Prefix {
    Prefix {
        addr: IpAddr::from(k.0),
        len: k.1,
    }
}

/// A prefix's paths and what the VRFs install for it, in 20 bytes (24
/// with an IPv4 key): the usual single path and single installation
/// inline, several in the RIB's lists.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) paths: Paths,
    pub(crate) installed: Installed,
}

/// A list index that names no list: nothing.
pub(crate) const NO_LIST: u32 = u32::MAX;

/// One prefix's paths: one inline, or two or more in a list.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Paths {
    One(Learned),
    /// An index into the RIB's path lists, or [`NO_LIST`] for none.
    List(u32),
}

impl Default for Paths {
    fn default() -> Self {
        Paths::List(NO_LIST)
    }
}

impl Paths {
    pub(crate) fn slice<'a>(&'a self, lists: &'a Slab<Vec<Learned>>) -> &'a [Learned] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::List(i) => lists.get(*i).map_or(&[], |v| v.as_slice()),
        }
    }

    pub(crate) fn slice_mut<'a>(
        &'a mut self,
        lists: &'a mut Slab<Vec<Learned>>,
    ) -> &'a mut [Learned] {
        match self {
            Paths::One(p) => std::slice::from_mut(p),
            Paths::List(i) => lists.get_mut(*i).map_or(&mut [], |v| v.as_mut_slice()),
        }
    }

    pub(crate) fn push(&mut self, lists: &mut Slab<Vec<Learned>>, l: Learned) {
        match *self {
            Paths::List(NO_LIST) => *self = Paths::One(l),
            Paths::One(first) => *self = Paths::List(lists.add(vec![first, l])),
            Paths::List(i) => {
                if let Some(v) = lists.get_mut(i) {
                    v.push(l);
                }
            }
        }
    }

    /// Remove path `i` (an index into [`Paths::slice`]).
    pub(crate) fn remove(&mut self, lists: &mut Slab<Vec<Learned>>, i: usize) -> Option<Learned> {
        match *self {
            Paths::One(l) if i == 0 => {
                *self = Paths::List(NO_LIST);
                Some(l)
            }
            Paths::One(_) | Paths::List(NO_LIST) => None,
            Paths::List(at) => {
                let v = lists.get_mut(at)?;
                if i >= v.len() {
                    return None;
                }
                let l = v.swap_remove(i);
                if let [one] = v.as_slice() {
                    *self = Paths::One(*one);
                    lists.take(at);
                }
                Some(l)
            }
        }
    }
}

/// The nexthop each VRF installs for a prefix: almost always one VRF, kept
/// inline. VRFs are indices into the VPN layer's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Installed {
    /// (VRF, nexthop id + 1).
    One(u32, NonZeroU32),
    /// An index into the RIB's installation lists, or [`NO_LIST`].
    List(u32),
}

impl Default for Installed {
    fn default() -> Self {
        Installed::List(NO_LIST)
    }
}

impl Installed {
    pub(crate) fn is_none(&self) -> bool {
        matches!(self, Installed::List(NO_LIST))
    }

    /// (VRF, nexthop) for each VRF the prefix is installed in.
    pub(crate) fn iter<'a>(
        &'a self,
        lists: &'a Slab<Vec<(u32, NexthopId)>>,
    ) -> impl Iterator<Item = (u32, NexthopId)> + 'a {
        let one = match self {
            Installed::One(v, n) => NexthopId::new(n.get() - 1).map(|n| (*v, n)),
            Installed::List(_) => None,
        };
        let many = match self {
            Installed::List(i) => lists.get(*i).map_or(&[][..], |v| v.as_slice()),
            Installed::One(..) => &[],
        };
        one.into_iter().chain(many.iter().copied())
    }

    pub(crate) fn set(
        &mut self,
        lists: &mut Slab<Vec<(u32, NexthopId)>>,
        now: &[(u32, NexthopId)],
    ) {
        if let Installed::List(i) = *self {
            if i != NO_LIST {
                lists.take(i);
            }
        }
        *self = match now {
            [] => Installed::List(NO_LIST),
            [(v, n)] => match NonZeroU32::new(n.get().wrapping_add(1)) {
                Some(c) => Installed::One(*v, c),
                None => Installed::List(lists.add(now.to_vec())),
            },
            many => Installed::List(lists.add(many.to_vec())),
        };
    }
}

impl Rib {
    /// The index of `peer`, added on first use.
    pub(crate) fn peer_index(&mut self, peer: IpAddr) -> u32 {
        match self.peers.iter().position(|p| *p == peer) {
            Some(i) => i as u32,
            None => {
                self.peers.push(peer);
                self.per_peer.push(0);
                (self.peers.len() - 1) as u32
            }
        }
    }

    /// The index of `peer` if it ever sent a route.
    pub(crate) fn find_peer(&self, peer: IpAddr) -> Option<u32> {
        self.peers.iter().position(|p| *p == peer).map(|i| i as u32)
    }

    pub(crate) fn peer_addr(&self, i: u32) -> IpAddr {
        self.peers[i as usize]
    }

    /// A new attribute set (named by no path yet).
    pub(crate) fn new_set(
        &mut self,
        path: Arc<PathInfo>,
        rd: RouteDistinguisher,
        peer: u32,
    ) -> u32 {
        self.sets.add(AttrSet {
            path,
            rd,
            peer,
            refs: 0,
        })
    }

    /// A path no longer names `set`; the last one frees it.
    pub(crate) fn release(sets: &mut Slab<AttrSet>, set: u32) {
        let s = &mut sets[set];
        s.refs -= 1;
        if s.refs == 0 {
            sets.take(set);
        }
    }

    /// Add or replace the path of `l`'s (peer, RD); the replaced one.
    pub(crate) fn insert(&mut self, prefix: Prefix, l: Learned) -> Option<Learned> {
        let e = self.by_prefix.get_or_default(&prefix);
        Rib::add_path(
            e,
            &mut self.sets,
            &mut self.path_lists,
            &mut self.per_peer,
            &mut self.len,
            l,
        )
    }

    /// [`Rib::insert`] into the entry `e` of the prefix, the other parts of
    /// the RIB borrowed apart from its map (so that the caller can go on
    /// with the entry).
    pub(crate) fn add_path(
        e: &mut Entry,
        sets: &mut Slab<AttrSet>,
        path_lists: &mut Slab<Vec<Learned>>,
        per_peer: &mut [usize],
        len: &mut usize,
        l: Learned,
    ) -> Option<Learned> {
        let (peer, rd) = (sets[l.set].peer, sets[l.set].rd);
        sets[l.set].refs += 1;
        if let Some(x) = e.paths.slice_mut(path_lists).iter_mut().find(|x| {
            let s = &sets[x.set];
            s.peer == peer && s.rd == rd
        }) {
            let old = std::mem::replace(x, l);
            Rib::release(sets, old.set);
            return Some(old);
        }
        e.paths.push(path_lists, l);
        *len += 1;
        if let Some(c) = per_peer.get_mut(peer as usize) {
            *c += 1;
        }
        None
    }

    /// Remove the path of (`peer`, `rd`). The prefix's entry stays until
    /// [`Vpn::reconcile`] has withdrawn what it installed.
    pub(crate) fn remove(
        &mut self,
        prefix: &Prefix,
        peer: u32,
        rd: &RouteDistinguisher,
    ) -> Option<Learned> {
        let Rib {
            by_prefix,
            sets,
            path_lists,
            per_peer,
            len,
            ..
        } = self;
        let e = by_prefix.get_mut(prefix)?;
        let i = e.paths.slice(path_lists).iter().position(|x| {
            let s = &sets[x.set];
            s.peer == peer && s.rd == *rd
        })?;
        let l = e.paths.remove(path_lists, i)?;
        *len -= 1;
        if let Some(c) = per_peer.get_mut(peer as usize) {
            *c = c.saturating_sub(1);
        }
        Rib::release(sets, l.set);
        Some(l)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every path: (prefix, its attribute set, path).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Prefix, &AttrSet, &Learned)> {
        let (sets, lists) = (&self.sets, &self.path_lists);
        self.by_prefix.iter().flat_map(move |(prefix, e)| {
            e.paths
                .slice(lists)
                .iter()
                .map(move |l| (prefix, &sets[l.set], l))
        })
    }

    /// Call `f` on every path, to change it.
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(Prefix, &AttrSet, &mut Learned)) {
        let Rib {
            by_prefix,
            sets,
            path_lists,
            ..
        } = self;
        for (prefix, e) in by_prefix.iter_mut() {
            for l in e.paths.slice_mut(path_lists) {
                f(prefix, &sets[l.set], l);
            }
        }
    }

    /// The paths for one prefix.
    #[cfg(test)]
    pub(crate) fn paths(&self, prefix: &Prefix) -> &[Learned] {
        self.by_prefix
            .get(prefix)
            .map_or(&[], |e| e.paths.slice(&self.path_lists))
    }
}
