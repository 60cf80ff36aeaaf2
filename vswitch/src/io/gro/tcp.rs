//! TCP segments in a run, as the kernel's GRO merges them: consecutive
//! sequence numbers, the same acknowledgement, window, header length and
//! options (timestamps included), plain ACK segments of which only the
//! last may carry PSH, IPv4 with DF set (so the identification need not
//! follow), and a payload on every one. The merged frame is a
//! `GSO_TCPV4`/`GSO_TCPV6` frame of segments of the first one's payload
//! size, which the kernel segments again (if at all) as it would a pod's
//! own TSO frame.
//!
//! This is what a stream from a standard VTEP needs: the kernel that
//! encapsulated it segmented it first, so it arrives as MSS-sized frames
//! with complete checksums, which [`super::coalesce`] verifies before
//! merging.

use super::{Ip, Key, Segment};
use crate::io::vnet::VnetHeader;

/// Where the checksum sits in a TCP header.
pub(super) const CSUM_OFFSET: u16 = 16;
/// A TCP header's length without options.
const TCP: usize = 20;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// The segment of a TCP packet (`ip` found by `super::ip_of`) whose
/// checksums must be verified before it merges if `verify`.
pub(super) fn segment(frame: &[u8], ip: Ip, mut key: Key, verify: bool) -> Option<Segment> {
    // IPv4: only with DF (key.ip[1]), as every TCP stack sends.
    if !ip.v6 && key.ip[1] == 0 {
        return None;
    }
    let header = frame.get(ip.l4..ip.l4 + TCP)?;
    let header_len = usize::from(header[12] >> 4) * 4;
    let flags = header[13];
    if header_len < TCP || header_len >= ip.l4_len || flags & !PSH != ACK {
        return None;
    }
    let options = frame.get(ip.l4 + TCP..ip.l4 + header_len)?;
    key.l4[..4].copy_from_slice(&header[..4]); // ports
    key.l4[4..8].copy_from_slice(&header[8..12]); // acknowledgement
    key.l4[8] = header[12]; // header length
    key.l4[9..11].copy_from_slice(&header[14..16]); // window
    key.l4[11..13].copy_from_slice(&header[18..20]); // urgent pointer
    key.l4[13..13 + options.len()].copy_from_slice(options);
    Some(Segment {
        key,
        ip,
        payload_at: ip.l4 + header_len,
        size: ip.l4_len - header_len,
        seq: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
        id: 0, // DF is set: the identification need not follow
        ends_run: flags & PSH != 0,
        verify,
    })
}

