//! End-to-end: the host and the pods talk without NAT, both ways, the way
//! Kubernetes has nodes and pods talk. The host is the uplink gateway (the
//! world namespace's 100.64.0.1); servers report the peer address they see.
//! A NAT-only tenant (one whose pod subnet overlaps another's) reaches the
//! host masqueraded and is out of its reach. Needs root.

mod support;

use std::process::Command;

use support::world::{
    peer_of, tcp_probe, tcp_server, udp_probe, udp_server, Deployment, STRANGER, UPLINK, WORLD,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_the_host_see_each_others_own_addresses() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (pod, _) = d.pod(&t, 10).await;
    let pod_ip = t.address(10).to_string();
    let world = d.world().netns.clone();
    let _host_tcp = tcp_server(&world, &[9090], "host");
    let _host_udp = udp_server(&world, 9091, "host");
    let _pod_tcp = tcp_server(&pod.netns, &[8080], "pod");

    // Pod → host: the host sees the pod's own address, over TCP and UDP.
    let answer = tcp_probe(&pod, WORLD, 9090, 3.0, None);
    assert!(answer.starts_with("host "), "{answer}");
    assert_eq!(peer_of(&answer).0.to_string(), pod_ip, "tcp: {answer}");
    let answer = udp_probe(&pod, WORLD, 9091, 3.0);
    assert!(answer.starts_with("host "), "{answer}");
    assert_eq!(peer_of(&answer).0.to_string(), pod_ip, "udp: {answer}");

    // Host → pod: the pod sees the host's own address.
    let answer = tcp_probe(d.world(), &pod_ip, 8080, 3.0, None);
    assert!(answer.starts_with("pod "), "{answer}");
    assert_eq!(peer_of(&answer).0.to_string(), WORLD, "{answer}");

    // Anything else beyond the uplink still sees the uplink address.
    let answer = tcp_probe(&pod, STRANGER, 9090, 3.0, None);
    assert_eq!(peer_of(&answer).0.to_string(), UPLINK, "{answer}");

    // The trace says why: the host rule comes before the masquerade.
    let port = d
        .client
        .list::<nsdb::Port>(&format!("/v1/bridges/{}/ports", t.net.bridge.id))
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.host_id.is_some())
        .expect("the pod's port")
        .id;
    let trace = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["trace", "--api", &d.plexus.url, "--token", &d.plexus.token])
        .args(["--port", &port.to_string(), "--dst-ip", WORLD])
        .args(["--proto", "tcp", "--dport", "9090"])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&trace.stdout);
    assert!(
        trace.contains("default-out rule 1") && !trace.contains("masquerade"),
        "accepted untranslated toward the host:\n{trace}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_only_tenant_reaches_the_host_masqueraded() {
    let d = Deployment::start().await;
    // The host routes red's 10.1.0.0/24 to the uplink (as the agent does
    // for every provider route when it owns the uplink TAP).
    d.world()
        .exec(&["ip", "route", "add", "10.1.0.0/24", "via", UPLINK]);
    let red = d.tenant(Some("10.1.0.0/24")).await;
    let blue = d.tenant_with(Some("10.1.0.0/24"), true).await;
    assert!(!red.net.nat_only && blue.net.nat_only);
    let (red_pod, _) = d.pod(&red, 10).await;
    let (blue_pod, _) = d.pod(&blue, 11).await;
    let _host = tcp_server(&d.world().netns, &[9090], "host");
    let _red_server = tcp_server(&red_pod.netns, &[8080], "red");
    let _blue_server = tcp_server(&blue_pod.netns, &[8080], "blue");
    // Red's pod reaches the host with its own address; blue's masqueraded.
    let answer = tcp_probe(&red_pod, WORLD, 9090, 3.0, None);
    assert_eq!(peer_of(&answer).0.to_string(), "10.1.0.10", "{answer}");
    let answer = tcp_probe(&blue_pod, WORLD, 9090, 3.0, None);
    assert_eq!(peer_of(&answer).0.to_string(), UPLINK, "{answer}");
    // The host reaches red's pods; 10.1.0.11 is red's too, so blue's pod
    // there is out of the host's reach.
    let answer = tcp_probe(d.world(), "10.1.0.10", 8080, 3.0, None);
    assert!(answer.starts_with("red "), "{answer}");
    assert_eq!(peer_of(&answer).0.to_string(), WORLD, "{answer}");
    let answer = tcp_probe(d.world(), "10.1.0.11", 8080, 1.5, None);
    assert!(answer.starts_with("ERR"), "blue is NAT-only: {answer}");
}
