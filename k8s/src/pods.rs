//! What a pod's port carries: the labels selectors read and the cluster's
//! two chains.

use nsdb::{is_reserved_label, namespace_label_key, Labels, NAMESPACE_LABEL};

use crate::objects::{Namespace, Pod, POD_LABEL};
use crate::policy::named_port_label;

/// The labels of a pod's port: the pod's own labels (without keys Plexus
/// reserves), its namespace and name, its namespace's labels (see
/// [`namespace_label_key`]; Kubernetes' automatic
/// `kubernetes.io/metadata.name` included), and its named container ports.
pub fn port_labels(pod: &Pod, namespace: Option<&Namespace>) -> Labels {
    let ns = &pod.metadata.namespace;
    let mut labels: Labels = pod
        .metadata
        .labels
        .iter()
        .filter(|(key, _)| !is_reserved_label(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(NAMESPACE_LABEL.into(), ns.clone());
    // A name longer than a label value can be goes without (the port is
    // then found by the pod's address).
    if pod.metadata.name.len() <= 63 {
        labels.insert(POD_LABEL.into(), pod.metadata.name.clone());
    }
    labels.insert(
        namespace_label_key("kubernetes.io/metadata.name"),
        ns.clone(),
    );
    if let Some(namespace) = namespace {
        for (key, value) in &namespace.metadata.labels {
            labels.insert(namespace_label_key(key), value.clone());
        }
    }
    for port in pod.spec.containers.iter().flat_map(|c| &c.ports) {
        if let Some(name) = &port.name {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            labels.insert(
                named_port_label(protocol, name),
                port.container_port.to_string(),
            );
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Objects;

    #[test]
    fn a_pods_port_labels() {
        let mut objects = Objects::default();
        objects
            .add_yaml(
                r#"
kind: Namespace
metadata: {name: x, labels: {team: red, kubernetes.io/metadata.name: x}}
---
kind: Pod
metadata:
  name: a
  namespace: x
  labels: {app: web, namespace.plexus.io/team: blue, plexus.io/namespace: y}
spec:
  containers:
  - ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}, {containerPort: 9}]
"#,
            )
            .unwrap();
        let labels = port_labels(&objects.pods[0], objects.namespace("x"));
        let expected: Labels = [
            ("app", "web"),
            ("plexus.io/namespace", "x"),
            ("plexus.io/pod", "a"),
            ("namespace.plexus.io/team", "red"),
            ("kubernetes.io.ns.plexus.io/metadata.name", "x"),
            ("ports.plexus.io/tcp.http", "8080"),
            ("ports.plexus.io/udp.dns", "53"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, expected);
    }
}
