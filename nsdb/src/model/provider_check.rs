//! The static rules of the provider record: its IPv4 plan and, when set,
//! its IPv6 plan.

use ipnet::IpNet;

use super::constraints::check_network;
use super::Violation;

/// The provider's address plans are usable (and its IPv6 one, if any).
pub(super) fn validate_provider(p: &super::Provider) -> Result<(), Violation> {
    for (field, net) in [
        ("link_cidr", IpNet::V4(p.link_cidr)),
        ("pod_cidr", IpNet::V4(p.pod_cidr)),
        ("external_cidr", IpNet::V4(p.external_cidr)),
    ] {
        check_network(field, &net)?;
    }
    if p.link_cidr.prefix_len() > 30 {
        return Err((
            "link_cidr",
            format!("{} has no room for a /30", p.link_cidr),
        ));
    }
    if p.pod_prefix_len < p.pod_cidr.prefix_len() || p.pod_prefix_len > 30 {
        return Err((
            "pod_prefix_len",
            format!(
                "/{} subnets do not fit in {} (or leave no addresses)",
                p.pod_prefix_len, p.pod_cidr
            ),
        ));
    }
    if !(576..=65535).contains(&p.pod_mtu) {
        return Err(("pod_mtu", format!("{} is not within 576-65535", p.pod_mtu)));
    }
    match &p.ipv6 {
        Some(v6) => validate_provider_ipv6(v6),
        None => Ok(()),
    }
}

fn validate_provider_ipv6(v6: &super::ProviderIpv6) -> Result<(), Violation> {
    check_network("ipv6.link_cidr", &IpNet::V6(v6.link_cidr))?;
    check_network("ipv6.pod_cidr", &IpNet::V6(v6.pod_cidr))?;
    if v6.link_cidr.prefix_len() > 126 {
        return Err((
            "ipv6.link_cidr",
            format!("{} has no room for a /126", v6.link_cidr),
        ));
    }
    if v6.pod_prefix_len < v6.pod_cidr.prefix_len() || v6.pod_prefix_len > 120 {
        return Err((
            "ipv6.pod_prefix_len",
            format!(
                "/{} prefixes do not fit in {} (or are smaller than /120)",
                v6.pod_prefix_len, v6.pod_cidr
            ),
        ));
    }
    if v6.link_cidr.contains(&v6.pod_cidr.network())
        || v6.pod_cidr.contains(&v6.link_cidr.network())
    {
        return Err((
            "ipv6.link_cidr",
            format!("{} overlaps the pod range {}", v6.link_cidr, v6.pod_cidr),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Provider, ProviderIpv6};
    use uuid::Uuid;

    fn provider(ipv6: Option<ProviderIpv6>) -> Provider {
        Provider {
            id: Uuid::from_u128(1),
            revision: 0,
            tenant_id: Uuid::from_u128(2),
            router_id: Uuid::from_u128(3),
            uplink_port_id: None,
            uplink_gateway: None,
            link_cidr: "169.254.0.0/16".parse().unwrap(),
            pod_cidr: "10.128.0.0/12".parse().unwrap(),
            pod_prefix_len: 24,
            external_cidr: "100.64.1.0/24".parse().unwrap(),
            pod_mtu: 1450,
            ipv6,
        }
    }

    fn plan6(link: &str, pods: &str, len: u8) -> Option<ProviderIpv6> {
        Some(ProviderIpv6 {
            link_cidr: link.parse().unwrap(),
            pod_cidr: pods.parse().unwrap(),
            pod_prefix_len: len,
            uplink_gateway: None,
        })
    }

    #[test]
    fn an_ipv6_plan_is_checked_like_the_ipv4_one() {
        assert_eq!(validate_provider(&provider(None)), Ok(()));
        let good = plan6("fd00:1::/64", "fd00:8000::/33", 64);
        assert_eq!(validate_provider(&provider(good)), Ok(()));
        for (bad, field) in [
            (
                plan6("fd00:1::1/64", "fd00:8000::/33", 64),
                "ipv6.link_cidr",
            ),
            (
                plan6("fd00:1::/127", "fd00:8000::/33", 64),
                "ipv6.link_cidr",
            ),
            (
                plan6("fd00:1::/64", "fd00:8000::/33", 32),
                "ipv6.pod_prefix_len",
            ),
            (
                plan6("fd00:1::/64", "fd00:8000::/33", 121),
                "ipv6.pod_prefix_len",
            ),
            (
                plan6("fd00:8000::/64", "fd00:8000::/33", 64),
                "ipv6.link_cidr",
            ),
        ] {
            assert_eq!(
                validate_provider(&provider(bad)).map_err(|v| v.0),
                Err(field)
            );
        }
    }

    #[test]
    fn a_stored_provider_without_ipv6_still_decodes() {
        let stored = serde_json::json!({
            "id": Uuid::from_u128(1), "tenant_id": Uuid::from_u128(2),
            "router_id": Uuid::from_u128(3), "link_cidr": "169.254.0.0/16",
            "pod_cidr": "10.128.0.0/12", "pod_prefix_len": 24,
            "external_cidr": "100.64.1.0/24", "pod_mtu": 1450
        });
        let decoded: Provider = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(decoded.ipv6, None);
        let mut again = serde_json::to_value(&decoded).unwrap();
        again.as_object_mut().unwrap().remove("revision");
        assert_eq!(again, stored, "and encodes as before");
    }
}
