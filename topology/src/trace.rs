//! Rendering a simulation as a trace: each device the packet crossed, what
//! it matched and changed, where the packet went, and the final verdict.

use std::fmt::Write;

use serde_json::{json, Value};
use uuid::Uuid;
use vswitch::engine::{Rewrite, TraceRecord};
use vswitch::snapshot::Device;

use crate::dump::Names;

/// Replaces every UUID in `text` by the name `names` knows for it.
fn with_names(text: &str, names: &Names) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_hexdigit()) {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        match candidate.get(..36).and_then(|s| Uuid::parse_str(s).ok()) {
            Some(id) if candidate.as_bytes().get(8) == Some(&b'-') => {
                out.push_str(&names.name(id));
                rest = &candidate[36..];
            }
            _ => {
                let len = candidate.chars().next().map_or(1, char::len_utf8);
                out.push_str(&candidate[..len]);
                rest = &candidate[len..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn device_name(device: &Device, names: &Names) -> String {
    match device {
        Device::Bridge(id) | Device::Router(id) => names.describe(*id),
    }
}

fn mac(m: &[u8; 6]) -> String {
    nsdb::MacAddr(*m).to_string()
}

fn describe_rewrite(rewrite: &Rewrite) -> String {
    let mut parts = Vec::new();
    if let Some(src) = rewrite.eth_src {
        parts.push(format!("eth.src={}", mac(&src)));
    }
    if let Some(dst) = rewrite.eth_dst {
        parts.push(format!("eth.dst={}", mac(&dst)));
    }
    if rewrite.ttl_decrement > 0 {
        parts.push(format!("ttl-{}", rewrite.ttl_decrement));
    }
    if let Some(src) = rewrite.ip_src {
        parts.push(format!("ip.src={src}"));
    }
    if let Some(dst) = rewrite.ip_dst {
        parts.push(format!("ip.dst={dst}"));
    }
    if let Some(port) = rewrite.src_port {
        parts.push(format!("l4.src={port}"));
    }
    if let Some(port) = rewrite.dst_port {
        parts.push(format!("l4.dst={port}"));
    }
    if parts.is_empty() {
        "unchanged".into()
    } else {
        parts.join(" ")
    }
}

/// The trace as text, one block per device crossed.
pub fn render_trace(record: &TraceRecord, names: &Names) -> String {
    let mut out = String::new();
    let mut current: Option<Device> = None;
    for step in &record.steps {
        if step.device != current || step.stage == vswitch::engine::Stage::Ingress {
            if let Some(device) = &step.device {
                let _ = writeln!(out, "{}", device_name(device, names));
            }
            current = step.device;
        }
        let _ = writeln!(
            out,
            "    {}: {}",
            step.stage,
            with_names(&step.detail, names)
        );
    }
    let _ = writeln!(out, "verdict: {}", record.verdict);
    for output in &record.outputs {
        let _ = writeln!(
            out,
            "    deliver to port {} ({})",
            names.name(output.port),
            describe_rewrite(&output.rewrite)
        );
    }
    for reply in &record.replies {
        let _ = writeln!(
            out,
            "    reply of {} bytes out of port {}",
            reply.bytes,
            names.name(reply.port)
        );
    }
    for drop in &record.drops {
        let _ = writeln!(out, "    dropped: {drop}");
    }
    // A rule's drop or reject names the rule: the last one that matched.
    let by_rule = record
        .drops
        .iter()
        .any(|d| d == "RuleDrop" || d == "RuleReject");
    if let Some(hit) = record.rules.last().filter(|_| by_rule) {
        let _ = writeln!(
            out,
            "    by {} in {}",
            names.describe(hit.rule),
            names.describe(hit.chain)
        );
    }
    if let Some((router, ip)) = record.held_for {
        let _ = writeln!(
            out,
            "    held until {} resolves {ip}",
            names.describe(router)
        );
    }
    out
}

/// The trace as JSON.
pub fn trace_json(record: &TraceRecord, names: &Names) -> Value {
    let device = |d: &Option<Device>| match d {
        Some(Device::Bridge(id)) => json!({"type": "bridge", "id": id, "name": names.name(*id)}),
        Some(Device::Router(id)) => json!({"type": "router", "id": id, "name": names.name(*id)}),
        None => Value::Null,
    };
    json!({
        "verdict": record.verdict,
        "steps": record.steps.iter().map(|s| json!({
            "device": device(&s.device),
            "port": s.port,
            "stage": s.stage,
            "detail": with_names(&s.detail, names),
        })).collect::<Vec<_>>(),
        "outputs": record.outputs.iter().map(|o| json!({
            "port": o.port,
            "host": o.host,
            "rewrite": describe_rewrite(&o.rewrite),
        })).collect::<Vec<_>>(),
        "replies": record.replies.iter().map(|r| json!({"port": r.port, "bytes": r.bytes})).collect::<Vec<_>>(),
        "drops": record.drops,
        "rules": record.rules.iter().map(|r| json!({
            "chain": r.chain,
            "rule": r.rule,
            "name": names.name(r.rule),
        })).collect::<Vec<_>>(),
        "held_for": record.held_for.map(|(router, ip)| json!({"router": router, "ip": ip})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsdb::{
        Bridge, Chain, DeviceType, Host, MacAddr, NatTarget, Port, Record, Rule, RuleAction, Tenant,
    };
    use vswitch::engine::{simulate, NothingLearned};
    use vswitch::probe::{Probe, ProbeProtocol};
    use vswitch::snapshot::Topology;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n << 96)
    }

    fn pod(n: u128, mac: u8) -> Port {
        Port {
            id: id(n),
            revision: 1,
            device_id: id(2),
            device_type: DeviceType::Bridge,
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            address: None,
            extra_addresses: Vec::new(),
            peer_id: None,
            host_id: Some(id(3)),
            interface_name: Some(format!("veth{mac}")),
            inbound_chain_id: None,
            outbound_chain_id: None,
            allowed_addresses: Vec::new(),
            tunnel_key: n as u32,
            vtep: None,
            labels: Default::default(),
        }
    }

    /// Bridge `web` of tenant acme with pods 00000004 and 00000005 on host
    /// node1; `rules` go in chain `pod-in` (id 6), pod 00000004's inbound
    /// chain, when there are any.
    fn web(rules: Vec<Rule>) -> Vec<Record> {
        let mut records = vec![
            Record::Tenant(Tenant {
                id: id(1),
                revision: 1,
                name: "acme".into(),
                network: None,
            }),
            Record::Bridge(Bridge {
                id: id(2),
                revision: 1,
                tenant_id: id(1),
                name: "web".into(),
                admin_state_up: true,
                inbound_chain_id: None,
                outbound_chain_id: None,
                tunnel_key: 0,
            }),
            Record::Host(Host {
                id: id(3),
                revision: 1,
                name: "node1".into(),
                tunnel_ip: "192.0.2.1".parse().unwrap(),
                underlay_mtu: 1500,
                alive: true,
            }),
            Record::Port(Port {
                inbound_chain_id: (!rules.is_empty()).then_some(id(6)),
                ..pod(4, 1)
            }),
            Record::Port(pod(5, 2)),
        ];
        if !rules.is_empty() {
            records.push(Record::Chain(Chain {
                id: id(6),
                revision: 1,
                tenant_id: id(1),
                name: "pod-in".into(),
            }));
        }
        records.extend(rules.into_iter().map(Record::Rule));
        records
    }

    /// Rule `position` of chain `pod-in` (id 6 + position).
    fn rule(position: u32, action: RuleAction, description: &str) -> Rule {
        Rule {
            id: id(6 + u128::from(position)),
            description: description.into(),
            ..Rule::new(id(6), position, action)
        }
    }

    /// UDP from pod 00000004 to pod 00000005 (IPv4 or IPv6), port 53.
    fn dns(v6: bool) -> Vec<u8> {
        let (src_ip, dst_ip) = if v6 {
            (
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
        } else {
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        };
        Probe {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip,
            dst_ip,
            protocol: ProbeProtocol::Udp,
            src_port: 5000,
            dst_port: 53,
            ttl: 64,
        }
        .frame()
        .unwrap()
    }

    fn rendered(records: &[Record], frame: &[u8]) -> (String, Value) {
        let topo = Topology::build(1, records);
        let sim = simulate(&topo, &NothingLearned, id(4), frame);
        let record = TraceRecord::from(&sim);
        let names = Names::of(records);
        (render_trace(&record, &names), trace_json(&record, &names))
    }

    #[test]
    fn renders_an_l2_trace_exactly() {
        let records = web(Vec::new());
        let expected = "\
bridge web
    ingress: bridge web in port 00000004
    l2_lookup: 02:00:00:00:00:02 → port 00000005 (known to the NSDB)
    output: out port 00000005 on host node1
verdict: deliver
    deliver to port 00000005 (unchanged)
";
        let (text, json) = rendered(&records, &dns(false));
        assert_eq!(text, expected);
        assert_eq!(json["verdict"], "deliver");
        assert_eq!(json["steps"][1]["stage"], "l2_lookup");
    }

    /// Each case: the rules, the frame, the exact text. A rule is named
    /// once, by the renderer, as `chain pod-in rule 1 (description)`.
    fn assert_renders(rules: Vec<Rule>, frame: &[u8], expected: &str) {
        let records = web(rules);
        let (text, json) = rendered(&records, frame);
        assert_eq!(text, expected);
        // The JSON's steps carry the same details.
        let details: Vec<String> = json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "    {}: {}",
                    s["stage"].as_str().unwrap(),
                    s["detail"].as_str().unwrap()
                )
            })
            .collect();
        for detail in details {
            assert!(
                text.contains(&format!("{detail}\n")),
                "{detail} not in\n{text}"
            );
        }
    }

    #[test]
    fn an_accept_names_the_rule_once() {
        assert_renders(
            vec![rule(1, RuleAction::Accept, "allow dns")],
            &dns(false),
            "\
bridge web
    ingress: bridge web in port 00000004
    chain: port 00000004 inbound chain pod-in rule 1 (allow dns): accept
    l2_lookup: 02:00:00:00:00:02 → port 00000005 (known to the NSDB)
    output: out port 00000005 on host node1
verdict: deliver
    deliver to port 00000005 (unchanged)
",
        );
    }

    #[test]
    fn a_rule_without_description_is_named_by_position() {
        assert_renders(
            vec![rule(1, RuleAction::Accept, "")],
            &dns(false),
            "\
bridge web
    ingress: bridge web in port 00000004
    chain: port 00000004 inbound chain pod-in rule 1: accept
    l2_lookup: 02:00:00:00:00:02 → port 00000005 (known to the NSDB)
    output: out port 00000005 on host node1
verdict: deliver
    deliver to port 00000005 (unchanged)
",
        );
    }

    #[test]
    fn a_drop_names_the_rule_once_in_the_step_and_once_in_the_verdict() {
        assert_renders(
            vec![rule(1, RuleAction::Drop, "no dns")],
            &dns(false),
            "\
bridge web
    ingress: bridge web in port 00000004
    chain: port 00000004 inbound chain pod-in rule 1 (no dns): drop
    drop: RuleDrop
verdict: drop
    dropped: RuleDrop
    by rule 1 (no dns) in chain pod-in
",
        );
    }

    #[test]
    fn an_ipv6_drop_names_the_rule_once() {
        assert_renders(
            vec![rule(1, RuleAction::Drop, "no dns")],
            &dns(true),
            "\
bridge web
    ingress: bridge web in port 00000004
    chain: port 00000004 inbound chain pod-in rule 1 (no dns): drop
    drop: RuleDrop
verdict: drop
    dropped: RuleDrop
    by rule 1 (no dns) in chain pod-in
",
        );
    }

    #[test]
    fn a_reject_names_the_rule_once() {
        assert_renders(
            vec![rule(1, RuleAction::Reject, "refuse dns")],
            &dns(false),
            "\
bridge web
    ingress: bridge web in port 00000004
    chain: port 00000004 inbound chain pod-in rule 1 (refuse dns): reject
    reject: ICMP port unreachable to the sender
    output: out port 00000004 on host node1
verdict: reply
    reply of 70 bytes out of port 00000004
    dropped: RuleReject
    by rule 1 (refuse dns) in chain pod-in
",
        );
    }

    #[test]
    fn a_dnat_names_the_rule_once_and_shows_the_translation() {
        let dnat = Rule {
            nat_targets: vec![NatTarget {
                address_from: "10.0.0.2".parse().unwrap(),
                address_to: None,
                port_from: Some(5353),
                port_to: None,
            }],
            ..rule(1, RuleAction::Dnat, "dns cache")
        };
        assert_renders(
            vec![dnat],
            &dns(false),
            "\
bridge web
    ingress: bridge web in port 00000004
    conntrack: new udp 10.0.0.1:5000 → 10.0.0.2:53
    chain: port 00000004 inbound chain pod-in rule 1 (dns cache): dnat
    nat: dnat udp 10.0.0.1:5000 → 10.0.0.2:53 → udp 10.0.0.1:5000 → 10.0.0.2:5353
    l2_lookup: 02:00:00:00:00:02 → port 00000005 (known to the NSDB)
    output: out port 00000005 on host node1
verdict: deliver
    deliver to port 00000005 (l4.dst=5353)
",
        );
    }

    #[test]
    fn an_ipv6_snat_names_the_rule_once_and_shows_the_translation() {
        let snat = Rule {
            nat_targets: vec![NatTarget {
                address_from: "2001:db8::99".parse().unwrap(),
                address_to: None,
                port_from: None,
                port_to: None,
            }],
            ..rule(2, RuleAction::Snat, "nat66")
        };
        let skip = rule(1, RuleAction::Continue, "log");
        assert_renders(
            vec![skip, snat],
            &dns(true),
            "\
bridge web
    ingress: bridge web in port 00000004
    conntrack: new udp [2001:db8::1]:5000 → [2001:db8::2]:53
    chain: port 00000004 inbound chain pod-in rule 1 (log): continue
    chain: port 00000004 inbound chain pod-in rule 2 (nat66): snat
    nat: snat udp [2001:db8::1]:5000 → [2001:db8::2]:53 → udp [2001:db8::99]:5000 → [2001:db8::2]:53
    l2_lookup: 02:00:00:00:00:02 → port 00000005 (known to the NSDB)
    output: out port 00000005 on host node1
verdict: deliver
    deliver to port 00000005 (ip.src=2001:db8::99)
",
        );
    }
}
