//! The value types of rule conditions: IP protocols and ethertypes written
//! as names or numbers, port ranges, connection states, fragment policies.

use std::fmt;

use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Schema, SchemaObject, SingleOrVec};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn string_or_integer(description: &str) -> Schema {
    let mut schema = SchemaObject {
        instance_type: Some(SingleOrVec::Vec(vec![
            InstanceType::String,
            InstanceType::Integer,
        ])),
        ..SchemaObject::default()
    };
    schema.metadata().description = Some(description.to_string());
    Schema::Object(schema)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Number(u64),
    Name(String),
}

/// An IP protocol number, written as a number or a name (`tcp`, `udp`, `icmp`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpProto(pub u8);

const PROTOCOL_NAMES: [(&str, u8); 10] = [
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("sctp", 132),
];

impl IpProto {
    /// ICMP.
    pub const ICMP: IpProto = IpProto(1);
    /// ICMPv6.
    pub const ICMPV6: IpProto = IpProto(58);
    /// TCP.
    pub const TCP: IpProto = IpProto(6);
    /// UDP.
    pub const UDP: IpProto = IpProto(17);

    /// The protocol's usual name, if it has one here.
    pub fn name(self) -> Option<&'static str> {
        PROTOCOL_NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }

    /// Parses a name or a decimal number.
    pub fn parse(text: &str) -> Result<IpProto, String> {
        let lower = text.trim().to_ascii_lowercase();
        if let Some((_, n)) = PROTOCOL_NAMES.iter().find(|(name, _)| *name == lower) {
            return Ok(IpProto(*n));
        }
        lower.parse::<u8>().map(IpProto).map_err(|_| {
            format!("'{text}' is not an IP protocol (a number 0-255 or tcp, udp, icmp, sctp, gre, esp, ah, igmp, ipip)")
        })
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for IpProto {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for IpProto {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => u8::try_from(n)
                .map(IpProto)
                .map_err(|_| serde::de::Error::custom(format!("protocol {n} is not 0-255"))),
            NameOrNumber::Name(name) => IpProto::parse(&name).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for IpProto {
    fn schema_name() -> String {
        "IpProto".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_or_integer("An IP protocol: a number 0-255 or a name (tcp, udp, icmp, sctp, gre, …)")
    }
}

/// An ethertype, written as a number (`2048`, `"0x0800"`) or a name (`ipv4`, `arp`, `ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthType(pub u16);

const ETHERTYPE_NAMES: [(&str, u16); 4] = [
    ("ipv4", 0x0800),
    ("arp", 0x0806),
    ("vlan", 0x8100),
    ("ipv6", 0x86dd),
];

impl EthType {
    /// Parses a name, a decimal or a `0x` hexadecimal number.
    pub fn parse(text: &str) -> Result<EthType, String> {
        let lower = text.trim().to_ascii_lowercase();
        if let Some((_, n)) = ETHERTYPE_NAMES.iter().find(|(name, _)| *name == lower) {
            return Ok(EthType(*n));
        }
        let parsed = match lower.strip_prefix("0x") {
            Some(hex) => u16::from_str_radix(hex, 16),
            None => lower.parse::<u16>(),
        };
        parsed.map(EthType).map_err(|_| {
            format!("'{text}' is not an ethertype (ipv4, arp, ipv6, vlan, or a number like 0x0800)")
        })
    }
}

impl fmt::Display for EthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ETHERTYPE_NAMES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

impl Serialize for EthType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for EthType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => u16::try_from(n)
                .map(EthType)
                .map_err(|_| serde::de::Error::custom(format!("ethertype {n} is not 0-65535"))),
            NameOrNumber::Name(name) => EthType::parse(&name).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for EthType {
    fn schema_name() -> String {
        "EthType".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_or_integer("An ethertype: ipv4, arp, ipv6, vlan, or a number (2048 or \"0x0800\")")
    }
}

/// An inclusive range of TCP/UDP ports, written `"22"` or `"1000-2000"` (or a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The first port.
    pub start: u16,
    /// The last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Whether `port` is inside the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Parses `"22"` or `"1000-2000"`.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let bad = || format!("'{text}' is not a port or a port range like 1000-2000");
        let (start, end) = match text.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text.trim(), text.trim()),
        };
        let start: u16 = start.parse().map_err(|_| bad())?;
        let end: u16 = end.parse().map_err(|_| bad())?;
        if start > end {
            return Err(format!(
                "port range {text} ends before it starts; write {end}-{start}"
            ));
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => u16::try_from(n)
                .map(|p| PortRange { start: p, end: p })
                .map_err(|_| serde::de::Error::custom(format!("port {n} is not 0-65535"))),
            NameOrNumber::Name(text) => PortRange::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for PortRange {
    fn schema_name() -> String {
        "PortRange".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_or_integer("A port (\"22\" or 22) or an inclusive range (\"1000-2000\")")
    }
}

/// A connection-tracking state a rule can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// The first packet of a connection the device has not seen.
    New,
    /// A packet of a connection the device tracks, in either direction.
    Established,
    /// An ICMP error about a tracked connection.
    Related,
    /// A packet travelling in the reply direction of a tracked connection.
    Reply,
}

/// Which IPv4 fragments a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FragmentPolicy {
    /// Every packet (the default). Port conditions never match a non-first fragment.
    #[default]
    Any,
    /// Only unfragmented packets.
    Unfragmented,
    /// Unfragmented packets and first fragments (those that carry the L4 header).
    Header,
    /// Only second and later fragments.
    Nonheader,
}
