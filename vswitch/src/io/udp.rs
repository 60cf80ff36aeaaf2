//! The tunnel's UDP socket: VXLAN datagrams in and out, batched with
//! `recvmmsg`/`sendmmsg`.
//!
//! Received datagrams land in an [`RxBatch`] two bytes into each slot, so
//! that the 8-byte VXLAN header occupies the slot's vnet-header bytes 2..10
//! and the inner Ethernet frame starts exactly where a port's frame would.
//! After reading the VNI the caller overwrites the header with
//! [`VnetHeader::NONE`] and can send the frame to a local port with
//! `send_rx`, without copying it. The underlay may be IPv4 or IPv6.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::batch::RxBatch;
use super::chunk::{FramePrefix, PieceHeader, PiecePlan, MAX_SEGMENTS};
use super::encap::Datagrams;
use super::error::PortError;
use super::sys::{cvt, register, setsockopt_int};
use super::vnet::VNET_HDR_LEN;
use crate::wire::{VxlanPacket, VXLAN_HEADER_LEN};

/// Where a received datagram's VXLAN header starts in its slot.
pub const VXLAN_AT: usize = VNET_HDR_LEN - VXLAN_HEADER_LEN;

/// Datagrams per `sendmmsg` call.
const SEND_CHUNK: usize = 64;

/// A non-blocking UDP socket bound to the tunnel address.
#[derive(Debug)]
pub struct TunnelSocket {
    fd: AsyncFd<OwnedFd>,
    local: SocketAddr,
    /// Set once the kernel refused a `UDP_SEGMENT` send of coalesced
    /// datagrams (an underlay narrower than configured, an old kernel):
    /// they went out one by one, and should not be coalesced any more.
    segments_refused: std::sync::atomic::AtomicBool,
    /// Messages received (a message may hold several datagrams the
    /// kernel's UDP GRO coalesced).
    reads: std::sync::atomic::AtomicU64,
}

/// What a tunnel socket is bound for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The tunnel port alone: it receives and sends.
    Alone,
    /// One of a group on the tunnel port (`SO_REUSEPORT`): it receives.
    InGroup,
    /// A port of its own, to send from only.
    Sender,
}

/// A socket address of either family, as the kernel reads and writes it.
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// The length the kernel is told a [`RawAddr`] has.
const RAW_ADDR_LEN: libc::socklen_t = std::mem::size_of::<RawAddr>() as libc::socklen_t;

fn to_raw(addr: &SocketAddr) -> (RawAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(v4) => (
            RawAddr {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                },
            },
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ),
        SocketAddr::V6(v6) => (
            RawAddr {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                },
            },
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ),
    }
}

