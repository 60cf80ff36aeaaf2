//! Small UDP datagrams in a run: the same ports, and a checksum that is
//! partial, marked valid, or verified (an IPv4 datagram sent without one
//! never merges). The merged frame is a `GSO_UDP_L4` frame of datagrams
//! of the first one's payload size.

use super::{Ip, Key, Segment};
use crate::io::vnet::VnetHeader;

/// Where the checksum sits in a UDP header.
pub(super) const CSUM_OFFSET: u16 = 6;
/// A UDP header's length.
const UDP: usize = 8;

/// The segment of a UDP datagram (`ip` found by `super::ip_of`) whose
/// checksum must be verified before it merges if `verify`.
pub(super) fn segment(frame: &[u8], ip: Ip, mut key: Key, verify: bool) -> Option<Segment> {
    let udp = frame.get(ip.l4..ip.l4 + UDP)?;
    let stated = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if stated != ip.l4_len || ip.l4_len <= UDP || (verify && udp[6..8] == [0, 0]) {
        return None;
    }
    key.l4[..4].copy_from_slice(&udp[..4]);
    Some(Segment {
        key,
        ip,
        payload_at: ip.l4 + UDP,
        size: ip.l4_len - UDP,
        seq: 0,
        id: match ip.v6 {
            true => 0,
            false => u16::from_be_bytes([frame[super::ETH + 4], frame[super::ETH + 5]]),
        },
        ends_run: false,
        verify,
    })
}

