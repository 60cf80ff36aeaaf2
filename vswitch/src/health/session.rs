//! One health probe as a tiny TCP client that lives in the agent: a SYN
//! from the router's address, and for HTTP monitors one request after the
//! handshake and the status line of the answer. It never retransmits: a
//! lost segment is a failed probe, and the next interval tries again.
//!
//! Sans-IO: segments in, segments out, no clock of its own.

use std::net::Ipv4Addr;

use crate::snapshot::Mac;
use crate::wire::{
    emit_ethernet, EtherType, EthernetAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpFlags,
    TcpPacket, WireError, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};

/// What a probe asks of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The handshake completes.
    Connect,
    /// `GET path` answers `status`.
    Http {
        /// The request path.
        path: String,
        /// The status a healthy member answers.
        status: u16,
    },
}

/// The addresses of a probe: from a router port to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The router port's MAC (the frame enters the router by that port).
    pub router_mac: Mac,
    /// The router port's address: the probe's source.
    pub src: Ipv4Addr,
    /// The probe's source port (one of [`crate::engine::PROBE_PORTS`]).
    pub sport: u16,
    /// The member's address.
    pub dst: Ipv4Addr,
    /// The member's port.
    pub dport: u16,
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Healthy.
    Passed,
    /// Not healthy, and why.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    SynSent,
    /// Request sent; `answer` holds what came back so far.
    Requested {
        snd_nxt: u32,
        rcv_nxt: u32,
        answer: Vec<u8>,
    },
}

/// A probe in flight.
#[derive(Debug, Clone)]
pub struct Session {
    ends: Endpoints,
    check: Check,
    isn: u32,
    stage: Stage,
}

/// The most of an answer kept while looking for its status line.
const MAX_ANSWER: usize = 1024;

impl Session {
    /// Starts a probe with initial sequence number `isn`; returns it and
    /// the SYN to send.
    pub fn start(ends: Endpoints, check: Check, isn: u32) -> (Session, Vec<u8>) {
        let syn = segment(&ends, isn, 0, TcpFlags::SYN, &[]);
        let session = Session {
            ends,
            check,
            isn,
            stage: Stage::SynSent,
        };
        (session, syn)
    }

    /// The probe's endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.ends
    }

    /// Whether `frame` is a segment of this probe's connection.
    pub fn owns(&self, frame: &[u8]) -> bool {
        parse(frame).is_some_and(|s| {
            s.src == self.ends.dst
                && s.dst == self.ends.src
                && s.sport == self.ends.dport
                && s.dport == self.ends.sport
        })
    }

    /// Takes a segment from the member: the segments to send back, and the
    /// outcome once the probe is decided.
    pub fn receive(&mut self, frame: &[u8]) -> (Vec<Vec<u8>>, Option<Outcome>) {
        let Some(seg) = parse(frame).filter(|_| self.owns(frame)) else {
            return (Vec::new(), None);
        };
        let e = self.ends;
        if seg.flags.contains(TcpFlags::RST) {
            return (
                Vec::new(),
                Some(Outcome::Failed("connection refused".into())),
            );
        }
        match &mut self.stage {
            Stage::SynSent => {
                let synack = seg.flags.contains(TcpFlags::SYN) && seg.flags.contains(TcpFlags::ACK);
                if !synack || seg.ack != self.isn.wrapping_add(1) {
                    return (Vec::new(), None);
                }
                let rcv_nxt = seg.seq.wrapping_add(1);
                let snd_nxt = self.isn.wrapping_add(1);
                match &self.check {
                    Check::Connect => {
                        let rst = segment(&e, snd_nxt, 0, TcpFlags::RST, &[]);
                        (vec![rst], Some(Outcome::Passed))
                    }
                    Check::Http { path, .. } => {
                        let request = format!(
                            "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: plexus-health\r\nConnection: close\r\n\r\n",
                            e.dst
                        );
                        let flags =
                            TcpFlags::from_bits(TcpFlags::PSH.bits() | TcpFlags::ACK.bits());
                        let out = segment(&e, snd_nxt, rcv_nxt, flags, request.as_bytes());
                        self.stage = Stage::Requested {
                            snd_nxt: snd_nxt.wrapping_add(request.len() as u32),
                            rcv_nxt,
                            answer: Vec::new(),
                        };
                        (vec![out], None)
                    }
                }
            }
            Stage::Requested {
                snd_nxt,
                rcv_nxt,
                answer,
            } => {
                if seg.seq != *rcv_nxt
                    || (seg.payload.is_empty() && !seg.flags.contains(TcpFlags::FIN))
                {
                    return (Vec::new(), None);
                }
                let room = MAX_ANSWER.saturating_sub(answer.len());
                answer.extend_from_slice(&seg.payload[..seg.payload.len().min(room)]);
                *rcv_nxt = rcv_nxt.wrapping_add(seg.payload.len() as u32);
                let fin = seg.flags.contains(TcpFlags::FIN);
                if fin {
                    *rcv_nxt = rcv_nxt.wrapping_add(1);
                }
                let Check::Http { status, .. } = &self.check else {
                    return (Vec::new(), None);
                };
                let decided = match status_of(answer) {
                    Some(got) if got == *status => Some(Outcome::Passed),
                    Some(got) => Some(Outcome::Failed(format!("answered {got}, not {status}"))),
                    None if fin || answer.len() >= MAX_ANSWER => {
                        Some(Outcome::Failed("no HTTP status line in the answer".into()))
                    }
                    None => None,
                };
                let reply = match decided {
                    Some(_) => segment(&e, *snd_nxt, 0, TcpFlags::RST, &[]),
                    None => segment(&e, *snd_nxt, *rcv_nxt, TcpFlags::ACK, &[]),
                };
                (vec![reply], decided)
            }
        }
    }

    /// Ends an unanswered probe: the reset to send, so the member frees
    /// its side.
    pub fn abort(&self) -> Vec<u8> {
        let seq = match &self.stage {
            Stage::SynSent => self.isn.wrapping_add(1),
            Stage::Requested { snd_nxt, .. } => *snd_nxt,
        };
        segment(&self.ends, seq, 0, TcpFlags::RST, &[])
    }
}

