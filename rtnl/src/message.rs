//! Netlink framing: building requests with (nested) attributes, sending
//! them, collecting the answers and walking the attributes of a reply.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The netlink message header length (`struct nlmsghdr`).
const NLMSG_HDRLEN: usize = 16;
/// Netlink messages and attributes are padded to 4 bytes.
const ALIGN: usize = 4;
/// The attribute type bits (the rest are the nested/byte-order flags).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Rounds `len` up to the netlink alignment.
fn align(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

/// Attributes under construction (the payload of a message or a nest).
#[derive(Default)]
pub(crate) struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    /// Raw, fixed-layout bytes (a struct that precedes attributes), padded.
    pub(crate) fn raw(mut self, bytes: &[u8]) -> Attrs {
        self.buf.extend_from_slice(bytes);
        self.pad()
    }

    /// One attribute.
    pub(crate) fn attr(mut self, kind: u16, value: &[u8]) -> Attrs {
        let len = (4 + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad()
    }

    /// A string attribute (NUL-terminated, as the kernel expects names).
    pub(crate) fn string(self, kind: u16, value: &str) -> Attrs {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    /// An attribute holding other attributes.
    pub(crate) fn nested(self, kind: u16, inner: Attrs) -> Attrs {
        self.attr(kind, &inner.buf)
    }

    fn pad(mut self) -> Attrs {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
        self
    }
}

/// One request: a message type, flags and its body.
pub(crate) struct Request {
    kind: u16,
    flags: u16,
    body: Attrs,
}

impl Request {
    /// A request of `kind` with `flags` (NLM_F_REQUEST|NLM_F_ACK added).
    pub(crate) fn new(kind: u16, flags: u16, body: Attrs) -> Request {
        Request { kind, flags, body }
    }

    /// The finished message with its header filled in.
    fn finish(self) -> Vec<u8> {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        let len = (NLMSG_HDRLEN + self.body.buf.len()) as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        let flags = self.flags | (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
        buf.extend_from_slice(&self.body.buf);
        buf
    }
}

/// Sends `request` on a fresh socket (in the calling thread's network
/// namespace) and returns the bodies of the messages answered before the
/// final ack or end of dump. `tolerated` errnos count as success.
pub(crate) fn exchange(request: Request, tolerated: &[i32]) -> io::Result<Vec<Vec<u8>>> {
    let message = request.finish();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
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
    let mut answers = Vec::new();
    let mut reply = vec![0u8; 64 * 1024];
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
            let body = &reply[at + NLMSG_HDRLEN..at + len];
            if kind == libc::NLMSG_DONE as u16 {
                return Ok(answers);
            }
            if kind == libc::NLMSG_ERROR as u16 && body.len() >= 4 {
                let errno = -i32::from_ne_bytes(body[..4].try_into().unwrap_or([0; 4]));
                return if errno == 0 || tolerated.contains(&errno) {
                    Ok(answers)
                } else {
                    Err(io::Error::from_raw_os_error(errno))
                };
            }
            answers.push(body.to_vec());
            at += align(len);
        }
    }
}

/// Sends `request` and waits for its ack.
pub(crate) fn transact(request: Request, tolerated: &[i32]) -> io::Result<()> {
    exchange(request, tolerated).map(|_| ())
}

/// The attributes in `bytes` as (type, value) pairs; stops at the first
/// malformed one.
pub(crate) fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > bytes.len() {
            return None;
        }
        let len = u16::from_ne_bytes([bytes[at], bytes[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > bytes.len() {
            return None;
        }
        let value = &bytes[at + 4..at + len];
        at += align(len);
        Some((kind, value))
    })
}

/// A string attribute's value without its NUL.
pub(crate) fn string_value(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// A native-endian u32 attribute's value.
pub(crate) fn u32_value(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_aligned_and_carry_their_length() {
        let message = Request::new(
            libc::RTM_NEWADDR,
            0,
            Attrs::default()
                .raw(&[1, 2, 3, 4, 5, 6, 7, 8])
                .attr(libc::IFA_LABEL, b"abc"),
        )
        .finish();
        assert_eq!(message.len(), 16 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 32);
        // The attribute length excludes padding.
        assert_eq!(u16::from_ne_bytes([message[24], message[25]]), 7);
    }

    #[test]
    fn attributes_walk_nests_and_stop_at_garbage() {
        let inner = Attrs::default().string(3, "eth0");
        let outer = Attrs::default()
            .attr(4, &1500u32.to_ne_bytes())
            .nested(18, inner);
        let found: Vec<(u16, Vec<u8>)> = attributes(&outer.buf)
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(found.len(), 2);
        assert_eq!(u32_value(&found[0].1), Some(1500));
        let (kind, value) = attributes(&found[1].1).next().unwrap();
        assert_eq!((kind, string_value(value).as_str()), (3, "eth0"));
        assert_eq!(attributes(&[9, 0, 1]).count(), 0);
        assert_eq!(attributes(&[200, 0, 1, 0, 0, 0, 0, 0]).count(), 0);
    }
}
