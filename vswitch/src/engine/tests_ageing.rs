//! Learned MACs and ARP entries under steady traffic, on a simulated clock:
//! the engine decides, the flow cache serves, housekeeping ages, exactly as
//! the datapath composes them, and nothing reads a real clock.

use super::*;
use crate::flows::{FlowCache, FlowKey};
use crate::learned::{LearnedTables, ARP_AGE_MS, MAC_AGE_MS};

/// How long an idle flow stays cached (the datapath's setting).
const FLOW_IDLE_MS: u64 = 30_000;

/// The datapath's decision loop without sockets: cache hit, or the engine
/// with its learnings recorded and its decision cached.
struct Switch {
    topo: Topology,
    flows: FlowCache,
    learned: LearnedTables,
    /// Packets that ran the engine after warm-up, and why.
    misses: Vec<String>,
}

impl Switch {
    fn new(topo: Topology) -> Switch {
        Switch {
            topo,
            flows: FlowCache::default(),
            learned: LearnedTables::default(),
            misses: Vec::new(),
        }
    }

    /// Forwards `frame` entering by `port` at `now`; returns the ports it
    /// leaves by (or the ports of what the devices generated).
    fn forward(&mut self, port: Uuid, frame: &[u8], now: u64) -> Vec<Uuid> {
        let key = FlowKey {
            in_port: port,
            packet: PacketInfo::parse(frame).unwrap(),
        };
        let mut outputs = Vec::new();
        if self.flows.lookup(&key, now, &mut outputs) {
            return outputs.iter().map(|o| o.egress.port).collect();
        }
        let sim = simulate(&self.topo, &self.learned, port, frame);
        self.misses.push(format!(
            "t={now} ms {}: {:?}",
            sim.verdict(),
            sim.trace.last().map(|s| &s.detail)
        ));
        for learning in &sim.learned {
            let tags = self.learned.learn(learning, now);
            self.flows.invalidate(&tags);
        }
        if sim.is_cacheable() {
            self.flows
                .insert(key, sim.outputs.clone(), sim.tags.clone(), vec![], now, 0);
        }
        let mut out: Vec<Uuid> = sim.outputs.iter().map(|o| o.egress.port).collect();
        out.extend(sim.generated.iter().map(|g| g.egress.port));
        out
    }

    fn tick(&mut self, now: u64) {
        self.learned.age(&self.flows, now, FLOW_IDLE_MS);
    }
}

/// MACs behind the pods' ports that the NSDB does not know (learned only).
const HIDDEN_1: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x51];
const HIDDEN_2: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x52];

#[test]
fn learned_macs_live_as_long_as_traffic_uses_them() {
    let mut sw = Switch::new(open_topology());
    let there = ping(HIDDEN_1, HIDDEN_2, "10.0.1.10", "10.0.1.11", 64);
    let back = ping(HIDDEN_2, HIDDEN_1, "10.0.1.11", "10.0.1.10", 64);
    // Warm-up: the first frame floods, the answer is forwarded, both learned.
    sw.forward(POD_A1, &there, 0);
    assert_eq!(sw.forward(POD_A2, &back, 0), vec![POD_A1]);
    assert_eq!(sw.forward(POD_A1, &there, 0), vec![POD_A2]);
    assert_eq!(sw.forward(POD_A2, &back, 0), vec![POD_A1]);
    sw.misses.clear();

    // Twenty minutes of steady traffic, a packet each way per second.
    for second in 1..=1_200u64 {
        let now = second * 1_000;
        assert_eq!(sw.forward(POD_A1, &there, now), vec![POD_A2], "t={now}");
        assert_eq!(sw.forward(POD_A2, &back, now), vec![POD_A1], "t={now}");
        sw.tick(now);
    }
    assert!(
        sw.misses.is_empty(),
        "steady traffic never floods or re-runs the engine: {:#?}",
        sw.misses
    );
    assert_eq!(sw.learned.mac_port(BRIDGE_A, HIDDEN_1), Some(POD_A1));
    assert_eq!(sw.learned.mac_port(BRIDGE_A, HIDDEN_2), Some(POD_A2));

    // Silence: the entries live their full age after the last packet, and
    // then go.
    let quiet = 1_200_000 + MAC_AGE_MS;
    sw.tick(1_200_000 + FLOW_IDLE_MS);
    sw.tick(quiet - 1_000);
    assert_eq!(sw.learned.mac_port(BRIDGE_A, HIDDEN_1), Some(POD_A1));
    sw.tick(quiet + 1_000);
    assert_eq!(sw.learned.mac_port(BRIDGE_A, HIDDEN_1), None);
    assert_eq!(sw.learned.mac_port(BRIDGE_A, HIDDEN_2), None);
}

#[test]
fn arp_entries_live_as_long_as_routed_traffic_uses_them() {
    let mut sw = Switch::new(open_topology());
    let a1: std::net::IpAddr = "10.0.1.10".parse().unwrap();
    let b1: std::net::IpAddr = "10.0.2.10".parse().unwrap();
    let there = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10", 64);
    let back = ping(mac(3), mac(0xb1), "10.0.2.10", "10.0.1.10", 64);
    // The router resolves each pod when it first routes to it.
    let answer = |from: [u8; 6], ip: std::net::IpAddr, router_mac: [u8; 6], gateway: &str| {
        let std::net::IpAddr::V4(ip) = ip else {
            unreachable!("IPv4 pods")
        };
        frames::arp_reply(from, ip, router_mac, gateway.parse().unwrap())
    };
    sw.forward(POD_A1, &there, 0);
    sw.forward(POD_B1, &answer(mac(3), b1, mac(0xb1), "10.0.2.1"), 0);
    sw.forward(POD_B1, &back, 0);
    sw.forward(POD_A1, &answer(mac(1), a1, mac(0xa1), "10.0.1.1"), 0);
    assert_eq!(sw.learned.arp(ROUTER, a1), Some(mac(1)));
    assert_eq!(sw.learned.arp(ROUTER, b1), Some(mac(3)));
    for _ in 0..2 {
        assert_eq!(sw.forward(POD_A1, &there, 0), vec![POD_B1]);
        assert_eq!(sw.forward(POD_B1, &back, 0), vec![POD_A1]);
    }
    sw.misses.clear();

    // Half an hour of routed traffic: three ARP lifetimes.
    for second in 1..=1_800u64 {
        let now = second * 1_000;
        assert_eq!(sw.forward(POD_A1, &there, now), vec![POD_B1], "t={now}");
        assert_eq!(sw.forward(POD_B1, &back, now), vec![POD_A1], "t={now}");
        sw.tick(now);
    }
    assert!(
        sw.misses.is_empty(),
        "no ARP wait in the middle of a flow: {:#?}",
        sw.misses
    );
    assert_eq!(sw.learned.arp(ROUTER, b1), Some(mac(3)));

    let quiet = 1_800_000 + ARP_AGE_MS;
    sw.tick(quiet - 1_000);
    assert_eq!(sw.learned.arp(ROUTER, b1), Some(mac(3)));
    sw.tick(quiet + 1_000);
    assert_eq!(
        sw.learned.arp(ROUTER, b1),
        None,
        "unused entries still age out"
    );
}
