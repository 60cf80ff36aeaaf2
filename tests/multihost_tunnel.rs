//! Multi-host end-to-end, the tunnel's sockets: two pod pairs across two
//! hosts reach both receiving sockets of both agents, and with
//! `--poll-mode always` the poller receives from the tunnel too.

mod support;

use std::time::Duration;

use support::cluster::{reachable, tcp_transfer, Cluster};
use support::netns::Pod;

/// The agents' tunnel sockets of a series, one value per socket.
fn reads_per_socket(metrics: &str) -> Vec<u64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("plexus_tunnel_reads_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pod_pairs_cross_hosts_through_two_tunnel_sockets_each() {
    let mut cluster = Cluster::start(2).await;
    for host in &mut cluster.hosts {
        host.restart_agent_with(&[("PLEXUS_TUNNEL_SOCKETS", "2")]);
    }
    cluster.wait_alive().await;
    let c = &cluster.client;
    let tenant = c.create_tenant("lanes").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
    // Pods 0 and 1 on host 0, pods 2 and 3 on host 1, bound in that order:
    // each host's two ports get consecutive lanes.
    let pods: Vec<Pod> = (0..4)
        .map(|i| cluster.hosts[i / 2].pod(&format!("10.62.0.{}/24", i + 1), None))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        cluster.attach(bridge.id, pod, i / 2).await;
    }
    for host in &cluster.hosts {
        assert!(
            host.metrics().contains("\nplexus_tunnel_sockets 2\n"),
            "{}",
            host.metrics()
        );
    }
    for (from, to) in [(0, 2), (1, 3)] {
        let dst = format!("10.62.0.{}", to + 1);
        assert!(
            reachable(&pods[from], &dst, Duration::from_secs(15)),
            "pod {from} never reached pod {to}\n{}",
            cluster.logs()
        );
    }

    // Each pair's traffic reaches the other host through a socket of its
    // own: every receiving socket of both hosts reads some of it.
    let before: Vec<Vec<u64>> = cluster
        .hosts
        .iter()
        .map(|h| reads_per_socket(&h.metrics()))
        .collect();
    for (from, to) in [(0, 2), (1, 3)] {
        let dst = format!("10.62.0.{}", to + 1);
        let (received, text) = pods[from].ping(&dst, 10, &["-i", "0.05"]);
        assert_eq!(received, 10, "{text}");
        let (sent, received, len) = tcp_transfer(&pods[from], &pods[to], &dst, 2 << 20);
        assert_eq!((sent, len), (received, 2 << 20), "pair {from}-{to}");
    }
    for (host, before) in cluster.hosts.iter().zip(&before) {
        let after = reads_per_socket(&host.metrics());
        assert_eq!(after.len(), 2, "{}", host.metrics());
        for k in 0..2 {
            assert!(
                after[k] > before[k],
                "{}: socket {k} read nothing of the two pairs ({before:?} -> {after:?})",
                host.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_poll_mode_always_the_poller_receives_from_the_tunnel() {
    let mut cluster = Cluster::start(2).await;
    for host in &mut cluster.hosts {
        host.restart_agent_with(&[("PLEXUS_POLL_MODE", "always")]);
    }
    cluster.wait_alive().await;
    let c = &cluster.client;
    let tenant = c.create_tenant("polled").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
    let pods: Vec<Pod> = (0..2)
        .map(|i| cluster.hosts[i].pod(&format!("10.63.0.{}/24", i + 1), None))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        cluster.attach(bridge.id, pod, i).await;
    }
    assert!(
        reachable(&pods[0], "10.63.0.2", Duration::from_secs(15)),
        "pod 0 never reached pod 1\n{}",
        cluster.logs()
    );
    let series = "plexus_poller_tunnel_batches_total";
    let before: Vec<u64> = cluster.hosts.iter().map(|h| h.counter(series)).collect();
    let (received, text) = pods[0].ping("10.63.0.2", 20, &["-i", "0.02"]);
    assert_eq!(received, 20, "{text}");
    let (sent, received, len) = tcp_transfer(&pods[0], &pods[1], "10.63.0.2", 4 << 20);
    assert_eq!((sent, len), (received, 4 << 20));
    for (host, before) in cluster.hosts.iter().zip(before) {
        let after = host.counter(series);
        assert!(
            after > before,
            "{}: the poller received nothing from the tunnel ({before} -> {after})\n{}",
            host.name,
            host.metrics()
        );
    }
}
