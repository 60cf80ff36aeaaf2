//! Fragments through a tracking, translating router: every fragment of a
//! datagram belongs to its first fragment's connection, so every one is
//! translated; a later fragment ahead of its first waits for it.

use super::policy::{ip_of, learn, masquerading, udp};
use super::*;
use crate::learned::LearnedTables;
use crate::wire::Ipv4Packet;

const DATAGRAM: u16 = 0x4242;

/// The first fragment of a UDP datagram from POD_A1 to POD_B1 (port 53).
fn first_fragment() -> Vec<u8> {
    let mut frame = udp(mac(1), mac(0xa1), "10.0.1.10", 40000, "10.0.2.10", 53);
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_ident(DATAGRAM);
    ip.set_dont_frag(false);
    ip.set_more_frags(true);
    ip.fill_checksum();
    frame
}

/// A later fragment of the same datagram: 16 bytes of data at offset 1480.
fn later_fragment() -> Vec<u8> {
    let mut frame = first_fragment();
    frame.truncate(14 + 20);
    frame.extend_from_slice(&[0xab; 16]);
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_total_len(20 + 16);
    ip.set_more_frags(false);
    ip.set_frag_offset(1480);
    ip.fill_checksum();
    frame
}

#[test]
fn later_fragments_are_translated_with_their_first() {
    let topo = masquerading();
    let mut tables = LearnedTables::default();
    let first = simulate(&topo, &tables, POD_A1, &first_fragment());
    assert_eq!(out_ports(&first), vec![POD_B1], "{:#?}", first.trace);
    assert_eq!(
        first.outputs[0].rewrite.ip_src,
        Some("10.0.2.1".parse().unwrap())
    );
    assert!(first
        .learned
        .iter()
        .any(|l| matches!(l, Learning::Fragment { key, ports: (40000, 53), .. } if key.id == u32::from(DATAGRAM))));
    learn(&mut tables, &first);

    let later = simulate(&topo, &tables, POD_A1, &later_fragment());
    assert_eq!(out_ports(&later), vec![POD_B1], "{:#?}", later.trace);
    let rewrite = later.outputs[0].rewrite;
    assert_eq!(rewrite.ip_src, Some("10.0.2.1".parse().unwrap()));
    // The bytes leave translated, the data untouched.
    let mut bytes = later_fragment();
    assert!(apply_rewrite(&mut bytes, &rewrite, false));
    let sent = ip_of(&bytes);
    assert_eq!(sent.src.to_string(), "10.0.2.1");
    assert!(sent.checksum_valid);
    assert_eq!(&bytes[34..], &[0xab; 16]);
}

#[test]
fn a_later_fragment_first_waits_and_never_leaves_untranslated() {
    let topo = masquerading();
    let mut tables = LearnedTables::default();
    let early = simulate(&topo, &tables, POD_A1, &later_fragment());
    assert!(early.outputs.is_empty(), "{:#?}", early.trace);
    assert_eq!(early.drops, vec![DropReason::FragmentPending]);
    let (zone, key) = early.held_fragment.expect("held for its first fragment");
    assert_eq!((zone, key.id), (ROUTER, u32::from(DATAGRAM)));
    assert!(!early.is_cacheable());

    // Once the first fragment has passed, the held one goes, translated.
    let first = simulate(&topo, &tables, POD_A1, &first_fragment());
    learn(&mut tables, &first);
    let released = simulate(&topo, &tables, POD_A1, &later_fragment());
    assert_eq!(
        released.outputs[0].rewrite.ip_src,
        Some("10.0.2.1".parse().unwrap())
    );
}

#[test]
fn fragments_pass_a_stateless_bridge_as_before() {
    let topo = topology();
    let later = simulate(&topo, &NothingLearned, POD_A1, &{
        let mut frame = later_fragment();
        frame[..6].copy_from_slice(&mac(2));
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
        ip.set_dst_addr("10.0.1.11".parse().unwrap());
        ip.fill_checksum();
        frame
    });
    assert_eq!(out_ports(&later), vec![POD_A2], "{:#?}", later.trace);
    assert_eq!(later.held_fragment, None);
}
