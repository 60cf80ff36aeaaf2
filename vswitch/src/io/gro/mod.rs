//! Software GRO: consecutive frames of one flow leaving by one port go
//! out as one GSO frame, small UDP datagrams ([`udp`]) and TCP segments
//! ([`tcp`]) alike.
//!
//! A frame costs the datapath one `sendmmsg` entry: an skb, a copy, a
//! pass through the egress veth and the receiving stack's IP layer. When
//! a port's sends of one batch hold a run of one flow's frames (same
//! Ethernet header, addresses, ports, TOS/traffic class, TTL/hop limit and
//! payload size, the last possibly shorter; for TCP also consecutive
//! sequence numbers and the same acknowledgement, window and options),
//! the first frame's receive slot gets the others' payloads appended and
//! a virtio header of type `GSO_UDP_L4`, `GSO_TCPV4` or `GSO_TCPV6`: the
//! kernel carries it as one skb and splits it back into the same packets
//! only where it must (the receiving UDP socket, a device without the
//! offload). The forwarding decisions were made per frame before; this
//! only changes how one port's sends are carried.
//!
//! A merged frame's transport checksum is left partial for the kernel to
//! complete, so a merge must not hide a bad one: a frame whose checksum
//! is still partial (as a pod's offloading veth hands it over) was never
//! checksummed and merges as it is; one the kernel marked `DATA_VALID`
//! was checked; any other (from a VTEP, a TAP without offloads) merges
//! only once its IPv4 header and transport checksums are verified, as the
//! kernel's GRO does. A frame that fails stays alone, to be dropped by
//! its receiver.

mod tcp;
mod udp;

use std::net::{Ipv4Addr, Ipv6Addr};

use super::batch::RxBatch;
use super::vnet::VnetHeader;
use crate::wire::{checksum, IpProtocol};

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
/// The most frames one GSO frame carries.
const MAX_RUN: usize = 64;
/// The largest merged IP packet.
const MAX_IP_LEN: usize = 65_000;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Which protocols' frames may merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merging {
    /// Small UDP datagrams (into `GSO_UDP_L4` frames).
    pub udp: bool,
    /// TCP segments (into TSO frames).
    pub tcp: bool,
}

impl Merging {
    /// Both.
    pub const ALL: Merging = Merging {
        udp: true,
        tcp: true,
    };

    /// Whether either may merge.
    pub fn any(self) -> bool {
        self.udp || self.tcp
    }
}

/// One frame of a port's sends after merging: how many received frames
/// it carries, and whether they are TCP segments (else UDP datagrams, or
/// a frame that did not merge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Received frames carried (1: not merged).
    pub frames: u8,
    /// Whether the frames are TCP segments.
    pub tcp: bool,
}

/// What must match for two frames to merge: the Ethernet header, the IP
/// fields that are not lengths, identification or checksums (IPv4: TOS,
/// DF, TTL, protocol and addresses; IPv6: traffic class, flow label, next
/// header, hop limit and addresses) and the transport fields that must
/// not change within a run (see [`udp`] and [`tcp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    ethernet: [u8; ETH],
    ip: [u8; 38],
    l4: [u8; 56],
}

/// Where a candidate frame's IP packet puts its transport header.
#[derive(Debug, Clone, Copy)]
struct Ip {
    /// Offset of the transport header in the frame.
    l4: usize,
    /// Transport header and payload, in bytes.
    l4_len: usize,
    /// IPv6 (else IPv4).
    v6: bool,
    /// The transport protocol.
    proto: u8,
}

/// A frame that may merge with its neighbours.
#[derive(Debug, Clone, Copy)]
struct Segment {
    key: Key,
    ip: Ip,
    /// Offset of the payload in the frame.
    payload_at: usize,
    /// Payload bytes.
    size: usize,
    /// TCP: the sequence number (0 for UDP).
    seq: u32,
    /// IPv4: the identification (0 for IPv6).
    id: u16,
    /// TCP: PSH is set, so nothing may follow it in a run.
    ends_run: bool,
    /// Its checksums must be verified before it merges.
    verify: bool,
}

