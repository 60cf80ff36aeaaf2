//! Software GRO for small UDP datagrams: consecutive frames of one UDP
//! flow (IPv4 or IPv6), leaving by one port, go out as one UDP GSO frame.
//!
//! A pod sending small datagrams (DNS, QUIC, a 64-byte flood) costs the
//! datapath one `sendmmsg` entry per frame: an skb, a copy, a pass through
//! the egress veth and the receiving stack's IP layer each. When a batch
//! holds a run of the same flow's datagrams (same addresses, ports, TOS,
//! TTL and payload size, the last possibly shorter), the first frame's
//! receive slot gets the others' payloads appended and a virtio header of
//! type `GSO_UDP_L4`: the kernel takes it as one skb and splits it back
//! into the same datagrams only at the receiving socket (or the egress
//! device). Every datagram arrives as sent; the forwarding decisions were
//! made per frame before (this only changes how the sends are carried).
//!
//! Only frames whose UDP checksum is still partial (`NEEDS_CSUM` from a
//! pod's offloading veth, at the UDP header) are merged: their checksum
//! was never computed, so there is nothing to verify and the kernel
//! completes each datagram's checksum as it splits them.

use super::batch::RxBatch;
use super::vnet::VnetHeader;
use crate::wire::checksum;

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
const UDP: usize = 8;
/// The most datagrams one GSO frame carries.
const MAX_RUN: usize = 64;
/// The largest merged IP packet.
const MAX_IP_LEN: usize = 65_000;

/// What must match for two frames to merge: Ethernet header, the IP
/// fields that are not lengths or checksums (IPv4: TOS, DF, TTL and
/// addresses; IPv6: traffic class, flow label, hop limit and addresses)
/// and the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flow {
    ethernet: [u8; ETH],
    ip: [u8; 37],
    ports: [u8; 4],
}

/// A mergeable frame: its flow, where its UDP header starts, and its UDP
/// payload size.
struct Datagram {
    flow: Flow,
    l4: usize,
    size: usize,
}

/// The flow of a mergeable frame (UDP over IPv4 without options or IPv6
/// without extension headers, not a fragment, checksum partial).
fn datagram_of(vnet: &VnetHeader, frame: &[u8]) -> Option<Datagram> {
    let mut flow = Flow {
        ethernet: [0; ETH],
        ip: [0; 37],
        ports: [0; 4],
    };
    let ip = frame.get(ETH..)?;
    let (l4, udp_len) = match frame.get(12..14)? {
        [0x08, 0x00] => {
            let header = ip.get(..IP4)?;
            let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let fragment = u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0;
            if header[0] != 0x45 || header[9] != 17 || fragment || total != ip.len() {
                return None;
            }
            flow.ip[0] = header[1];
            flow.ip[1] = header[6] & 0x40;
            flow.ip[2] = header[8];
            flow.ip[3..11].copy_from_slice(&header[12..20]);
            (ETH + IP4, total.checked_sub(IP4)?)
        }
        [0x86, 0xdd] => {
            let header = ip.get(..IP6)?;
            let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if header[0] >> 4 != 6 || header[6] != 17 || payload + IP6 != ip.len() {
                return None;
            }
            flow.ip[..4].copy_from_slice(&header[..4]);
            flow.ip[4] = header[7];
            flow.ip[5..].copy_from_slice(&header[8..IP6]);
            (ETH + IP6, payload)
        }
        _ => return None,
    };
    let partial = vnet.needs_csum()
        && vnet.gso_type == VnetHeader::GSO_NONE
        && usize::from(vnet.csum_start) == l4
        && vnet.csum_offset == 6;
    let udp = frame.get(l4..l4 + UDP)?;
    let stated = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if !partial || stated != udp_len || udp_len <= UDP {
        return None;
    }
    flow.ethernet.copy_from_slice(&frame[..ETH]);
    flow.ports.copy_from_slice(&udp[..4]);
    Some(Datagram {
        flow,
        l4,
        size: udp_len - UDP,
    })
}