fn from_raw(raw: &RawAddr) -> Option<SocketAddr> {
    // SAFETY: both members start with the address family, and every RawAddr
    // is fully initialised (built by `to_raw`), so reading it is defined.
    let family = i32::from(unsafe { raw.v4.sin_family });
    match family {
        libc::AF_INET => {
            // SAFETY: the family says the v4 member is the one written.
            let sa = unsafe { raw.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the v6 member is the one written.
            let sa = unsafe { raw.v6 };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
                sa.sin6_flowinfo,
                sa.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl TunnelSocket {
    /// Binds `local`, of either family: the underlay's (every host of a
    /// deployment tunnels over the same family).
    pub fn bind(local: SocketAddr) -> Result<TunnelSocket, PortError> {
        Self::open(local, Role::Alone)
    }

    /// Binds `local` as one of a group of sockets on the same address
    /// (`SO_REUSEPORT`): the kernel spreads received datagrams over the
    /// group by a hash of their addresses and ports, one sender's
    /// datagrams always to the same socket.
    pub fn bind_in_group(local: SocketAddr) -> Result<TunnelSocket, PortError> {
        Self::open(local, Role::InGroup)
    }

    /// Binds `local` to send from only: nothing reads it, so it keeps a
    /// small receive buffer (what arrives there is dropped once it fills).
    pub fn bind_sender(local: SocketAddr) -> Result<TunnelSocket, PortError> {
        Self::open(local, Role::Sender)
    }

    fn open(local: SocketAddr, role: Role) -> Result<TunnelSocket, PortError> {
        let name = local.to_string();
        let family = match local {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        let raw =
            cvt(raw).map_err(|e| PortError::from_os(&name, "creating the tunnel socket", e))?;
        // SAFETY: `raw` is a descriptor we just created and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Room for bursts of 64 KiB offloaded datagrams: the *FORCE options
        // (root) pass the net.core.[rw]mem_max caps, the plain ones are the
        // fallback.
        let receives = role != Role::Sender;
        for (forced, plain, wanted) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, receives),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, true),
        ] {
            let fd = fd.as_raw_fd();
            if !wanted {
                let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, 4096);
            } else if setsockopt_int(fd, libc::SOL_SOCKET, forced, 16 << 20).is_err() {
                let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, 16 << 20);
            }
        }
        // Datagrams of one sender arriving back to back (the pieces of an
        // offloaded super-frame, sent with UDP_SEGMENT) come in one read,
        // with their size in a control message (see `recv_raw`). Without
        // it (kernels before 5.0) each comes alone, which works too.
        if receives {
            let _ = setsockopt_int(fd.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1);
        }
        if role == Role::InGroup {
            setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).map_err(
                |e| {
                    PortError::from_os(&name, "letting the tunnel port be shared (SO_REUSEPORT)", e)
                },
            )?;
        }
        let (sa, len) = to_raw(&local);
        // SAFETY: `sa` is a valid sockaddr of `local`'s family on our stack,
        // and `len` is that family's size.
        let ret = unsafe { libc::bind(fd.as_raw_fd(), (&sa as *const RawAddr).cast(), len) };
        cvt(ret).map_err(|e| PortError::from_os(&name, "binding the tunnel socket", e))?;
        // The address bound (the kernel picks the port when `local` names 0).
        let socket = std::net::UdpSocket::from(fd);
        let local = socket
            .local_addr()
            .map_err(|e| PortError::from_os(&name, "reading the tunnel socket's address", e))?;
        Ok(TunnelSocket {
            fd: register(OwnedFd::from(socket), &name)?,
            local,
            segments_refused: std::sync::atomic::AtomicBool::new(false),
            reads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether the kernel refused a send of coalesced datagrams (see
    /// [`Datagrams::coalesce_last`]): coalesce no more.
    pub fn segments_refused(&self) -> bool {
        self.segments_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends `bytes` to `dest` as datagrams of `segment` bytes, one by one
    /// (each may be fragmented by the underlay); whether all left.
    fn send_each(&self, dest: &SocketAddr, bytes: &[u8], segment: usize) -> bool {
        let (sa, len) = to_raw(dest);
        bytes.chunks(segment.max(1)).all(|datagram| {
            // SAFETY: `sa` is a valid sockaddr of `len` bytes on our stack
            // and `datagram` a live buffer; the kernel only reads them.
            let ret = unsafe {
                libc::sendto(
                    self.fd.get_ref().as_raw_fd(),
                    datagram.as_ptr().cast(),
                    datagram.len(),
                    libc::MSG_DONTWAIT,
                    (&sa as *const RawAddr).cast(),
                    len,
                )
            };
            ret >= 0
        })
    }

    /// The bound address (with the port the kernel picked, if asked to).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for datagrams and receives a batch into `rx` (see the module
    /// documentation for the layout); `sources[i]` is frame `i`'s sender
    /// and `segments[i]` 0, or the size of each of the datagrams slot `i`
    /// holds back to back (coalesced by the kernel's UDP GRO; the last may
    /// be shorter).
    pub async fn recv_batch(
        &self,
        rx: &mut RxBatch,
        sources: &mut Vec<SocketAddr>,
        segments: &mut Vec<usize>,
    ) -> io::Result<usize> {
        let n = self
            .fd
            .async_io(Interest::READABLE, |fd| {
                recv_raw(fd.as_raw_fd(), rx, sources, segments)
            })
            .await?;
        self.reads
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// Makes the group this socket joined (see [`Self::bind_in_group`])
    /// send each datagram to its socket number `source port % sockets`,
    /// numbered in the order they joined (see `io::reuseport`).
    pub fn steer_by_source_port(&self, sockets: usize) -> Result<(), PortError> {
        let fd = self.fd.get_ref().as_raw_fd();
        super::reuseport::steer_by_source_port(fd, self.local.is_ipv6(), sockets).map_err(|e| {
            PortError::from_os(&self.local.to_string(), "steering the tunnel's sockets", e)
        })
    }

    /// Waits until a datagram (or an error) is waiting.
    pub async fn readable(&self) -> io::Result<()> {
        super::sys::wait_readable(&self.fd).await
    }

    /// Receives what is waiting into `rx`, as [`Self::recv_batch`] does,
    /// without waiting: `Ok(0)` if nothing is.
    pub fn try_recv_batch(
        &self,
        rx: &mut RxBatch,
        sources: &mut Vec<SocketAddr>,
        segments: &mut Vec<usize>,
    ) -> io::Result<usize> {
        match recv_raw(self.fd.get_ref().as_raw_fd(), rx, sources, segments) {
            Ok(n) => {
                self.reads
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Messages received so far (see [`Self::recv_batch`]).
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends every queued datagram it can now; returns how many left.
    /// Datagrams the socket has no room for are dropped (UDP semantics).
    pub fn send(&self, datagrams: &Datagrams) -> usize {
        let mut sent = 0;
        let MsgArrays {
            mut addrs,
            mut iovs,
            mut msgs,
        } = MsgArrays::new();
        let mut lens = [0; SEND_CHUNK];
        let mut segments = [0usize; SEND_CHUNK];
        let mut bodies: [(&[u8], Option<SocketAddr>); SEND_CHUNK] = [(&[], None); SEND_CHUNK];
        let mut controls = [Control::default(); SEND_CHUNK];
        let mut it = datagrams.iter_segmented().peekable();
        while it.peek().is_some() {
            let mut n = 0;
            for (dest, bytes, segment) in it.by_ref().take(SEND_CHUNK) {
                (addrs[n], lens[n]) = to_raw(&dest);
                iovs[n] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
                segments[n] = segment;
                bodies[n] = (bytes, Some(dest));
                n += 1;
            }
            for i in 0..n {
                msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut RawAddr).cast();
                msgs[i].msg_hdr.msg_namelen = lens[i];
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_len = 0;
                if segments[i] == 0 {
                    msgs[i].msg_hdr.msg_control = std::ptr::null_mut();
                    msgs[i].msg_hdr.msg_controllen = 0;
                } else {
                    controls[i].set_segment(&mut msgs[i].msg_hdr, segments[i] as u16);
                }
            }
            let mut done = 0;
            while done < n {
                // SAFETY: msgs[done..n] point at live sockaddrs, iovecs and
                // control buffers (`controls`) of this frame, whose buffers
                // (borrowed from `datagrams`) outlive the call; the kernel
                // only reads them and writes msg_len.
                let ret = unsafe {
                    libc::sendmmsg(
                        self.fd.get_ref().as_raw_fd(),
                        msgs[done..].as_mut_ptr(),
                        (n - done) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                match cvt(ret) {
                    Ok(k) => {
                        done += k as usize;
                        sent += k as usize;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Coalesced datagrams the kernel will not segment (the
                    // underlay is narrower than configured, or an old
                    // kernel): one by one instead, fragmented if need be.
                    Err(e) if segments[done] != 0 && refuses_segments(&e) => {
                        self.segments_refused
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        if let (bytes, Some(dest)) = bodies[done] {
                            if self.send_each(&dest, bytes, segments[done]) {
                                sent += 1;
                            }
                        }
                        done += 1;
                    }
                    // A rejected datagram (no route, too big, buffer full):
                    // drop it and go on with the rest.
                    Err(_) => done += 1,
                }
            }
        }
        sent
    }
}

impl TunnelSocket {
    /// Sends `frame`, behind `prefix`, to `dest` in the pieces of `plan`
    /// (frame `id`; see `io::chunk`): one `sendmsg` with `UDP_SEGMENT` per
    /// group of pieces, each piece gathered from its headers and its bytes
    /// of `prefix` and `frame` with iovecs, so the frame is never copied
    /// here. `mark` puts a live trace mark on every piece. Fails with the
    /// first send's error (the frame is then lost: its pieces before it
    /// went out).
    pub fn send_pieces(
        &self,
        dest: SocketAddr,
        plan: &PiecePlan,
        id: u32,
        prefix: &FramePrefix,
        frame: &[u8],
        mark: Option<(u32, u8)>,
    ) -> io::Result<()> {
        let (mut addr, addr_len) = to_raw(&dest);
        let mut headers: [PieceHeader; MAX_SEGMENTS] =
            [[0; std::mem::size_of::<PieceHeader>()]; MAX_SEGMENTS];
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_SEGMENTS * 3];
        let mut control = Control::default();
        for send in plan.sends() {
            let pieces = send.len().min(MAX_SEGMENTS);
            for (header, index) in headers.iter_mut().zip(send.clone()) {
                *header = plan.header(id, index);
                if let Some((seq, request_byte)) = mark {
                    VxlanPacket::new_unchecked(&mut header[..]).set_trace_mark(seq, request_byte);
                }
            }
            let mut n = 0;
            for (header, index) in headers[..pieces].iter().zip(send) {
                let (head, tail) = plan.piece(index, prefix, frame);
                for part in [&header[..], head, tail] {
                    if !part.is_empty() {
                        iovs[n] = libc::iovec {
                            iov_base: part.as_ptr() as *mut libc::c_void,
                            iov_len: part.len(),
                        };
                        n += 1;
                    }
                }
            }
            // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut addr as *mut RawAddr).cast();
            msg.msg_namelen = addr_len;
            msg.msg_iov = iovs.as_mut_ptr();
            msg.msg_iovlen = n;
            if pieces > 1 {
                control.set_segment(&mut msg, plan.datagram_len() as u16);
            }
            loop {
                // SAFETY: msg points at our sockaddr, `n` iovecs over
                // `headers`, `prefix` and `frame` (all alive and unchanged
                // until the call returns) and, for a group, at `control`;
                // the kernel only reads them.
                let ret = unsafe {
                    libc::sendmsg(self.fd.get_ref().as_raw_fd(), &msg, libc::MSG_DONTWAIT)
                };
                match cvt(ret as i32) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A rejected group (buffer full, no route, too big)
                    // loses the frame: the rest need not go.
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// The per-call arrays of one `sendmmsg`/`recvmmsg`: addresses, iovecs and
/// message headers (linked up by the caller once the buffers are known).
struct MsgArrays {
    addrs: [RawAddr; SEND_CHUNK],
    iovs: [libc::iovec; SEND_CHUNK],
    msgs: [libc::mmsghdr; SEND_CHUNK],
}

impl MsgArrays {
    fn new() -> MsgArrays {
        MsgArrays {
            addrs: [any_sockaddr(); SEND_CHUNK],
            iovs: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; SEND_CHUNK],
            // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value.
            msgs: unsafe { std::mem::zeroed() },
        }
    }
}

/// Room for one control message carrying an int (`UDP_SEGMENT`'s u16,
/// `UDP_GRO`'s int), aligned as `cmsghdr` needs.
#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
struct Control([u8; 32]);

impl Control {
    /// Points `msg` at this buffer holding a `UDP_SEGMENT` of `size`.
    fn set_segment(&mut self, msg: &mut libc::msghdr, size: u16) {
        msg.msg_control = self.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
        // SAFETY: msg_control points at our 32 bytes, more than
        // CMSG_SPACE(2); CMSG_FIRSTHDR returns its start (aligned by
        // repr(align(8))) and CMSG_DATA the data right after the header,
        // inside the buffer; the u16 is written unaligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
        }
    }

    /// Points `msg` at this buffer, empty, for the kernel to fill.
    fn prepare_receive(&mut self, msg: &mut libc::msghdr) {
        msg.msg_control = self.0.as_mut_ptr().cast();
        msg.msg_controllen = self.0.len();
    }

    /// The `UDP_GRO` segment size the kernel wrote for `msg`, if any.
    fn gro_segment(msg: &libc::msghdr) -> usize {
        let mut size = 0;
        // SAFETY: the kernel set msg_controllen to the bytes it wrote into
        // our buffer; CMSG_FIRSTHDR/CMSG_NXTHDR stay within it, and
        // CMSG_DATA of a SOL_UDP/UDP_GRO message holds an int, read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    let value =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    size = usize::try_from(value).unwrap_or(0);
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        size
    }
}

/// Whether `error` is the kernel refusing a `UDP_SEGMENT` send (segments
/// bigger than the path takes, or no GSO for it).
pub(crate) fn refuses_segments(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMSGSIZE | libc::EINVAL | libc::EIO)
    )
}

fn any_sockaddr() -> RawAddr {
    to_raw(&SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        0,
        0,
        0,
    )))
    .0
}

fn recv_raw(
    fd: i32,
    rx: &mut RxBatch,
    sources: &mut Vec<SocketAddr>,
    segments: &mut Vec<usize>,
) -> io::Result<usize> {
    let capacity = rx.capacity().min(SEND_CHUNK);
    rx.begin_fill();
    sources.clear();
    segments.clear();
    let mut controls = [Control::default(); SEND_CHUNK];
    let MsgArrays {
        mut addrs,
        mut iovs,
        mut msgs,
    } = MsgArrays::new();
    let slots = rx.slots_mut();
    for i in 0..capacity {
        let slot = &mut slots[i];
        iovs[i] = libc::iovec {
            // VXLAN_AT < slot.len() for every slot (slots hold a vnet header).
            iov_base: slot[VXLAN_AT..].as_mut_ptr().cast(),
            iov_len: slot.len() - VXLAN_AT,
        };
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut RawAddr).cast();
        msgs[i].msg_hdr.msg_namelen = RAW_ADDR_LEN;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        controls[i].prepare_receive(&mut msgs[i].msg_hdr);
    }
    // SAFETY: the first `capacity` mmsghdrs point at live sockaddrs, at
    // iovecs covering slots owned by `rx` and at control buffers
    // (`controls`), which stay borrowed until the call returns; the kernel
    // writes at most iov_len bytes into each slot and msg_controllen bytes
    // into each control buffer.
    let ret = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            capacity as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let n = cvt(ret)? as usize;
    for i in 0..n {
        let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = msgs[i].msg_len as usize;
        if truncated || len < VXLAN_HEADER_LEN {
            rx.note_dropped();
            continue;
        }
        let Some(source) = from_raw(&addrs[i]) else {
            rx.note_dropped();
            continue;
        };
        let segment = Control::gro_segment(&msgs[i].msg_hdr);
        let before = rx.len();
        rx.commit(i, VXLAN_AT + len, false);
        if rx.len() > before {
            sources.push(source);
            segments.push(if segment < len { segment } else { 0 });
        }
    }
    Ok(rx.len())
}