/// The status code of an HTTP answer, once its status line is complete.
fn status_of(answer: &[u8]) -> Option<u16> {
    let end = answer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&answer[..end]).ok()?;
    let mut words = line.split(' ');
    let version = words.next()?;
    if !version.starts_with("HTTP/") {
        return Some(0);
    }
    words.next()?.parse().ok().or(Some(0))
}

struct Segment<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: &'a [u8],
}

fn parse(frame: &[u8]) -> Option<Segment<'_>> {
    let ip = Ipv4Packet::new_checked(frame.get(ETHERNET_HEADER_LEN..)?).ok()?;
    if ip.protocol() != IpProtocol::Tcp || ip.is_fragment() {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    // No checksum check: a member on this host hands its segments over
    // with checksum offload, the sum not yet filled in.
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some(Segment {
        src,
        dst,
        sport: tcp.src_port(),
        dport: tcp.dst_port(),
        seq: tcp.seq_number(),
        ack: tcp.ack_number(),
        flags: tcp.flags(),
        payload: tcp.payload(),
    })
}

/// A TCP segment from the router port to the member, as a frame entering
/// the router by that port.
fn segment(e: &Endpoints, seq: u32, ack: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
    build(e, seq, ack, flags, payload).unwrap_or_default()
}

fn build(
    e: &Endpoints,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: &[u8],
) -> Result<Vec<u8>, WireError> {
    let l4_len = 20 + payload.len();
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + l4_len];
    let ip = Ipv4Repr {
        src_addr: e.src,
        dst_addr: e.dst,
        protocol: IpProtocol::Tcp,
        ttl: 64,
        ident: seq as u16,
        dont_frag: true,
        payload_len: l4_len,
    };
    let ip_len = ip.emit(&mut buf[ETHERNET_HEADER_LEN..])?;
    let l4 = &mut buf[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..];
    l4[20..].copy_from_slice(payload);
    let mut tcp = TcpPacket::new_unchecked(l4);
    tcp.set_src_port(e.sport);
    tcp.set_dst_port(e.dport);
    tcp.set_seq_number(seq);
    tcp.set_ack_number(ack);
    tcp.set_header_len(20);
    tcp.set_flags(flags);
    tcp.set_window_len(65535);
    tcp.set_urgent_at(0);
    tcp.fill_checksum(e.src, e.dst);
    emit_ethernet(
        EthernetAddress(e.router_mac),
        EthernetAddress(e.router_mac),
        EtherType::Ipv4,
        ip_len,
        &mut buf,
    )?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> Endpoints {
        Endpoints {
            router_mac: [2, 0, 0, 0, 0, 1],
            src: "10.0.2.1".parse().unwrap(),
            sport: 61_000,
            dst: "10.0.2.10".parse().unwrap(),
            dport: 8080,
        }
    }

    /// A segment from the member back to the router.
    fn answer(seq: u32, ack: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        let e = ends();
        let back = Endpoints {
            router_mac: [2, 0, 0, 0, 0, 9],
            src: e.dst,
            sport: e.dport,
            dst: e.src,
            dport: e.sport,
        };
        segment(&back, seq, ack, flags, payload)
    }

    fn synack(isn: u32) -> Vec<u8> {
        let flags = TcpFlags::from_bits(TcpFlags::SYN.bits() | TcpFlags::ACK.bits());
        answer(5000, isn + 1, flags, &[])
    }

    fn flags_of(frame: &[u8]) -> TcpFlags {
        parse(frame).unwrap().flags
    }

    #[test]
    fn a_connect_probe_passes_on_syn_ack_and_resets() {
        let (mut session, syn) = Session::start(ends(), Check::Connect, 100);
        let sent = parse(&syn).unwrap();
        assert_eq!((sent.sport, sent.dport, sent.seq), (61_000, 8080, 100));
        assert_eq!(sent.flags, TcpFlags::SYN);
        let (out, outcome) = session.receive(&synack(100));
        assert_eq!(outcome, Some(Outcome::Passed));
        assert!(flags_of(&out[0]).contains(TcpFlags::RST));
        assert_eq!(parse(&out[0]).unwrap().seq, 101);
    }

    #[test]
    fn a_reset_fails_the_probe_and_strangers_are_ignored() {
        let (mut session, _) = Session::start(ends(), Check::Connect, 100);
        let rst = TcpFlags::from_bits(TcpFlags::RST.bits() | TcpFlags::ACK.bits());
        let mut stranger = answer(0, 101, rst, &[]);
        stranger[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 2] ^= 1; // another port
        assert_eq!(session.receive(&stranger), (Vec::new(), None));
        let (_, outcome) = session.receive(&answer(0, 101, rst, &[]));
        assert!(matches!(outcome, Some(Outcome::Failed(_))));
    }

    #[test]
    fn an_http_probe_reads_the_status_line_across_segments() {
        let check = Check::Http {
            path: "/healthz".into(),
            status: 200,
        };
        let (mut session, _) = Session::start(ends(), check, 7);
        let (out, outcome) = session.receive(&synack(7));
        assert_eq!(outcome, None);
        let request = parse(&out[0]).unwrap();
        assert!(request.payload.starts_with(b"GET /healthz HTTP/1.0\r\n"));
        assert_eq!((request.seq, request.ack), (8, 5001));
        let ack = TcpFlags::ACK;
        let (out, outcome) = session.receive(&answer(5001, 8, ack, b"HTTP/1.1 2"));
        assert_eq!(outcome, None);
        assert_eq!(parse(&out[0]).unwrap().ack, 5011);
        let (out, outcome) = session.receive(&answer(5011, 8, ack, b"00 OK\r\n\r\nhi"));
        assert_eq!(outcome, Some(Outcome::Passed));
        assert!(flags_of(&out[0]).contains(TcpFlags::RST));
    }

    #[test]
    fn an_http_probe_fails_on_another_status_or_no_status() {
        let check = Check::Http {
            path: "/".into(),
            status: 200,
        };
        let (mut session, _) = Session::start(ends(), check.clone(), 7);
        session.receive(&synack(7));
        let (_, outcome) =
            session.receive(&answer(5001, 8, TcpFlags::ACK, b"HTTP/1.1 503 Busy\r\n"));
        assert_eq!(
            outcome,
            Some(Outcome::Failed("answered 503, not 200".into()))
        );

        let (mut session, _) = Session::start(ends(), check, 7);
        session.receive(&synack(7));
        let fin = TcpFlags::from_bits(TcpFlags::FIN.bits() | TcpFlags::ACK.bits());
        let (_, outcome) = session.receive(&answer(5001, 8, fin, b"garbage"));
        assert!(matches!(outcome, Some(Outcome::Failed(_))));
    }
}
