//! A TAP device whose frames carry a [`VnetHeader`], for VMs and pod shims.
//!
//! Ioctl sequence (see `docs/datapath-io.md`): open `/dev/net/tun`
//! non-blocking → `TUNGETFEATURES` (check `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`)
//! → `TUNSETIFF` with those flags (creates the device, or attaches to an
//! existing TAP of that name) → `TUNSETVNETHDRSZ(10)` → `TUNSETOFFLOAD(CSUM |
//! TSO4 | TSO6)`. The device is never made persistent: one we created
//! disappears when the fd is closed.
//!
//! The vnet header size is 10 (`struct virtio_net_hdr`), not 12
//! (`virtio_net_hdr_mrg_rxbuf`): that is the layout AF_PACKET's
//! `PACKET_VNET_HDR` uses, so a frame moves between a veth port and a TAP
//! port byte for byte; the extra `num_buffers` field only matters to a
//! virtio guest driver with mergeable buffers, which is not our reader.
//!
//! A TAP has no `recvmmsg`: batches are `read`/`write` loops (one syscall per frame).
//!
//! A TAP the agent creates for a port can have several queues
//! (`IFF_MULTI_QUEUE`, [`Tap::open_queues`]), each an fd of its own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::batch::{RxBatch, TxBatch};
use super::error::{ifname_bytes, PortError};
use super::mmsg::{check_indices, frame_iovecs, iovec_of};
use super::sys::{cvt, register, wait_readable};
use super::vnet::{VnetHeader, VNET_HDR_LEN};

/// The vnet header size we configure with `TUNSETVNETHDRSZ`.
pub const TAP_VNET_HDR_SZ: libc::c_int = VNET_HDR_LEN as libc::c_int;

/// Offloads we accept from the kernel (`TUNSETOFFLOAD`): partial checksums and TSO.
pub const TAP_OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// A non-blocking TAP device (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`).
#[derive(Debug)]
pub struct Tap {
    fd: AsyncFd<OwnedFd>,
    ifname: String,
    /// More queues of a multi-queue TAP (see [`Tap::open_queues`]).
    queues: Vec<Tap>,
}

impl Tap {
    /// Creates the TAP `ifname`, or attaches to an existing TAP of that name.
    ///
    /// An empty name or a pattern such as `"tap%d"` lets the kernel pick the
    /// name (see [`Tap::ifname`]). Must run inside a Tokio runtime with IO
    /// enabled. The device is created in the caller's network namespace and
    /// keeps working through this fd if it is later moved to another one.
    pub fn open(ifname: &str) -> Result<Tap, PortError> {
        Self::attach(ifname, 0)
    }

    /// Creates the TAP `ifname` with `queues` queues (`IFF_MULTI_QUEUE`):
    /// the kernel gives each frame the host sends into it to the queue its
    /// flow hash names, so a flow stays on one queue, in order, and
    /// different flows can be read on different cores. This `Tap` is the
    /// first queue and sends; [`Tap::queues`] are the others. With one
    /// queue, or a kernel without multi-queue TAPs, it is [`Tap::open`].
    pub fn open_queues(ifname: &str, queues: usize) -> Result<Tap, PortError> {
        if queues <= 1 {
            return Self::open(ifname);
        }
        let mut first = match Self::attach(ifname, libc::IFF_MULTI_QUEUE) {
            Err(PortError::Unsupported { .. }) => return Self::open(ifname),
            other => other?,
        };
        for _ in 1..queues.min(super::MAX_PORT_QUEUES) {
            let queue = Self::attach(&first.ifname, libc::IFF_MULTI_QUEUE)?;
            first.queues.push(queue);
        }
        Ok(first)
    }

    /// The TAP's other queues (see [`Tap::open_queues`]).
    pub fn queues(&self) -> &[Tap] {
        &self.queues
    }

    /// Takes the TAP's other queues out (to close them apart).
    pub fn take_queues(&mut self) -> Vec<Tap> {
        std::mem::take(&mut self.queues)
    }

