//! The `xdp` and `xdp-mb` receive modes: an AF_XDP socket in copy mode
//! (`XDP_COPY`: a veth has no zero-copy) on the interface's queue 0, fed
//! by a hand-assembled XDP program attached in native (driver) mode.
//!
//! The program ([`program`]) is attached through a BPF link, not netlink,
//! so that it is detached when the link's fd closes: when [`Receiver`]
//! drops, on every error path after the attach, and when the process dies.
//!
//! `xdp-mb` loads the program with `BPF_F_XDP_HAS_FRAGS` and binds with
//! `XDP_USE_SG`, so that a frame larger than a UMEM frame arrives as
//! several descriptors (`XDP_PKT_CONTD` on all but the last).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{ifindex, setsockopt, touch, wait, BATCH};

/// `bpf(2)` commands.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`.
const BPF_XDP: u32 = 37;
/// The program handles frames in several buffers (`xdp.frags`).
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// The opcodes used (`linux/bpf.h`): `BPF_LDX | BPF_MEM | BPF_W`,
/// `BPF_LD | BPF_IMM | BPF_DW`, `BPF_ALU64 | BPF_MOV | BPF_K`,
/// `BPF_JMP | BPF_CALL`, `BPF_JMP | BPF_EXIT`.
const LDX_MEM_W: u8 = 0x61;
const LD_IMM_DW: u8 = 0x18;
const MOV64_K: u8 = 0xb7;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// The source register of a 64-bit immediate load whose immediate is a
/// map's fd (the verifier puts the map's address in).
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `long bpf_redirect_map(struct bpf_map *map, u64 key, u64 flags)`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// The UMEM: 4096 frames of 2 KiB.
const FRAME_SIZE: u32 = 2048;
const FRAMES: u32 = 4096;
/// Ring sizes (entries, powers of two). The fill ring holds every frame,
/// so frames handed back always fit; the completion ring is unused (no
/// transmit) but `bind` wants one.
const FILL_SIZE: u32 = FRAMES;
const RX_SIZE: u32 = 2048;
const COMPLETION_SIZE: u32 = 64;

/// `union bpf_attr` for `BPF_MAP_CREATE` (the fields up to the flags).
#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdate {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD` (the fields up to the expected
/// attach type).
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (the common fields).
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `struct bpf_insn`: the registers are two nibbles, destination low.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// One instruction.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | src << 4,
        off,
        imm,
    }
}

/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);` with
/// `xsks` the map `map_fd`: the helper takes the map in r1, the key in
/// r2 and the flags (whose low bits are the action when the key holds no
/// socket) in r3, and the context arrives in r1, so the key is read
/// first.
fn program(map_fd: i32) -> [Insn; 6] {
    [
        // r2 = *(u32 *)(r1 + 16)
        insn(LDX_MEM_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        // r1 = the map (a 16-byte instruction: the second half is zero)
        insn(LD_IMM_DW, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // r3 = XDP_PASS
        insn(MOV64_K, 3, 0, 0, XDP_PASS),
        // r0 = bpf_redirect_map(r1, r2, r3)
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // return r0
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// A NUL-padded object name.
fn name(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(s.bytes().take(15)) {
        *o = b;
    }
    out
}

/// `bpf(cmd, attr, sizeof attr)`; the result, an fd for the commands
/// that make one.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `attr` is a live repr(C) attribute struct of the size given;
    // the kernel reads it (and may write into it) during the call only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as libc::c_int)
}

/// Owns an fd `bpf` returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel and is owned by nothing
    // else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Adds `context` to an error.
fn context(error: io::Error, context: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

/// The `XSKMAP` of one entry (key u32, value the socket's fd).
fn create_map() -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    let fd = bpf(BPF_MAP_CREATE, &mut attr).map_err(|e| context(e, "creating the XSKMAP"))?;
    Ok(owned(fd))
}

/// Loads [`program`] on `map` (with `BPF_F_XDP_HAS_FRAGS` when
/// `frags`); the error carries the verifier's log.
fn load_program(map: &OwnedFd, frags: bool) -> io::Result<OwnedFd> {
    let insns = program(map.as_raw_fd());
    let license = c"GPL";
    let mut log = vec![0u8; 64 << 10];
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: if frags { BPF_F_XDP_HAS_FRAGS } else { 0 },
        prog_name: name("plexus_xsk"),
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(error) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]);
            Err(context(
                error,
                &format!("loading the XDP program; verifier log:\n{log}"),
            ))
        }
    }
}

/// A memory mapping, unmapped when dropped.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, offset)`.
    fn new(len: usize, flags: libc::c_int, fd: libc::c_int, offset: i64) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing;
        // nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One of the socket's rings, mapped: the producer and consumer indices
/// the kernel and this process share, and `mask + 1` entries of `T`.
struct Ring<T> {
    map: Mapping,
    producer: usize,
    consumer: usize,
    entries: usize,
    mask: u32,
    _entry: std::marker::PhantomData<T>,
}

