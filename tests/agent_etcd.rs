//! End-to-end over etcd: stateless `plexus api` and a separate `plexus
//! agent`, both on one etcd; the agent keeps forwarding on its last
//! topology while etcd is down.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::netns::Pod;

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn plexus(args: &[&str]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .env_remove("PLEXUS_NSDB")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run plexus");
    Process(child)
}

fn reachable(pod: &Pod, dst: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pod.ping(dst, 1, &[]).0 == 1 {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_api_over_etcd_survive_an_etcd_outage() {
    let mut etcd = support::etcd::EtcdServer::start();
    let url = format!("etcd://{}/plexus-agent-test/", etcd.endpoint);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let token = "agent-etcd-admin";
    let host_name = support::netns::unique("node");
    let _api = plexus(&[
        "api",
        "--nsdb",
        &url,
        "--listen",
        &addr,
        "--admin-token",
        token,
    ]);
    let agent_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let _agent = plexus(&[
        "agent",
        "--nsdb",
        &url,
        "--host-name",
        &host_name,
        "--listen",
        &agent_addr,
    ]);
    let client = api::Client::new(&format!("http://{addr}"), token).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let host = loop {
        if let Ok(hosts) = client.list::<nsdb::Host>("/v1/hosts").await {
            if let Some(host) = hosts.into_iter().find(|h| h.name == host_name && h.alive) {
                break host;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never registered a live host"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let tenant = client.create_tenant("over-etcd").await.unwrap();
    let bridge = client.create_bridge(tenant.id, "b").await.unwrap();
    let a = Pod::new("10.0.9.1/24", None);
    let b = Pod::new("10.0.9.2/24", None);
    for pod in [&a, &b] {
        let port = client
            .create_bridge_port(bridge.id, json!({"mac": pod.mac}))
            .await
            .unwrap();
        client.bind(port.id, host.id, &pod.host_if).await.unwrap();
    }
    assert!(
        reachable(&a, "10.0.9.2", Duration::from_secs(10)),
        "pods never reached each other"
    );

    // The agent's own endpoint shows its datapath counters.
    let metrics = reqwest::get(format!("http://{agent_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("plexus_flow_cache_misses_total") && metrics.contains(&a.host_if),
        "{metrics}"
    );

    // The NSDB goes away: forwarding goes on with the last topology.
    etcd.stop();
    let (received, text) = a.ping("10.0.9.2", 5, &[]);
    assert_eq!(
        received, 5,
        "the agent must keep forwarding while etcd is down: {text}"
    );
    let (received, text) = b.ping("10.0.9.1", 3, &[]);
    assert_eq!(received, 3, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_api_wait_for_etcd_to_come_up() {
    let mut etcd = support::etcd::EtcdServer::start();
    etcd.stop();
    let url = format!("etcd://{}/plexus-late-etcd/", etcd.endpoint);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let token = "late-etcd-admin";
    let host_name = support::netns::unique("late");
    let mut api = plexus(&[
        "api",
        "--nsdb",
        &url,
        "--listen",
        &addr,
        "--admin-token",
        token,
    ]);
    let mut agent = plexus(&[
        "agent",
        "--nsdb",
        &url,
        "--host-name",
        &host_name,
        "--listen",
        "127.0.0.1:0",
    ]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        api.0.try_wait().unwrap().is_none() && agent.0.try_wait().unwrap().is_none(),
        "the API server and the agent must wait for etcd, not exit"
    );
    etcd.restart();
    let client = api::Client::new(&format!("http://{addr}"), token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(hosts) = client.list::<nsdb::Host>("/v1/hosts").await {
            if hosts.iter().any(|h| h.name == host_name && h.alive) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never registered after etcd came up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
