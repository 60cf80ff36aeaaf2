//! Measures what a `TPACKET_V3` receive ring or an AF_XDP socket would
//! save the datapath on small packets, against the `recvmmsg` batches it
//! uses today: one side floods 64-byte UDP datagrams out of a veth, the
//! other drains the veth's peer with an AF_PACKET socket
//! (`PACKET_VNET_HDR`, as the datapath's) or an AF_XDP socket, and
//! reports the rate and its own CPU time per packet.
//! `scripts/bench-ring.sh` runs both sides in namespaces.
//!
//!   rx_ring_bench send <destination ip> <seconds>
//!   rx_ring_bench recv <interface> <mmsg|ring|ring2|xdp|xdp-mb> <seconds>
//!
//! `ring` is `TPACKET_V3` (variable frames in 1 MiB blocks the kernel
//! hands over when full or after 1 ms), `ring2` is `TPACKET_V2` (fixed
//! 2 KiB frames, each handed over and signalled as it arrives); both in
//! `ring.rs`. `xdp` is AF_XDP in copy mode on the interface's queue 0,
//! fed by an XDP program attached in native mode, and `xdp-mb` the same
//! with a multi-buffer (`BPF_F_XDP_HAS_FRAGS`, `XDP_USE_SG`) program and
//! socket; both in `xdp.rs`.
//!
//! Linux only; needs CAP_NET_RAW (and CAP_BPF, CAP_NET_ADMIN for `xdp`).

mod ring;
mod xdp;

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const SOL_PACKET: libc::c_int = 263;
const PACKET_VNET_HDR: libc::c_int = 15;
/// Messages per `recvmmsg`, as the datapath's batches.
const BATCH: usize = 64;

/// Runs `send` or `recv` as the arguments say.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["send", dst, secs] => send(dst, seconds(secs)),
        ["recv", ifname, mode, secs] => recv(ifname, mode, seconds(secs)),
        _ => Err(io::Error::other(
            "usage: rx_ring_bench send <ip> <seconds> \
             | recv <ifname> <mmsg|ring|ring2|xdp|xdp-mb> <seconds>",
        )),
    };
    if let Err(error) = result {
        eprintln!("rx_ring_bench: {error}");
        std::process::exit(1);
    }
}

/// A duration in seconds, 5 when `s` is not a number of seconds.
fn seconds(s: &str) -> Duration {
    match s.parse::<f64>() {
        Ok(secs) if (0.0..1e9).contains(&secs) => Duration::from_secs_f64(secs),
        _ => Duration::from_secs(5),
    }
}

/// Floods 64-byte datagrams to `dst` (port 9) for `secs`, 64 per
/// `sendmmsg`; prints the rate.
fn send(dst: &str, secs: Duration) -> io::Result<()> {
    let dst: Ipv4Addr = dst.parse().map_err(io::Error::other)?;
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect((dst, 9))?;
    let payload = [0x5au8; 64];
    let mut iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid; each is pointed at its iovec below.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let fd = socket.as_raw_fd();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < secs {
        // SAFETY: `msgs` holds BATCH valid headers whose iovecs point at
        // `payload`, all alive for the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} in {took:.2} s: {:.1} kpps",
        sent as f64 / took / 1e3
    );
    Ok(())
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero timespec is valid and clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The receive side: recvmmsg, a ring of either version, or AF_XDP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Mmsg,
    RingV3,
    RingV2,
    Xdp,
    XdpMultiBuffer,
}

/// `setsockopt(2)` of `value`'s bytes.
fn setsockopt(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    // SAFETY: `value` is a valid buffer of its length for the call.
    let rc =
        unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as u32) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The index of interface `ifname`.