/// The IP layer of a frame that may merge (IPv4 without options or IPv6
/// without extension headers, not a fragment, lengths consistent), its
/// fields written into `key`.
fn ip_of(frame: &[u8], key: &mut Key) -> Option<Ip> {
    let ip = frame.get(ETH..)?;
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let header = ip.get(..IP4)?;
            let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let fragment = u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0;
            if header[0] != 0x45 || fragment || total != ip.len() {
                return None;
            }
            key.ip[0] = header[1];
            key.ip[1] = header[6] & 0x40;
            key.ip[2] = header[8];
            key.ip[3] = header[9];
            key.ip[4..12].copy_from_slice(&header[12..20]);
            Some(Ip {
                l4: ETH + IP4,
                l4_len: total.checked_sub(IP4)?,
                v6: false,
                proto: header[9],
            })
        }
        [0x86, 0xdd] => {
            let header = ip.get(..IP6)?;
            let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if header[0] >> 4 != 6 || payload + IP6 != ip.len() {
                return None;
            }
            key.ip[..4].copy_from_slice(&header[..4]);
            key.ip[4..6].copy_from_slice(&header[6..8]);
            key.ip[6..].copy_from_slice(&header[8..IP6]);
            Some(Ip {
                l4: ETH + IP6,
                l4_len: payload,
                v6: true,
                proto: header[6],
            })
        }
        _ => None,
    }
}

/// The frame's segment, if it may merge: no GSO already, a mergeable IP
/// packet, and a transport header [`udp`] or [`tcp`] takes (of a
/// protocol `merging` allows).
fn segment_of(vnet: &VnetHeader, frame: &[u8], merging: Merging) -> Option<Segment> {
    if vnet.gso_type != VnetHeader::GSO_NONE {
        return None;
    }
    let mut key = Key {
        ethernet: [0; ETH],
        ip: [0; 38],
        l4: [0; 56],
    };
    let ip = ip_of(frame, &mut key)?;
    key.ethernet.copy_from_slice(frame.get(..ETH)?);
    let checked = |offset: u16| {
        let partial = vnet.needs_csum()
            && usize::from(vnet.csum_start) == ip.l4
            && vnet.csum_offset == offset;
        partial || vnet.flags & VnetHeader::F_DATA_VALID != 0
    };
    match ip.proto {
        PROTO_UDP if merging.udp => udp::segment(frame, ip, key, !checked(udp::CSUM_OFFSET)),
        PROTO_TCP if merging.tcp => tcp::segment(frame, ip, key, !checked(tcp::CSUM_OFFSET)),
        _ => None,
    }
}

/// The pseudo-header's sum (not complemented) for a transport packet of
/// `l4_len` bytes in `frame`.
fn pseudo_sum(frame: &[u8], ip: &Ip, l4_len: usize) -> u16 {
    let length = l4_len as u32;
    if ip.v6 {
        let address = |at: usize| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&frame[at..at + 16]);
            Ipv6Addr::from(octets)
        };
        let (src, dst) = (address(ETH + 8), address(ETH + 24));
        checksum::pseudo_header_v6(src, dst, ip.proto, length)
    } else {
        let address =
            |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
        let (src, dst) = (address(ETH + 12), address(ETH + 16));
        checksum::pseudo_header(src, dst, IpProtocol::from(ip.proto), length)
    }
}

/// Whether the checksums of `seg` (a frame of `frame`) are right: the
/// IPv4 header's always (a merge rewrites it), the transport one unless
/// it needs no checking.
fn checksums_hold(frame: &[u8], seg: &Segment) -> bool {
    let header_ok = seg.ip.v6 || checksum::sum(&frame[ETH..ETH + IP4]) == 0xffff;
    if !seg.verify || !header_ok {
        return header_ok;
    }
    let l4 = &frame[seg.ip.l4..seg.ip.l4 + seg.ip.l4_len];
    let pseudo = pseudo_sum(frame, &seg.ip, seg.ip.l4_len);
    checksum::combine(pseudo, checksum::sum(l4)) == 0xffff
}

