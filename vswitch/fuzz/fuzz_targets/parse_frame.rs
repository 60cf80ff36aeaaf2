//! libFuzzer target: the wire parsers must never panic on any input.
//!
//! Run with `cargo +nightly fuzz run parse_frame` from `vswitch/`.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vswitch::wire::{self, IcmpErrorKind};

fuzz_target!(|data: &[u8]| {
    // The whole frame, as the datapath sees it.
    if let Ok(frame) = wire::parse_frame(data) {
        let _ = frame.ports();
    }
    // Tunnel termination, then the inner frame.
    if let Ok((_, inner)) = wire::decap_vxlan(data) {
        let _ = wire::parse_frame(inner);
    }
    // The ICMP builders take the input as an IPv4 datagram.
    let mut out = [0u8; 1600];
    let _ = wire::emit_echo_reply(data, &mut out);
    let _ = wire::emit_error(
        IcmpErrorKind::TtlExceeded,
        data,
        Ipv4Addr::new(192, 0, 2, 1),
        &mut out,
    );
});
