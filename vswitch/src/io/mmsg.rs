//! The AF_PACKET system calls the ports share: batches of wire-format
//! frames through `recvmmsg`/`sendmmsg` (with the interface named per
//! message for sockets bound to none), single frames, kernel counters, and
//! the socket setup every packet socket gets (buffers, promiscuous
//! membership).

use std::io;
use std::mem;
use std::os::fd::RawFd;

use super::afpacket::{AfPacketOptions, KernelStats};
use super::batch::{RxBatch, TxBatch};
use super::sys::{cvt, setsockopt_int};
use super::vnet::{VnetHeader, VNET_HDR_LEN};

/// Messages per `recvmmsg`/`sendmmsg` call (the kernel caps vlen at 1024).
const MMSG_CHUNK: usize = 64;

/// Sets a packet socket's receive and send buffers; the FORCE variants
/// bypass `net.core.{r,w}mem_max` but need `CAP_NET_ADMIN`, so the plain
/// ones are tried after them. The error names the option that failed.
pub(super) fn set_buffers(
    fd: RawFd,
    opts: &AfPacketOptions,
) -> Result<(), (&'static str, io::Error)> {
    let set = |name, value: usize, op: &'static str| {
        let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
        setsockopt_int(fd, libc::SOL_SOCKET, name, value).map_err(|e| (op, e))
    };
    set(
        libc::SO_RCVBUFFORCE,
        opts.rcvbuf,
        "setsockopt(SO_RCVBUFFORCE)",
    )
    .or_else(|_| set(libc::SO_RCVBUF, opts.rcvbuf, "setsockopt(SO_RCVBUF)"))?;
    set(
        libc::SO_SNDBUFFORCE,
        opts.sndbuf,
        "setsockopt(SO_SNDBUFFORCE)",
    )
    .or_else(|_| set(libc::SO_SNDBUF, opts.sndbuf, "setsockopt(SO_SNDBUF)"))
}

/// Adds (`PACKET_ADD_MEMBERSHIP`) or drops (`PACKET_DROP_MEMBERSHIP`) the
/// promiscuous membership of interface `ifindex` on packet socket `fd`
/// (the kernel counts them per socket and drops them when it closes).
pub(super) fn promiscuous(fd: RawFd, ifindex: u32, op: libc::c_int) -> io::Result<()> {
    // SAFETY: all-zero is a valid packet_mreq (plain integers and arrays).
    let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
    mreq.mr_ifindex = ifindex as libc::c_int;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    // SAFETY: `mreq` is a live, initialised packet_mreq and we pass its exact size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            op,
            (&mreq as *const libc::packet_mreq).cast(),
            mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

/// Sends as many of `tx`'s queued frames as socket `fd` takes now (out of
/// interface `to`, for a socket bound to none); they leave the batch.
/// `Err(WouldBlock)`: nothing sent; any other error: the oldest frame was
/// rejected and has been dropped from the batch.
pub(super) fn send_queued(
    fd: RawFd,
    tx: &mut TxBatch,
    to: Option<&libc::sockaddr_ll>,
) -> io::Result<usize> {
    match send_wire(fd, tx.pending(), to) {
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
pub(super) fn recv_one(fd: RawFd, buf: &mut [u8]) -> io::Result<(VnetHeader, usize)> {
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
    VnetHeader::received(&hdr, ret as usize, buf.len())
}

/// The most parts one frame is gathered from.
const MAX_PARTS: usize = super::chunk::MAX_GATHERED;

/// The iovecs of one frame gathered from `hdr` (its vnet header), then
/// `parts` in order, and how many of them it uses (`InvalidInput` past
/// [`MAX_PARTS`] parts). Shared by packet sockets and TAPs.
pub(super) fn frame_iovecs(
    hdr: &[u8],
    parts: &[&[u8]],
) -> io::Result<([libc::iovec; MAX_PARTS + 1], usize)> {
    if parts.len() > MAX_PARTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a frame of {} parts (at most {MAX_PARTS})", parts.len()),
        ));
    }
    let mut iov = [iovec_of(&[]); MAX_PARTS + 1];
    iov[0] = iovec_of(hdr);
    for (slot, part) in iov[1..].iter_mut().zip(parts) {
        *slot = iovec_of(part);
    }
    Ok((iov, parts.len() + 1))
}

/// `sendmsg` of one frame preceded by its vnet header (`to`: as for
/// [`send_wire`]).
pub(super) fn send_one(
    fd: RawFd,
    vnet: &VnetHeader,
    frame: &[u8],
    to: Option<&libc::sockaddr_ll>,
) -> io::Result<()> {
    let hdr = vnet.to_bytes();
    let mut iov = [iovec_of(&hdr), iovec_of(frame)];
    sendmsg_iov(fd, &mut iov, to)
}

/// `sendmsg` of one frame gathered from `parts`, in order, preceded by
/// its vnet header: no copy in user space (`to`: as for [`send_wire`]).
pub(super) fn send_parts(
    fd: RawFd,
    vnet: &VnetHeader,
    parts: &[&[u8]],
    to: Option<&libc::sockaddr_ll>,
) -> io::Result<()> {
    let hdr = vnet.to_bytes();
    let (mut iov, used) = frame_iovecs(&hdr, parts)?;
    sendmsg_iov(fd, &mut iov[..used], to)
}

/// An iovec describing `bytes` (only ever read through).
pub(super) fn iovec_of(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    }
}

/// `sendmsg` of the bytes `iov` describes, as one frame, to `to` if given.
fn sendmsg_iov(
    fd: RawFd,
    iov: &mut [libc::iovec],
    to: Option<&libc::sockaddr_ll>,
) -> io::Result<()> {
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    if let Some(to) = to {
        msg.msg_name = (to as *const libc::sockaddr_ll).cast_mut().cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
    }
    loop {
        // SAFETY: `msg` points at the iovecs of `iov`, which describe
        // buffers the caller keeps alive for the call (and at most at
        // `to`); sendmsg only reads through them, so the const casts are
        // sound.
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
