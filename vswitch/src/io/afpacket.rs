//! An AF_PACKET socket bound to one interface, carrying offload metadata.
//!
//! The socket is `SOCK_RAW` / `ETH_P_ALL`, non-blocking, promiscuous, with
//! `PACKET_VNET_HDR` (every frame is preceded by a [`VnetHeader`], so GSO
//! super-frames and CHECKSUM_PARTIAL frames keep their offload through us)
//! and `PACKET_IGNORE_OUTGOING` (frames we transmit are not read back).
//! Batches move through `recvmmsg`/`sendmmsg`; Tokio readiness comes from
//! [`AsyncFd`]. See `docs/datapath-io.md`.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::batch::{RxBatch, TxBatch};
use super::error::{ifname_bytes, PortError};
use super::sys::{cvt, getsockopt_int, register, setsockopt_int, wait_readable};
use super::vnet::{VnetHeader, VNET_HDR_LEN};

/// Messages per `recvmmsg`/`sendmmsg` call (the kernel caps vlen at 1024).
const MMSG_CHUNK: usize = 64;

/// Options for [`AfPacket::open_with`].
#[derive(Clone, Debug)]
pub struct AfPacketOptions {
    /// Put the interface in promiscuous mode for as long as the socket is open.
    pub promiscuous: bool,
    /// Do not receive the frames this host transmits on the interface.
    pub ignore_outgoing: bool,
    /// Requested receive buffer (bytes); `SO_RCVBUFFORCE` is tried first.
    pub rcvbuf: usize,
    /// Requested send buffer (bytes); `SO_SNDBUFFORCE` is tried first.
    pub sndbuf: usize,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            promiscuous: true,
            ignore_outgoing: true,
            rcvbuf: 16 << 20,
            sndbuf: 4 << 20,
        }
    }
}

/// Per-socket kernel counters (`PACKET_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel queued to the socket (received + dropped).
    pub packets: u32,
    /// Frames dropped because the socket's receive buffer was full.
    pub drops: u32,
}

/// A non-blocking AF_PACKET port on one interface, frames carrying a [`VnetHeader`].
#[derive(Debug)]
pub struct AfPacket {
    fd: AsyncFd<OwnedFd>,
    ifname: String,
    ifindex: u32,
}

