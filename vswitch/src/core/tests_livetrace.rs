//! Live trace in the core: only matching packets are recorded, hits as
//! well as misses, with the engine's steps, within the request's limit;
//! the first recording marks the frame's tunnel datagrams.

use nsdb::{LiveTraceRequest, TraceMatch};
use uuid::Uuid;

use super::*;

const REQUEST: Uuid = Uuid::from_u128(0x7ace_0001);

fn request(matcher: TraceMatch, limit_packets: u32) -> LiveTraceRequest {
    LiveTraceRequest {
        id: REQUEST,
        tenant_id: None,
        matcher,
        limit_packets,
        expires_at_ms: u64::MAX,
        lease: 7,
    }
}

/// Processes A1's ping to B1 (across the router, to H2) on `core`; returns
/// the actions.
fn ping_b1(core: &DatapathCore, topo: &Topology, now: u64) -> Vec<Action> {
    let mut frame = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10");
    let mut actions = Vec::new();
    let mut scratch = CoreScratch::default();
    let fate = core.process(
        topo,
        A1,
        &mut frame,
        VnetHeader::NONE,
        now,
        &mut scratch,
        &mut actions,
    );
    assert_eq!(fate, Fate::Sent, "{actions:#?}");
    actions
}

fn traced(actions: &[Action]) -> Vec<&LiveTraceEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Traced(event) => Some(&**event),
            _ => None,
        })
        .collect()
}

#[test]
fn matching_packets_are_recorded_on_miss_and_hit_within_the_limit() {
    let topo = topology();
    let core = core(H1);
    assert!(
        traced(&ping_b1(&core, &topo, 0)).is_empty(),
        "no request: nothing"
    );
    core.invalidate(&[Tag::Port(A1)]);
    core.set_trace_requests(vec![request(
        TraceMatch {
            dst_ip: Some("10.0.2.10/32".parse().unwrap()),
            protocol: Some(1),
            ..TraceMatch::default()
        },
        2,
    )]);
    let mut steps = Vec::new();
    for (n, flow) in [(0, FlowUse::Miss), (1, FlowUse::Hit)] {
        let actions = ping_b1(&core, &topo, n);
        let events = traced(&actions);
        assert_eq!(events.len(), 1, "{actions:#?}");
        assert!(
            matches!(actions[0], Action::Traced(_)),
            "the event comes first"
        );
        let event = events[0];
        assert_eq!(
            (event.request, event.host, event.seq),
            (REQUEST, H1, n as u32)
        );
        let TraceEventKind::Decided {
            in_port,
            flow: used,
            fate,
            trace,
            tunnel_tag,
        } = &event.kind
        else {
            panic!("{event:?}")
        };
        assert_eq!((*in_port, *used, fate.as_str()), (A1, flow, "sent"));
        assert_eq!(trace.verdict, "deliver");
        assert!(trace.crosses(ROUTER) && trace.crosses(BRIDGE_B));
        assert_eq!(
            *tunnel_tag,
            Some(TunnelTag {
                request_byte: REQUEST.as_bytes()[15],
                seq: n as u32
            })
        );
        steps.push(trace.steps.clone());
    }
    assert_eq!(steps[0], steps[1], "a hit shows the steps of the miss");
    assert!(
        traced(&ping_b1(&core, &topo, 2)).is_empty(),
        "limit of 2 reached"
    );
}

#[test]
fn packets_that_match_no_request_are_not_recorded() {
    let topo = topology();
    let core = core(H1);
    for matcher in [
        TraceMatch {
            protocol: Some(6),
            dst_port: Some(9999),
            ..TraceMatch::default()
        },
        TraceMatch {
            port_id: Some(A3),
            ..TraceMatch::default()
        },
        TraceMatch {
            device_id: Some(Uuid::from_u128(0xdead)),
            ..TraceMatch::default()
        },
    ] {
        core.set_trace_requests(vec![request(matcher.clone(), 100)]);
        for now in 0..2 {
            let actions = ping_b1(&core, &topo, now);
            assert!(traced(&actions).is_empty(), "{matcher:?}: {actions:#?}");
        }
    }
    // By device and by egress port, on a hit too.
    for matcher in [
        TraceMatch {
            device_id: Some(BRIDGE_B),
            ..TraceMatch::default()
        },
        TraceMatch {
            port_id: Some(B1),
            ..TraceMatch::default()
        },
    ] {
        core.set_trace_requests(Vec::new());
        core.set_trace_requests(vec![request(matcher.clone(), 100)]);
        let actions = ping_b1(&core, &topo, 5);
        assert_eq!(traced(&actions).len(), 1, "{matcher:?}: {actions:#?}");
    }
}

#[test]
fn a_marked_delivery_is_recorded_for_the_request_it_names() {
    let core = core(H2);
    assert!(core
        .trace_delivery(
            Some(H1),
            TunnelTag {
                request_byte: 1,
                seq: 0
            },
            &[B1]
        )
        .is_empty());
    core.set_trace_requests(vec![request(TraceMatch::default(), 1)]);
    let tag = TunnelTag {
        request_byte: REQUEST.as_bytes()[15],
        seq: 4,
    };
    let other = TunnelTag {
        request_byte: tag.request_byte.wrapping_add(1),
        seq: 4,
    };
    assert!(core.trace_delivery(Some(H1), other, &[B1]).is_empty());
    for _ in 0..3 {
        let events = core.trace_delivery(Some(H1), tag, &[B1]);
        assert_eq!(events.len(), 1, "deliveries follow the sender's limit");
        assert_eq!(
            events[0].kind,
            TraceEventKind::Delivered {
                from_host: Some(H1),
                tunnel_tag: tag,
                ports: vec![B1],
            }
        );
        assert!(
            events[0].seq >= 1 << 31,
            "apart from decided packets' numbers"
        );
    }
}

#[test]
fn a_frame_too_big_for_the_tunnel_shows_the_refusal_as_its_last_step() {
    let topo = topology();
    let core = core(H1);
    core.set_trace_requests(vec![request(TraceMatch::default(), 5)]);
    let mut big = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10");
    big.resize(14 + 1500, 0);
    let mut ip = crate::wire::Ipv4Packet::new_unchecked(&mut big[14..]);
    ip.set_total_len(1500);
    ip.fill_checksum();
    let mut actions = Vec::new();
    let mut scratch = CoreScratch::default();
    let fate = core.process(
        &topo,
        A1,
        &mut big,
        VnetHeader::NONE,
        0,
        &mut scratch,
        &mut actions,
    );
    assert_eq!(fate, Fate::Answered);
    let events = traced(&actions);
    let TraceEventKind::Decided { fate, trace, .. } = &events[0].kind else {
        panic!("{events:?}")
    };
    assert_eq!(
        (fate.as_str(), trace.verdict.as_str()),
        ("answered", "reply")
    );
    let last = trace.steps.last().unwrap();
    assert_eq!(last.stage, crate::engine::Stage::Tunnel);
    assert!(last.detail.contains("1450"), "{}", last.detail);
    assert!(trace.outputs.is_empty());
}
