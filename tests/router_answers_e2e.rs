//! End-to-end: a router answers like a real one when it cannot deliver.
//! A next hop that never answers ARP gets the sender ICMP host
//! unreachable; TCP to a router's own address is reset and UDP gets port
//! unreachable, with real packets. Needs root.

mod support;

use std::time::Instant;

use support::world::{tcp_probe, udp_probe, Deployment};

/// An address on the uplink subnet that nobody holds.
const NOBODY: &str = "100.64.0.77";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolved_next_hop_answers_host_unreachable() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, _) = d.pod(&t, 10).await;
    let unreachable = "plexus_datapath_drops_total{reason=\"host_unreachable\"}";
    let before = d.plexus.metric(unreachable).await;
    let started = Instant::now();
    let (received, text) = a.ping(NOBODY, 1, &["-W", "8"]);
    let waited = started.elapsed();
    assert_eq!(received, 0, "{text}");
    assert!(
        text.contains("Destination Host Unreachable"),
        "the sender is told, as by a real router: {text}"
    );
    assert!(
        waited.as_secs_f32() < 7.0,
        "the answer comes when the hold times out, not never: {waited:?}"
    );
    assert!(d.plexus.metric(unreachable).await > before);
    // While the next hop stays failed, the answer comes at once.
    let started = Instant::now();
    let (_, text) = a.ping(NOBODY, 1, &["-W", "8"]);
    assert!(text.contains("Destination Host Unreachable"), "{text}");
    assert!(started.elapsed().as_secs_f32() < 2.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_to_the_gateway_are_refused_at_once() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, _) = d.pod(&t, 10).await;
    let gateway = t.net.gateway.to_string();
    let tcp = tcp_probe(&a, &gateway, 22, 3.0, None);
    assert_eq!(tcp, "ERR ConnectionRefusedError", "TCP gets a reset");
    let udp = udp_probe(&a, &gateway, 53, 3.0);
    assert_eq!(
        udp, "ERR ConnectionRefusedError",
        "UDP gets port unreachable"
    );
    let (received, text) = a.ping(&gateway, 1, &[]);
    assert_eq!(received, 1, "echo is still answered: {text}");
}
