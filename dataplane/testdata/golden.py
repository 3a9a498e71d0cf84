#!/usr/bin/env python3
"""Golden frames for the pipeline tests, built with scapy (pip install scapy).

Regenerate with:  python3 dataplane/testdata/golden.py 60255 > dataplane/testdata/golden.txt
(60255 is the MPLS-over-UDP source port vpnfwd derives from the flow hash of
the push_in_udp packet, RFC 7510 §3.)
Each line: a name and the frame in hex. The topology these frames assume is
set up in dataplane/tests/pipeline.rs (`topology()`).
"""
import sys
from scapy.all import Ether, Dot1Q, IP, IPv6, UDP, GRE, Raw, load_contrib, conf
load_contrib("mpls")
from scapy.contrib.mpls import MPLS

HOST1 = "02:00:00:00:00:01"     # host on access port 0 (untagged)
HOST2 = "02:00:00:00:00:02"     # host on access port 2 (VLAN 100)
RMAC_ACCESS = "02:00:00:00:00:fe"
RMAC_UPLINK = "02:00:00:00:01:fe"
PEER_MAC = "02:00:00:00:02:fe"
PAYLOAD = Raw(b"vpnfwd-golden!")
UDP_SPORT = int(sys.argv[1]) if len(sys.argv) > 1 else 0

def inner(dst, ttl, src="10.1.0.1"):
    return IP(src=src, dst=dst, ttl=ttl, id=7) / UDP(sport=1234, dport=80) / PAYLOAD

def inner6(dst, hlim, src="2001:db8:1::1"):
    return IPv6(src=src, dst=dst, hlim=hlim) / UDP(sport=1234, dport=80) / PAYLOAD

def tunnel(proto):
    return IP(src="192.0.2.1", dst="192.0.2.2", ttl=64, id=0, flags="DF", proto=proto)

out = {}
# Access -> core: the same host packet towards three remote PEs.
out["push_in_eth"] = Ether(dst=RMAC_ACCESS, src=HOST1) / inner("10.2.0.5", 64)
out["push_out_eth"] = Ether(dst=PEER_MAC, src=RMAC_UPLINK) / MPLS(label=2000, s=0, ttl=63) / MPLS(label=1000, s=1, ttl=63) / inner("10.2.0.5", 63)
out["push_in_gre"] = Ether(dst=RMAC_ACCESS, src=HOST1) / inner("10.3.0.5", 64)
out["push_out_gre"] = Ether(dst=PEER_MAC, src=RMAC_UPLINK) / tunnel(47) / GRE(proto=0x8847) / MPLS(label=1001, s=1, ttl=63) / inner("10.3.0.5", 63)
out["push_in_udp"] = Ether(dst=RMAC_ACCESS, src=HOST1) / inner("10.4.0.5", 64)
out["push_out_udp"] = Ether(dst=PEER_MAC, src=RMAC_UPLINK) / tunnel(17) / UDP(sport=UDP_SPORT, dport=6635, chksum=0) / MPLS(label=1002, s=1, ttl=63) / inner("10.4.0.5", 63)
out["push_in_v6"] = Ether(dst=RMAC_ACCESS, src=HOST1) / inner6("2001:db8:2::5", 64)
out["push_out_v6"] = Ether(dst=PEER_MAC, src=RMAC_UPLINK) / MPLS(label=2000, s=0, ttl=63) / MPLS(label=1000, s=1, ttl=63) / inner6("2001:db8:2::5", 63)
# Core -> access: VPN label 500 (per-VRF) from each encapsulation, to a host behind VLAN 100.
pop_out = Ether(dst=HOST2, src=RMAC_ACCESS) / Dot1Q(vlan=100) / inner("10.1.1.7", 39, src="10.2.0.5")
out["pop_in_eth"] = Ether(dst=RMAC_UPLINK, src=PEER_MAC) / MPLS(label=500, s=1, ttl=40) / inner("10.1.1.7", 64, src="10.2.0.5")
out["pop_in_gre"] = Ether(dst=RMAC_UPLINK, src=PEER_MAC) / IP(src="192.0.2.2", dst="192.0.2.1", proto=47) / GRE(proto=0x8847) / MPLS(label=500, s=1, ttl=40) / inner("10.1.1.7", 64, src="10.2.0.5")
out["pop_in_udp"] = Ether(dst=RMAC_UPLINK, src=PEER_MAC) / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=50000, dport=6635) / MPLS(label=500, s=1, ttl=40) / inner("10.1.1.7", 64, src="10.2.0.5")
out["pop_out"] = pop_out
# Per-attachment label 501: no IP lookup; explicit null above it is popped.
out["pop_in_direct"] = Ether(dst=RMAC_UPLINK, src=PEER_MAC) / MPLS(label=0, s=0, ttl=40) / MPLS(label=501, s=1, ttl=40) / inner("10.1.1.7", 64, src="10.2.0.5")
for k, v in out.items():
    print(k, bytes(v).hex())
