//! Ethernet MAC addresses as stored in the NSDB.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True for group (multicast and broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for the all-zero address, which no port may use.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A random locally administered unicast address.
    pub fn random_local() -> MacAddr {
        let mut bytes: [u8; 6] = rand::random();
        bytes[0] = (bytes[0] & 0xfc) | 0x02;
        MacAddr(bytes)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Why a MAC address string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address '{0}': expected six hex octets like 02:00:00:00:00:01")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for MacAddr {
    fn schema_name() -> String {
        "MacAddr".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        schemars::schema::SchemaObject {
            instance_type: Some(schemars::schema::InstanceType::String.into()),
            string: Some(Box::new(schemars::schema::StringValidation {
                pattern: Some("^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$".into()),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let mac: MacAddr = "02:AB:cd:00:10:ff".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0xab, 0xcd, 0x00, 0x10, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:cd:00:10:ff");
        assert_eq!("02-ab-cd-00-10-ff".parse::<MacAddr>().unwrap(), mac);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "02:ab",
            "02:ab:cd:00:10:ff:00",
            "2:ab:cd:00:10:ff",
            "zz:ab:cd:00:10:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn random_is_local_unicast() {
        for _ in 0..100 {
            let mac = MacAddr::random_local();
            assert!(!mac.is_multicast());
            assert_eq!(mac.0[0] & 0x02, 0x02);
        }
    }
}
