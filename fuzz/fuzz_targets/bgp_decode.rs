//! Any bytes after a BGP header: decoding must not panic, and whatever
//! decodes must re-encode to bytes that decode to the same message.
#![no_main]

use control::bgp::wire::{decode, encode, Context};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let ctx = Context {
        four_octet_as: data[0] & 1 == 1,
        ..Context::default()
    };
    let mut m = vec![0xff; 16];
    let body = &data[2..];
    let len = (19 + body.len()).min(4096);
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.push(1 + data[1] % 5);
    m.extend_from_slice(&body[..len - 19]);
    if let Ok(msg) = decode(&m, &ctx) {
        if let Ok(bytes) = encode(&msg, &ctx) {
            let again = decode(&bytes, &ctx).expect("re-encoded message decodes");
            assert_eq!(
                encode(&again, &ctx).ok(),
                Some(bytes),
                "encode∘decode is stable"
            );
        }
    }
});
