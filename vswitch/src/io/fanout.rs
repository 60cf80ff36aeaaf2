//! `PACKET_FANOUT` groups: several packet sockets sharing one interface's
//! frames, each frame given to one of them.
//!
//! Two users: the [`super::SharedSockets`] (an eBPF program picks the member
//! by interface) and a busy port's receive queues ([`AfPacket::add_queues`]):
//! the port's own socket and more sockets on the same veth in a group that
//! picks the member by the flow hash, so one flow's frames always reach the
//! same socket (in order) while different flows are received, decided and
//! sent on different cores at once.

use std::os::fd::{AsRawFd, RawFd};

use super::afpacket::{packet_socket, AfPacket, AfPacketOptions};
use super::error::PortError;
use super::sys::{getsockopt_int, setsockopt_int};

/// `setsockopt(SOL_PACKET, PACKET_FANOUT)` (`linux/if_packet.h`).
const PACKET_FANOUT: libc::c_int = 18;
/// Members chosen by the frame's flow hash.
pub(crate) const PACKET_FANOUT_HASH: u32 = 0;
/// Members chosen by an eBPF program (`PACKET_FANOUT_DATA`).
pub(crate) const PACKET_FANOUT_EBPF: u32 = 7;
/// The kernel picks an unused group id (read back with `getsockopt`).
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
/// The group's own hook skips outgoing frames (a member's
/// `PACKET_IGNORE_OUTGOING` does not apply once it is in a group).
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// Most receive queues a port takes (its own socket included).
pub const MAX_PORT_QUEUES: usize = 16;

/// Puts the bound socket `s` in the fanout group `group` of kind `mode`, or
/// in a new group when `None`; `name` names the socket in errors. Returns
/// the group's id.
pub(crate) fn join(
    s: RawFd,
    mode: u32,
    ignore_outgoing: bool,
    group: Option<u32>,
    name: &str,
) -> Result<u32, PortError> {
    let mut mode = mode;
    if ignore_outgoing {
        mode |= PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
    }
    let arg = match group {
        Some(id) => id | (mode << 16),
        None => (mode | PACKET_FANOUT_FLAG_UNIQUEID) << 16,
    };
    setsockopt_int(s, libc::SOL_PACKET, PACKET_FANOUT, arg as libc::c_int)
        .map_err(|e| PortError::from_os(name, "PACKET_FANOUT", e))?;
    let joined = getsockopt_int(s, libc::SOL_PACKET, PACKET_FANOUT)
        .map_err(|e| PortError::from_os(name, "getsockopt(PACKET_FANOUT)", e))?;
    Ok(joined as u32 & 0xffff)
}

impl AfPacket {
    /// Gives the port `count` more receive queues: the port's socket and
    /// `count` new ones on its interface join one flow-hash fanout group
    /// (see the module documentation). The new sockets receive only; the
    /// port's socket still sends, and its promiscuous membership serves all.
    /// Opened in the caller's network namespace, which must be the port's.
    /// On an error the port keeps the queues it had.
    pub fn add_queues(&mut self, count: usize, opts: &AfPacketOptions) -> Result<(), PortError> {
        let room = MAX_PORT_QUEUES.saturating_sub(1 + self.queues.len());
        let count = count.min(room);
        if count == 0 {
            return Ok(());
        }
        let ifname = self.ifname().to_owned();
        let group = match self.fanout_group {
            Some(group) => group,
            None => {
                let group = join(
                    self.as_raw_fd(),
                    PACKET_FANOUT_HASH,
                    opts.ignore_outgoing,
                    None,
                    &ifname,
                )?;
                self.fanout_group = Some(group);
                group
            }
        };
        let member_opts = AfPacketOptions {
            promiscuous: false,
            ..opts.clone()
        };
        let mut added = Vec::with_capacity(count);
        for _ in 0..count {
            let fd = packet_socket(&ifname)?;
            let queue = AfPacket::configure(fd, &ifname, self.ifindex(), &member_opts)?;
            join(
                queue.as_raw_fd(),
                PACKET_FANOUT_HASH,
                opts.ignore_outgoing,
                Some(group),
                &ifname,
            )?;
            added.push(queue);
        }
        self.queues.append(&mut added);
        Ok(())
    }

    /// The port's extra receive queues (see [`AfPacket::add_queues`]).
    pub fn queues(&self) -> &[AfPacket] {
        &self.queues
    }
}
