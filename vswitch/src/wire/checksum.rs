//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! [`sum`] returns the folded ones'-complement sum of a buffer (not yet
//! complemented); the checksum field is the complement of the sum over the
//! covered bytes, and a buffer that contains a correct checksum sums to
//! `0xffff`. Sums of several pieces are merged with [`combine`].

use core::net::{Ipv4Addr, Ipv6Addr};

use super::IpProtocol;

/// Add with end-around carry on a 64-bit accumulator.
#[inline]
fn add_carry(acc: u64, word: u64) -> u64 {
    let (sum, carry) = acc.overflowing_add(word);
    // When `carry` is set, `sum <= u64::MAX - 1`, so this cannot overflow.
    sum + u64::from(carry)
}

/// Fold a wide accumulator to 16 bits, preserving its value modulo `0xffff`.
#[inline]
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Folded ones'-complement sum of `data` read as big-endian 16-bit words.
///
/// An odd trailing byte is padded with a zero byte, as RFC 1071 requires.
/// The sum is taken 64 bits at a time (`2^16 ≡ 1 (mod 0xffff)`, so wider
/// words give the same ones'-complement result) and then folded.
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(8);
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        acc = add_carry(acc, u64::from_be_bytes(w));
    }
    let mut pairs = words.remainder().chunks_exact(2);
    for pair in &mut pairs {
        acc = add_carry(acc, u64::from(u16::from_be_bytes([pair[0], pair[1]])));
    }
    if let [last] = pairs.remainder() {
        acc = add_carry(acc, u64::from(*last) << 8);
    }
    fold(acc)
}

/// The Internet checksum of `data`: the complement of [`sum`].
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Ones'-complement addition of two folded sums.
#[inline]
pub fn combine(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Folded sum of the IPv4 pseudo-header used by TCP and UDP checksums.
///
/// `length` is the L4 length (header plus payload); values above `0xffff`
/// are folded rather than truncated so the function stays total.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u32) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let mut acc = u64::from(u16::from_be_bytes([s[0], s[1]]))
        + u64::from(u16::from_be_bytes([s[2], s[3]]))
        + u64::from(u16::from_be_bytes([d[0], d[1]]))
        + u64::from(u16::from_be_bytes([d[2], d[3]]));
    acc += u64::from(u8::from(protocol));
    acc += u64::from(length >> 16) + u64::from(length & 0xffff);
    fold(acc)
}

/// Folded sum of the IPv6 pseudo-header (RFC 8200 8.1) that TCP, UDP and
/// ICMPv6 checksums cover: addresses, the upper-layer `length` and the
/// `next` header value.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, length: u32) -> u16 {
    let mut acc: u64 = src
        .segments()
        .iter()
        .chain(dst.segments().iter())
        .map(|w| u64::from(*w))
        .sum();
    acc += u64::from(length >> 16) + u64::from(length & 0xffff) + u64::from(next);
    fold(acc)
}

/// Update checksum `hc` after a 16-bit word changed from `old` to `new`.
///
/// This is RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which (unlike
/// RFC 1141) never produces the `-0` representation for a checksum that was
/// computed over non-zero data, so it agrees bit-for-bit with a full
/// recomputation.
#[inline]
pub fn update(hc: u16, old: u16, new: u16) -> u16 {
    !combine(combine(!hc, !old), new)
}

/// Update checksum `hc` after a 32-bit (word-aligned) field changed.
#[inline]
pub fn update_u32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update(hc, (old >> 16) as u16, (new >> 16) as u16);
    update(hc, old as u16, new as u16)
}

/// Update checksum `hc` after an IPv4 address changed from `old` to `new`.
#[inline]
pub fn update_addr(hc: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(hc, u32::from(old), u32::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward RFC 1071 reference implementation.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(data[i]) << 8 | u32::from(data[i + 1]);
            acc = (acc & 0xffff) + (acc >> 16);
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn rfc1071_example() {
        // Worked example from RFC 1071 section 3.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Header of samples::ICMP_ECHO with its checksum zeroed.
        let header = [
            0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        ];
        assert_eq!(checksum(&header), 0x0a79);
    }

    #[test]
    fn empty_odd_and_all_ones() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0xff; 64]), 0xffff);
        assert_eq!(sum(&[0; 64]), 0);
    }

    #[test]
    fn fast_sum_matches_reference() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 300];
        for _ in 0..2_000 {
            let len = (xorshift(&mut state) % 300) as usize;
            for b in buf.iter_mut().take(len) {
                *b = xorshift(&mut state) as u8;
            }
            // Bias some runs towards 0xff to exercise carries.
            if xorshift(&mut state) & 3 == 0 {
                for b in buf.iter_mut().take(len / 2) {
                    *b = 0xff;
                }
            }
            assert_eq!(sum(&buf[..len]), reference_sum(&buf[..len]), "len {len}");
        }
    }

    #[test]
    fn large_buffer_does_not_overflow() {
        let big = vec![0xffu8; 200_000];
        assert_eq!(sum(&big), reference_sum(&big));
    }

    #[test]
    fn pseudo_header_matches_manual_layout() {
        let src = Ipv4Addr::new(192, 168, 1, 10);
        let dst = Ipv4Addr::new(8, 8, 8, 8);
        let manual = [192, 168, 1, 10, 8, 8, 8, 8, 0, 17, 0x00, 0x25];
        assert_eq!(pseudo_header(src, dst, IpProtocol::Udp, 0x25), sum(&manual));
        // Over-long lengths fold instead of truncating.
        assert_eq!(
            pseudo_header(src, dst, IpProtocol::Udp, 0x1_0025),
            combine(sum(&manual), 1)
        );
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut state = 0x1234_5678_9abc_def1;
        for _ in 0..10_000 {
            let mut data = [0u8; 20];
            for b in data.iter_mut() {
                *b = xorshift(&mut state) as u8;
            }
            data[0] |= 0x40; // never all-zero
                             // Word 0 keeps its non-zero version byte, so the data never becomes all-zero.
            let idx = (1 + xorshift(&mut state) % 9) as usize * 2;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[idx], data[idx + 1]]);
            let new = xorshift(&mut state) as u16;
            data[idx..idx + 2].copy_from_slice(&new.to_be_bytes());
            assert_eq!(update(hc, old, new), checksum(&data));
        }
    }

    #[test]
    fn update_u32_and_addr() {
        let mut data = [0x45, 0, 0, 20, 10, 0, 0, 1, 10, 0, 0, 2];
        let hc = checksum(&data);
        let old = Ipv4Addr::new(10, 0, 0, 1);
        let new = Ipv4Addr::new(203, 0, 113, 77);
        data[4..8].copy_from_slice(&new.octets());
        assert_eq!(update_addr(hc, old, new), checksum(&data));
        assert_eq!(
            update_u32(hc, u32::from(old), u32::from(new)),
            checksum(&data)
        );
    }

    #[test]
    fn combine_wraps_carry() {
        assert_eq!(combine(0xffff, 0x0001), 0x0001);
        assert_eq!(combine(0x8000, 0x8000), 0x0001);
        assert_eq!(combine(0x1234, 0), 0x1234);
    }
}