/// A new AF_PACKET socket (raw, non-blocking, close-on-exec) that receives
/// nothing yet: protocol 0, until [`AfPacket::configure`] binds it.
///
/// The kernel appends every packet socket at the tail of its network
/// namespace's list, walking the list under a mutex (`packet_create`), so
/// this call costs more the more packet sockets the namespace holds (see
/// [`super::open_many`]).
pub(crate) fn packet_socket(ifname: &str) -> Result<OwnedFd, PortError> {
    // Protocol 0: the socket receives nothing until bind() names both the
    // interface and ETH_P_ALL, so no frame from another interface slips in.
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        let source = io::Error::last_os_error();
        return Err(PortError::from_os(
            ifname,
            "socket(AF_PACKET, SOCK_RAW)",
            source,
        ));
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

impl AfPacket {
    /// Opens `ifname` (in the caller's network namespace) with default options.
    ///
    /// Must run inside a Tokio runtime with IO enabled.
    pub fn open(ifname: &str) -> Result<AfPacket, PortError> {
        Self::open_with(ifname, &AfPacketOptions::default())
    }

    /// Opens `ifname` with explicit options; see [`AfPacket::open`].
    pub fn open_with(ifname: &str, opts: &AfPacketOptions) -> Result<AfPacket, PortError> {
        let name = ifname_bytes(ifname, false)?;
        // SAFETY: `name` is NUL-terminated (ifname_bytes leaves at least one
        // trailing zero in the IFNAMSIZ array) and outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr().cast()) };
        if ifindex == 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => PortError::NoSuchInterface {
                    ifname: ifname.to_owned(),
                },
                _ => PortError::from_os(ifname, "if_nametoindex", source),
            });
        }
        let fd = packet_socket(ifname)?;
        Self::configure(fd, ifname, ifindex, opts)
    }

    /// Configures a fresh socket of [`packet_socket`] as a port on `ifname`
    /// (index `ifindex`): options, bind, promiscuous membership, and
    /// registration with the current Tokio reactor.
    pub(crate) fn configure(
        fd: OwnedFd,
        ifname: &str,
        ifindex: u32,
        opts: &AfPacketOptions,
    ) -> Result<AfPacket, PortError> {
        let s = fd.as_raw_fd();
        let sockopt = |level, name, value: usize, op: &'static str| {
            let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
            setsockopt_int(s, level, name, value).map_err(|e| PortError::from_os(ifname, op, e))
        };

        sockopt(
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            1,
            "setsockopt(PACKET_VNET_HDR)",
        )?;
        if opts.ignore_outgoing {
            sockopt(
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                1,
                "setsockopt(PACKET_IGNORE_OUTGOING)",
            )?;
        }
        // The FORCE variants bypass net.core.{r,w}mem_max but need CAP_NET_ADMIN.
        if sockopt(
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            opts.rcvbuf,
            "setsockopt(SO_RCVBUFFORCE)",
        )
        .is_err()
        {
            sockopt(
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                opts.rcvbuf,
                "setsockopt(SO_RCVBUF)",
            )?;
        }
        if sockopt(
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            opts.sndbuf,
            "setsockopt(SO_SNDBUFFORCE)",
        )
        .is_err()
        {
            sockopt(
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                opts.sndbuf,
                "setsockopt(SO_SNDBUF)",
            )?;
        }

        // SAFETY: all-zero is a valid sockaddr_ll (plain integers and arrays).
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a live, initialised sockaddr_ll and we pass its exact size.
        let ret = unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        cvt(ret).map_err(|e| PortError::from_os(ifname, "bind", e))?;

        if opts.promiscuous {
            // SAFETY: all-zero is a valid packet_mreq (plain integers and arrays).
            let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
            mreq.mr_ifindex = ifindex as libc::c_int;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            // SAFETY: `mreq` is a live, initialised packet_mreq and we pass its
            // exact size. The membership is dropped by the kernel when the socket closes.
            let ret = unsafe {
                libc::setsockopt(
                    s,
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    (&mreq as *const libc::packet_mreq).cast(),
                    mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
                )
            };
            cvt(ret).map_err(|e| {
                PortError::from_os(ifname, "setsockopt(PACKET_ADD_MEMBERSHIP, PROMISC)", e)
            })?;
        }

        let fd = register(fd, ifname)?;
        Ok(AfPacket {
            fd,
            ifname: ifname.to_owned(),
            ifindex,
        })
    }

    /// The interface name this port is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index this port is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Effective (kernel-doubled) receive and send buffer sizes, in bytes.
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        let s = self.as_raw_fd();
        let r = getsockopt_int(s, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        let w = getsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        Ok((r.max(0) as usize, w.max(0) as usize))
    }

    /// Kernel counters since the previous call (reading resets them): frames
    /// queued to this socket and frames dropped because its receive buffer was full.
    pub fn take_kernel_stats(&self) -> io::Result<KernelStats> {
        kernel_stats(self.as_raw_fd())
    }

    /// Waits until at least one frame can be read (drain it with `try_recv_batch`).
    pub async fn readable(&self) -> io::Result<()> {
        wait_readable(&self.fd).await
    }

    /// Receives up to `rx.capacity()` frames without waiting; `Ok(0)` if none is queued.
    ///
    /// The batch is replaced, not appended to. Frames the kernel had to drop
    /// (too large for a slot, or an offload a vnet header cannot describe,
    /// e.g. tunnel GSO) are counted in [`RxBatch::dropped`].
    pub fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        match recv_batch_raw(self.as_raw_fd(), rx, false) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    /// Waits for frames and receives a batch.
    ///
    /// Returns once at least one frame was received or dropped (see
    /// [`RxBatch::dropped`]), so `Ok(0)` is possible but rare.
    pub async fn recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                recv_batch_raw(fd.as_raw_fd(), rx, false)
            })
            .await
    }

    /// Sends as many queued frames as the socket takes now; they leave the batch.
    ///
    /// `Ok(n)`: `n` frames sent (`0` only if the batch was empty); unsent ones
    /// stay queued. `Err(WouldBlock)`: nothing could be sent now. Any other
    /// error: the oldest queued frame was rejected (e.g. `EMSGSIZE`, `EINVAL`
    /// for a bad vnet header, `ENETDOWN`) and has been dropped from the batch.
    pub fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize> {
        match send_wire(self.as_raw_fd(), tx.pending(), None) {
            Ok(n) => {
                tx.consume(n);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) => {
                tx.consume(1);
                Err(e)
            }
        }
    }

    /// Sends every queued frame, waiting for socket room; see [`AfPacket::try_send_batch`].
    ///
    /// Stops at the first rejected frame, which is dropped and its error returned.
    pub async fn send_batch(&self, tx: &mut TxBatch) -> io::Result<()> {
        while !tx.is_empty() {
            match self.try_send_batch(tx) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends frames `which` of `rx` as they are (header included) without copying.
    ///
    /// Returns how many leading entries of `which` were sent. `Err` only if
    /// the first one could not be sent: `WouldBlock` (socket full) or the
    /// frame's own error, which the caller should count as a drop and skip;
    /// `InvalidInput` (nothing sent) if an index is not below `rx.len()`.
    pub fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize> {
        check_indices(rx, which)?;
        send_wire(
            self.as_raw_fd(),
            which.iter().filter_map(|&i| rx.wire(i)),
            None,
        )
    }

    /// Receives one frame into `buf` without waiting; `Ok(None)` if none is queued.
    ///
    /// A frame longer than `buf` is consumed and reported as `InvalidData`.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<(VnetHeader, usize)>> {
        match recv_one(self.as_raw_fd(), buf) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for and receives one frame into `buf`; see [`AfPacket::try_recv`].
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(VnetHeader, usize)> {
        self.fd
            .async_io(Interest::READABLE, |fd| recv_one(fd.as_raw_fd(), buf))
            .await
    }

    /// Sends one frame with its vnet header without waiting (`WouldBlock` if full).
    pub fn try_send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        send_one(self.as_raw_fd(), vnet, frame, None)
    }

    /// Sends one frame, waiting for socket room if needed.
    pub async fn send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                send_one(fd.as_raw_fd(), vnet, frame, None)
            })
            .await
    }

    /// Waits until the socket has room to send.
    pub async fn writable(&self) -> io::Result<()> {
        let mut guard = self.fd.writable().await?;
        guard.retain_ready();
        Ok(())
    }
}

