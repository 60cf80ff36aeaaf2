//! A socket filter that passes only frames of chosen interfaces.
//!
//! The shared packet sockets ([`super::SharedSockets`]) are bound to no
//! interface, so the kernel offers them every frame of the network
//! namespace. This filter, an eBPF program over a hash map of interface
//! indexes, keeps the frames of the served ports and drops the rest in the
//! kernel, before they are queued or copied. Fourteen instructions, written
//! here by hand: frames this host sent dropped, `__sk_buff.ifindex` read,
//! one map lookup, a verdict.
//! Beside it, the four instructions that steer each interface's frames to
//! one socket of the fanout group ([`ifindex_steering`]).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::sys::cvt;

/// `bpf(2)` commands used here (`include/uapi/linux/bpf.h`).
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// Hash map entries allocated as they are inserted, not all up front.
const BPF_F_NO_PREALLOC: u32 = 1;
/// `ld_imm64`'s source register when the immediate is a map's descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
/// `setsockopt(SOL_SOCKET, SO_ATTACH_BPF)`: attach an eBPF program by
/// descriptor (asm-generic's value, which x86 and arm use; the libc crate
/// does not define it for Linux).
const SO_ATTACH_BPF: libc::c_int = 50;
/// Offset of `pkt_type` in `struct __sk_buff` (its second `__u32`).
const SKB_PKT_TYPE: i16 = 4;
/// `pkt_type` of a frame this host sends.
const PACKET_OUTGOING: i32 = 4;
/// Offset of `ifindex` in `struct __sk_buff` (after ten `__u32` fields).
const SKB_IFINDEX: i16 = 40;

/// Most interfaces one filter passes (the kernel allocates the hash
/// map's buckets, 16 bytes each, up front even without preallocation).
pub const MAX_INTERFACES: u32 = 1 << 16;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// Destination register in the low nibble, source in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The steering program of a fanout group: the member of a frame is a hash
/// of its interface index (the kernel takes it modulo the members), so
/// each interface's frames stay on one socket, in order, and interfaces
/// spread over the sockets (host ends of veths often have indexes of one
/// parity: a plain modulo would leave half the sockets idle).
const STEERING: [Insn; 4] = [
    // w0 = skb->ifindex
    insn(0x61, 0, 1, SKB_IFINDEX, 0),
    // w0 *= 0x9e3779b1 (Fibonacci hashing, 32-bit)
    insn(0x24, 0, 0, 0, 0x9e37_79b1_u32 as i32),
    // w0 >>= 16
    insn(0x74, 0, 0, 0, 16),
    insn(0x95, 0, 0, 0, 0),
];

/// Loads a socket filter program: its descriptor.
fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut attr = BpfAttr::new();
    attr.put_u32(0, BPF_PROG_TYPE_SOCKET_FILTER)
        .put_u32(4, insns.len() as u32)
        .put_u64(8, insns.as_ptr() as u64)
        .put_u64(16, license.as_ptr() as u64);
    // SAFETY: `insns` (its length given) and `license` outlive the call.
    unsafe { attr.call(BPF_PROG_LOAD) }.map(owned)
}

/// Loads the fanout steering program (see `PACKET_FANOUT_EBPF`): each
/// interface's frames to one member, interfaces spread over the members.
pub fn ifindex_steering() -> io::Result<OwnedFd> {
    load(&STEERING)
}