    /// Opens `/dev/net/tun` as the TAP `ifname` with `extra` flags beside
    /// the usual ones (see the module documentation).
    fn attach(ifname: &str, extra: libc::c_int) -> Result<Tap, PortError> {
        let name = ifname_bytes(ifname, true)?;
        let perr = |op, e| PortError::from_os(ifname, op, e);

        // SAFETY: the path is a NUL-terminated literal; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => perr("open(/dev/net/tun)", source),
                _ => PortError::TunUnavailable {
                    ifname: ifname.to_owned(),
                    source,
                },
            });
        }
        // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();

        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int into `features`, a live local.
        cvt(unsafe { libc::ioctl(f, libc::TUNGETFEATURES, &mut features as *mut libc::c_uint) })
            .map_err(|e| perr("ioctl(TUNGETFEATURES)", e))?;
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | extra;
        if features & flags as libc::c_uint != flags as libc::c_uint {
            return Err(PortError::Unsupported {
                ifname: ifname.to_owned(),
                op: if extra == 0 {
                    "TAP with IFF_NO_PI | IFF_VNET_HDR"
                } else {
                    "TAP with IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE"
                },
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            });
        }

        // SAFETY: all-zero is a valid ifreq (a name array and a plain-data union).
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.iter()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `ifr` is a live,
        // initialised ifreq whose name is NUL-terminated (ifname_bytes).
        cvt(unsafe { libc::ioctl(f, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) }).map_err(
            |source| match source.raw_os_error() {
                // EINVAL: a device of that name exists but is not a TAP (a veth,
                // a TUN); EBUSY: a TAP already attached to another fd.
                Some(libc::EINVAL) | Some(libc::EBUSY) => PortError::Busy {
                    ifname: ifname.to_owned(),
                    op: "ioctl(TUNSETIFF)",
                    source,
                },
                _ => perr("ioctl(TUNSETIFF)", source),
            },
        )?;
        // The kernel wrote back the final name (NUL-terminated) e.g. for "tap%d".
        let actual: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        let actual = String::from_utf8_lossy(&actual).into_owned();
        let perr = |op, e| PortError::from_os(&actual, op, e);

        let hdr_sz: libc::c_int = TAP_VNET_HDR_SZ;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `hdr_sz` is a live local.
        cvt(unsafe { libc::ioctl(f, libc::TUNSETVNETHDRSZ, &hdr_sz as *const libc::c_int) })
            .map_err(|e| perr("ioctl(TUNSETVNETHDRSZ)", e))?;
        set_offload_raw(f, TAP_OFFLOADS).map_err(|e| perr("ioctl(TUNSETOFFLOAD)", e))?;

        let fd = register(fd, &actual)?;
        Ok(Tap {
            fd,
            ifname: actual,
            queues: Vec::new(),
        })
    }

    /// The device name (as chosen by the kernel if a pattern was given).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Changes which offloads the kernel may hand us (`TUN_F_*` bits; 0 = none).
    pub fn set_offload(&self, flags: libc::c_uint) -> Result<(), PortError> {
        set_offload_raw(self.as_raw_fd(), flags)
            .map_err(|e| PortError::from_os(&self.ifname, "ioctl(TUNSETOFFLOAD)", e))
    }

    /// Waits until at least one frame can be read (drain it with `try_recv_batch`).
    pub async fn readable(&self) -> io::Result<()> {
        wait_readable(&self.fd).await
    }

    /// Reads up to `rx.capacity()` frames without waiting; `Ok(0)` if none is queued.
    pub fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        match read_batch(self.as_raw_fd(), rx) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    /// Waits for frames and reads a batch (returns once one was read or dropped).
    pub async fn recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| read_batch(fd.as_raw_fd(), rx))
            .await
    }

    /// Writes the queued frames; same contract as `AfPacket::try_send_batch`.
    pub fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize> {
        match write_all(self.as_raw_fd(), tx.pending()) {
            Ok(n) => {
                tx.consume(n);
                Ok(n)
            }
            // Report what was written; the failing frame is retried (and, if
            // it fails again as the oldest, dropped) on the next call.
            Err((n, _)) if n > 0 => {
                tx.consume(n);
                Ok(n)
            }
            Err((_, e)) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err((_, e)) => {
                // Drop the rejected frame so a retry makes progress.
                tx.consume(1);
                Err(e)
            }
        }
    }

    /// Writes every queued frame, waiting for room; stops at (and drops) a rejected frame.
    pub async fn send_batch(&self, tx: &mut TxBatch) -> io::Result<()> {
        super::send_all(self, tx).await
    }

    /// Writes frames `which` of `rx` unchanged; same contract as `AfPacket::send_rx`.
    pub fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize> {
        check_indices(rx, which)?;
        match write_all(self.as_raw_fd(), which.iter().filter_map(|&i| rx.wire(i))) {
            Ok(n) => Ok(n),
            Err((0, e)) => Err(e),
            Err((n, _)) => Ok(n),
        }
    }

    /// Reads one frame into `buf` without waiting; `Ok(None)` if none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<(VnetHeader, usize)>> {
        match read_one(self.as_raw_fd(), buf) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for and reads one frame into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(VnetHeader, usize)> {
        self.fd
            .async_io(Interest::READABLE, |fd| read_one(fd.as_raw_fd(), buf))
            .await
    }

    /// Writes one frame with its vnet header without waiting.
    pub fn try_send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        write_one(self.as_raw_fd(), vnet, frame)
    }

    /// Writes one frame gathered from `parts` (at most `MAX_GATHERED`) without
    /// waiting (see [`super::Port::try_send_parts`]).
    pub fn try_send_parts(&self, vnet: &VnetHeader, parts: &[&[u8]]) -> io::Result<()> {
        let hdr = vnet.to_bytes();
        let (iov, used) = frame_iovecs(&hdr, parts)?;
        write_raw(self.as_raw_fd(), &iov[..used]).map(drop)
    }

    /// Writes one frame, waiting for room if needed.
    pub async fn send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                write_one(fd.as_raw_fd(), vnet, frame)
            })
            .await
    }

    /// Waits until the device accepts writes.
    pub async fn writable(&self) -> io::Result<()> {
        let mut guard = self.fd.writable().await?;
        guard.retain_ready();
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}

