//! vpnfwd's forwarding plane.
//!
//! - [`wire`]: zero-copy views of the headers on the path.
//! - [`rcu`]: quiescent-state-based reclamation for the one-writer,
//!   many-reader forwarding tables.
//! - [`fib`]: ports, per-VRF IPv4/IPv6 longest-prefix match, nexthops and
//!   the MPLS label table.
//! - [`pipeline`]: classify → lookup → rewrite over bursts of packets.
//! - [`io`]: packet buffers and port back-ends.

pub mod fib;
pub mod io;
pub mod pipeline;
pub mod rcu;
pub mod wire;
pub mod worker;
