//! Measures what a `TPACKET_V3` receive ring would save the datapath on
//! small packets, against the `recvmmsg` batches it uses today: one side
//! floods 64-byte UDP datagrams out of a veth, the other drains the
//! veth's peer with an AF_PACKET socket (`PACKET_VNET_HDR`, as the
//! datapath's) either way, and reports the rate and its own CPU time per
//! packet. `scripts/bench-ring.sh` runs both sides in namespaces.
//!
//!   rx_ring_bench send <destination ip> <seconds>
//!   rx_ring_bench recv <interface> <mmsg|ring|ring2> <seconds>
//!
//! `ring` is `TPACKET_V3` (variable frames in 1 MiB blocks the kernel
//! hands over when full or after 1 ms), `ring2` is `TPACKET_V2` (fixed
//! 2 KiB frames, each handed over and signalled as it arrives).
//!
//! Linux only; needs CAP_NET_RAW.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_VNET_HDR: libc::c_int = 15;
const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_KERNEL: u32 = 0;
/// Messages per `recvmmsg`, as the datapath's batches.
const BATCH: usize = 64;
/// The ring: blocks of 1 MiB (room for 64 KiB GSO frames), 8 of them.
const BLOCK_SIZE: u32 = 1 << 20;
const BLOCK_NR: u32 = 8;
const FRAME_SIZE: u32 = 2048;

/// `struct tpacket_req3`.
#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["send", dst, secs] => send(dst, seconds(secs)),
        ["recv", ifname, mode, secs] => recv(ifname, mode, seconds(secs)),
        _ => Err(io::Error::other(
            "usage: rx_ring_bench send <ip> <seconds> | recv <ifname> <mmsg|ring> <seconds>",
        )),
    };
    if let Err(error) = result {
        eprintln!("rx_ring_bench: {error}");
        std::process::exit(1);
    }
}

fn seconds(s: &str) -> Duration {
    Duration::from_secs_f64(s.parse().unwrap_or(5.0))
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
    use std::os::fd::AsRawFd;
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

/// The receive side: recvmmsg, or a ring of either version.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Mmsg,
    RingV3,
    RingV2,
}

/// An AF_PACKET socket with `PACKET_VNET_HDR` bound to `ifname`
/// (with the ring of `mode` set up before the bind).
fn packet_socket(ifname: &str, mode: Mode) -> io::Result<libc::c_int> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let set = |level, name, value: &[u8]| {
        // SAFETY: `value` is a valid buffer of its length for the call.
        let rc =
            unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as u32) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(SOL_PACKET, PACKET_VNET_HDR, &1i32.to_ne_bytes())?;
    set(
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &(16i32 << 20).to_ne_bytes(),
    )?;
    if mode == Mode::RingV2 {
        set(SOL_PACKET, PACKET_VERSION, &TPACKET_V2.to_ne_bytes())?;
        // struct tpacket_req: block size and count, frame size and count.
        let req: [u32; 4] = [
            BLOCK_SIZE,
            BLOCK_NR,
            FRAME_SIZE,
            BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
        ];
        let bytes: Vec<u8> = req.iter().flat_map(|v| v.to_ne_bytes()).collect();
        set(SOL_PACKET, PACKET_RX_RING, &bytes)?;
    }
    if mode == Mode::RingV3 {
        set(SOL_PACKET, PACKET_VERSION, &TPACKET_V3.to_ne_bytes())?;
        let req = TpacketReq3 {
            block_size: BLOCK_SIZE,
            block_nr: BLOCK_NR,
            frame_size: FRAME_SIZE,
            frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
            retire_blk_tov: 1,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        // SAFETY: `req` is a plain repr(C) struct viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&req as *const TpacketReq3).cast::<u8>(),
                std::mem::size_of::<TpacketReq3>(),
            )
        };
        set(SOL_PACKET, PACKET_RX_RING, bytes)?;
    }
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = index as i32;
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
    Ok(fd)
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

/// Drains `ifname` for `secs` with `recvmmsg` batches or a V3 ring;
/// prints the rate and the CPU time per packet.
fn recv(ifname: &str, mode: &str, secs: Duration) -> io::Result<()> {
    let kind = match mode {
        "mmsg" => Mode::Mmsg,
        "ring" => Mode::RingV3,
        "ring2" => Mode::RingV2,
        _ => return Err(io::Error::other("mode: mmsg, ring or ring2")),
    };
    let fd = packet_socket(ifname, kind)?;
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let (packets, bytes, touched) = match kind {
        Mode::Mmsg => drain_mmsg(fd, start, secs),
        Mode::RingV3 => drain_ring(fd, start, secs)?,
        Mode::RingV2 => drain_ring_v2(fd, start, secs)?,
    };
    std::hint::black_box(touched);
    let took = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu0).as_secs_f64();
    println!(
        "{mode}: {packets} frames ({bytes} bytes) in {took:.2} s: {:.1} kpps, \
         receiver CPU {cpu:.2} s ({:.0} ns a frame)",
        packets as f64 / took / 1e3,
        cpu * 1e9 / packets.max(1) as f64
    );
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
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

