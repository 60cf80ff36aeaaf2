//! The tunnel's UDP socket: VXLAN datagrams in and out, batched with
//! `recvmmsg`/`sendmmsg`.
//!
//! Received datagrams land in an [`RxBatch`] two bytes into each slot, so
//! that the 8-byte VXLAN header occupies the slot's vnet-header bytes 2..10
//! and the inner Ethernet frame starts exactly where a port's frame would.
//! After reading the VNI the caller overwrites the header with
//! [`VnetHeader::NONE`] and can send the frame to a local port with
//! `send_rx`, without copying it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::batch::RxBatch;
use super::encap::Datagrams;
use super::error::PortError;
use super::sys::{cvt, register, setsockopt_int};
use super::vnet::VNET_HDR_LEN;
use crate::wire::VXLAN_HEADER_LEN;

/// Where a received datagram's VXLAN header starts in its slot.
pub const VXLAN_AT: usize = VNET_HDR_LEN - VXLAN_HEADER_LEN;

/// Datagrams per `sendmmsg` call.
const SEND_CHUNK: usize = 64;

/// A non-blocking UDP socket bound to the tunnel address.
#[derive(Debug)]
pub struct TunnelSocket {
    fd: AsyncFd<OwnedFd>,
    local: SocketAddr,
}

fn to_sockaddr(addr: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    ))
}

impl TunnelSocket {
    /// Binds `local` (IPv4 only: the underlay of this release).
    pub fn bind(local: SocketAddr) -> Result<TunnelSocket, PortError> {
        let name = local.to_string();
        let SocketAddr::V4(v4) = local else {
            return Err(PortError::from_os(
                &name,
                "binding the tunnel socket (IPv6 underlays are not supported)",
                io::Error::from(io::ErrorKind::Unsupported),
            ));
        };
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
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
        for (forced, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            let fd = fd.as_raw_fd();
            if setsockopt_int(fd, libc::SOL_SOCKET, forced, 16 << 20).is_err() {
                let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, 16 << 20);
            }
        }
        let sa = to_sockaddr(&v4);
        // SAFETY: `sa` is a valid sockaddr_in on our stack and we pass its size.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        cvt(ret).map_err(|e| PortError::from_os(&name, "binding the tunnel socket", e))?;
        Ok(TunnelSocket {
            fd: register(fd, &name)?,
            local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for datagrams and receives a batch into `rx` (see the module
    /// documentation for the layout); `sources[i]` is frame `i`'s sender.
    pub async fn recv_batch(
        &self,
        rx: &mut RxBatch,
        sources: &mut Vec<SocketAddr>,
    ) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                recv_raw(fd.as_raw_fd(), rx, sources)
            })
            .await
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
        let mut it = datagrams.iter().peekable();
        while it.peek().is_some() {
            let mut n = 0;
            for (dest, bytes) in it.by_ref().take(SEND_CHUNK) {
                let SocketAddr::V4(v4) = dest else { continue };
                addrs[n] = to_sockaddr(&v4);
                iovs[n] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
                n += 1;
            }
            for i in 0..n {
                msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
                msgs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_len = 0;
            }
            let mut done = 0;
            while done < n {
                // SAFETY: msgs[done..n] point at live sockaddrs and iovecs of
                // this frame, whose buffers (borrowed from `datagrams`) outlive
                // the call; the kernel only reads them and writes msg_len.
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
                    // A rejected datagram (no route, too big, buffer full):
                    // drop it and go on with the rest.
                    Err(_) => done += 1,
                }
            }
        }
        sent
    }
}

/// The per-call arrays of one `sendmmsg`/`recvmmsg`: addresses, iovecs and
/// message headers (linked up by the caller once the buffers are known).
struct MsgArrays {
    addrs: [libc::sockaddr_in; SEND_CHUNK],
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

fn any_sockaddr() -> libc::sockaddr_in {
    to_sockaddr(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

fn recv_raw(fd: i32, rx: &mut RxBatch, sources: &mut Vec<SocketAddr>) -> io::Result<usize> {
    let capacity = rx.capacity().min(SEND_CHUNK);
    rx.begin_fill();
    sources.clear();
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
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `capacity` mmsghdrs point at live sockaddrs and at
    // iovecs covering slots owned by `rx`, which stay borrowed until the call
    // returns; the kernel writes at most iov_len bytes into each.
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
        let before = rx.len();
        rx.commit(i, VXLAN_AT + len, false);
        if rx.len() > before {
            sources.push(from_sockaddr(&addrs[i]));
        }
    }
    Ok(rx.len())
}
