//! Chaining: when plugins ran before `plexus-cni` in a conflist, the
//! runtime passes their result as `prevResult`. The CNI spec says a plugin
//! given a `prevResult` must pass it through or modify it, so ADD returns
//! the earlier interfaces, addresses, routes and DNS with Plexus's own
//! added after them, never a result built from scratch.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::error::{code, CniError};
use crate::spec::SUPPORTED_VERSIONS;

/// A checked `prevResult`. Fields this plugin does not know (at the top,
/// in interfaces, IPs and routes) are kept as they came.
#[derive(Debug, Clone)]
pub struct PrevResult {
    result: Map<String, Value>,
}

fn invalid(field: &str, detail: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        format!("invalid prevResult field '{field}'"),
        detail,
    )
}

/// The list under `field`, each entry an object (an absent list is empty).
fn objects<'a>(
    result: &'a Map<String, Value>,
    field: &str,
) -> Result<Vec<&'a Map<String, Value>>, CniError> {
    match result.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|entry| {
                entry
                    .as_object()
                    .ok_or_else(|| invalid(field, format!("entry {entry} is not an object")))
            })
            .collect(),
        Some(other) => Err(invalid(field, format!("expected a list, got {other}"))),
    }
}

fn strings<'a>(dns: &'a Map<String, Value>, field: &str) -> Result<Vec<&'a str>, CniError> {
    match dns.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid(&format!("dns.{field}"), format!("{v} is not a string")))
            })
            .collect(),
        Some(other) => Err(invalid(
            &format!("dns.{field}"),
            format!("expected a list, got {other}"),
        )),
    }
}

impl PrevResult {
    /// Checks `value` as a CNI result: a supported `cniVersion` (0.4.0,
    /// 1.0.0 or 1.1.0; older results have other shapes and are refused),
    /// named interfaces, IPs with an address and an `interface` index that
    /// exists, routes with a `dst`, and DNS lists of strings.
    pub fn parse(value: &Value) -> Result<PrevResult, CniError> {
        let Value::Object(result) = value else {
            return Err(CniError::new(
                code::DECODE,
                "cannot decode prevResult",
                format!("expected a JSON object, got {value}"),
            ));
        };
        match result.get("cniVersion") {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => {}
            Some(other) => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!("prevResult has CNI version {other}, which cannot be merged"),
                    format!(
                        "results of {} can be; the runtime converts prevResult to the config's cniVersion",
                        SUPPORTED_VERSIONS.join(", ")
                    ),
                ))
            }
        }
        let interfaces = objects(result, "interfaces")?;
        for interface in &interfaces {
            if !interface.get("name").is_some_and(Value::is_string) {
                return Err(invalid("interfaces", "an interface has no name"));
            }
        }
        for ip in objects(result, "ips")? {
            let address = ip.get("address").and_then(Value::as_str).unwrap_or("");
            if address.parse::<IpNet>().is_err() {
                return Err(invalid(
                    "ips",
                    format!("'{address}' is not an address/prefix"),
                ));
            }
            match ip.get("interface") {
                None | Some(Value::Null) => {}
                Some(index) => match index.as_u64() {
                    Some(i) if (i as usize) < interfaces.len() => {}
                    _ => {
                        return Err(invalid(
                            "ips",
                            format!(
                                "{address} names interface {index}, but there are {} interfaces",
                                interfaces.len()
                            ),
                        ))
                    }
                },
            }
        }
        for route in objects(result, "routes")? {
            let dst = route.get("dst").and_then(Value::as_str).unwrap_or("");
            if dst.parse::<IpNet>().is_err() {
                return Err(invalid("routes", format!("'{dst}' is not a destination")));
            }
        }
        match result.get("dns") {
            None | Some(Value::Null) => {}
            Some(Value::Object(dns)) => {
                for field in ["nameservers", "search", "options"] {
                    strings(dns, field)?;
                }
                if !dns.get("domain").is_none_or(Value::is_string) {
                    return Err(invalid("dns.domain", "expected a string"));
                }
            }
            Some(other) => return Err(invalid("dns", format!("expected an object, got {other}"))),
        }
        Ok(PrevResult {
            result: result.clone(),
        })
    }

    /// The earlier plugins' interfaces.
    pub fn interfaces(&self) -> &[Value] {
        self.result
            .get("interfaces")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The earlier plugins' IPs.
    pub fn ips(&self) -> &[Value] {
        self.result
            .get("ips")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// `own` (this plugin's result of `cni_version`) added to the earlier
    /// result: interfaces, IPs and routes after the earlier ones, with own
    /// IPs' `interface` indices moved to where own interfaces now are; DNS
    /// lists united in order, the earlier `domain` kept unless there is
    /// none. The result is in `cni_version`.
    pub fn merge(&self, own: &Value, cni_version: &str) -> Value {
        let mut out = self.result.clone();
        out.insert("cniVersion".into(), json!(cni_version));
        let offset = self.interfaces().len() as u64;
        let list = |result: &Value, field: &str| -> Vec<Value> {
            result[field].as_array().cloned().unwrap_or_default()
        };
        let mut interfaces = self.interfaces().to_vec();
        interfaces.extend(list(own, "interfaces"));
        out.insert("interfaces".into(), Value::Array(interfaces));
        let mut ips: Vec<Value> = self.ips().to_vec();
        for mut ip in list(own, "ips") {
            if let Some(index) = ip["interface"].as_u64() {
                ip["interface"] = json!(index + offset);
            }
            ips.push(ip);
        }
        for ip in &mut ips {
            in_version(ip, cni_version);
        }
        out.insert("ips".into(), Value::Array(ips));
        let mut routes = list(&Value::Object(self.result.clone()), "routes");
        for route in list(own, "routes") {
            if !routes.contains(&route) {
                routes.push(route);
            }
        }
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        if let Some(dns) = merge_dns(self.result.get("dns"), own.get("dns")) {
            out.insert("dns".into(), dns);
        }
        Value::Object(out)
    }
}

/// An IP entry in `cni_version`'s shape: 0.4.0 has `version`, 1.x has not.
fn in_version(ip: &mut Value, cni_version: &str) {
    let Some(entry) = ip.as_object_mut() else {
        return;
    };
    if cni_version != "0.4.0" {
        entry.remove("version");
        return;
    }
    let family = entry
        .get("address")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<IpNet>().ok())
        .map(|a| match a.addr() {
            IpAddr::V4(_) => "4",
            IpAddr::V6(_) => "6",
        });
    if let Some(family) = family {
        entry.insert("version".into(), json!(family));
    }
}