impl<T> Ring<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of the
    /// socket `fd`, laid out as `off` says.
    fn map(
        fd: libc::c_int,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: i64,
    ) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        let map = Mapping::new(len, libc::MAP_SHARED | libc::MAP_POPULATE, fd, pgoff)?;
        Ok(Ring {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            entries: off.desc as usize,
            mask: size - 1,
            _entry: std::marker::PhantomData,
        })
    }

    /// The producer index.
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: the kernel's offset of a u32, aligned, inside the
        // mapping, which lives as long as `self`; the kernel updates it
        // with atomic accesses too.
        unsafe { AtomicU32::from_ptr(self.map.ptr.add(self.producer).cast()) }
    }

    /// The consumer index.
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { AtomicU32::from_ptr(self.map.ptr.add(self.consumer).cast()) }
    }

    /// The entry that index `index` designates.
    fn entry(&self, index: u32) -> *mut T {
        let slot = (index & self.mask) as usize;
        // SAFETY: the entries start at the kernel's offset inside the
        // mapping, and the masked index is below their count.
        unsafe { self.map.ptr.add(self.entries).cast::<T>().add(slot) }
    }
}

/// `value` as its bytes.
///
/// # Safety
///
/// `T` must have no padding bytes.
unsafe fn bytes_of<T>(value: &T) -> &[u8] {
    // SAFETY: `value` is valid for its size, with every byte initialised
    // as the caller guarantees.
    unsafe { std::slice::from_raw_parts((value as *const T).cast(), std::mem::size_of::<T>()) }
}

/// `getsockopt(fd, SOL_XDP, name)` into a `T` the kernel must fill
/// entirely.
///
/// # Safety
///
/// `T` must be plain integers: valid as all zeroes and as any bytes.
unsafe fn getsockopt<T>(fd: libc::c_int, name: libc::c_int) -> io::Result<T> {
    // SAFETY: all zeroes is a valid `T`, as the caller guarantees.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<T>() {
        return Err(io::Error::other(format!(
            "getsockopt(SOL_XDP, {name}) answered {len} bytes, not {}",
            std::mem::size_of::<T>()
        )));
    }
    Ok(value)
}

/// An AF_XDP socket receiving everything `ifname`'s queue 0 receives,
/// with its UMEM, rings, map, program and the link attaching it.
pub struct Receiver {
    /// Fields drop in order: the link first, which detaches the program.
    _link: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    socket: OwnedFd,
    umem: Mapping,
    _program: OwnedFd,
    _map: OwnedFd,
    /// Times the rx ring was found empty and the receiver slept in poll.
    polls: u64,
    /// Frames received, those that came in several descriptors, and the
    /// largest.
    packets: u64,
    fragmented: u64,
    largest: u64,
}

