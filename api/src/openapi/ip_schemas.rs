//! Exact schemas for IP addresses and networks.
//!
//! The schemas `ipnet` ships make `IpNet` a `oneOf` whose IPv6 branch also
//! matches IPv4 text, so no IPv4 network validates against it; and std's
//! `IpAddr` comes out as `format: ip`, which no validator knows. Here the
//! IPv4 forms have no `:` and the IPv6 forms need one, so the branches of a
//! `oneOf` exclude each other.

use serde_json::{json, Map, Value};

/// One decimal octet, 0-255, without leading zeros.
const OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])";

/// IPv6 text: hex groups, `::` and an optional dotted tail, with at least
/// one `:` (which no IPv4 text has).
const V6: &str = "[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*";

fn v4() -> String {
    format!("{OCTET}(?:\\.{OCTET}){{3}}")
}

/// The pattern of an IPv4 or IPv6 address (what `IpAddr` serialises).
pub fn ip_addr_pattern() -> String {
    format!("^(?:{}|{V6})$", v4())
}

/// The `Ipv4Net` component.
pub fn ipv4_net() -> Value {
    json!({
        "title": "IPv4 network",
        "description": "An IPv4 address with prefix length",
        "type": "string",
        "maxLength": 18,
        "pattern": format!("^{}/(?:3[0-2]|[1-2][0-9]|[0-9])$", v4()),
        "example": "192.168.0.0/24",
    })
}

/// The `Ipv6Net` component.
pub fn ipv6_net() -> Value {
    json!({
        "title": "IPv6 network",
        "description": "An IPv6 address with prefix length",
        "type": "string",
        "maxLength": 43,
        "pattern": format!("^{V6}/(?:12[0-8]|1[0-1][0-9]|[1-9][0-9]|[0-9])$"),
        "example": "fd00::/32",
    })
}

/// The `IpNet` component: exactly one of its branches matches any value.
pub fn ip_net() -> Value {
    json!({
        "title": "IP network",
        "description": "An IPv4 or IPv6 address with prefix length",
        "oneOf": [
            {"$ref": "#/components/schemas/Ipv4Net"},
            {"$ref": "#/components/schemas/Ipv6Net"},
        ],
        "example": "192.168.0.0/24",
    })
}

/// Puts the exact network components in `schemas` (all three, since
/// `IpNet` refers to the other two).
pub fn replace_networks(schemas: &mut Map<String, Value>) {
    schemas.insert("Ipv4Net".into(), ipv4_net());
    schemas.insert("Ipv6Net".into(), ipv6_net());
    schemas.insert("IpNet".into(), ip_net());
}

/// Rewrites a `format: ip` string schema (std's `IpAddr`) to a pattern.
pub fn fix_ip_addr(schema: &mut Map<String, Value>) {
    if schema.get("format").and_then(Value::as_str) == Some("ip") {
        schema.remove("format");
        schema.insert("pattern".into(), Value::String(ip_addr_pattern()));
    }
}