/// Makes `frame` (the merged segments, IP header already fixed) a TCP GSO
/// frame: PSH as the last segment had it (`last_flags`), the partial
/// checksum `partial`, and the offload header that says so.
pub(super) fn finish(frame: &mut [u8], head: &Segment, partial: u16, last_flags: u8) -> VnetHeader {
    let l4 = head.ip.l4;
    frame[l4 + 13] = (frame[l4 + 13] & !PSH) | (last_flags & PSH);
    frame[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    VnetHeader {
        flags: VnetHeader::F_NEEDS_CSUM,
        gso_type: if head.ip.v6 {
            VnetHeader::GSO_TCPV6
        } else {
            VnetHeader::GSO_TCPV4
        },
        hdr_len: head.payload_at as u16,
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

    const MSS: usize = 1448;
    /// A TCP header with the timestamp option, as Linux sends.
    const HEADER: usize = 32;

    /// One segment of a stream from 10.0.0.1:40000 to 10.0.0.2:5201 (or
    /// fd77::1 to fd77::2), as a kernel VTEP hands it over: `payload` at
    /// `seq`, IP identification `id`, `flags`, checksums complete.
    fn segment_frame(v6: bool, seq: u32, id: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let l4 = if v6 { ETH + IP6 } else { ETH + IP4 };
        let mut f = vec![0u8; l4 + HEADER];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let l4_len = HEADER + payload.len();
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f[ETH] = 0x60;
            f[ETH + 4..ETH + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            f[ETH + 6] = 6;
            f[ETH + 7] = 64;
            f[ETH + 8..ETH + 10].copy_from_slice(&[0xfd, 0x77]);
            f[ETH + 23] = 1;
            f[ETH + 24..ETH + 26].copy_from_slice(&[0xfd, 0x77]);
            f[ETH + 39] = 2;
        } else {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[ETH] = 0x45;
            f[ETH + 2..ETH + 4].copy_from_slice(&((IP4 + l4_len) as u16).to_be_bytes());
            f[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
            f[ETH + 6] = 0x40;
            f[ETH + 8] = 64;
            f[ETH + 9] = 6;
            f[ETH + 12..ETH + 16].copy_from_slice(&[10, 0, 0, 1]);
            f[ETH + 16..ETH + 20].copy_from_slice(&[10, 0, 0, 2]);
            let ip_check = checksum::checksum(&f[ETH..ETH + IP4]);
            f[ETH + 10..ETH + 12].copy_from_slice(&ip_check.to_be_bytes());
        }
        f[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        f[l4 + 8..l4 + 12].copy_from_slice(&77u32.to_be_bytes());
        f[l4 + 12] = (HEADER as u8 / 4) << 4;
        f[l4 + 13] = flags;
        f[l4 + 14..l4 + 16].copy_from_slice(&512u16.to_be_bytes());
        // NOP, NOP, timestamps.
        f[l4 + 20..l4 + 24].copy_from_slice(&[1, 1, 8, 10]);
        f[l4 + 24..l4 + 28].copy_from_slice(&1000u32.to_be_bytes());
        f[l4 + 28..l4 + 32].copy_from_slice(&2000u32.to_be_bytes());
        f.extend_from_slice(payload);
        set_tcp_checksum(&mut f, v6);
        f
    }

    /// Writes the complete TCP checksum of `f`.
    fn set_tcp_checksum(f: &mut [u8], v6: bool) {
        let l4 = if v6 { ETH + IP6 } else { ETH + IP4 };
        f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let len = (f.len() - l4) as u16;
        let mut pseudo = Vec::new();
        if v6 {
            pseudo.extend_from_slice(&f[ETH + 8..ETH + 40]);
            pseudo.extend_from_slice(&[0, 0]);
            pseudo.extend_from_slice(&len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
        } else {
            pseudo.extend_from_slice(&f[ETH + 12..ETH + 20]);
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&len.to_be_bytes());
        }
        let sum = checksum::combine(checksum::sum(&pseudo), checksum::sum(&f[l4..]));
        f[l4 + 16..l4 + 18].copy_from_slice(&(!sum).to_be_bytes());
    }

    /// A stream of `n` segments from sequence 1000, identification 1, the
    /// last shorter and pushed: (offload header, frame) each.
    fn stream(v6: bool, n: usize) -> Vec<(VnetHeader, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let last = i + 1 == n;
                let size = if last { 300 } else { MSS };
                let flags = if last { ACK | PSH } else { ACK };
                let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
                let seq = 1000 + (i * MSS) as u32;
                let frame = segment_frame(v6, seq, 1 + i as u16, flags, &payload);
                (VnetHeader::NONE, frame)
            })
            .collect()
    }

    /// What the kernel's TSO makes of a TCP GSO frame: the segments, each
    /// with its sequence number, IPv4 identification (counting up from
    /// the first), lengths, PSH only on the last, and checksums complete.
    fn segment_again(vnet: &VnetHeader, frame: &[u8]) -> Vec<Vec<u8>> {
        let v6 = frame[12..14] == [0x86, 0xdd];
        if vnet.gso_type == VnetHeader::GSO_NONE {
            return vec![frame.to_vec()];
        }
        let l4 = usize::from(vnet.csum_start);
        let header = usize::from(vnet.hdr_len);
        let chunks: Vec<&[u8]> = frame[header..].chunks(usize::from(vnet.gso_size)).collect();
        let seq0 = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().unwrap());
        let id0 = u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]);
        let psh = frame[l4 + 13] & PSH;
        let mut offset = 0u32;
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut f = frame[..header].to_vec();
                f.extend_from_slice(chunk);
                let seq = seq0.wrapping_add(offset);
                offset += chunk.len() as u32;
                f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                f[l4 + 13] &= !PSH;
                if i + 1 == chunks.len() {
                    f[l4 + 13] |= psh;
                }
                let l4_len = f.len() - l4;
                if v6 {
                    f[ETH + 4..ETH + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                } else {
                    let id = id0.wrapping_add(i as u16);
                    f[ETH + 2..ETH + 4].copy_from_slice(&((l4_len + IP4) as u16).to_be_bytes());
                    f[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
                    f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
                    let check = checksum::checksum(&f[ETH..ETH + IP4]);
                    f[ETH + 10..ETH + 12].copy_from_slice(&check.to_be_bytes());
                }
                set_tcp_checksum(&mut f, v6);
                f
            })
            .collect()
    }

    /// Merges `frames` (all sent by one port), returning the frames to send
    /// and what each carries.
    fn merged(frames: &[(VnetHeader, Vec<u8>)]) -> (Vec<(VnetHeader, Vec<u8>)>, Vec<Run>) {
        let mut rx = batch(frames);
        let mut which: Vec<usize> = (0..frames.len()).collect();
        let mut runs = Vec::new();
        coalesce(&mut rx, &mut which, 0, &mut runs, Merging::ALL);
        let out = which
            .iter()
            .map(|&i| (rx.vnet(i), rx.frame(i).to_vec()))
            .collect();
        (out, runs)
    }

    /// Every frame of `out`, segmented again.
    fn resegmented(out: &[(VnetHeader, Vec<u8>)]) -> Vec<Vec<u8>> {
        out.iter().flat_map(|(v, f)| segment_again(v, f)).collect()
    }

    fn originals(frames: &[(VnetHeader, Vec<u8>)]) -> Vec<Vec<u8>> {
        frames.iter().map(|(_, f)| f.clone()).collect()
    }

    #[test]
    fn a_stream_of_segments_goes_as_one_tso_frame_and_segments_back_the_same() {
        for v6 in [false, true] {
            let frames = stream(v6, 20);
            let (out, runs) = merged(&frames);
            assert_eq!(
                runs,
                vec![Run {
                    frames: 20,
                    tcp: true
                }],
                "v6 {v6}"
            );
            let (vnet, frame) = &out[0];
            let l4 = if v6 { ETH + IP6 } else { ETH + IP4 };
            assert_eq!(
                (vnet.gso_type, vnet.gso_size, vnet.hdr_len, vnet.csum_start),
                (
                    if v6 {
                        VnetHeader::GSO_TCPV6
                    } else {
                        VnetHeader::GSO_TCPV4
                    },
                    MSS as u16,
                    (l4 + HEADER) as u16,
                    l4 as u16
                )
            );
            assert!(vnet.needs_csum() && vnet.csum_offset == 16);
            assert_eq!(frame.len(), l4 + HEADER + 19 * MSS + 300);
            assert_eq!(frame[l4 + 13], ACK | PSH, "the last segment's push");
            // Byte for byte what was received, once segmented again.
            assert_eq!(resegmented(&out), originals(&frames), "v6 {v6}");
        }
    }

    #[test]
    fn segments_merge_only_while_tcp_merging_is_on() {
        let frames = stream(false, 5);
        for (merging, runs) in [
            (
                Merging {
                    udp: true,
                    tcp: false,
                },
                5,
            ),
            (
                Merging {
                    udp: false,
                    tcp: true,
                },
                1,
            ),
        ] {
            let mut rx = batch(&frames);
            let mut which: Vec<usize> = (0..frames.len()).collect();
            let mut out = Vec::new();
            coalesce(&mut rx, &mut which, 0, &mut out, merging);
            assert_eq!(out.len(), runs, "{merging:?}");
        }
    }

    #[test]
    fn a_bad_checksum_or_a_gap_ends_a_run() {
        let mut frames = stream(false, 12);
        // Frame 4's payload was damaged on the way (its checksum no longer
        // holds): 0..4 merge, 4 stays alone for its receiver to drop.
        let damaged = frames[4].1.len() - 10;
        frames[4].1[damaged] ^= 0xff;
        // Frame 8 is missing: 5..8 merge, 9.. go after the gap alone.
        frames.remove(8);
        let (out, runs) = merged(&frames);
        let carried: Vec<u8> = runs.iter().map(|r| r.frames).collect();
        assert_eq!(carried, vec![4, 1, 3, 3]);
        assert_eq!(resegmented(&out), originals(&frames));
    }

    #[test]
    fn a_bad_first_frame_merges_nothing() {
        let mut frames = stream(true, 3);
        frames[0].1[100] ^= 1;
        let (out, runs) = merged(&frames);
        let carried: Vec<u8> = runs.iter().map(|r| r.frames).collect();
        assert_eq!(carried, vec![1, 2]);
        assert_eq!(resegmented(&out), originals(&frames));
    }

    #[test]
    fn segments_that_must_stay_apart_do() {
        let base = stream(false, 2);
        let ip_check = |f: &mut Vec<u8>| {
            f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&f[ETH..ETH + IP4]);
            f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
            set_tcp_checksum(f, false);
        };
        let l4 = ETH + IP4;
        type Change<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
        let changes: Vec<(&str, Change)> = vec![
            ("another ack", Box::new(|f| f[l4 + 11] = 78)),
            ("another window", Box::new(|f| f[l4 + 15] = 1)),
            ("another timestamp", Box::new(|f| f[l4 + 27] = 1)),
            ("SYN", Box::new(|f| f[l4 + 13] |= 0x02)),
            ("FIN", Box::new(|f| f[l4 + 13] |= 0x01)),
            ("CWR", Box::new(|f| f[l4 + 13] |= 0x80)),
            ("no DF", Box::new(|f| f[ETH + 6] = 0)),
            ("another TTL", Box::new(|f| f[ETH + 8] = 63)),
            ("ECN marked", Box::new(|f| f[ETH + 1] = 3)),
        ];
        for (what, change) in changes {
            let mut frames = base.clone();
            change(&mut frames[1].1);
            ip_check(&mut frames[1].1);
            let (_, runs) = merged(&frames);
            assert_eq!(runs.len(), 2, "{what}");
        }
        // A pushed first segment ends its run at once.
        let mut frames = stream(false, 3);
        frames[0].1[l4 + 13] |= PSH;
        set_tcp_checksum(&mut frames[0].1, false);
        let (_, runs) = merged(&frames);
        assert_eq!(runs.len(), 2);
        // A pure ACK (no payload) never merges.
        let ack = segment_frame(false, 1000, 1, ACK, &[]);
        let frames = vec![(VnetHeader::NONE, ack.clone()), (VnetHeader::NONE, ack)];
        assert_eq!(merged(&frames).1.len(), 2);
    }

    #[test]
    fn partial_checksums_merge_unverified() {
        // From a pod's offloading veth the checksum field holds only the
        // pseudo-header sum: nothing to verify, nothing to hide.
        let mut frames = stream(false, 4);
        let l4 = ETH + IP4;
        for (vnet, frame) in &mut frames {
            *vnet = VnetHeader {
                flags: VnetHeader::F_NEEDS_CSUM,
                gso_type: VnetHeader::GSO_NONE,
                hdr_len: 0,
                gso_size: 0,
                csum_start: l4 as u16,
                csum_offset: 16,
            };
            frame[l4 + 16..l4 + 18].copy_from_slice(&[0x12, 0x34]);
        }
        let (out, runs) = merged(&frames);
        assert_eq!(
            runs,
            vec![Run {
                frames: 4,
                tcp: true
            }]
        );
        let expected: Vec<Vec<u8>> = stream(false, 4).into_iter().map(|(_, f)| f).collect();
        assert_eq!(resegmented(&out), expected);
    }
}
