//! The other Kubernetes objects Plexus follows (Namespace, Pod, Service,
//! EndpointSlice), in the API server's JSON shape, and [`Objects`]: the
//! cluster as the reconcile sees it, whether it came from a watch or from
//! files (`plexus k8s apply -f`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{IntOrString, NetworkPolicy, ObjectMeta};

/// The annotation that gives a namespace a tenant network of its own.
pub const ISOLATED_ANNOTATION: &str = "plexus.io/isolated-network";
/// The port label naming the pod a port belongs to (set by the CNI).
pub const POD_LABEL: &str = "plexus.io/pod";

/// A Namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Name and labels.
    pub metadata: ObjectMeta,
}

impl Namespace {
    /// Whether it opted into a tenant network of its own.
    pub fn isolated(&self) -> bool {
        self.metadata
            .annotations
            .get(ISOLATED_ANNOTATION)
            .is_some_and(|v| v == "true")
    }
}

/// A Pod: what the network needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// Containers and their ports, node, host networking.
    #[serde(default)]
    pub spec: PodSpec,
    /// Its addresses, once it runs.
    #[serde(default)]
    pub status: PodStatus,
}

/// `spec` of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The node it runs on.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Whether it uses the node's network (then Plexus has no port for it).
    #[serde(default)]
    pub host_network: bool,
    /// Its containers.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// A container: only its ports matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The container's name.
    #[serde(default)]
    pub name: String,
    /// Its declared ports (named ones are what policies and Services name).
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

/// A declared container port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Its name, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// The number.
    pub container_port: u16,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `status` of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// The pod's primary address.
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<IpAddr>,
}

impl Pod {
    /// The number `name` resolves to for `protocol` in this pod, if any.
    pub fn named_port(&self, name: &str, protocol: &str) -> Option<u16> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| {
                p.name.as_deref() == Some(name)
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port)
    }
}

/// A Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What it exposes.
    #[serde(default)]
    pub spec: ServiceSpec,
}

/// `spec` of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer`, `ExternalName`.
    #[serde(default, rename = "type")]
    pub service_type: Option<String>,
    /// The virtual address; `None` (the string) for a headless Service.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Its ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// The pods it selects (the EndpointSlice controller's business; kept
    /// for the record).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// `None` (default) or `ClientIP`.
    #[serde(default)]
    pub session_affinity: Option<String>,
    /// The affinity's timeout.
    #[serde(default)]
    pub session_affinity_config: Option<SessionAffinityConfig>,
}

/// `sessionAffinityConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinityConfig {
    /// `clientIP`.
    #[serde(default, rename = "clientIP")]
    pub client_ip: Option<ClientIpConfig>,
}

/// `sessionAffinityConfig.clientIP`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpConfig {
    /// Seconds (default 10800, as upstream).
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
}

impl ServiceSpec {
    /// The virtual address, unless the Service is headless or has none yet.
    pub fn virtual_ip(&self) -> Option<IpAddr> {
        self.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

/// A port of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Its name (what EndpointSlice ports refer to).
    #[serde(default)]
    pub name: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The Service's port.
    pub port: u16,
    /// The pods' port, by number or container port name (default: `port`).
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    /// The node port, for `NodePort` and `LoadBalancer` Services.
    #[serde(default)]
    pub node_port: Option<u16>,
}

/// An EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Name, namespace, and the `kubernetes.io/service-name` label.
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The ports, by the Service port's name, resolved to numbers.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

/// The label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl EndpointSlice {
    /// The Service it belongs to.
    pub fn service(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
    }
}

/// One endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Its addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Whether it is ready.
    #[serde(default)]
    pub conditions: EndpointConditions,
    /// The node it is on.
    #[serde(default)]
    pub node_name: Option<String>,
}

/// Endpoint conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointConditions {
    /// Ready (absent means ready, as upstream says).
    #[serde(default)]
    pub ready: Option<bool>,
}

/// A port of an EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPort {
    /// The Service port's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The number on the endpoints.
    #[serde(default)]
    pub port: Option<u16>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// The cluster as the reconcile sees it: every object Plexus follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// NetworkPolicies.
    pub policies: Vec<NetworkPolicy>,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// An object that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct BadObject {
    /// Which object (kind and name, or document number).
    pub what: String,
    /// Why.
    pub reason: String,
}

impl Objects {
    /// Adds one object in the API server's JSON shape (a `List` adds its
    /// items); kinds Plexus does not follow are ignored and reported as
    /// `Ok(false)`.
    pub fn add(&mut self, object: Value) -> Result<bool, BadObject> {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind.ends_with("List") {
            let mut any = false;
            if let Some(Value::Array(items)) = object.get("items") {
                for item in items {
                    any |= self.add(item.clone())?;
                }
            }
            return Ok(any);
        }
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)")
            .to_string();
        let bad = |e: serde_json::Error| BadObject {
            what: format!("{kind} {name}"),
            reason: e.to_string(),
        };
        match kind.as_str() {
            "Namespace" => self
                .namespaces
                .push(serde_json::from_value(object).map_err(bad)?),
            "Pod" => self.pods.push(serde_json::from_value(object).map_err(bad)?),
            "NetworkPolicy" => self
                .policies
                .push(serde_json::from_value(object).map_err(bad)?),
            "Service" => self
                .services
                .push(serde_json::from_value(object).map_err(bad)?),
            "EndpointSlice" => self
                .endpoint_slices
                .push(serde_json::from_value(object).map_err(bad)?),
            "" => {
                return Err(BadObject {
                    what: name,
                    reason: "no kind".into(),
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Reads a YAML stream (documents separated by `---`) or a JSON object.
    pub fn add_yaml(&mut self, text: &str) -> Result<usize, BadObject> {
        let mut added = 0;
        for (n, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(document).map_err(|e| BadObject {
                what: format!("document {}", n + 1),
                reason: e.to_string(),
            })?;
            if value.is_null() {
                continue;
            }
            if self.add(value)? {
                added += 1;
            }
        }
        Ok(added)
    }

    /// The namespace called `name`, if known.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.metadata.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_yaml_stream_of_mixed_kinds() {
        let mut objects = Objects::default();
        let added = objects
            .add_yaml(
                r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}, annotations: {plexus.io/isolated-network: "true"}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  containers:
  - name: web
    ports: [{name: serve-80, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {clusterIP: None, ports: [{port: 80, targetPort: serve-80}]}
"#,
            )
            .unwrap();
        assert_eq!(added, 3);
        assert!(objects.namespace("x").unwrap().isolated());
        let pod = &objects.pods[0];
        assert_eq!(pod.named_port("serve-80", "TCP"), Some(80));
        assert_eq!(pod.named_port("dns", "UDP"), Some(53));
        assert_eq!(pod.named_port("dns", "TCP"), None);
        assert_eq!(objects.services[0].spec.virtual_ip(), None);
        let mut running = Objects::default();
        running
            .add_yaml("kind: Pod\nmetadata: {name: p, namespace: x}\nstatus: {podIP: 10.1.2.3}\n")
            .unwrap();
        assert_eq!(
            running.pods[0].status.pod_ip,
            Some("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn a_malformed_object_is_named() {
        let mut objects = Objects::default();
        let error = objects
            .add_yaml("kind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n")
            .unwrap_err();
        assert_eq!(error.what, "Pod p");
    }
}
