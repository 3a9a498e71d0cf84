//! vpnfwd's control plane: the BGP speaker, the VRFs (route distinguishers,
//! route targets, label allocation), the REST API and the daemon.
//!
//! The control thread is the single writer of the forwarding tables; it
//! drives them through [`dataplane::fib::Fib`].

pub use dataplane::fib::Fib;
