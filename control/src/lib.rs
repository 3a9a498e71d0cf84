//! vpnfwd's control plane: configuration, the daemon that builds the
//! forwarding tables and runs the workers, and the answers to the packets the
//! workers hand over (ARP/ND for gateways, ICMP).
//!
//! The control thread is the single writer of the forwarding tables; it
//! drives them through [`dataplane::fib::Fib`] (which applies batches of
//! route changes on a thread of its own).

pub mod api;
pub mod bgp;
pub mod config;
pub mod daemon;
pub mod exceptions;
pub mod fxmap;
pub mod neighbor;
mod rib;
pub mod vpn;
