//! Seeded synthetic route tables with the prefix-length distribution of the
//! Internet's IPv4 and IPv6 tables, clustered as real allocations are.
//!
//! IPv4 lengths (share of routes): /24 62.5 %, /23 10 %, /22 10.5 %,
//! /21 4.8 %, /20 4.3 %, /19 2.8 %, /18 1.5 %, /17 0.9 %, /16 1.3 %,
//! /8–/15 0.36 %, /25–/32 the rest. IPv6: /48 45 %, /32 12 %, /44 9 %,
//! /40 6 %, /36 4 %, /29 4 %, /46 4 %, /47 3 %, /45 2 %, /42 2 %, /33–/39 and
//! /41–/43 the rest, plus a few /56–/64.
//!
//! Placement: a route lands in one of the /16 (IPv4) or /32 (IPv6) blocks
//! already holding routes with probability 0.96, else in a new random block of
//! unicast space; inside a block it follows the previous route placed there
//! (a deaggregated run) with probability 0.7, else it lands at random.

/// xorshift64* — deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A route: prefix left-aligned in 128 bits, length, nexthop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Prefix bits, left-aligned.
    pub prefix: u128,
    /// Prefix length.
    pub len: u8,
    /// Nexthop id.
    pub nexthop: u32,
}

const V4_LENS: &[(u8, f64)] = &[
    (8, 0.002),
    (9, 0.002),
    (10, 0.005),
    (11, 0.01),
    (12, 0.03),
    (13, 0.06),
    (14, 0.1),
    (15, 0.15),
    (16, 1.3),
    (17, 0.9),
    (18, 1.5),
    (19, 2.8),
    (20, 4.3),
    (21, 4.8),
    (22, 10.5),
    (23, 10.0),
    (24, 62.5),
    (25, 0.2),
    (26, 0.2),
    (27, 0.15),
    (28, 0.15),
    (29, 0.1),
    (30, 0.1),
    (31, 0.02),
    (32, 0.12),
];

const V6_LENS: &[(u8, f64)] = &[
    (19, 0.05),
    (20, 0.1),
    (22, 0.05),
    (24, 0.1),
    (28, 0.5),
    (29, 4.0),
    (30, 0.5),
    (31, 0.3),
    (32, 12.0),
    (33, 1.0),
    (34, 0.8),
    (35, 0.6),
    (36, 4.0),
    (37, 0.5),
    (38, 0.6),
    (39, 0.5),
    (40, 6.0),
    (41, 0.5),
    (42, 2.0),
    (43, 0.6),
    (44, 9.0),
    (45, 2.0),
    (46, 4.0),
    (47, 3.0),
    (48, 45.0),
    (56, 0.8),
    (64, 0.5),
];

fn pick_len(rng: &mut Rng, table: &[(u8, f64)]) -> u8 {
    let total: f64 = table.iter().map(|t| t.1).sum();
    let mut x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (l, w) in table {
        if x < *w {
            return *l;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

fn mask(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

/// `n` distinct routes of one family (`v6` false: IPv4), nexthops uniform in
/// `0..nexthops`.
pub fn table(n: usize, v6: bool, nexthops: u32, seed: u64) -> Vec<Route> {
    let mut rng = Rng::new(seed);
    let (lens, block_len) = if v6 { (V6_LENS, 32u8) } else { (V4_LENS, 16u8) };
    let mut seen = std::collections::HashSet::with_capacity(n * 2);
    let mut blocks: Vec<(u128, u128)> = Vec::new(); // (block prefix, next position)
    let mut out = Vec::with_capacity(n);
    let random_block = |rng: &mut Rng| -> u128 {
        if v6 {
            // 2000::/3 global unicast.
            let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            mask((0x2u128 << 124) | (r >> 3), 32) | (0x2u128 << 124)
        } else {
            // 1.0.0.0–223.255.255.255, avoiding 10/8 and 127/8.
            loop {
                let a = 1 + rng.below(223) as u128;
                if a == 10 || a == 127 {
                    continue;
                }
                return (a << 120) | (u128::from(rng.below(256)) << 112);
            }
        }
    };
    while out.len() < n {
        let len = pick_len(&mut rng, lens);
        let prefix = if len <= block_len {
            let b = random_block(&mut rng);
            let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            mask(b | (r >> 8 & !(u128::MAX << 112)), len)
        } else {
            if blocks.is_empty() || !rng.chance(0.96) {
                let b = random_block(&mut rng);
                blocks.push((b, b));
            }
            let i = rng.below(blocks.len() as u64) as usize;
            let (b, next) = blocks[i];
            let step = 1u128 << (128 - u32::from(len));
            let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            let inside = r >> block_len;
            let cand = if rng.chance(0.7) {
                mask(next + step - 1, len)
            } else {
                mask(b | inside, len)
            };
            let cand = if mask(cand, block_len) == b {
                cand
            } else {
                mask(b | inside, len)
            };
            blocks[i].1 = cand + step;
            cand
        };
        if seen.insert((prefix, len)) {
            out.push(Route {
                prefix,
                len,
                nexthop: rng.below(u64::from(nexthops)) as u32,
            });
        }
    }
    out
}

/// Lookup keys: 90 % inside a random route of `routes`, 10 % random
/// addresses (mostly misses for IPv6, hits of short routes for IPv4).
pub fn keys(routes: &[Route], n: usize, v6: bool, seed: u64) -> Vec<u128> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            let k = if rng.chance(0.9) {
                let rt = routes[rng.below(routes.len() as u64) as usize];
                let host = if rt.len == 128 { 0 } else { r >> rt.len };
                rt.prefix | host
            } else {
                r
            };
            if v6 {
                k
            } else {
                k & (u128::from(u32::MAX) << 96)
            }
        })
        .collect()
}
