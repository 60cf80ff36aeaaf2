//! The `ring` and `ring2` receive modes: a `PACKET_MMAP` receive ring of
//! `TPACKET_V3` (1 MiB blocks) or `TPACKET_V2` (2 KiB frames) on the
//! AF_PACKET socket, walked as the kernel fills it.

use std::io;
use std::time::{Duration, Instant};

use crate::{setsockopt, touch, wait, SOL_PACKET};

const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_KERNEL: u32 = 0;
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

/// Sets up a receive ring on `fd` before its bind: `TPACKET_V3` when
/// `v3`, `TPACKET_V2` otherwise.
pub fn request(fd: libc::c_int, v3: bool) -> io::Result<()> {
    if !v3 {
        setsockopt(fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V2.to_ne_bytes())?;
        // struct tpacket_req: block size and count, frame size and count.
        let req: [u32; 4] = [
            BLOCK_SIZE,
            BLOCK_NR,
            FRAME_SIZE,
            BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
        ];
        let bytes: Vec<u8> = req.iter().flat_map(|v| v.to_ne_bytes()).collect();
        return setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &bytes);
    }
    setsockopt(fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V3.to_ne_bytes())?;
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
    setsockopt(fd, SOL_PACKET, PACKET_RX_RING, bytes)
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
pub fn drain_ring_v2(
    fd: libc::c_int,
    start: Instant,
    secs: Duration,
) -> io::Result<(u64, u64, u64)> {
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
pub fn drain_ring(fd: libc::c_int, start: Instant, secs: Duration) -> io::Result<(u64, u64, u64)> {
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