impl AsRawFd for AfPacket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}

/// `PACKET_STATISTICS` of socket `fd` since the previous call (reading resets them).
pub(super) fn kernel_stats(fd: RawFd) -> io::Result<KernelStats> {
    // SAFETY: all-zero is a valid tpacket_stats (two integers).
    let mut st: libc::tpacket_stats = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st` and `len` are live locals and `len` is the exact size of
    // `st`, so the kernel writes at most that many bytes into it.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    cvt(ret)?;
    Ok(KernelStats {
        packets: st.tp_packets,
        drops: st.tp_drops,
    })
}

/// Rejects `which` if any index is not a frame of `rx`.
pub(crate) fn check_indices(rx: &RxBatch, which: &[usize]) -> io::Result<()> {
    match which.iter().find(|&&i| i >= rx.len()) {
        Some(i) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame index {i} out of range (batch holds {})", rx.len()),
        )),
        None => Ok(()),
    }
}

/// One `recvmmsg` loop filling `rx`; `Err(WouldBlock)` if nothing was queued.
/// With `sources`, each frame's interface index is recorded too (a socket
/// bound to no interface: see [`super::SharedSockets`]).
pub(super) fn recv_batch_raw(fd: RawFd, rx: &mut RxBatch, sources: bool) -> io::Result<usize> {
    let cap = rx.capacity();
    // SAFETY: all-zero is a valid sockaddr_ll (plain integers and arrays).
    let mut names: [libc::sockaddr_ll; MMSG_CHUNK] = unsafe { mem::zeroed() };
    let mut slot_ptrs: [(*mut u8, usize); MMSG_CHUNK] = [(std::ptr::null_mut(), 0); MMSG_CHUNK];
    let mut base = 0;
    let mut kernel_errors = 0;
    rx.begin_fill();
    while base < cap {
        let n = (cap - base).min(MMSG_CHUNK);
        {
            let slots = rx.slots_mut();
            for (dst, slot) in slot_ptrs.iter_mut().zip(&mut slots[base..base + n]) {
                *dst = (slot.as_mut_ptr(), slot.len());
            }
        }
        // SAFETY: all-zero is a valid iovec/mmsghdr (null pointers, zero lengths).
        let mut iov: [libc::iovec; MMSG_CHUNK] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MMSG_CHUNK] = unsafe { mem::zeroed() };
        for i in 0..n {
            iov[i] = libc::iovec {
                iov_base: slot_ptrs[i].0.cast(),
                iov_len: slot_ptrs[i].1,
            };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            if sources {
                msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_ll).cast();
                msgs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
            }
        }
        // SAFETY: `msgs[..n]` each point at one iovec in `iov`, which describes a
        // whole slot buffer owned by `rx`, and (with `sources`) at one live
        // sockaddr_ll of `names` whose size msg_namelen gives. Those boxes are neither moved nor
        // freed nor otherwise borrowed during the call (we hold `&mut rx`), so
        // the kernel writes only into memory we own, within the given lengths.
        let ret = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The kernel consumed a frame whose offload it could not express
                // in a vnet header (packet_rcv_vnet failed): count it, go on.
                Some(libc::EINVAL) if kernel_errors < cap => {
                    kernel_errors += 1;
                    rx.note_dropped();
                    continue;
                }
                _ if !rx.is_empty() || rx.dropped() > 0 => break,
                _ => return Err(e),
            }
        }
        let got = ret as usize;
        for (i, m) in msgs[..got].iter().enumerate() {
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let source = if sources {
                names[i].sll_ifindex as u32
            } else {
                0
            };
            rx.commit_from(base + i, m.msg_len as usize, truncated, source);
        }
        if got < n {
            break;
        }
        base += n;
    }
    if rx.is_empty() && rx.dropped() == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(rx.len())
}

/// `sendmmsg` of wire-format frames, 64 per call; returns how many were
/// sent. `to`: the interface to send them out of, for a socket bound to
/// none (see [`super::SharedSockets`]).
pub(super) fn send_wire<'a>(
    fd: RawFd,
    mut frames: impl Iterator<Item = &'a [u8]>,
    to: Option<&libc::sockaddr_ll>,
) -> io::Result<usize> {
    let mut total = 0;
    loop {
        // SAFETY: all-zero is a valid iovec/mmsghdr (null pointers, zero lengths).
        let mut iov: [libc::iovec; MMSG_CHUNK] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MMSG_CHUNK] = unsafe { mem::zeroed() };
        let mut n = 0;
        for w in frames.by_ref() {
            iov[n] = libc::iovec {
                iov_base: w.as_ptr() as *mut libc::c_void,
                iov_len: w.len(),
            };
            n += 1;
            if n == MMSG_CHUNK {
                break;
            }
        }
        if n == 0 {
            return Ok(total);
        }
        for i in 0..n {
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            if let Some(to) = to {
                msgs[i].msg_hdr.msg_name = (to as *const libc::sockaddr_ll).cast_mut().cast();
                msgs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
            }
        }
        let ret = loop {
            // SAFETY: `msgs[..n]` each point at one iovec in `iov` describing a
            // slice borrowed for 'a (alive for the whole call), and at most at
            // `to`, borrowed for the call too. The kernel only
            // reads through these pointers for sendmmsg, so casting away const is sound.
            let ret = unsafe {
                libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT)
            };
            if ret < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break ret;
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return if total > 0 { Ok(total) } else { Err(e) };
        }
        total += ret as usize;
        if (ret as usize) < n {
            return Ok(total);
        }
    }
}

/// `recvmsg` of one frame: vnet header into a local, frame into `buf`.
fn recv_one(fd: RawFd, buf: &mut [u8]) -> io::Result<(VnetHeader, usize)> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let mut iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    let ret = loop {
        // SAFETY: `msg` points at two iovecs describing `hdr` and `buf`, both
        // exclusively borrowed and alive for the call; the kernel writes within
        // their lengths only. MSG_TRUNC only changes the returned length.
        let ret = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        if ret < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break ret;
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (ret as usize).saturating_sub(VNET_HDR_LEN);
    if len > buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "frame of {len} bytes does not fit a {}-byte buffer",
                buf.len()
            ),
        ));
    }
    Ok((VnetHeader::from_bytes(&hdr), len))
}

/// `sendmsg` of one frame preceded by its vnet header (`to`: as for [`send_wire`]).
pub(super) fn send_one(
    fd: RawFd,
    vnet: &VnetHeader,
    frame: &[u8],
    to: Option<&libc::sockaddr_ll>,
) -> io::Result<()> {
    let hdr = vnet.to_bytes();
    let mut iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    if let Some(to) = to {
        msg.msg_name = (to as *const libc::sockaddr_ll).cast_mut().cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
    }
    loop {
        // SAFETY: `msg` points at two iovecs describing `hdr` and `frame` (and
        // at most at `to`), alive for the call; sendmsg only reads through them, so the const cast is sound.
        let ret = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
        if ret >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
