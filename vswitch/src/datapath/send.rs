//! The driver's sends to local ports: a batch's decided frames, each
//! egress port its own (runs of one flow's frames merged first),
//! and the frames the core made.

use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::{Datapath, PortHandle, Scratch};
use crate::io::{Port, PortIo, Run, RxBatch, VnetHeader};

impl Datapath {
    /// Sends the decided frames of a batch: each egress port its own.
    pub(super) fn send_decided(&self, rx: &mut RxBatch, scratch: &mut Scratch) {
        // Frames several ports send stay as received; a port's run of one
        // flow's UDP datagrams or TCP segments may leave as one GSO frame.
        let shared = scratch.sends.shared();
        let Scratch { sends, runs, .. } = scratch;
        for (egress, indexes) in sends.iter_mut() {
            match self.port(*egress) {
                Some(out) => match self.send_port(&out, rx, indexes, shared, runs) {
                    Ok((sent, frames)) => {
                        let bytes = rx.bytes_of(indexes[..sent].iter().copied());
                        out.counters.sent(frames, bytes);
                        // Its answer is likely next: poll for it.
                        self.warm(&out);
                    }
                    Err(error) => {
                        out.counters
                            .drops
                            .fetch_add(indexes.len() as u64, Ordering::Relaxed);
                        tracing::debug!(%egress, %error, "send failed");
                    }
                },
                None => self.count(crate::engine::DropReason::Unbound.name()),
            }
        }
        self.finish(scratch);
    }

    /// Sends frames `indexes` of `rx` out of `out`, runs of one flow's
    /// frames (small UDP datagrams, TCP segments) merged first when `out`
    /// is a veth (not toward a VTEP, whose encapsulation segments only
    /// TCP, nor a TAP, whose reader may not take GSO). Returns the entries
    /// of `indexes` sent and how many received frames they carried.
    fn send_port(
        &self,
        out: &PortHandle,
        rx: &mut RxBatch,
        indexes: &mut Vec<usize>,
        shared: u64,
        runs: &mut Vec<Run>,
    ) -> std::io::Result<(usize, usize)> {
        let merged = indexes.len() > 1
            && matches!(out.io, Port::AfPacket(_) | Port::Shared(_))
            && self.merge.load(Ordering::Relaxed)
            && crate::io::coalesce(rx, indexes, shared, runs);
        let sent = match out.io.send_rx(rx, indexes) {
            Err(error) if merged && error.raw_os_error() == Some(libc::EINVAL) => {
                // This kernel takes no UDP GSO frames here: merge no more.
                if self.merge.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "a port refused a merged frame; frames are sent one by one from now on");
                }
                return Err(error);
            }
            other => other?,
        };
        if !merged {
            return Ok((sent, sent));
        }
        let (mut udp, mut tcp) = (0, 0);
        for run in &runs[..sent] {
            let extra = u64::from(run.frames - 1);
            if run.tcp {
                tcp += extra;
            } else {
                udp += extra;
            }
        }
        self.udp_merged.fetch_add(udp, Ordering::Relaxed);
        self.tcp_merged.fetch_add(tcp, Ordering::Relaxed);
        Ok((sent, sent + (udp + tcp) as usize))
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
