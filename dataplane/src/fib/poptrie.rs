//! Immutable 16-bit poptrie chunks: the compressed building block of the LPM.
//!
//! A chunk maps a 16-bit key slice to a 32-bit value. It is a poptrie
//! (Asai & Ohara, SIGCOMM 2015) with three levels of 6-bit strides over the
//! key shifted left by two (18 bits). Each node holds a 64-bit `vector`
//! (which slots descend to a child node) and a 64-bit `leafvec` (which slots
//! start a new run of equal leaf values), so a node's leaves are stored once
//! per run and found with one popcount. Children of a node are contiguous.
//!
//! Values: [`NO_ROUTE`] (fall back to the covering route), a nexthop id, or
//! [`CHILD`]`| i`: descend to child chunk `i`.
//!
//! Building is proportional to the routes and children of the chunk, not to
//! the 2^16 key space.

/// The value meaning "no route of this chunk covers the key".
pub const NO_ROUTE: u32 = u32::MAX;
/// Flag on a value that names a child chunk.
pub const CHILD: u32 = 0x8000_0000;

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Node {
    vector: u64,
    leafvec: u64,
    base_child: u32,
    base_leaf: u32,
}

/// A route owned by a chunk: `start` is the first key slice it covers, `len`
/// its length within the chunk (1..=16 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRoute {
    pub start: u16,
    pub len: u8,
    pub value: u32,
}

impl ChunkRoute {
    fn size(&self) -> u32 {
        1u32 << (16 - u32::from(self.len))
    }
    fn start(&self) -> u32 {
        u32::from(self.start)
    }
}

/// An immutable compressed chunk.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    nodes: Box<[Node]>,
    leaves: Box<[u32]>,
}

impl Chunk {
    /// The value for a 16-bit key slice.
    #[inline(always)]
    pub fn lookup(&self, k: u16) -> u32 {
        let key = u32::from(k) << 2;
        let mut n = match self.nodes.first() {
            Some(n) => n,
            None => return NO_ROUTE,
        };
        let mut shift = 12u32;
        loop {
            let j = (key >> shift) & 63;
            let bit = 1u64 << j;
            if n.vector & bit != 0 && shift > 0 {
                let i = n.base_child as usize + (n.vector & (bit - 1)).count_ones() as usize;
                n = match self.nodes.get(i) {
                    Some(n) => n,
                    None => return NO_ROUTE,
                };
                shift -= 6;
            } else {
                let i =
                    n.base_leaf as usize + (n.leafvec & (bit | (bit - 1))).count_ones() as usize;
                return self
                    .leaves
                    .get(i.wrapping_sub(1))
                    .copied()
                    .unwrap_or(NO_ROUTE);
            }
        }
    }

    /// Address of the root node, for prefetching.
    #[inline(always)]
    pub fn root_ptr(&self) -> *const u8 {
        self.nodes.as_ptr().cast()
    }

    /// Nodes in the chunk.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Leaves in the chunk.
    pub fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// Bytes of heap this chunk holds.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.len() * core::mem::size_of::<Node>() + self.leaves.len() * 4
    }

    /// Build a chunk. `routes` must be sorted by (start, len), each aligned
    /// to its length; `kids` sorted by key, their values `CHILD | index`.
    /// `kid_defaults` receives, per kid, the value of the routes covering its key.
    pub fn build(routes: &[ChunkRoute], kids: &[u16], kid_defaults: &mut Vec<u32>) -> Chunk {
        let mut b = Builder {
            nodes: vec![Node::default()],
            leaves: Vec::new(),
            kid_defaults,
        };
        b.kid_defaults.clear();
        b.kid_defaults.resize(kids.len(), NO_ROUTE);
        b.node(0, 0, 0, routes, kids, 0, NO_ROUTE);
        Chunk {
            nodes: b.nodes.into_boxed_slice(),
            leaves: b.leaves.into_boxed_slice(),
        }
    }
}

struct Builder<'a> {
    nodes: Vec<Node>,
    leaves: Vec<u32>,
    kid_defaults: &'a mut Vec<u32>,
}