/// Merges runs of `which` (indexes of `rx`, in sending order) into the
/// first frame of each run, as described in the module documentation,
/// and removes the merged ones from `which`. Frames whose bit is set in
/// `shared` (sent by other ports too) are left alone. `runs[k]` becomes
/// how many datagrams `which[k]` carries. Returns whether anything merged.
pub fn coalesce_udp(
    rx: &mut RxBatch,
    which: &mut Vec<usize>,
    shared: u64,
    runs: &mut Vec<u8>,
) -> bool {
    runs.clear();
    let mut merged_any = false;
    let mut out = 0;
    let mut k = 0;
    while k < which.len() {
        let first = which[k];
        let head = (shared & bit(first) == 0 && first < 64)
            .then(|| datagram_of(&rx.vnet(first), rx.frame(first)))
            .flatten();
        let mut run = 1;
        if let Some(head) = head {
            let mut ip_len = head.l4 - ETH + UDP + head.size;
            while k + run < which.len() && run < MAX_RUN {
                let next = which[k + run];
                match datagram_of(&rx.vnet(next), rx.frame(next)) {
                    Some(d)
                        if d.flow == head.flow
                            && d.size <= head.size
                            && shared & bit(next) == 0
                            && next < 64
                            && ip_len + d.size <= MAX_IP_LEN =>
                    {
                        ip_len += d.size;
                        run += 1;
                        if d.size < head.size {
                            break; // only the last may be shorter
                        }
                    }
                    _ => break,
                }
            }
            if run > 1 {
                merge(rx, &which[k..k + run], head.l4, head.size);
                merged_any = true;
            }
        }
        which[out] = first;
        runs.push(run as u8);
        out += 1;
        k += run;
    }
    which.truncate(out);
    merged_any
}

/// Frame `i`'s bit in a `shared` mask; frames past the first 64 have
/// none and count as shared (never merged).
fn bit(i: usize) -> u64 {
    if i < 64 {
        1 << i
    } else {
        u64::MAX
    }
}

/// Appends the payloads of `run[1..]` to frame `run[0]` (UDP header at
/// `l4`) and makes it a UDP GSO frame of `size`-byte segments.
fn merge(rx: &mut RxBatch, run: &[usize], l4: usize, size: usize) {
    let first = run[0];
    for &next in &run[1..] {
        rx.append_from(first, next, l4 + UDP);
    }
    let frame = rx.frame_mut(first);
    let udp_len = frame.len() - l4;
    let mut pseudo = [0u8; 40];
    let pseudo_len = if l4 == ETH + IP4 {
        let ip_len = (udp_len + IP4) as u16;
        frame[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
        frame[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
        let ip_check = !checksum::sum(&frame[ETH..l4]);
        frame[ETH + 10..ETH + 12].copy_from_slice(&ip_check.to_be_bytes());
        pseudo[..8].copy_from_slice(&frame[ETH + 12..ETH + 20]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
        12
    } else {
        frame[ETH + 4..ETH + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        pseudo[..32].copy_from_slice(&frame[ETH + 8..ETH + 40]);
        pseudo[34..36].copy_from_slice(&(udp_len as u16).to_be_bytes());
        pseudo[39] = 17;
        40
    };
    frame[l4 + 4..l4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    // A partial checksum: the pseudo-header's sum, not complemented.
    let partial = checksum::sum(&pseudo[..pseudo_len]);
    frame[l4 + 6..l4 + 8].copy_from_slice(&partial.to_be_bytes());
    rx.set_vnet(
        first,
        &VnetHeader {
            flags: VnetHeader::F_NEEDS_CSUM,
            gso_type: VnetHeader::GSO_UDP_L4,
            hdr_len: (l4 + UDP) as u16,
            gso_size: size as u16,
            csum_start: l4 as u16,
            csum_offset: 6,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn batch(frames: &[(VnetHeader, Vec<u8>)]) -> RxBatch {
        let mut rx = RxBatch::new(frames.len());
        rx.begin_fill();
        for (i, (vnet, frame)) in frames.iter().enumerate() {
            let slot = &mut rx.slots_mut()[i];
            slot[..10].copy_from_slice(&vnet.to_bytes());
            slot[10..10 + frame.len()].copy_from_slice(frame);
            rx.commit(i, 10 + frame.len(), false);
        }
        rx
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
        assert!(coalesce_udp(&mut rx, &mut which, 0, &mut runs));
        assert_eq!(which, vec![0, 11, 12]);
        assert_eq!(runs, vec![11, 1, 1]);
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
        complete.0.flags = 0; // checksum already complete
        fragment.1[ETH + 6] = 0x20; // more fragments
        other.1[ETH + 8] = 63; // another TTL
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
        assert!(!coalesce_udp(&mut rx, &mut which, 1 << 7, &mut runs));
        assert_eq!(which, (0..frames.len()).collect::<Vec<_>>());
        assert_eq!(runs, vec![1; 8]);
        // Mangled frames are left as they are.
        let mut short = datagram(&[5; 64], 4000);
        short.1.truncate(30);
        let mut rx = batch(&[plain.clone(), short, plain]);
        let mut which = vec![0, 1, 2];
        assert!(!coalesce_udp(&mut rx, &mut which, 0, &mut runs));
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
        assert!(coalesce_udp(&mut rx, &mut which, 0, &mut runs));
        assert_eq!((which, runs), (vec![0], vec![5]));
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