impl Receiver {
    /// Sets the socket up on `ifname` and attaches the program to it, in
    /// multi-buffer mode when `multi_buffer`.
    pub fn open(ifname: &str, multi_buffer: bool) -> io::Result<Receiver> {
        let index = ifindex(ifname)?;
        let map = create_map()?;
        let program = load_program(&map, multi_buffer)?;
        let umem = Mapping::new(
            (FRAMES * FRAME_SIZE) as usize,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )?;
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(context(io::Error::last_os_error(), "AF_XDP socket"));
        }
        let socket = owned(fd);
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        // SAFETY: xdp_umem_reg is two u64 then four u32: no padding.
        let reg = unsafe { bytes_of(&reg) };
        setsockopt(fd, libc::SOL_XDP, libc::XDP_UMEM_REG, reg)
            .map_err(|e| context(e, "XDP_UMEM_REG"))?;
        for (ring, size) in [
            (libc::XDP_UMEM_FILL_RING, FILL_SIZE),
            (libc::XDP_UMEM_COMPLETION_RING, COMPLETION_SIZE),
            (libc::XDP_RX_RING, RX_SIZE),
        ] {
            setsockopt(fd, libc::SOL_XDP, ring, &size.to_ne_bytes())?;
        }
        // SAFETY: xdp_mmap_offsets is u64 offsets only.
        let off: libc::xdp_mmap_offsets = unsafe { getsockopt(fd, libc::XDP_MMAP_OFFSETS) }?;
        let fill = Ring::<u64>::map(
            fd,
            &off.fr,
            FILL_SIZE,
            libc::XDP_UMEM_PGOFF_FILL_RING as i64,
        )?;
        let rx = Ring::<libc::xdp_desc>::map(fd, &off.rx, RX_SIZE, libc::XDP_PGOFF_RX_RING)?;
        for i in 0..FILL_SIZE {
            // SAFETY: a fill ring entry, not yet published to the kernel.
            unsafe { fill.entry(i).write(u64::from(i) * u64::from(FRAME_SIZE)) };
        }
        fill.producer().store(FILL_SIZE, Ordering::Release);
        let mut flags = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
        if multi_buffer {
            flags |= libc::XDP_USE_SG;
        }
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: index,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sxdp` is a valid sockaddr_xdp of the size given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sxdp as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as u32,
            )
        };
        if rc < 0 {
            return Err(context(
                io::Error::last_os_error(),
                "binding the AF_XDP socket",
            ));
        }
        let key = 0u32;
        let value = fd as u32;
        let mut update = MapUpdate {
            map_fd: map.as_raw_fd() as u32,
            pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut update)
            .map_err(|e| context(e, "putting the socket in the XSKMAP"))?;
        let mut link = LinkCreate {
            prog_fd: program.as_raw_fd() as u32,
            target_ifindex: index,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
        };
        let link = bpf(BPF_LINK_CREATE, &mut link)
            .map_err(|e| context(e, &format!("attaching XDP to {ifname} in driver mode")))?;
        Ok(Receiver {
            _link: owned(link),
            rx,
            fill,
            socket,
            umem,
            _program: program,
            _map: map,
            polls: 0,
            packets: 0,
            fragmented: 0,
            largest: 0,
        })
    }

    /// Receives for `secs`: takes up to a batch of descriptors off the rx
    /// ring, reads each frame's first bytes, hands the frames back
    /// through the fill ring, and sleeps in poll(2) while the rx ring is
    /// empty. Returns frames, bytes and the touched sum.
    pub fn drain(&mut self, start: Instant, secs: Duration) -> (u64, u64, u64) {
        let fd = self.socket.as_raw_fd();
        let umem_len = self.umem.len as u64;
        let mut consumer = self.rx.consumer().load(Ordering::Relaxed);
        let mut fill = self.fill.producer().load(Ordering::Relaxed);
        let mut frees = [0u64; BATCH];
        let (mut bytes, mut touched) = (0u64, 0u64);
        // The length so far of a frame in several descriptors.
        let mut partial = 0u64;
        while start.elapsed() < secs {
            // Acquire: the descriptors below the producer are written.
            let ready = self
                .rx
                .producer()
                .load(Ordering::Acquire)
                .wrapping_sub(consumer);
            if ready == 0 {
                self.polls += 1;
                wait(fd);
                continue;
            }
            let n = (ready as usize).min(BATCH);
            for (i, free) in frees[..n].iter_mut().enumerate() {
                // SAFETY: an entry the kernel published (the Acquire load
                // above) and leaves alone until the consumer passes it.
                let desc = unsafe { self.rx.entry(consumer.wrapping_add(i as u32)).read() };
                let len = u64::from(desc.len);
                let inside = desc
                    .addr
                    .checked_add(len)
                    .is_some_and(|end| end <= umem_len);
                if partial == 0 && inside {
                    // SAFETY: inside the UMEM (checked), and the kernel
                    // does not write this frame until it is back in the
                    // fill ring.
                    let frame = unsafe {
                        std::slice::from_raw_parts(
                            self.umem.ptr.add(desc.addr as usize),
                            desc.len as usize,
                        )
                    };
                    touched += touch(frame);
                }
                if desc.options & libc::XDP_PKT_CONTD != 0 {
                    if partial == 0 {
                        self.fragmented += 1;
                    }
                    partial += len;
                } else {
                    let whole = partial + len;
                    partial = 0;
                    self.packets += 1;
                    self.largest = self.largest.max(whole);
                    bytes += whole;
                }
                *free = desc.addr - desc.addr % u64::from(FRAME_SIZE);
            }
            consumer = consumer.wrapping_add(n as u32);
            // Release: the descriptors are read before the kernel reuses
            // their slots.
            self.rx.consumer().store(consumer, Ordering::Release);
            // The fill ring has room for every frame, so for these.
            for (i, &free) in frees[..n].iter().enumerate() {
                // SAFETY: a fill ring entry the kernel has consumed (the
                // ring holds every frame) and not yet republished.
                unsafe { self.fill.entry(fill.wrapping_add(i as u32)).write(free) };
            }
            fill = fill.wrapping_add(n as u32);
            // Release: the entries are written before the kernel reads them.
            self.fill.producer().store(fill, Ordering::Release);
        }
        (self.packets, bytes, touched)
    }

    /// The wakeups, the socket's drop counters and the frame sizes, as a
    /// suffix to the report line.
    pub fn note(&self) -> String {
        let fd = self.socket.as_raw_fd();
        // SAFETY: xdp_statistics is u64 counters only.
        let stats = unsafe { getsockopt::<libc::xdp_statistics>(fd, libc::XDP_STATISTICS) }
            .map(|s| {
                format!(
                    "{} dropped, {} rx ring full, {} fill ring empty",
                    s.rx_dropped, s.rx_ring_full, s.rx_fill_ring_empty_descs
                )
            })
            .unwrap_or_else(|e| format!("statistics: {e}"));
        format!(
            "; slept {} times ({:.1} frames a wakeup); socket: {stats}; \
             largest frame {} B, {} in several buffers",
            self.polls,
            self.packets as f64 / self.polls.max(1) as f64,
            self.largest,
            self.fragmented
        )
    }
}
