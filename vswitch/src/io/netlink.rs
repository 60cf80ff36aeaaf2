//! A minimal rtnetlink client for the host-side set-up the agent does
//! itself: bringing a link up, giving it an IPv4 address and routing a
//! prefix through it. Each call is one request answered by one kernel ack;
//! requests are idempotent (an existing address or route is not an error).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipnet::Ipv4Net;

use super::sys::cvt;

/// The netlink message header length (`struct nlmsghdr`).
const NLMSG_HDRLEN: usize = 16;
/// Netlink messages and attributes are padded to 4 bytes.
const ALIGN: usize = 4;

/// Rounds `len` up to the netlink alignment.
fn align(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

/// One request under construction: header, fixed body, then attributes.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// Starts a request of `kind` with `flags` (NLM_F_REQUEST|NLM_F_ACK added).
    fn new(kind: u16, flags: u16) -> Request {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = flags | (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
        Request { buf }
    }

    /// Appends raw, already aligned bytes (the fixed body).
    fn body(mut self, bytes: &[u8]) -> Request {
        self.buf.extend_from_slice(bytes);
        self.pad()
    }

    /// Appends one attribute.
    fn attr(mut self, kind: u16, value: &[u8]) -> Request {
        let len = (4 + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad()
    }

    fn pad(mut self) -> Request {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
        self
    }

    /// The finished message with its length filled in.
    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Sends one request and waits for its ack; `tolerated` errnos count as success.
fn transact(request: Request, tolerated: &[i32]) -> io::Result<()> {
    let message = request.finish();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `message` and `kernel` are live for the call and their exact
    // lengths are passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 4096];
    loop {
        // SAFETY: `reply` is a live buffer of the length passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes(reply[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
            let kind = u16::from_ne_bytes([reply[at + 4], reply[at + 5]]);
            if len < NLMSG_HDRLEN || at + len > n {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink reply",
                ));
            }
            if kind == libc::NLMSG_ERROR as u16 && len >= NLMSG_HDRLEN + 4 {
                let body = &reply[at + NLMSG_HDRLEN..at + NLMSG_HDRLEN + 4];
                let errno = -i32::from_ne_bytes(body.try_into().unwrap_or([0; 4]));
                return if errno == 0 || tolerated.contains(&errno) {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(errno))
                };
            }
            at += align(len);
        }
    }
}

/// The index of interface `name`.
pub fn link_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// Brings link `index` administratively up.
pub fn set_link_up(index: u32) -> io::Result<()> {
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut body = [0u8; 16];
    body[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    body[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    body[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    transact(Request::new(libc::RTM_NEWLINK, 0).body(&body), &[])
}

/// Gives link `index` the address `address` (with its prefix).
pub fn add_address(index: u32, address: Ipv4Net) -> io::Result<()> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut body = [0u8; 8];
    body[0] = libc::AF_INET as u8;
    body[1] = address.prefix_len();
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    let octets = address.addr().octets();
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let request = Request::new(libc::RTM_NEWADDR, flags)
        .body(&body)
        .attr(libc::IFA_LOCAL, &octets)
        .attr(libc::IFA_ADDRESS, &octets);
    transact(request, &[libc::EEXIST])
}

/// Routes `destination` via `gateway` out of link `index` (replacing any
/// route to the same prefix).
pub fn replace_route(destination: Ipv4Net, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut body = [0u8; 12];
    body[0] = libc::AF_INET as u8;
    body[1] = destination.prefix_len();
    body[4] = libc::RT_TABLE_MAIN;
    body[5] = libc::RTPROT_STATIC;
    body[6] = libc::RT_SCOPE_UNIVERSE;
    body[7] = libc::RTN_UNICAST;
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    let request = Request::new(libc::RTM_NEWROUTE, flags)
        .body(&body)
        .attr(libc::RTA_DST, &destination.network().octets())
        .attr(libc::RTA_GATEWAY, &gateway.octets())
        .attr(libc::RTA_OIF, &index.to_ne_bytes());
    transact(request, &[])
}

/// Removes the route to `destination` out of link `index` (a route that is
/// already gone is not an error).
pub fn delete_route(destination: Ipv4Net, index: u32) -> io::Result<()> {
    let mut body = [0u8; 12];
    body[0] = libc::AF_INET as u8;
    body[1] = destination.prefix_len();
    body[4] = libc::RT_TABLE_MAIN;
    body[6] = libc::RT_SCOPE_NOWHERE;
    let request = Request::new(libc::RTM_DELROUTE, 0)
        .body(&body)
        .attr(libc::RTA_DST, &destination.network().octets())
        .attr(libc::RTA_OIF, &index.to_ne_bytes());
    transact(request, &[libc::ESRCH, libc::ENODEV])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_aligned_and_carry_their_length() {
        let message = Request::new(libc::RTM_NEWADDR, 0)
            .body(&[1, 2, 3, 4, 5, 6, 7, 8])
            .attr(libc::IFA_LABEL, b"abc")
            .finish();
        assert_eq!(message.len(), 16 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 32);
        // The attribute length excludes padding.
        assert_eq!(u16::from_ne_bytes([message[24], message[25]]), 7);
    }

    #[test]
    fn a_missing_interface_is_an_error() {
        assert!(link_index("plexus-none0").is_err());
    }
}