impl Builder<'_> {
    /// Build node `at` at `depth` covering key slices [base, base + 2^(16-6·depth)).
    /// `routes` lie inside the node without covering all of it; `kids` too;
    /// `kid_index` is the index of `kids[0]` among all kids.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        at: usize,
        depth: u32,
        base: u32,
        routes: &[ChunkRoute],
        kids: &[u16],
        kid_index: u32,
        inherited: u32,
    ) {
        let mut vals = [inherited; 64];
        let mut child = 0u64;
        if depth < 2 {
            let span_bits = 10 - 6 * depth;
            let span = 1u32 << span_bits;
            // Sorted by (start, len), a covering route comes before every
            // route nested in it, so painting in order leaves the longest.
            for r in routes.iter().filter(|r| r.size() >= span) {
                let first = ((r.start() - base) >> span_bits) as usize;
                let n = (r.size() >> span_bits) as usize;
                vals[first..first + n].fill(r.value);
            }
            for r in routes.iter().filter(|r| r.size() < span) {
                child |= 1 << ((r.start() - base) >> span_bits);
            }
            for k in kids {
                child |= 1 << ((u32::from(*k) - base) >> span_bits);
            }
            let nkids = child.count_ones() as usize;
            let base_child = self.nodes.len();
            self.nodes.resize(base_child + nkids, Node::default());
            self.finish_node(at, child, &vals, base_child as u32);
            // Recurse into each child slot with the routes and kids inside it.
            let (mut ri, mut ki, mut ci) = (0usize, 0usize, 0usize);
            let mut bits = child;
            while bits != 0 {
                let j = bits.trailing_zeros();
                bits &= bits - 1;
                let lo = base + (j << span_bits);
                let hi = lo + span;
                while ri < routes.len() && (routes[ri].start() < lo || routes[ri].size() >= span) {
                    ri += 1;
                }
                let r0 = ri;
                while ri < routes.len() && routes[ri].start() < hi {
                    ri += 1;
                }
                // A route covering the whole slot starts at `lo` and sorts
                // first, so it was skipped above: only nested routes remain.
                let sub = &routes[r0..ri];
                while ki < kids.len() && u32::from(kids[ki]) < lo {
                    ki += 1;
                }
                let k0 = ki;
                while ki < kids.len() && u32::from(kids[ki]) < hi {
                    ki += 1;
                }
                self.node(
                    base_child + ci,
                    depth + 1,
                    lo,
                    sub,
                    &kids[k0..ki],
                    kid_index + k0 as u32,
                    vals[j as usize],
                );
                ci += 1;
            }
        } else {
            for r in routes {
                let first = ((r.start() - base) * 4) as usize;
                let n = (r.size() * 4) as usize;
                vals[first..first + n].fill(r.value);
            }
            for (i, k) in kids.iter().enumerate() {
                let first = ((u32::from(*k) - base) * 4) as usize;
                let idx = kid_index + i as u32;
                self.kid_defaults[idx as usize] = vals[first];
                vals[first..first + 4].fill(CHILD | idx);
            }
            self.finish_node(at, 0, &vals, 0);
        }
    }

    fn finish_node(&mut self, at: usize, vector: u64, vals: &[u32; 64], base_child: u32) {
        let base_leaf = self.leaves.len() as u32;
        let mut leafvec = 0u64;
        let mut prev: Option<u32> = None;
        for (j, v) in vals.iter().enumerate() {
            if vector & (1 << j) != 0 {
                continue;
            }
            if prev != Some(*v) {
                leafvec |= 1 << j;
                self.leaves.push(*v);
                prev = Some(*v);
            }
        }
        self.nodes[at] = Node {
            vector,
            leafvec,
            base_child,
            base_leaf,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(routes: &[ChunkRoute], k: u16) -> u32 {
        routes
            .iter()
            .filter(|r| u32::from(k) >= r.start() && u32::from(k) < r.start() + r.size())
            .max_by_key(|r| r.len)
            .map_or(NO_ROUTE, |r| r.value)
    }

    #[test]
    fn every_key_matches_the_longest_covering_route() {
        let mut routes = vec![
            ChunkRoute {
                start: 0x0000,
                len: 1,
                value: 1,
            },
            ChunkRoute {
                start: 0x1200,
                len: 8,
                value: 2,
            },
            ChunkRoute {
                start: 0x1234,
                len: 16,
                value: 3,
            },
            ChunkRoute {
                start: 0x1230,
                len: 12,
                value: 4,
            },
            ChunkRoute {
                start: 0x8000,
                len: 2,
                value: 5,
            },
            ChunkRoute {
                start: 0xfff0,
                len: 14,
                value: 6,
            },
            ChunkRoute {
                start: 0x1238,
                len: 13,
                value: 7,
            },
        ];
        routes.sort_by_key(|r| (r.start, r.len));
        let mut d = Vec::new();
        let c = Chunk::build(&routes, &[], &mut d);
        for k in 0..=u16::MAX {
            assert_eq!(c.lookup(k), model(&routes, k), "key {k:#06x}");
        }
    }

    #[test]
    fn kids_take_precedence_and_record_their_covering_default() {
        let routes = vec![ChunkRoute {
            start: 0x4000,
            len: 2,
            value: 9,
        }];
        let kids = [0x0001u16, 0x4005, 0xffff];
        let mut d = Vec::new();
        let c = Chunk::build(&routes, &kids, &mut d);
        assert_eq!(c.lookup(0x0001), CHILD);
        assert_eq!(c.lookup(0x4005), CHILD | 1);
        assert_eq!(c.lookup(0xffff), CHILD | 2);
        assert_eq!(c.lookup(0x4006), 9);
        assert_eq!(c.lookup(0x0002), NO_ROUTE);
        assert_eq!(d, vec![NO_ROUTE, 9, NO_ROUTE]);
    }

    #[test]
    fn empty_chunk_has_no_route() {
        let c = Chunk::default();
        assert_eq!(c.lookup(5), NO_ROUTE);
    }
}
