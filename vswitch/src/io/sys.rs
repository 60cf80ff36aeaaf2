//! Small system-call helpers shared by the AF_PACKET and TAP ports.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::error::PortError;

/// Turns a `-1`-on-error return value into an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int on our stack and we pass its exact size;
    // the kernel only reads `optlen` bytes from it. An invalid fd yields EBADF.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

/// Reads an integer socket option.
pub(crate) fn getsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` tells the kernel how many
    // bytes it may write into `value`, which is exactly its size.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    cvt(ret).map(|_| value)
}

/// True if `fd` has something to read right now (a zero-timeout `poll`).
pub(crate) fn poll_readable(fd: RawFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid, live pollfd and we pass nfds = 1; a zero
        // timeout means the call never blocks.
        let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
        match cvt(ret) {
            Ok(n) => return Ok(n > 0 && pfd.revents & (libc::POLLIN | libc::POLLERR) != 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Registers a non-blocking fd with the current Tokio reactor.
pub(crate) fn register(fd: OwnedFd, ifname: &str) -> Result<AsyncFd<OwnedFd>, PortError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(PortError::NoRuntime {
            ifname: ifname.to_owned(),
        });
    }
    // SAFETY: `fd` is an OwnedFd we just opened; AsyncFd takes ownership of it,
    // so it stays open and is the same descriptor until the AsyncFd is dropped
    // (OwnedFd::as_raw_fd always returns the descriptor it owns).
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }.map_err(
        |e| {
            PortError::from_os(
                ifname,
                "registering with the Tokio reactor",
                e.into_parts().1,
            )
        },
    )
}

/// Waits until `fd` really has data, or an error to report: Tokio's cached
/// readiness is re-checked with `poll`, and cleared if stale, so callers
/// draining with direct (non-Tokio) syscalls never spin. An error alone
/// (`EPOLLERR` without `EPOLLIN`, as when a packet socket's interface is
/// deleted: `ENETDOWN`) counts, so that the next receive returns it;
/// `readable()` alone would never wake for it.
pub(crate) async fn wait_readable(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    loop {
        let mut guard = fd.ready(Interest::READABLE | Interest::ERROR).await?;
        if poll_readable(fd.get_ref().as_raw_fd())? {
            guard.retain_ready();
            return Ok(());
        }
        guard.clear_ready();
    }
}

/// One classic BPF instruction without jumps.
pub(crate) fn cbpf_op(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Attaches the classic BPF program `ops` to `fd` as socket option `option`
/// (`SO_ATTACH_FILTER`, `SO_ATTACH_REUSEPORT_CBPF`...); an attached program
/// of the same kind is replaced.
pub(crate) fn attach_cbpf(
    fd: RawFd,
    option: libc::c_int,
    ops: &mut [libc::sock_filter],
) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(ops.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        filter: ops.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `ops`, which lives across the call; the
    // kernel copies the program and reads nothing else.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}
