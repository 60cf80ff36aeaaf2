//! Which socket of the tunnel's receiving group a datagram goes to: a
//! classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`) that picks socket
//! `source port % sockets`.
//!
//! Without it the kernel picks by a hash of the addresses and ports, which
//! sends two senders to the same socket half the time with two sockets.
//! Agents send from consecutive ports, one per lane (see
//! `tunnel::Tunnel`), so ports opened one after another on one host reach
//! different sockets on every other; a standard VTEP's source ports (a
//! hash of each inner flow) spread as they fall. One sender's datagrams
//! always reach the same socket, in order.
//!
//! The program reads the UDP header through the network header
//! (`SKF_NET_OFF`), not from where the packet data starts: the kernel runs
//! it both when it looks up the socket for GRO and when it delivers, and
//! the data starts at different places then. An IPv6 underlay's UDP
//! header is taken to follow the fixed header (the tunnel sends no
//! extension headers; a datagram that has some lands on some socket of the
//! group, which is still correct).

use std::io;
use std::os::fd::RawFd;

use libc::sock_filter;

use super::sys::{attach_cbpf, cbpf_op as op};

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic; the libc crate names it for
/// Android only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// The program for a group of `sockets` over IPv4 (`v6`: IPv6).
fn program(v6: bool, sockets: u32) -> Vec<sock_filter> {
    let net = libc::SKF_NET_OFF as u32;
    let mut ops = Vec::with_capacity(4);
    if v6 {
        // A = the source port, right after the 40-byte header.
        ops.push(op(
            libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
            net.wrapping_add(40),
        ));
    } else {
        // X = the header's length (4 * IHL); A = the source port after it.
        ops.push(op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, net));
        ops.push(op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, net));
    }
    ops.push(op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, sockets));
    ops.push(op(libc::BPF_RET | libc::BPF_A, 0));
    ops
}

/// Makes the reuseport group of `fd` (bound to an address of family `v6`
/// or IPv4) send each datagram to socket `source port % sockets`, the
/// sockets numbered in the order they joined the group.
pub(super) fn steer_by_source_port(fd: RawFd, v6: bool, sockets: usize) -> io::Result<()> {
    let sockets = u32::try_from(sockets.max(1)).unwrap_or(u32::MAX);
    let mut ops = program(v6, sockets);
    attach_cbpf(fd, SO_ATTACH_REUSEPORT_CBPF, &mut ops)
}
