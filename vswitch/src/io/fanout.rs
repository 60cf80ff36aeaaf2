//! `PACKET_FANOUT` groups: several packet sockets sharing one interface's
//! frames, each frame given to one of them.
//!
//! Two users: the [`super::SharedSockets`] (an eBPF program picks the member
//! by interface) and a busy port's receive queues ([`AfPacket::add_queues`]):
//! the port's own socket and more sockets on the same veth in a group that
//! picks the member by the flow hash, so one flow's frames always reach the
//! same socket (in order) while different flows are received, decided and
//! sent on different cores at once.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::afpacket::{packet_socket, AfPacket, AfPacketOptions};
use super::error::PortError;
use super::sys::{attach_cbpf, cbpf_op, getsockopt_int, setsockopt_int};

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

/// A classic BPF program passing every frame but those the host sends
/// (`PACKET_OUTGOING`). Kernels before 6.10 ignore
/// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`, and a member's own
/// `PACKET_IGNORE_OUTGOING` stops applying once it joins a group, so each
/// member filters them itself.
fn outgoing_dropped() -> [libc::sock_filter; 4] {
    let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
    let mut is_outgoing = cbpf_op(
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::PACKET_OUTGOING as u32,
    );
    is_outgoing.jf = 1;
    [
        cbpf_op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, pkttype),
        is_outgoing,
        cbpf_op(libc::BPF_RET | libc::BPF_K, 0),
        cbpf_op(libc::BPF_RET | libc::BPF_K, u32::MAX),
    ]
}

/// Makes socket `s` drop the frames the host sends (see [`outgoing_dropped`]).
pub(crate) fn drop_outgoing(s: RawFd) -> io::Result<()> {
    attach_cbpf(s, libc::SO_ATTACH_FILTER, &mut outgoing_dropped())
}

/// Makes socket `s` drop every frame: a new member holds this from before
/// its bind until it is in the group, so that no frame reaches it through
/// its own hook as well as the group's (the kernel removes the member's own
/// hook only at the join).
fn drop_all(s: RawFd) -> io::Result<()> {
    attach_cbpf(
        s,
        libc::SO_ATTACH_FILTER,
        &mut [cbpf_op(libc::BPF_RET | libc::BPF_K, 0)],
    )
}

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
        let filter_error = |op: &'static str| {
            let ifname = ifname.clone();
            move |e| PortError::from_os(&ifname, op, e)
        };
        let group = match self.fanout_group {
            Some(group) => group,
            None => {
                if opts.ignore_outgoing {
                    drop_outgoing(self.as_raw_fd()).map_err(filter_error("SO_ATTACH_FILTER"))?;
                }
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
            // The member only receives.
            sndbuf: 0,
            ..opts.clone()
        };
        let mut added = Vec::with_capacity(count);
        for _ in 0..count {
            let fd = packet_socket(&ifname)?;
            drop_all(fd.as_raw_fd()).map_err(filter_error("SO_ATTACH_FILTER (drop all)"))?;
            let queue = AfPacket::configure(fd, &ifname, self.ifindex(), &member_opts)?;
            join(
                queue.as_raw_fd(),
                PACKET_FANOUT_HASH,
                opts.ignore_outgoing,
                Some(group),
                &ifname,
            )?;
            if opts.ignore_outgoing {
                drop_outgoing(queue.as_raw_fd()).map_err(filter_error("SO_ATTACH_FILTER"))?;
            } else {
                setsockopt_int(
                    queue.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_DETACH_FILTER,
                    0,
                )
                .map_err(filter_error("SO_DETACH_FILTER"))?;
            }
            added.push(queue);
        }
        self.queues.append(&mut added);
        Ok(())
    }

    /// The port's extra receive queues (see [`AfPacket::add_queues`]).
    pub fn queues(&self) -> &[AfPacket] {
        &self.queues
    }

    /// Takes the port's extra receive queues out (to close them apart: the
    /// port then receives only the flows hashed to its own socket).
    pub fn take_queues(&mut self) -> Vec<AfPacket> {
        std::mem::take(&mut self.queues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// A packet socket on `lo` seeing every frame (the host's own included).
    fn on_loopback() -> OwnedFd {
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2) call; the result is checked and owned.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto) };
        assert!(
            raw >= 0,
            "AF_PACKET socket (run as root): {}",
            io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = 1;
        // SAFETY: `sll` is a live sockaddr_ll and its exact size is passed.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(ret, 0, "bind to lo: {}", io::Error::last_os_error());
        fd
    }

    /// How many frames queued on `fd` carry `marker`.
    fn count_marked(fd: &OwnedFd, marker: &[u8]) -> usize {
        let mut buf = [0u8; 2048];
        let mut seen = 0;
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return seen;
            }
            let frame = &buf[..n as usize];
            seen += usize::from(frame.windows(marker.len()).any(|w| w == marker));
        }
    }

    #[test]
    fn the_member_filter_drops_what_the_host_sends_and_nothing_else() {
        // On lo a datagram passes the taps twice: leaving (outgoing) and
        // coming back in (to the host).
        let (plain, filtered) = (on_loopback(), on_loopback());
        drop_outgoing(filtered.as_raw_fd()).unwrap();
        let marker = format!("plexus-fanout-filter-{}", std::process::id());
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            socket
                .send_to(marker.as_bytes(), target.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            count_marked(&plain, marker.as_bytes()),
            6,
            "both ways, unfiltered"
        );
        assert_eq!(
            count_marked(&filtered, marker.as_bytes()),
            3,
            "only the way in"
        );
    }
}