/// The union of two DNS objects (either may be absent); `None` when both are.
fn merge_dns(earlier: Option<&Value>, own: Option<&Value>) -> Option<Value> {
    let earlier = earlier.and_then(Value::as_object);
    let own = own.and_then(Value::as_object);
    if earlier.is_none() && own.is_none() {
        return None;
    }
    let mut out = earlier.cloned().unwrap_or_default();
    let Some(own) = own else {
        return Some(Value::Object(out));
    };
    for field in ["nameservers", "search", "options"] {
        let mut union: Vec<Value> = out
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for value in own
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !union.contains(value) {
                union.push(value.clone());
            }
        }
        if !union.is_empty() {
            out.insert(field.into(), Value::Array(union));
        }
    }
    let has_domain = out
        .get("domain")
        .is_some_and(|d| d.as_str().is_some_and(|d| !d.is_empty()));
    if let (false, Some(domain)) = (has_domain, own.get("domain")) {
        out.insert("domain".into(), domain.clone());
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `macvlan` + `static` plugin answers for a second interface.
    fn macvlan() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "net1", "mac": "66:b4:9d:e0:21:b9", "sandbox": "/run/netns/p"}],
            "ips": [{"interface": 0, "address": "10.99.0.5/24", "gateway": "10.99.0.254"}],
            "routes": [{"dst": "192.168.77.0/24", "gw": "10.99.0.254"}],
            "dns": {"nameservers": ["10.99.0.53"], "domain": "side.example", "search": ["side.example"]},
            "vendor.example/extra": {"kept": true},
        })
    }

    /// What `plexus-cni` answers on its own.
    fn plexus() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "plx0123456789ab", "mac": "02:00:00:00:00:01"},
                {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"},
            ],
            "ips": [{"interface": 1, "address": "10.128.0.5/24", "gateway": "10.128.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.128.0.1"}],
            "dns": {"nameservers": ["10.0.0.53", "10.99.0.53"], "domain": "pods.example",
                    "search": ["pods.example"], "options": ["ndots:2"]},
        })
    }

    #[test]
    fn earlier_results_are_kept_and_own_indices_move() {
        let merged = PrevResult::parse(&macvlan())
            .unwrap()
            .merge(&plexus(), "1.0.0");
        let names: Vec<&str> = merged["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["net1", "plx0123456789ab", "eth0"]);
        assert_eq!(merged["ips"][0]["address"], "10.99.0.5/24");
        assert_eq!(merged["ips"][0]["interface"], 0);
        assert_eq!(merged["ips"][1]["address"], "10.128.0.5/24");
        assert_eq!(merged["ips"][1]["interface"], 2);
        assert_eq!(merged["interfaces"][2]["name"], "eth0");
        assert_eq!(merged["routes"].as_array().unwrap().len(), 2);
        assert_eq!(merged["routes"][0]["dst"], "192.168.77.0/24");
        assert_eq!(merged["routes"][1]["dst"], "0.0.0.0/0");
        assert_eq!(
            merged["dns"],
            json!({"nameservers": ["10.99.0.53", "10.0.0.53"], "domain": "side.example",
                   "search": ["side.example", "pods.example"], "options": ["ndots:2"]})
        );
        assert_eq!(merged["vendor.example/extra"]["kept"], true);
        // The merged result is itself a valid prevResult for the next plugin.
        let again = PrevResult::parse(&merged).unwrap();
        assert_eq!(again.interfaces().len(), 3);
    }

    #[test]
    fn dns_and_routes_only_on_one_side() {
        let mut earlier = macvlan();
        earlier.as_object_mut().unwrap().remove("dns");
        earlier.as_object_mut().unwrap().remove("routes");
        let mut own = plexus();
        own["dns"] = json!({"domain": "pods.example"});
        let merged = PrevResult::parse(&earlier).unwrap().merge(&own, "1.0.0");
        assert_eq!(merged["dns"], json!({"domain": "pods.example"}));
        assert_eq!(
            merged["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.128.0.1"}])
        );
        let mut own = plexus();
        own.as_object_mut().unwrap().remove("dns");
        let merged = PrevResult::parse(&json!({"cniVersion": "1.0.0"}))
            .unwrap()
            .merge(&own, "1.0.0");
        assert!(merged.get("dns").is_none());
        assert_eq!(
            merged["ips"][0]["interface"], 1,
            "nothing earlier: no shift"
        );
    }

    #[test]
    fn ips_take_the_shape_of_the_result_version() {
        let mut v04 = macvlan();
        v04["cniVersion"] = json!("0.4.0");
        v04["ips"][0]["version"] = json!("4");
        let mut own = plexus();
        own["ips"][0]["version"] = json!("4");
        let merged = PrevResult::parse(&v04).unwrap().merge(&own, "1.1.0");
        assert_eq!(merged["cniVersion"], "1.1.0");
        assert!(merged["ips"][0].get("version").is_none());
        assert!(merged["ips"][1].get("version").is_none());
        let merged = PrevResult::parse(&macvlan())
            .unwrap()
            .merge(&plexus(), "0.4.0");
        assert_eq!(merged["ips"][0]["version"], "4");
        assert_eq!(merged["ips"][1]["version"], "4");
    }

    #[test]
    fn malformed_or_old_prev_results_are_refused() {
        let refused = |value: Value| PrevResult::parse(&value).unwrap_err();
        assert_eq!(refused(json!([])).code, code::DECODE);
        let mut old = macvlan();
        old["cniVersion"] = json!("0.3.1");
        let error = refused(old);
        assert_eq!(error.code, code::INCOMPATIBLE_VERSION);
        assert!(error.msg.contains("0.3.1"), "{}", error.msg);
        let mut dangling = macvlan();
        dangling["ips"][0]["interface"] = json!(1);
        assert_eq!(refused(dangling).code, code::INVALID_CONFIG);
        let mut bad_address = macvlan();
        bad_address["ips"][0]["address"] = json!("10.99.0.5");
        assert_eq!(refused(bad_address).code, code::INVALID_CONFIG);
        let mut nameless = macvlan();
        nameless["interfaces"][0] = json!({"mac": "x"});
        assert_eq!(refused(nameless).code, code::INVALID_CONFIG);
        let mut bad_dns = macvlan();
        bad_dns["dns"]["nameservers"] = json!("10.99.0.53");
        assert_eq!(refused(bad_dns).code, code::INVALID_CONFIG);
        let mut bad_route = macvlan();
        bad_route["routes"][0] = json!({"gw": "10.99.0.254"});
        assert_eq!(refused(bad_route).code, code::INVALID_CONFIG);
        // An IP without an interface index is allowed (the spec makes it optional).
        let mut unindexed = macvlan();
        unindexed["ips"][0]
            .as_object_mut()
            .unwrap()
            .remove("interface");
        assert!(PrevResult::parse(&unindexed).is_ok());
    }
}
