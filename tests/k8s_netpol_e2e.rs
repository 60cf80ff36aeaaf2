//! Kubernetes networking with real packets (issue 16): the classic nine
//! pods (namespaces x, y, z × pods a, b, c) attached through `plexus-cni`
//! in cluster mode on two hosts, probed on TCP and UDP 80 and 81 (see
//! `support/k8s_pods.rs`). Needs root.

mod support;

use std::time::Duration;

use support::k8s_pods::{PodCluster, Proto, HOSTS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_policies_every_pod_reaches_every_pod_across_namespaces_and_hosts() {
    let pods = PodCluster::start().await;
    // One network: every pod of every namespace is on the cluster tenant's
    // bridge, labelled with its namespace and name, spread over both hosts.
    let labels = pods.port_labels().await;
    for pod in &pods.pods {
        let wanted = [
            ("plexus.io/namespace", pod.id.ns),
            ("plexus.io/pod", pod.id.name),
        ];
        let port = &labels[&pod.id.label()];
        for (key, value) in wanted {
            assert_eq!(port.get(key).map(String::as_str), Some(value), "{port:?}");
        }
        assert!(pods.pod_cidr.contains(&std::net::IpAddr::V4(pod.ip)));
    }
    for host in 0..HOSTS {
        assert!(pods.pods.iter().filter(|p| p.host == host).count() >= 4);
    }
    // The first probes also wait for the agents to learn every port.
    let allowed = |_, _, _: Proto, _| true;
    if let Err(report) = pods.converge(Duration::from_secs(20), &allowed).await {
        panic!("{report}\n{}", pods.cluster.logs());
    }
    // And again, now that everything is warm: all 288 probes pass at once,
    // and every server saw the client's own address (no NAT).
    let matrix = pods.matrix().await;
    assert_eq!(matrix.outcomes.len(), 9 * 8 * 4);
    if let Err(report) = matrix.compare(&allowed) {
        panic!("{report}");
    }
}
