//! The ADD result in the shape each supported CNI version expects.

use serde_json::{json, Value};

use crate::plumbing::PodAddress;

/// What ADD set up, independent of the result version.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The host-side veth and its MAC.
    pub host_interface: (String, String),
    /// The pod interface, its MAC and its network namespace path.
    pub pod_interface: (String, String, String),
    /// The pod interface's MTU.
    pub mtu: u16,
    /// The pod's addresses with prefixes and gateways, IPv4 first.
    pub addresses: Vec<PodAddress>,
    /// The `dns` of the configuration, passed through.
    pub dns: Option<Value>,
}

/// Formats a MAC as the kernel and the CNI spec write it.
pub fn mac_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Outcome {
    /// The result JSON for `cni_version` (0.4.0 puts `version` in each IP;
    /// 1.1.0 adds the interface MTU).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let (host_name, host_mac) = &self.host_interface;
        let (pod_name, pod_mac, sandbox) = &self.pod_interface;
        let mut pod = json!({ "name": pod_name, "mac": pod_mac, "sandbox": sandbox });
        if cni_version == "1.1.0" {
            pod["mtu"] = json!(self.mtu);
        }
        let ips: Vec<Value> = self
            .addresses
            .iter()
            .map(|a| {
                let mut ip = json!({ "address": a.address.to_string(), "interface": 1 });
                if let Some(gateway) = a.gateway {
                    ip["gateway"] = json!(gateway.to_string());
                }
                if cni_version == "0.4.0" {
                    let family = if a.address.addr().is_ipv4() { "4" } else { "6" };
                    ip["version"] = json!(family);
                }
                ip
            })
            .collect();
        let routes: Vec<Value> = self
            .addresses
            .iter()
            .filter_map(|a| a.gateway)
            .map(|gateway| {
                let default = if gateway.is_ipv4() {
                    "0.0.0.0/0"
                } else {
                    "::/0"
                };
                json!({ "dst": default, "gw": gateway.to_string() })
            })
            .collect();
        let mut out = json!({
            "cniVersion": cni_version,
            "interfaces": [{ "name": host_name, "mac": host_mac }, pod],
            "ips": ips,
        });
        if !routes.is_empty() {
            out["routes"] = json!(routes);
        }
        if let Some(dns) = &self.dns {
            out["dns"] = dns.clone();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            host_interface: ("plx0123456789ab".into(), "02:00:00:00:00:01".into()),
            pod_interface: (
                "eth0".into(),
                "02:00:00:00:00:02".into(),
                "/run/netns/p".into(),
            ),
            mtu: 1450,
            addresses: vec![PodAddress {
                address: "10.128.0.5/24".parse().unwrap(),
                gateway: Some("10.128.0.1".parse().unwrap()),
            }],
            dns: None,
        }
    }

    #[test]
    fn versions_shape_the_result() {
        let v04 = outcome().to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(v04["interfaces"][1].get("mtu").is_none());
        let v11 = outcome().to_json("1.1.0");
        assert!(v11["ips"][0].get("version").is_none());
        assert_eq!(v11["interfaces"][1]["mtu"], 1450);
        assert_eq!(v11["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(v11["routes"][0]["gw"], "10.128.0.1");
        assert_eq!(v11["ips"][0]["interface"], 1);
        assert_eq!(mac_string(&[2, 0, 0xab, 0, 0, 1]), "02:00:ab:00:00:01");
    }

    #[test]
    fn dual_stack_lists_both_addresses_and_default_routes() {
        let mut dual = outcome();
        dual.addresses.push(PodAddress {
            address: "fd00:1::5/64".parse().unwrap(),
            gateway: Some("fd00:1::1".parse().unwrap()),
        });
        let v11 = dual.to_json("1.1.0");
        assert_eq!(v11["ips"][1]["address"], "fd00:1::5/64");
        assert_eq!(v11["ips"][1]["gateway"], "fd00:1::1");
        assert_eq!(v11["ips"][1]["interface"], 1);
        assert_eq!(
            v11["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.128.0.1"}, {"dst": "::/0", "gw": "fd00:1::1"}])
        );
        assert_eq!(dual.to_json("0.4.0")["ips"][1]["version"], "6");
        let mut v6_only = dual.clone();
        v6_only.addresses.remove(0);
        let v6 = v6_only.to_json("1.0.0");
        assert_eq!(v6["ips"].as_array().unwrap().len(), 1);
        assert_eq!(v6["routes"], json!([{"dst": "::/0", "gw": "fd00:1::1"}]));
        v6_only.addresses[0].gateway = None;
        assert!(v6_only.to_json("1.1.0").get("routes").is_none());
    }
}
