//! vpnfwd's integration-test support: topologies of network namespaces and
//! veth pairs with real BGP peers, built and torn down per test.
