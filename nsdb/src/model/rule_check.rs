//! The checks a rule must pass on its own: its action's fields, NAT
//! targets (one family per range, of the family the rule can match),
//! prefixes, port and ICMP conditions, inversions and description.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::rule::{NatTarget, Rule, RuleAction};
use super::rule_values::IpProto;

fn check_prefix(field: &'static str, net: &IpNet) -> Result<(), (&'static str, String)> {
    if net.trunc() != *net {
        return Err((
            field,
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(())
}

fn no_duplicates<T: PartialEq + fmt::Debug>(
    field: &'static str,
    items: &[T],
) -> Result<(), (&'static str, String)> {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err((field, format!("{item:?} is listed twice")));
        }
    }
    Ok(())
}

/// Checks one NAT target of `r`: one family per range, unicast, ascending,
/// and of the family the rule's conditions match (if they name one).
fn check_nat_target(r: &Rule, target: &NatTarget) -> Result<(), (&'static str, String)> {
    let (from, to) = target.addresses();
    if from.is_ipv4() != to.is_ipv4() {
        return Err((
            "nat_targets",
            format!(
                "address range {from}-{to} mixes IPv4 and IPv6; give each family its own target"
            ),
        ));
    }
    if from > to {
        return Err((
            "nat_targets",
            format!("address range {from}-{to} ends before it starts"),
        ));
    }
    let unicast = match from {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => {
            !(v6.is_unspecified() || v6.is_multicast() || v6.is_loopback())
                && v6.segments()[0] & 0xffc0 != 0xfe80
        }
    };
    if !unicast {
        return Err((
            "nat_targets",
            match from {
                IpAddr::V4(_) => format!("{from} is not a unicast address"),
                IpAddr::V6(_) => format!(
                    "{from} is not a global unicast address (not unspecified, loopback, multicast or link-local)"
                ),
            },
        ));
    }
    let version = if from.is_ipv4() { 4 } else { 6 };
    if let Some(matched) = r.matched_ip_version().filter(|v| *v != version) {
        return Err((
            "nat_targets",
            format!(
                "{from} is IPv{version} but the rule matches IPv{matched} packets only; it would never translate"
            ),
        ));
    }
    if let Some((pf, pt)) = target.ports() {
        if pf == 0 || pf > pt {
            return Err((
                "nat_targets",
                format!("port range {pf}-{pt} must be within 1-65535 and ascending"),
            ));
        }
    }
    Ok(())
}

/// Checks the rules a rule must satisfy on its own.
pub(crate) fn validate_rule(r: &Rule) -> Result<(), (&'static str, String)> {
    if let Some(version) = r.ip_version.filter(|v| *v != 4 && *v != 6) {
        return Err(("ip_version", format!("{version} is neither 4 nor 6")));
    }
    match (r.action, r.jump_chain_id) {
        (RuleAction::Jump, None) => return Err(("jump_chain_id", "is required for jump".into())),
        (RuleAction::Jump, Some(target)) if target == r.chain_id => {
            return Err((
                "jump_chain_id",
                format!(
                    "a chain cannot jump to itself (loop: {} → {})",
                    r.chain_id, r.chain_id
                ),
            ))
        }
        (RuleAction::Jump, Some(_)) => {}
        (_, Some(_)) => return Err(("jump_chain_id", "is only allowed for jump".into())),
        (_, None) => {}
    }
    match r.action {
        RuleAction::Snat | RuleAction::Dnat if r.nat_targets.is_empty() => {
            return Err((
                "nat_targets",
                format!("{:?} needs at least one target", r.action).to_lowercase(),
            ));
        }
        RuleAction::Snat | RuleAction::Dnat => {}
        _ if !r.nat_targets.is_empty() => {
            return Err((
                "nat_targets",
                "is only allowed for snat and dnat (masquerade uses the egress port's address)"
                    .into(),
            ))
        }
        _ => {}
    }
    for target in &r.nat_targets {
        check_nat_target(r, target)?;
    }
    if let Some(net) = &r.src_cidr {
        check_prefix("src_cidr", net)?;
    }
    if let Some(net) = &r.dst_cidr {
        check_prefix("dst_cidr", net)?;
    }
    let transport = matches!(
        r.protocol,
        Some(IpProto::TCP | IpProto::UDP) | Some(IpProto(132))
    );
    for (field, set) in [
        ("src_ports", r.src_ports.is_some()),
        ("dst_ports", r.dst_ports.is_some()),
    ] {
        if set && !transport {
            return Err((field, "needs protocol tcp, udp or sctp".into()));
        }
    }
    for (field, set) in [
        ("icmp_type", r.icmp_type.is_some()),
        ("icmp_code", r.icmp_code.is_some()),
    ] {
        if set && !matches!(r.protocol, Some(IpProto::ICMP | IpProto::ICMPV6)) {
            return Err((field, "needs protocol icmp or icmpv6".into()));
        }
    }
    no_duplicates("in_port_ids", &r.in_port_ids)?;
    no_duplicates("out_port_ids", &r.out_port_ids)?;
    no_duplicates("conn_state", &r.conn_state)?;
    no_duplicates("invert", &r.invert)?;
    for condition in &r.invert {
        if !r.has(*condition) {
            return Err((
                "invert",
                format!(
                    "names {} but the rule has no {} condition to negate",
                    condition.as_str(),
                    condition.as_str()
                ),
            ));
        }
    }
    if r.description.len() > 1024 || r.description.chars().any(char::is_control) {
        return Err((
            "description",
            "must be at most 1024 bytes without control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::super::rule::Condition;
    use super::super::rule_values::{EthType, PortRange};
    use super::*;

    fn rule(json: serde_json::Value) -> Result<Rule, String> {
        let mut base = serde_json::json!({
            "id": Uuid::from_u128(1), "chain_id": Uuid::from_u128(2), "position": 1
        });
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        let rule: Rule = serde_json::from_value(base).map_err(|e| e.to_string())?;
        validate_rule(&rule).map_err(|(f, e)| format!("{f}: {e}"))?;
        Ok(rule)
    }

    #[test]
    fn conditions_parse_from_names_numbers_and_ranges() {
        let r = rule(serde_json::json!({
            "action": "drop", "protocol": "tcp", "dst_ports": "1000-2000", "src_ports": 22,
            "eth_type": "0x0800", "conn_state": ["new"], "invert": ["dst_ports"]
        }))
        .unwrap();
        assert_eq!(r.protocol, Some(IpProto::TCP));
        assert_eq!(
            r.dst_ports,
            Some(PortRange {
                start: 1000,
                end: 2000
            })
        );
        assert_eq!(r.src_ports, Some(PortRange { start: 22, end: 22 }));
        assert_eq!(r.eth_type, Some(EthType(0x0800)));
        assert!(r.inverted(Condition::DstPorts));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["protocol"], "tcp");
        assert_eq!(back["dst_ports"], "1000-2000");
        assert_eq!(back["eth_type"], "ipv4");
        assert!(
            back.get("nat_targets").is_none(),
            "empty fields are left out"
        );
        assert_eq!(
            rule(serde_json::json!({"action":"accept","protocol":132}))
                .unwrap()
                .protocol,
            Some(IpProto(132))
        );
    }

    #[test]
    fn ip_version_is_4_or_6() {
        let r = rule(serde_json::json!({"action": "drop", "ip_version": 6})).unwrap();
        assert!(r.has(Condition::IpVersion));
        assert_eq!(serde_json::to_value(&r).unwrap()["ip_version"], 6);
        let err = rule(serde_json::json!({"action": "drop", "ip_version": 5})).unwrap_err();
        assert!(err.starts_with("ip_version:"), "{err}");
    }

    #[test]
    fn nat_targets_may_be_ipv6_one_family_per_range() {
        let r = rule(serde_json::json!({"action": "snat", "nat_targets": [
            {"address_from": "2001:db8::1", "address_to": "2001:db8::ff", "port_from": 1024, "port_to": 2047},
            {"address_from": "192.0.2.1"}
        ]}))
        .unwrap();
        assert_eq!(
            r.nat_targets[0].addresses(),
            (
                "2001:db8::1".parse().unwrap(),
                "2001:db8::ff".parse().unwrap()
            )
        );
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["nat_targets"][1]["address_from"], "192.0.2.1");
        assert!(rule(serde_json::json!({"action": "masquerade", "ip_version": 6})).is_ok());
        assert!(rule(
            serde_json::json!({"action": "dnat", "ip_version": 4, "invert": ["ip_version"],
            "nat_targets": [{"address_from": "2001:db8::10"}]})
        )
        .is_ok());
        let cases = [
            (
                serde_json::json!({"action": "snat", "nat_targets": [{"address_from": "10.0.0.1", "address_to": "2001:db8::1"}]}),
                "mixes IPv4 and IPv6",
            ),
            (
                serde_json::json!({"action": "snat", "nat_targets": [{"address_from": "2001:db8::9", "address_to": "2001:db8::1"}]}),
                "ends before",
            ),
            (
                serde_json::json!({"action": "snat", "nat_targets": [{"address_from": "fe80::1"}]}),
                "not a global unicast",
            ),
            (
                serde_json::json!({"action": "dnat", "nat_targets": [{"address_from": "ff02::1"}]}),
                "not a global unicast",
            ),
            (
                serde_json::json!({"action": "snat", "ip_version": 4, "nat_targets": [{"address_from": "2001:db8::1"}]}),
                "matches IPv4 packets only",
            ),
            (
                serde_json::json!({"action": "snat", "src_cidr": "2001:db8:1::/64", "nat_targets": [{"address_from": "192.0.2.1"}]}),
                "matches IPv6 packets only",
            ),
        ];
        for (json, expected) in cases {
            let error = rule(json.clone()).unwrap_err();
            assert!(error.starts_with("nat_targets:"), "{json}: {error}");
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn bad_rules_name_the_field() {
        let cases = [
            (
                serde_json::json!({"action": "drop", "dst_ports": "22"}),
                "dst_ports",
            ),
            (
                serde_json::json!({"action": "drop", "protocol": "tcp", "dst_ports": "30-20"}),
                "ends before",
            ),
            (
                serde_json::json!({"action": "drop", "protocol": "tcpx"}),
                "not an IP protocol",
            ),
            (
                serde_json::json!({"action": "drop", "protocol": 300}),
                "0-255",
            ),
            (
                serde_json::json!({"action": "drop", "invert": ["src_cidr"]}),
                "invert",
            ),
            (
                serde_json::json!({"action": "drop", "src_cidr": "10.0.0.1/8"}),
                "host bits",
            ),
            (serde_json::json!({"action": "snat"}), "nat_targets"),
            (
                serde_json::json!({"action": "accept", "nat_targets": [{"address_from": "1.2.3.4"}]}),
                "nat_targets",
            ),
            (
                serde_json::json!({"action": "dnat", "nat_targets": [{"address_from": "1.2.3.9", "address_to": "1.2.3.4"}]}),
                "ends before",
            ),
            (
                serde_json::json!({"action": "drop", "icmp_type": 8}),
                "icmp",
            ),
            (
                serde_json::json!({"action": "drop", "conn_state": ["new", "new"]}),
                "twice",
            ),
            (
                serde_json::json!({"action": "drop", "conn_state": ["sideways"]}),
                "unknown variant",
            ),
        ];
        for (json, expected) in cases {
            let error = rule(json.clone()).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
