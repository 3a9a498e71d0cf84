//! ARP resolution of the uplink's next hops (RFC 826), with retries and
//! aging.
//!
//! An entry is wanted while some remote nexthop goes through its address.
//! Unresolved entries are probed every second; resolved ones are refreshed
//! after [`REFRESH`] and, after [`MAX_PROBES`] unanswered refreshes, are
//! declared lost, so that traffic stops going to a MAC that left. Pure state:
//! the caller sends the probes and feeds in what it hears, with the time.

use dataplane::wire::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long a resolved entry is trusted before it is refreshed.
pub const REFRESH: Duration = Duration::from_secs(60);
/// Interval between probes of an unresolved or refreshing entry.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered refresh probes after which a resolved entry is lost.
pub const MAX_PROBES: u32 = 3;

#[derive(Debug, Clone)]
struct Entry {
    mac: Option<MacAddr>,
    confirmed: Option<Instant>,
    last_probe: Option<Instant>,
    probes: u32,
}

/// The neighbour table.
#[derive(Debug, Default)]
pub struct Neighbors {
    entries: HashMap<Ipv4Addr, Entry>,
}

/// A change the caller must apply to the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `ip` is now at `mac` (first resolution or a move).
    Resolved(Ipv4Addr, MacAddr),
    /// `ip` stopped answering.
    Lost(Ipv4Addr),
}

impl Neighbors {
    /// Start resolving `ip` (no-op if known).
    pub fn want(&mut self, ip: Ipv4Addr) {
        self.entries.entry(ip).or_insert(Entry {
            mac: None,
            confirmed: None,
            last_probe: None,
            probes: 0,
        });
    }

    /// Stop resolving `ip`.
    pub fn forget(&mut self, ip: Ipv4Addr) {
        self.entries.remove(&ip);
    }

    /// The MAC of `ip`, if resolved.
    pub fn mac(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(&ip).and_then(|e| e.mac)
    }

    /// Learn `ip` is at `mac` (from a reply, or a request it sent). Only
    /// wanted addresses are kept.
    pub fn heard(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) -> Option<Change> {
        if mac.is_multicast() || mac == MacAddr::ZERO {
            return None;
        }
        let e = self.entries.get_mut(&ip)?;
        e.confirmed = Some(now);
        e.probes = 0;
        if e.mac == Some(mac) {
            return None;
        }
        e.mac = Some(mac);
        Some(Change::Resolved(ip, mac))
    }

    /// Addresses to probe now, and entries lost; records the probes as sent.
    pub fn tick(&mut self, now: Instant) -> (Vec<Ipv4Addr>, Vec<Change>) {
        let mut probe = Vec::new();
        let mut lost = Vec::new();
        for (ip, e) in self.entries.iter_mut() {
            let stale = e.confirmed.is_none_or(|c| now.duration_since(c) >= REFRESH);
            let due = e
                .last_probe
                .is_none_or(|p| now.duration_since(p) >= PROBE_INTERVAL);
            if !stale || !due {
                continue;
            }
            if e.mac.is_some() && e.probes >= MAX_PROBES {
                e.mac = None;
                e.confirmed = None;
                e.probes = 0;
                lost.push(Change::Lost(*ip));
            }
            e.last_probe = Some(now);
            e.probes = e.probes.saturating_add(1);
            probe.push(*ip);
        }
        (probe, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn a_wanted_address_is_probed_every_second_until_it_answers() {
        let mut n = Neighbors::default();
        let t0 = Instant::now();
        n.want(IP);
        assert_eq!(n.tick(t0).0, vec![IP]);
        assert!(n.tick(t0 + Duration::from_millis(500)).0.is_empty());
        assert_eq!(n.tick(t0 + Duration::from_secs(1)).0, vec![IP]);
        assert_eq!(
            n.heard(IP, MAC, t0 + Duration::from_secs(1)),
            Some(Change::Resolved(IP, MAC))
        );
        assert_eq!(n.mac(IP), Some(MAC));
        assert_eq!(
            n.heard(IP, MAC, t0 + Duration::from_secs(2)),
            None,
            "same MAC is no change"
        );
        assert!(
            n.tick(t0 + Duration::from_secs(30)).0.is_empty(),
            "fresh entries are not probed"
        );
    }

    #[test]
    fn a_resolved_entry_that_stops_answering_is_lost_after_its_refresh_probes() {
        let mut n = Neighbors::default();
        let t0 = Instant::now();
        n.want(IP);
        n.heard(IP, MAC, t0);
        let mut t = t0 + REFRESH;
        let mut lost = Vec::new();
        for _ in 0..=MAX_PROBES {
            let (p, l) = n.tick(t);
            assert_eq!(p, vec![IP]);
            lost.extend(l);
            t += PROBE_INTERVAL;
        }
        assert_eq!(lost, vec![Change::Lost(IP)]);
        assert_eq!(n.mac(IP), None);
    }

    #[test]
    fn unwanted_addresses_and_bogus_macs_are_not_learned() {
        let mut n = Neighbors::default();
        let t0 = Instant::now();
        assert_eq!(n.heard(IP, MAC, t0), None);
        n.want(IP);
        assert_eq!(n.heard(IP, MacAddr::BROADCAST, t0), None);
        assert_eq!(n.heard(IP, MacAddr::ZERO, t0), None);
        assert_eq!(n.mac(IP), None);
    }
}