/// Merges runs of `which` (indexes of `rx`, in sending order) into the
/// first frame of each run, as described in the module documentation,
/// and removes the merged ones from `which`. Frames whose bit is set in
/// `shared` (sent by other ports too: the slot is not theirs to change)
/// are left alone, and so are the protocols `merging` leaves out.
/// `runs[k]` becomes what `which[k]` carries. Returns whether anything
/// merged.
pub fn coalesce(
    rx: &mut RxBatch,
    which: &mut Vec<usize>,
    shared: u64,
    runs: &mut Vec<Run>,
    merging: Merging,
) -> bool {
    runs.clear();
    let mut merged_any = false;
    let mut out = 0;
    let mut k = 0;
    while k < which.len() {
        let first = which[k];
        let head = mergeable(shared, first)
            .then(|| segment_of(&rx.vnet(first), rx.frame(first), merging))
            .flatten();
        let mut run = 1;
        if let Some(head) = head.filter(|h| !h.ends_run) {
            run = run_from(rx, &which[k..], shared, &head, merging);
            if run > 1 {
                merge(rx, &which[k..k + run], &head);
                merged_any = true;
            }
        }
        which[out] = first;
        runs.push(Run {
            frames: run as u8,
            tcp: head.is_some_and(|h| h.ip.proto == PROTO_TCP),
        });
        out += 1;
        k += run;
    }
    which.truncate(out);
    merged_any
}

/// How many of `which` (starting with `head`'s frame) merge into one.
fn run_from(rx: &RxBatch, which: &[usize], shared: u64, head: &Segment, merging: Merging) -> usize {
    let room = rx.room(which[0]).min(ETH + MAX_IP_LEN);
    // IPv4 without DF: identifications must count up, as the kernel's
    // segmentation will make them again.
    let ids_count = !head.ip.v6 && head.key.ip[1] == 0;
    let mut ip_len = head.payload_at - ETH + head.size;
    let mut seq = head.seq.wrapping_add(head.size as u32);
    let mut head_checked = false;
    let mut run = 1;
    while run < which.len() && run < MAX_RUN {
        let next = which[run];
        let Some(seg) = mergeable(shared, next)
            .then(|| segment_of(&rx.vnet(next), rx.frame(next), merging))
            .flatten()
        else {
            break;
        };
        let fits = seg.key == head.key
            && seg.size <= head.size
            && (head.ip.proto != PROTO_TCP || seg.seq == seq)
            && (!ids_count || seg.id == head.id.wrapping_add(run as u16))
            && ETH + ip_len + seg.size <= room;
        if !fits {
            break;
        }
        // Checksums are verified only for frames that would merge.
        if !head_checked {
            if !checksums_hold(rx.frame(which[0]), head) {
                return 1;
            }
            head_checked = true;
        }
        if !checksums_hold(rx.frame(next), &seg) {
            break;
        }
        ip_len += seg.size;
        seq = seq.wrapping_add(seg.size as u32);
        run += 1;
        if seg.size < head.size || seg.ends_run {
            break; // only the last may be shorter, or push
        }
    }
    run
}

/// Whether frame `i` may be changed: its bit is clear in the `shared`
/// mask (frames past the first 64 have none and never merge).
fn mergeable(shared: u64, i: usize) -> bool {
    i < 64 && shared & (1 << i) == 0
}

/// Appends the payloads of `run[1..]` to frame `run[0]` (whose segment is
/// `head`), fixes its IP lengths and checksum, and hands the transport
/// header and offload header to [`udp`] or [`tcp`].
fn merge(rx: &mut RxBatch, run: &[usize], head: &Segment) {
    let first = run[0];
    let last = *run.last().unwrap_or(&first);
    let tcp_flags = rx.frame(last).get(head.ip.l4 + 13).copied().unwrap_or(0);
    for &next in &run[1..] {
        // `run_from` checked the room.
        let appended = rx.append_from(first, next, head.payload_at);
        debug_assert!(appended, "a merged run outgrew its slot");
    }
    let frame = rx.frame_mut(first);
    let l4_len = frame.len() - head.ip.l4;
    if head.ip.v6 {
        frame[ETH + 4..ETH + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        let ip_len = (l4_len + IP4) as u16;
        frame[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
        frame[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
        let ip_check = !checksum::sum(&frame[ETH..ETH + IP4]);
        frame[ETH + 10..ETH + 12].copy_from_slice(&ip_check.to_be_bytes());
    }
    // A partial checksum: the pseudo-header's sum, not complemented.
    let partial = pseudo_sum(frame, &head.ip, l4_len);
    let vnet = if head.ip.proto == PROTO_TCP {
        tcp::finish(frame, head, partial, tcp_flags)
    } else {
        udp::finish(frame, head, partial)
    };
    rx.set_vnet(first, &vnet);
}

#[cfg(test)]
mod test_frames;
