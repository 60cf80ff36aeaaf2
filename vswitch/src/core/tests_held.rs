//! Frames the core holds, on a simulated clock: for a router's ARP
//! answer (released by an imported answer, answered with host unreachable
//! when the wait ends) and for a datagram's first fragment.

use super::*;

#[test]
fn a_frame_held_for_arp_goes_when_the_answer_is_imported() {
    let topo = topology();
    let core = core(H1);
    let mut actions = Vec::new();
    let mut frame = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.20");
    let fate = core.process(
        &topo,
        A1,
        &mut frame,
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Held);
    let mut asked: Vec<Uuid> = emitted(&actions).into_iter().map(|(to, _)| to).collect();
    asked.sort();
    assert_eq!(
        asked,
        vec![H2, H3],
        "the ARP request floods bridge B: B1, B2"
    );
    assert_eq!(core.stats().held_frames, 1);

    // Another host's router learned the answer; it arrives as state.
    actions.clear();
    let answer = Learning::Arp {
        router: ROUTER,
        ip: "10.0.2.20".parse().unwrap(),
        mac: mac(5),
    };
    core.import(&topo, &[answer], 40, &mut actions);
    assert_eq!(core.stats().held_frames, 0);
    let released = emitted(&actions);
    assert_eq!(released.len(), 1, "{actions:#?}");
    let (to, bytes) = &released[0];
    assert_eq!(*to, H3);
    assert_eq!(&bytes[..6], &mac(5), "to the MAC learned");
    assert_eq!(ipv4(bytes).ttl, 63);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::EmitTunnel { key: 5, .. })),
        "B2's key"
    );
}

#[test]
fn a_frame_held_for_arp_is_answered_host_unreachable_when_the_wait_ends() {
    let topo = topology();
    let core = core(H1);
    let mut actions = Vec::new();
    let sent = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.20");
    core.process(
        &topo,
        A1,
        &mut sent.clone(),
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    actions.clear();
    core.tick(&topo, HELD_FOR_MS - 1, &mut actions);
    assert!(actions.is_empty(), "still waiting: {actions:#?}");
    assert_eq!(core.stats().held_frames, 1);

    core.tick(&topo, HELD_FOR_MS, &mut actions);
    assert_eq!(core.stats().held_frames, 0);
    let answers = emitted(&actions);
    assert_eq!(answers.len(), 1, "{actions:#?}");
    let (to, bytes) = &answers[0];
    assert_eq!(*to, A1, "back to the sender's port");
    let ip = ipv4(bytes);
    assert_eq!(ip.icmp, Some((IcmpKind::Error, (3, 1))), "host unreachable");
    assert_eq!(ip.src.to_string(), "10.0.1.1");

    // Meanwhile the next hop has failed: the next packet is answered at once.
    actions.clear();
    let fate = core.process(
        &topo,
        A1,
        &mut sent.clone(),
        VnetHeader::NONE,
        HELD_FOR_MS + 10,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(
        fate,
        Fate::Answered,
        "the sender is told its next hop never answered"
    );
    assert_eq!(emitted(&actions).len(), 1);
    assert_eq!(core.stats().held_frames, 0, "not held again");
}

/// Fragments of one UDP datagram A1 → A3 (ident 0x4242): the first (ports
/// inside) and a later one (16 bytes at offset 1480).
fn fragments() -> (Vec<u8>, Vec<u8>) {
    let mut first = probe(mac(1), mac(4), "10.0.1.10", "10.0.1.12", ProbeProtocol::Udp)
        .frame()
        .unwrap();
    let mut ip = Ipv4Packet::new_unchecked(&mut first[14..]);
    ip.set_ident(0x4242);
    ip.set_dont_frag(false);
    ip.set_more_frags(true);
    ip.fill_checksum();
    let mut later = first[..34].to_vec();
    later.extend_from_slice(&[0xab; 16]);
    let mut ip = Ipv4Packet::new_unchecked(&mut later[14..]);
    ip.set_total_len(20 + 16);
    ip.set_more_frags(false);
    ip.set_frag_offset(1480);
    ip.fill_checksum();
    (first, later)
}

#[test]
fn a_later_fragment_waits_until_its_first_passes() {
    // A3's chain tracks connections: bridge A is a tracking zone.
    let topo = only_established_from(A3);
    let core = core(H1);
    let mut actions = Vec::new();
    let (first, later) = fragments();
    let fate = core.process(
        &topo,
        A1,
        &mut later.clone(),
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Held);
    assert_eq!(
        actions,
        vec![Action::Drop(DropReason::FragmentPending.into())]
    );
    assert_eq!(core.stats().held_fragments, 1);

    actions.clear();
    let fate = core.process(
        &topo,
        A1,
        &mut first.clone(),
        VnetHeader::NONE,
        10,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Sent);
    assert_eq!(forwards(&actions), vec![A3]);
    assert_eq!(
        emitted(&actions),
        vec![(A3, later.clone())],
        "released behind it"
    );
    assert_eq!(core.stats().held_fragments, 0);

    // A later fragment whose first never comes is given up and counted.
    let (_, mut orphan) = fragments();
    Ipv4Packet::new_unchecked(&mut orphan[14..]).set_ident(0x4343);
    Ipv4Packet::new_unchecked(&mut orphan[14..]).fill_checksum();
    actions.clear();
    core.process(
        &topo,
        A1,
        &mut orphan,
        VnetHeader::NONE,
        100,
        &mut CoreScratch::default(),
        &mut actions,
    );
    actions.clear();
    core.tick(&topo, 100 + FRAGMENT_HELD_FOR_MS - 1, &mut actions);
    assert!(actions.is_empty());
    core.tick(&topo, 100 + FRAGMENT_HELD_FOR_MS, &mut actions);
    assert_eq!(actions, vec![Action::Drop(Reason::FragmentTimeout)]);
    assert_eq!(core.stats().held_fragments, 0);
}
