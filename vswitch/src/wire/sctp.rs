//! SCTP's common header (RFC 9260 §3.1): ports, verification tag, and the
//! CRC32c checksum over the whole packet. Plexus reads the ports (rules,
//! connection tracking) and, when a translation changes them, rewrites
//! them and the checksum.

/// The source port's bytes.
const SRC_PORT: core::ops::Range<usize> = 0..2;
/// The destination port's bytes.
const DST_PORT: core::ops::Range<usize> = 2..4;
/// The checksum's bytes (CRC32c, stored least significant byte first).
const CHECKSUM: core::ops::Range<usize> = 8..12;

/// The CRC32c (Castagnoli) table, reflected polynomial 0x82F63B78.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut crc = n as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[n] = crc;
        n += 1;
    }
    table
};

/// CRC32c of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc = TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8);
    }
    !crc
}

/// The checksum `packet` (a whole SCTP packet) should carry.
fn computed(packet: &[u8]) -> u32 {
    let mut crc = !0u32;
    for (i, byte) in packet.iter().enumerate() {
        let byte = if CHECKSUM.contains(&i) { 0 } else { *byte };
        crc = TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8);
    }
    !crc
}

/// Whether `packet`'s checksum is right.
pub fn checksum_valid(packet: &[u8]) -> bool {
    packet.len() >= CHECKSUM.end && packet[CHECKSUM] == computed(packet).to_le_bytes()
}

/// Sets the ports that are given and, if one changed, the checksum. A
/// packet shorter than the common header is left alone.
pub fn rewrite_ports(packet: &mut [u8], src: Option<u16>, dst: Option<u16>) {
    if packet.len() < CHECKSUM.end || (src.is_none() && dst.is_none()) {
        return;
    }
    let before = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
    if let Some(port) = src {
        packet[SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }
    if let Some(port) = dst {
        packet[DST_PORT].copy_from_slice(&port.to_be_bytes());
    }
    if u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]) != before {
        let sum = computed(packet);
        packet[CHECKSUM].copy_from_slice(&sum.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// An INIT chunk from port 5000 to 80 with a correct checksum.
    fn init() -> Vec<u8> {
        let mut packet = vec![0x13, 0x88, 0x00, 0x50, 0, 0, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[1, 0, 0, 20, 0xde, 0xad, 0xbe, 0xef, 0, 1, 0xa0, 0]);
        packet.extend_from_slice(&[0, 10, 0, 10, 0, 0, 0, 1]);
        let sum = computed(&packet);
        packet[CHECKSUM].copy_from_slice(&sum.to_le_bytes());
        packet
    }

    #[test]
    fn rewriting_ports_keeps_the_checksum_right() {
        let mut packet = init();
        assert!(checksum_valid(&packet));
        rewrite_ports(&mut packet, Some(40_000), None);
        assert_eq!(&packet[..4], &[0x9c, 0x40, 0x00, 0x50]);
        assert!(checksum_valid(&packet), "checksum follows the port");
        let mut untouched = init();
        rewrite_ports(&mut untouched, None, None);
        assert_eq!(untouched, init());
        let mut short = vec![0u8; 6];
        rewrite_ports(&mut short, Some(1), Some(2));
        assert_eq!(short, vec![0u8; 6], "too short: left alone");
    }
}