/// Maps the ring the kernel set up on `fd`.
fn map_ring(fd: libc::c_int) -> io::Result<*mut u8> {
    let len = (BLOCK_SIZE * BLOCK_NR) as usize;
    // SAFETY: mapping the ring the kernel set up on `fd`, shared, of its size.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_LOCKED,
            fd,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(map.cast())
}

/// Walks the V2 ring's frames as the kernel fills them.
fn drain_ring_v2(fd: libc::c_int, start: Instant, secs: Duration) -> io::Result<(u64, u64, u64)> {
    let base = map_ring(fd)?;
    let frames = (BLOCK_SIZE / FRAME_SIZE * BLOCK_NR) as usize;
    let (mut packets, mut bytes, mut touched) = (0u64, 0u64, 0u64);
    let mut i = 0usize;
    while start.elapsed() < secs {
        // SAFETY: frame `i` lies inside the mapping; tpacket2_hdr has
        // tp_status at 0, tp_snaplen at 8 and tp_mac at 12; the kernel
        // writes the status, hence the volatile reads.
        unsafe {
            let frame = base.add(i * FRAME_SIZE as usize);
            let status = frame.cast::<u32>();
            if std::ptr::read_volatile(status) & TP_STATUS_USER == 0 {
                wait(fd);
                continue;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let snaplen = std::ptr::read_volatile(frame.add(8).cast::<u32>());
            let mac = std::ptr::read_volatile(frame.add(12).cast::<u16>());
            let data = std::slice::from_raw_parts(frame.add(mac as usize), snaplen as usize);
            touched += touch(data);
            bytes += u64::from(snaplen);
            packets += 1;
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            std::ptr::write_volatile(status, TP_STATUS_KERNEL);
        }
        i = (i + 1) % frames;
    }
    // SAFETY: unmapping what `map_ring` mapped, once.
    unsafe { libc::munmap(base.cast(), (BLOCK_SIZE * BLOCK_NR) as usize) };
    Ok((packets, bytes, touched))
}

/// Walks the V3 ring's blocks as the kernel retires them.
fn drain_ring(fd: libc::c_int, start: Instant, secs: Duration) -> io::Result<(u64, u64, u64)> {
    let base = map_ring(fd)?;
    let (mut packets, mut bytes, mut touched) = (0u64, 0u64, 0u64);
    let mut block = 0usize;
    while start.elapsed() < secs {
        // SAFETY: block `block` lies inside the mapping; its descriptor
        // starts with version, offset_to_priv, then block_status (offset 8),
        // num_pkts (12) and offset_to_first_pkt (16); the kernel writes the
        // status, hence the volatile reads.
        unsafe {
            let desc = base.add(block * BLOCK_SIZE as usize);
            let status = desc.add(8).cast::<u32>();
            if std::ptr::read_volatile(status) & TP_STATUS_USER == 0 {
                wait(fd);
                continue;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let count = std::ptr::read_volatile(desc.add(12).cast::<u32>());
            let mut frame = desc.add(std::ptr::read_volatile(desc.add(16).cast::<u32>()) as usize);
            for _ in 0..count {
                // tpacket3_hdr: tp_next_offset at 0, tp_snaplen at 12,
                // tp_mac at 24.
                let next = std::ptr::read_unaligned(frame.cast::<u32>());
                let snaplen = std::ptr::read_unaligned(frame.add(12).cast::<u32>());
                let mac = std::ptr::read_unaligned(frame.add(24).cast::<u16>());
                let data = std::slice::from_raw_parts(frame.add(mac as usize), snaplen as usize);
                touched += touch(data);
                bytes += u64::from(snaplen);
                packets += 1;
                frame = frame.add(next as usize);
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            std::ptr::write_volatile(status, TP_STATUS_KERNEL);
        }
        block = (block + 1) % BLOCK_NR as usize;
    }
    // SAFETY: unmapping what `map_ring` mapped, once.
    unsafe { libc::munmap(base.cast(), (BLOCK_SIZE * BLOCK_NR) as usize) };
    Ok((packets, bytes, touched))
}
