//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` folded to 16 bits (not inverted).
///
/// Four bytes at a time into a 64-bit accumulator: the sum does not depend
/// on the order of the bytes within its 16-bit words if the result is swapped
/// alike (RFC 1071 §2(B)), so the words are read little-endian, added whole,
/// and the folded sum swapped once at the end.
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    // An IPv4 header without options, unrolled: five words, no loop.
    if let Ok(h) = <&[u8; 20]>::try_from(data) {
        for q in h.chunks_exact(4) {
            acc += u64::from(u32::from_le_bytes([q[0], q[1], q[2], q[3]]));
        }
        return fold_swap(acc);
    }
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        acc += u64::from(u32::from_le_bytes([q[0], q[1], q[2], q[3]]));
    }
    let rest = quads.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_le_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last);
    }
    fold_swap(acc)
}

/// Fold a 64-bit sum of little-endian words to the 16-bit big-endian sum.
fn fold_swap(acc: u64) -> u16 {
    // 2^16 ≡ 1 (mod 2^16 − 1): folding the halves keeps the sum. Twice
    // to 32 bits (at most 33 after the first), then to 16.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    fold(acc as u32).swap_bytes()
}

/// Fold a 32-bit one's-complement accumulator to 16 bits.
pub fn fold(acc: u32) -> u16 {
    // Twice is enough, without a branch: at most 0x1fffe after the first.
    let acc = (acc & 0xffff) + (acc >> 16);
    ((acc & 0xffff) + (acc >> 16)) as u16
}

/// The checksum field value for `data` (whose checksum field must be zero).
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changed from `old` to `new`.
pub fn update(check: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m')
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let mut hdr = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 0x40, 0x01, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&hdr);
        for ttl in (1..=0x40u8).rev() {
            let old = u16::from_be_bytes([hdr[8], hdr[9]]);
            hdr[8] = ttl - 1;
            let new = u16::from_be_bytes([hdr[8], hdr[9]]);
            let inc = update(
                if ttl == 0x40 {
                    c
                } else {
                    u16::from_be_bytes([hdr[10], hdr[11]])
                },
                old,
                new,
            );
            hdr[10..12].copy_from_slice(&[0, 0]);
            let full = checksum(&hdr);
            assert_eq!(inc, full, "ttl {ttl}");
            hdr[10..12].copy_from_slice(&full.to_be_bytes());
        }
    }

    /// RFC 1071's definition, 16-bit big-endian words one at a time.
    fn sum_by_words(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for w in data.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            acc += hi | w.get(1).map_or(0, |&b| u32::from(b));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn four_bytes_at_a_time_sums_as_rfc1071_defines() {
        let mut x: u32 = 0x2545_f491;
        let mut byte = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        for len in 0..=80 {
            let random: Vec<u8> = (0..len).map(|_| byte()).collect();
            let high: Vec<u8> = (0..len).map(|_| 0xf0 | byte()).collect();
            for data in [random, high, vec![0xff; len], vec![0; len]] {
                assert_eq!(sum(&data), sum_by_words(&data), "{data:02x?}");
            }
        }
        // Enough all-ones words to carry out of 32 bits many times.
        let big = vec![0xff; 1 << 20];
        assert_eq!(sum(&big), sum_by_words(&big));
    }

    #[test]
    fn fold_takes_any_accumulator_to_16_bits() {
        let by_loop = |mut a: u32| {
            while a > 0xffff {
                a = (a & 0xffff) + (a >> 16);
            }
            a as u16
        };
        let mut a: u32 = 0x9e37_79b9;
        for _ in 0..100_000 {
            a = a.wrapping_mul(0x0019_660d).wrapping_add(0x3c6e_f35f);
            assert_eq!(fold(a), by_loop(a), "{a:#x}");
        }
        for a in [0, 0xffff, 0x1_0000, 0x1_fffe, 0xffff_0000, 0xffff_ffff] {
            assert_eq!(fold(a), by_loop(a), "{a:#x}");
        }
    }
}
