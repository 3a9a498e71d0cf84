//! The AF_XDP transmit socket (the benchmark generator's) on a veth pair:
//! every frame arrives, intact and in order, and open errors are clear.
//!
//! ```text
//!  a: AfXdpTx on x0 ═══ x1: AF_PACKET receiver in b
//! ```

use dataplane::io::afpacket::{AfPacketOptions, AfPacketPort};
use dataplane::io::afxdp::{AfXdpError, AfXdpTx};
use dataplane::io::PacketBuf;
use std::time::{Duration, Instant};
use vpnfwd_tests::Lab;

/// Frame `i`: broadcast to the receiver, an experimental EtherType, its
/// number in the payload, and a length that varies with `i`.
fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0xa1]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&i.to_be_bytes());
    let len = 60 + (i as usize % 200);
    while f.len() < len {
        f.push((f.len() as u32 ^ i) as u8);
    }
    f
}

#[test]
fn every_frame_sent_through_af_xdp_arrives_intact_and_in_order() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new();
    let a = lab.ns("a").expect("namespace a");
    let b = lab.ns("b").expect("namespace b");
    lab.veth(&a, "x0", &b, "x1").expect("veth");
    const N: u32 = 20_000;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = lab
        .in_ns(&b, move || {
            let mut port = AfPacketPort::open("x1", &AfPacketOptions::default()).expect("receiver");
            ready_tx.send(()).expect("ready");
            let mut bufs: Vec<PacketBuf> = (0..64).map(|_| PacketBuf::new()).collect();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while got.len() < N as usize && Instant::now() < deadline {
                let k = port.rx_burst(&mut bufs);
                got.extend(
                    bufs[..k]
                        .iter()
                        .map(|b| b.frame().to_vec())
                        .filter(|f| f.get(12..14) == Some(&[0x88, 0xb5][..])),
                );
                if k == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            got
        })
        .expect("enter b");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver up");
    let tx = lab
        .in_ns(&a, move || {
            let mut port = AfXdpTx::open("x0", 0).expect("AF_XDP socket");
            assert_eq!(port.ifname(), "x0");
            let frames: Vec<Vec<u8>> = (0..N).map(frame).collect();
            let mut i = 0usize;
            let deadline = Instant::now() + Duration::from_secs(20);
            while i < frames.len() && Instant::now() < deadline {
                let end = (i + 32).min(frames.len());
                let refs: Vec<&[u8]> = frames[i..end].iter().map(Vec::as_slice).collect();
                i += port.tx_burst(&refs);
                // Paced so the receiver's ring keeps up: this test is about
                // the socket, not the rate.
                std::thread::sleep(Duration::from_micros(300));
            }
            assert_eq!(port.flush(10_000), 0, "frames left in flight");
            i
        })
        .expect("enter a");
    let sent = tx.join().expect("sender");
    assert_eq!(sent, N as usize);
    let got = rx.join().expect("receiver");
    assert_eq!(got.len(), N as usize, "frames received");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(i as u32), "frame {i}");
    }
}

#[test]
fn opening_a_missing_interface_names_it() {
    if !vpnfwd_tests::can_run() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new();
    let a = lab.ns("a").expect("namespace a");
    let err = lab
        .in_ns(&a, || AfXdpTx::open("nosuch0", 0).map(|_| ()))
        .expect("enter a")
        .join()
        .expect("thread");
    match err {
        Err(e @ AfXdpError::NoInterface(_)) => {
            assert_eq!(e.to_string(), "interface \"nosuch0\" not found");
        }
        other => panic!("expected NoInterface, got {other:?}"),
    }
    // A queue the device does not have: the kernel's refusal, with the step.
    let b = lab.ns("b").expect("namespace b");
    lab.veth(&a, "x0", &b, "x1").expect("veth");
    let err = lab
        .in_ns(&a, || AfXdpTx::open("x0", 99).map(|_| ()))
        .expect("enter a")
        .join()
        .expect("thread");
    let msg = err.expect_err("queue 99 of a veth").to_string();
    assert!(msg.starts_with("AF_XDP bind on x0: "), "{msg}");
}