/// Makes `frame` (the merged datagrams, IP header already fixed) a UDP
/// GSO frame: its length, the partial checksum `partial`, and the offload
/// header that says so.
pub(super) fn finish(frame: &mut [u8], head: &Segment, partial: u16) -> VnetHeader {
    let l4 = head.ip.l4;
    let udp_len = (frame.len() - l4) as u16;
    frame[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
    frame[l4 + 6..l4 + 8].copy_from_slice(&partial.to_be_bytes());
    VnetHeader {
        flags: VnetHeader::F_NEEDS_CSUM,
        gso_type: VnetHeader::GSO_UDP_L4,
        hdr_len: (l4 + UDP) as u16,
        gso_size: head.size as u16,
        csum_start: l4 as u16,
        csum_offset: CSUM_OFFSET,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_frames::batch;
    use super::super::{coalesce, Merging, Run, ETH, IP4, IP6};
    use super::*;
    use crate::wire::checksum;

    const IP: usize = IP4;
    const L4: usize = ETH + IP4;

    /// A UDP/IPv4 frame as a pod's offloading veth hands it over: payload
    /// `payload`, checksum partial.
    fn datagram(payload: &[u8], sport: u16) -> (VnetHeader, Vec<u8>) {
        let mut f = vec![0u8; L4 + UDP];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (IP + UDP + payload.len()) as u16;
        f[ETH] = 0x45;
        f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
        f[ETH + 6] = 0x40;
        f[ETH + 8] = 64;
        f[ETH + 9] = 17;
        f[ETH + 12..ETH + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[ETH + 16..ETH + 20].copy_from_slice(&[10, 0, 0, 2]);
        f[L4..L4 + 2].copy_from_slice(&sport.to_be_bytes());
        f[L4 + 2..L4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[L4 + 4..L4 + 6].copy_from_slice(&((UDP + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(payload);
        fix_ip(&mut f);
        let vnet = VnetHeader {
            flags: VnetHeader::F_NEEDS_CSUM,
            gso_type: VnetHeader::GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: L4 as u16,
            csum_offset: 6,
        };
        (vnet, f)
    }

    /// Writes the IPv4 header checksum of `f`.
    fn fix_ip(f: &mut [u8]) {
        f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
        let ip_check = checksum::checksum(&f[ETH..L4]);
        f[ETH + 10..ETH + 12].copy_from_slice(&ip_check.to_be_bytes());
    }

    /// Runs of UDP datagrams carrying `frames` each.
    fn udp_runs(frames: &[u8]) -> Vec<Run> {
        frames
            .iter()
            .map(|&frames| Run { frames, tcp: false })
            .collect()
    }

    /// What the kernel makes of a GSO_UDP_L4 frame: its datagrams' payloads.
    fn split(vnet: &VnetHeader, frame: &[u8]) -> Vec<Vec<u8>> {
        if vnet.gso_type != VnetHeader::GSO_UDP_L4 {
            return vec![frame[L4 + UDP..].to_vec()];
        }
        frame[L4 + UDP..]
            .chunks(usize::from(vnet.gso_size))
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn a_run_of_one_flow_goes_as_one_gso_frame_and_splits_back_the_same() {
        let mut frames: Vec<_> = (0..10u8).map(|i| datagram(&[i; 64], 4000)).collect();
        frames.push(datagram(&[99; 20], 4000)); // shorter: ends the run
        frames.push(datagram(&[7; 64], 4000)); // a new run after it
        frames.push(datagram(&[8; 64], 4001)); // another flow
        let mut rx = batch(&frames);
        let mut which: Vec<usize> = (0..frames.len()).collect();
        let mut runs = Vec::new();
        assert!(coalesce(&mut rx, &mut which, 0, &mut runs, Merging::ALL));
        assert_eq!(which, vec![0, 11, 12]);
        assert_eq!(runs, udp_runs(&[11, 1, 1]));
        let vnet = rx.vnet(0);
        assert_eq!(
            (vnet.gso_type, vnet.gso_size, vnet.hdr_len),
            (VnetHeader::GSO_UDP_L4, 64, 42)
        );
        let frame = rx.frame(0);
        // Lengths, the IP checksum and the partial UDP checksum agree
        // with the merged packet.
        assert_eq!(frame.len(), L4 + UDP + 10 * 64 + 20);
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[16], frame[17]])),
            frame.len() - ETH
        );
        assert_eq!(checksum::sum(&frame[ETH..L4]), 0xffff);
        let udp_len = (frame.len() - L4) as u16;
        let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 17];
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let check = u16::from_be_bytes([frame[L4 + 6], frame[L4 + 7]]);
        assert_eq!(check, checksum::sum(&pseudo));
        let mut payloads = split(&vnet, frame);
        for &i in &which[1..] {
            payloads.extend(split(&rx.vnet(i), rx.frame(i)));
        }
        let sent: Vec<Vec<u8>> = frames.iter().map(|(_, f)| f[L4 + UDP..].to_vec()).collect();
        assert_eq!(payloads, sent, "every datagram, in order, unchanged");
    }

    #[test]
    fn frames_that_must_stay_apart_do() {
        let (mut complete, mut fragment, mut other) = (
            datagram(&[1; 64], 4000),
            datagram(&[2; 64], 4000),
            datagram(&[3; 64], 4000),
        );
        complete.0.flags = 0; // checksum neither partial nor right
        fragment.1[ETH + 6] = 0x20; // more fragments
        other.1[ETH + 8] = 63; // another TTL
        fix_ip(&mut fragment.1);
        fix_ip(&mut other.1);
        let plain = datagram(&[4; 64], 4000);
        let frames = vec![
            plain.clone(),
            complete,
            plain.clone(),
            fragment,
            plain.clone(),
            other,
            plain.clone(),
            plain.clone(),
        ];
        let mut rx = batch(&frames);
        let mut which: Vec<usize> = (0..frames.len()).collect();
        let mut runs = Vec::new();
        // The last two would merge, but frame 7 is also sent elsewhere.
        assert!(!coalesce(
            &mut rx,
            &mut which,
            1 << 7,
            &mut runs,
            Merging::ALL
        ));
        assert_eq!(which, (0..frames.len()).collect::<Vec<_>>());
        assert_eq!(runs, udp_runs(&[1; 8]));
        // Mangled frames are left as they are.
        let mut short = datagram(&[5; 64], 4000);
        short.1.truncate(30);
        let mut rx = batch(&[plain.clone(), short, plain]);
        let mut which = vec![0, 1, 2];
        assert!(!coalesce(&mut rx, &mut which, 0, &mut runs, Merging::ALL));
    }

    #[test]
    fn ipv4_headers_are_checked_and_identifications_follow_without_df() {
        // A damaged IPv4 header is never merged (a merge rewrites it).
        let plain = datagram(&[4; 64], 4000);
        let mut damaged = plain.clone();
        damaged.1[ETH + 12] ^= 1;
        let mut rx = batch(&[plain.clone(), damaged, plain.clone()]);
        let mut which = vec![0, 1, 2];
        let mut runs = Vec::new();
        assert!(!coalesce(&mut rx, &mut which, 0, &mut runs, Merging::ALL));
        // Without DF, the kernel's segmentation counts identifications up
        // from the first: only datagrams whose identifications do merge.
        let without_df = |id: u16| {
            let (vnet, mut f) = datagram(&[id as u8; 64], 4000);
            f[ETH + 6] = 0;
            f[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
            fix_ip(&mut f);
            (vnet, f)
        };
        let frames: Vec<_> = [7, 8, 9, 20, 21].into_iter().map(without_df).collect();
        let mut rx = batch(&frames);
        let mut which: Vec<usize> = (0..5).collect();
        assert!(coalesce(&mut rx, &mut which, 0, &mut runs, Merging::ALL));
        assert_eq!((which, runs), (vec![0, 3], udp_runs(&[3, 2])));
    }

    /// The IPv6 twin of [`datagram`].
    fn datagram6(payload: &[u8]) -> (VnetHeader, Vec<u8>) {
        let l4 = ETH + IP6;
        let mut f = vec![0u8; l4 + UDP];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[ETH] = 0x60;
        let len = (UDP + payload.len()) as u16;
        f[ETH + 4..ETH + 6].copy_from_slice(&len.to_be_bytes());
        f[ETH + 6] = 17;
        f[ETH + 7] = 64;
        f[ETH + 8..ETH + 24]
            .copy_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f[ETH + 24..ETH + 40]
            .copy_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f[l4..l4 + 2].copy_from_slice(&4000u16.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
        f.extend_from_slice(payload);
        let vnet = VnetHeader {
            flags: VnetHeader::F_NEEDS_CSUM,
            gso_type: VnetHeader::GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: l4 as u16,
            csum_offset: 6,
        };
        (vnet, f)
    }

    #[test]
    fn ipv6_datagrams_of_one_flow_merge_too() {
        let l4 = ETH + IP6;
        let frames: Vec<_> = (0..5u8).map(|i| datagram6(&[i; 64])).collect();
        let mut rx = batch(&frames);
        let mut which: Vec<usize> = (0..5).collect();
        let mut runs = Vec::new();
        assert!(coalesce(&mut rx, &mut which, 0, &mut runs, Merging::ALL));
        assert_eq!((which, runs), (vec![0], udp_runs(&[5])));
        let (vnet, frame) = (rx.vnet(0), rx.frame(0));
        assert_eq!(
            (vnet.gso_type, vnet.gso_size, vnet.csum_start, vnet.hdr_len),
            (VnetHeader::GSO_UDP_L4, 64, l4 as u16, (l4 + UDP) as u16)
        );
        let udp_len = (frame.len() - l4) as u16;
        assert_eq!(
            u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]),
            udp_len
        );
        let mut pseudo = frame[ETH + 8..ETH + 40].to_vec();
        pseudo.extend_from_slice(&[0, 0]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        let check = u16::from_be_bytes([frame[l4 + 6], frame[l4 + 7]]);
        assert_eq!(check, checksum::sum(&pseudo));
        let payloads: Vec<Vec<u8>> = frame[l4 + UDP..].chunks(64).map(<[u8]>::to_vec).collect();
        let sent: Vec<Vec<u8>> = frames.iter().map(|(_, f)| f[l4 + UDP..].to_vec()).collect();
        assert_eq!(payloads, sent);
    }
}