fn ifindex(ifname: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// An AF_PACKET socket with `PACKET_VNET_HDR` bound to `ifname`
/// (with the ring of `mode` set up before the bind).
fn packet_socket(ifname: &str, mode: Mode) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &1i32.to_ne_bytes())?;
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &(16i32 << 20).to_ne_bytes(),
    )?;
    if mode == Mode::RingV2 || mode == Mode::RingV3 {
        ring::request(fd, mode == Mode::RingV3)?;
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex(ifname)? as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Reads the first bytes of a frame, as a datapath parsing it would (the
/// copy of `recvmmsg` leaves them in the cache, a ring does not).
fn touch(frame: &[u8]) -> u64 {
    frame.iter().take(64).map(|&b| u64::from(b)).sum()
}

/// Waits up to 100 ms for `fd` to be readable.
fn wait(fd: libc::c_int) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 100) };
}

/// What a drain counted: frames, bytes, and how long and how much of
/// this thread's CPU time it took.
struct Measured {
    packets: u64,
    bytes: u64,
    took: f64,
    cpu: f64,
}

/// Runs `drain` (given its start) and measures it.
fn measure(drain: impl FnOnce(Instant) -> io::Result<(u64, u64, u64)>) -> io::Result<Measured> {
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let (packets, bytes, touched) = drain(start)?;
    std::hint::black_box(touched);
    Ok(Measured {
        packets,
        bytes,
        took: start.elapsed().as_secs_f64(),
        cpu: (thread_cpu() - cpu0).as_secs_f64(),
    })
}

/// Drains `ifname` for `secs` in `mode`; prints the rate and the CPU
/// time per packet (and, for AF_XDP, the socket's statistics).
fn recv(ifname: &str, mode: &str, secs: Duration) -> io::Result<()> {
    let kind = match mode {
        "mmsg" => Mode::Mmsg,
        "ring" => Mode::RingV3,
        "ring2" => Mode::RingV2,
        "xdp" => Mode::Xdp,
        "xdp-mb" => Mode::XdpMultiBuffer,
        _ => return Err(io::Error::other("mode: mmsg, ring, ring2, xdp or xdp-mb")),
    };
    let (m, note) = match kind {
        Mode::Xdp | Mode::XdpMultiBuffer => {
            let mut xsk = xdp::Receiver::open(ifname, kind == Mode::XdpMultiBuffer)?;
            let m = measure(|start| Ok(xsk.drain(start, secs)))?;
            (m, xsk.note())
        }
        Mode::Mmsg | Mode::RingV3 | Mode::RingV2 => {
            let socket = packet_socket(ifname, kind)?;
            let fd = socket.as_raw_fd();
            let m = measure(|start| match kind {
                Mode::RingV3 => ring::drain_ring(fd, start, secs),
                Mode::RingV2 => ring::drain_ring_v2(fd, start, secs),
                _ => Ok(drain_mmsg(fd, start, secs)),
            })?;
            (m, String::new())
        }
    };
    println!(
        "{mode}: {} frames ({} bytes) in {:.2} s: {:.1} kpps, \
         receiver CPU {:.2} s ({:.0} ns a frame){note}",
        m.packets,
        m.bytes,
        m.took,
        m.packets as f64 / m.took / 1e3,
        m.cpu,
        m.cpu * 1e9 / m.packets.max(1) as f64
    );
    Ok(())
}

/// `recvmmsg` into 64 slots of [vnet header | frame], as the datapath.
fn drain_mmsg(fd: libc::c_int, start: Instant, secs: Duration) -> (u64, u64, u64) {
    let mut slots = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = slots
        .iter_mut()
        .map(|s| libc::iovec {
            iov_base: s.as_mut_ptr().cast(),
            iov_len: s.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid; each is pointed at its iovec below.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let (mut packets, mut bytes, mut touched) = (0u64, 0u64, 0u64);
    while start.elapsed() < secs {
        for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: BATCH valid headers, each with one iovec into `slots`,
        // all alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            wait(fd);
            continue;
        }
        packets += n as u64;
        for (msg, slot) in msgs[..n as usize].iter().zip(&slots) {
            let len = (msg.msg_len as usize).min(slot.len());
            bytes += len as u64;
            touched += touch(&slot[10.min(len)..len]);
        }
    }
    (packets, bytes, touched)
}