fn set_offload_raw(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of
    // TUN_F_* bits); no memory is passed to the kernel.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) }).map(drop)
}

/// `read` into one buffer, retrying on EINTR.
fn read_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is an exclusively borrowed, live buffer and we pass its
        // exact length; the kernel writes at most that many bytes.
        let ret = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `write` of one wire-format buffer, retrying on EINTR.
fn write_raw(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    loop {
        // SAFETY: every iovec describes a live slice borrowed by the caller for
        // the duration of the call; writev only reads through them.
        let ret = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads frames until the batch is full or the device is empty.
fn read_batch(fd: RawFd, rx: &mut RxBatch) -> io::Result<usize> {
    rx.begin_fill();
    let cap = rx.capacity();
    let mut errors = 0;
    let mut i = 0;
    while i < cap {
        let slot = &mut rx.slots_mut()[i];
        let slot_len = slot.len();
        match read_raw(fd, slot) {
            Ok(n) => {
                // tun reports the full length; more than the slot means truncated.
                rx.commit(i, n, n > slot_len);
                i += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // A frame the kernel could not copy out whole (too big for the slot,
            // or an offload it cannot describe): it is consumed, count it.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EFAULT))
                    && errors < cap =>
            {
                errors += 1;
                rx.note_dropped();
            }
            Err(_) if !rx.is_empty() || rx.dropped() > 0 => break,
            Err(e) => return Err(e),
        }
    }
    if rx.is_empty() && rx.dropped() == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(rx.len())
}

/// Writes wire-format frames one by one; on error returns how many were written before it.
fn write_all<'a>(
    fd: RawFd,
    frames: impl Iterator<Item = &'a [u8]>,
) -> Result<usize, (usize, io::Error)> {
    let mut n = 0;
    for w in frames {
        write_raw(fd, &[iovec_of(w)]).map_err(|e| (n, e))?;
        n += 1;
    }
    Ok(n)
}

fn read_one(fd: RawFd, buf: &mut [u8]) -> io::Result<(VnetHeader, usize)> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let mut iovs = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    let ret = loop {
        // SAFETY: both iovecs describe exclusively borrowed, live buffers (`hdr`
        // and `buf`); readv writes within their lengths only.
        let ret = unsafe { libc::readv(fd, iovs.as_mut_ptr(), 2) };
        if ret >= 0 {
            break ret as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    VnetHeader::received(&hdr, ret, buf.len())
}

fn write_one(fd: RawFd, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
    let hdr = vnet.to_bytes();
    write_raw(fd, &[iovec_of(&hdr), iovec_of(frame)]).map(drop)
}
