//! The driver's sends to local ports: a batch's decided frames, each
//! egress port its own (runs of one flow's frames merged first),
//! and the frames the core made.

use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::{Datapath, PortHandle, Scratch};
use crate::io::{Merging, Port, PortIo, Run, RxBatch, VnetHeader};

/// What one port's sends of a batch came to.
struct Tally {
    /// Entries of the (merged) list sent.
    entries: usize,
    /// Received frames those carried.
    frames: usize,
    /// Received frames there were to send.
    of_all: usize,
    /// Why none was sent, if it was for an error.
    error: Option<std::io::Error>,
}

impl Datapath {
    /// Sends the decided frames of a batch: each egress port its own.
    pub(super) fn send_decided(&self, rx: &mut RxBatch, scratch: &mut Scratch) {
        // Frames several ports send stay as received; a port's run of one
        // flow's UDP datagrams or TCP segments may leave as one GSO frame.
        let shared = scratch.sends.shared();
        let Scratch { sends, runs, .. } = scratch;
        for (egress, indexes) in sends.iter_mut() {
            let Some(out) = self.port(*egress) else {
                self.count(crate::engine::DropReason::Unbound.name());
                continue;
            };
            let tally = self.send_port(&out, rx, indexes, shared, runs);
            if tally.entries > 0 {
                let bytes = rx.bytes_of(indexes[..tally.entries].iter().copied());
                out.counters.sent(tally.frames, bytes);
                // Its answer is likely next: poll for it.
                self.warm(&out);
            }
            // What was not sent (an error, a full socket) is lost, each
            // received frame counted, merged ones included.
            let lost = tally.of_all - tally.frames;
            if lost > 0 {
                out.counters.drops.fetch_add(lost as u64, Ordering::Relaxed);
            }
            if let Some(error) = tally.error {
                tracing::debug!(%egress, %error, "send failed");
            }
        }
        self.finish(scratch);
    }

    /// Sends frames `indexes` of `rx` out of `out`, runs of one flow's
    /// frames (small UDP datagrams, TCP segments) merged first when `out`
    /// is a veth (not toward a VTEP, whose encapsulation segments only
    /// TCP, nor a TAP, whose reader may not take GSO). Says what went.
    fn send_port(
        &self,
        out: &PortHandle,
        rx: &mut RxBatch,
        indexes: &mut Vec<usize>,
        shared: u64,
        runs: &mut Vec<Run>,
    ) -> Tally {
        let received = indexes.len();
        let merging = Merging {
            udp: self.merge_udp.load(Ordering::Relaxed),
            tcp: self.merge_tcp.load(Ordering::Relaxed),
        };
        let merged = received > 1
            && matches!(out.io, Port::AfPacket(_) | Port::Shared(_))
            && merging.any()
            && crate::io::coalesce(rx, indexes, shared, runs, merging);
        let (entries, error) = match out.io.send_rx(rx, indexes) {
            Ok(sent) => (sent, None),
            Err(error) => {
                if merged && error.raw_os_error() == Some(libc::EINVAL) {
                    self.refused_merged(runs, &error);
                }
                (0, Some(error))
            }
        };
        if !merged {
            return Tally {
                entries,
                frames: entries,
                of_all: received,
                error,
            };
        }
        let (mut udp, mut tcp) = (0, 0);
        for run in &runs[..entries] {
            let extra = usize::from(run.frames - 1);
            if run.tcp {
                tcp += extra;
            } else {
                udp += extra;
            }
        }
        self.udp_merged.fetch_add(udp as u64, Ordering::Relaxed);
        self.tcp_merged.fetch_add(tcp as u64, Ordering::Relaxed);
        Tally {
            entries,
            frames: entries + udp + tcp,
            of_all: received,
            error,
        }
    }

    /// A port refused a batch with merged frames: this kernel takes no
    /// UDP GSO frames from a packet socket if UDP datagrams were merged
    /// (merge them no more), else no TSO frames (merge no TCP segments).
    fn refused_merged(&self, runs: &[Run], error: &std::io::Error) {
        let udp = runs.iter().any(|r| r.frames > 1 && !r.tcp);
        let (flag, what) = match udp {
            true => (&self.merge_udp, "UDP datagrams"),
            false => (&self.merge_tcp, "TCP segments"),
        };
        if flag.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "a port refused merged {what}; they are sent one by one from now on");
        }
    }

    /// Sends a frame the core made out of a local port.
    pub(super) fn send_made(&self, port: Uuid, frame: &[u8]) {
        let Some(out) = self.port(port) else {
            return;
        };
        match out.io.try_send(&VnetHeader::NONE, frame) {
            Ok(()) => {
                out.counters.sent(1, frame.len());
                self.generated.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                out.counters.drops.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%port, %error, "sending a generated frame failed");
            }
        }
    }
}