/// The program: pass the whole frame if its interface is in `map` and
/// this host did not send it, else drop it. (The fanout group skips sent
/// frames with `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`; kernels before it
/// ignore the flag, so the filter drops them too.)
fn program(map: RawFd) -> [Insn; 14] {
    [
        // if skb->pkt_type == PACKET_OUTGOING goto drop
        insn(0x61, 0, 1, SKB_PKT_TYPE, 0),
        insn(0x15, 0, 0, 10, PACKET_OUTGOING),
        // r0 = skb->ifindex
        insn(0x61, 0, 1, SKB_IFINDEX, 0),
        // *(u32 *)(r10 - 4) = r0: the lookup key on the stack
        insn(0x63, 10, 0, -4, 0),
        // r2 = r10 - 4
        insn(0xbf, 2, 10, 0, 0),
        insn(0x07, 2, 0, 0, -4),
        // r1 = the map (a 64-bit immediate over two instructions)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map),
        insn(0, 0, 0, 0, 0),
        // r0 = bpf_map_lookup_elem(r1, r2)
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        // if r0 == 0 goto drop
        insn(0x15, 0, 0, 2, 0),
        // w0 = 0xffffffff: keep the whole frame
        insn(0xb4, 0, 0, 0, -1),
        insn(0x95, 0, 0, 0, 0),
        // drop: w0 = 0
        insn(0xb4, 0, 0, 0, 0),
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// `union bpf_attr`, as a zeroed buffer the commands fill the head of (the
/// kernel requires the unused tail to be zero).
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

impl BpfAttr {
    fn new() -> BpfAttr {
        BpfAttr([0; 128])
    }

    fn put_u32(&mut self, at: usize, value: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn put_u64(&mut self, at: usize, value: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }

    /// `bpf(cmd, self)`: the returned value (a descriptor for the creating commands).
    ///
    /// # Safety
    /// Every pointer stored in the attributes (keys, values, instructions,
    /// license) must point at memory that is alive and large enough for
    /// `cmd` for the whole call.
    unsafe fn call(&mut self, cmd: libc::c_int) -> io::Result<libc::c_int> {
        // SAFETY: `self.0` is a live, writable buffer of the size passed; the
        // kernel reads (and for some commands writes) at most that many
        // bytes; the pointers in it are valid by this function's contract.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                mem::size_of::<BpfAttr>() as libc::c_uint,
            )
        };
        cvt(ret as libc::c_int)
    }
}

/// Takes ownership of a descriptor a `bpf(2)` command returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The filter: the map of interfaces and the program that reads it.
#[derive(Debug)]
pub struct IfindexFilter {
    map: OwnedFd,
    program: OwnedFd,
}

impl IfindexFilter {
    /// Creates the map (empty: every frame dropped) and loads the program.
    /// Fails without `CAP_BPF` (or `CAP_SYS_ADMIN`) or a kernel with eBPF.
    pub fn new() -> io::Result<IfindexFilter> {
        let mut attr = BpfAttr::new();
        attr.put_u32(0, BPF_MAP_TYPE_HASH)
            .put_u32(4, 4) // key: the interface index
            .put_u32(8, 1) // value: unused
            .put_u32(12, MAX_INTERFACES)
            .put_u32(16, BPF_F_NO_PREALLOC);
        // SAFETY: the attributes hold no pointer.
        let map = unsafe { attr.call(BPF_MAP_CREATE) }.map(owned)?;
        let program = load(&program(map.as_raw_fd()))?;
        Ok(IfindexFilter { map, program })
    }

    /// Lets the frames of interface `ifindex` through.
    pub fn pass(&self, ifindex: u32) -> io::Result<()> {
        let value = 1u8;
        let mut attr = BpfAttr::new();
        attr.put_u32(0, self.map.as_raw_fd() as u32)
            .put_u64(8, &ifindex as *const u32 as u64)
            .put_u64(16, &value as *const u8 as u64);
        // SAFETY: the key (4 bytes) and value (1 byte), the map's sizes,
        // are locals alive for the call.
        unsafe { attr.call(BPF_MAP_UPDATE_ELEM) }.map(drop)
    }

    /// Drops the frames of interface `ifindex` again (not an error if it
    /// was not passed).
    pub fn stop_passing(&self, ifindex: u32) -> io::Result<()> {
        let mut attr = BpfAttr::new();
        attr.put_u32(0, self.map.as_raw_fd() as u32)
            .put_u64(8, &ifindex as *const u32 as u64);
        // SAFETY: the key (4 bytes, the map's size) is alive for the call.
        let result = unsafe { attr.call(BPF_MAP_DELETE_ELEM) };
        match result {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Attaches the program to socket `fd` (before it is bound, so that no
    /// unfiltered frame is ever queued to it).
    pub fn attach(&self, fd: RawFd) -> io::Result<()> {
        let program = self.program.as_raw_fd();
        // SAFETY: `program` is a live c_int and we pass its exact size.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_ATTACH_BPF,
                (&program as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        cvt(ret).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_and_stops_passing_interfaces() {
        let filter = IfindexFilter::new().expect("eBPF socket filters (run as root)");
        filter.pass(7).unwrap();
        filter.pass(7).unwrap();
        filter.stop_passing(7).unwrap();
        filter.stop_passing(7).unwrap();
        // SAFETY: plain socket(2) call; the result is checked and owned.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        let socket = owned(cvt(raw).unwrap());
        filter.attach(socket.as_raw_fd()).unwrap();
        ifindex_steering().expect("the steering program loads");
    }
}
