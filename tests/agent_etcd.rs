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

/// A free loopback address.
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A `plexus api` and a `plexus agent` on `etcd` under `prefix`.
struct Node {
    api: Process,
    agent: Process,
    client: api::Client,
    host_name: String,
    agent_addr: String,
}

fn node(etcd: &support::etcd::EtcdServer, prefix: &str) -> Node {
    let url = format!("etcd://{}/{prefix}/", etcd.endpoint);
    let (addr, agent_addr) = (free_addr(), free_addr());
    let token = format!("{prefix}-admin");
    let host_name = support::netns::unique("node");
    let api = plexus(&[
        "api",
        "--nsdb",
        &url,
        "--listen",
        &addr,
        "--admin-token",
        &token,
    ]);
    let agent = plexus(&[
        "agent",
        "--nsdb",
        &url,
        "--host-name",
        &host_name,
        "--listen",
        &agent_addr,
    ]);
    Node {
        api,
        agent,
        client: api::Client::new(&format!("http://{addr}"), &token).unwrap(),
        host_name,
        agent_addr,
    }
}

impl Node {
    /// The agent's host once it is registered and alive (within `within`).
    async fn live_host(&mut self, within: Duration) -> nsdb::Host {
        let deadline = Instant::now() + within;
        loop {
            let seen = match self.client.list::<nsdb::Host>("/v1/hosts").await {
                Ok(hosts) => {
                    if let Some(host) = hosts.iter().find(|h| h.name == self.host_name && h.alive) {
                        return host.clone();
                    }
                    format!("hosts {hosts:?}")
                }
                Err(error) => format!("listing hosts: {error}"),
            };
            for (name, process) in [("api", &mut self.api), ("agent", &mut self.agent)] {
                if let Ok(Some(status)) = process.0.try_wait() {
                    panic!("plexus {name} exited ({status}) before the host was alive");
                }
            }
            assert!(
                Instant::now() < deadline,
                "the agent never registered a live host; last seen: {seen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
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
    let mut node = node(&etcd, "plexus-agent-test");
    let host = node.live_host(Duration::from_secs(20)).await;
    let (client, agent_addr) = (&node.client, &node.agent_addr);

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
    // And when its initial NSDB read was done, with what it read.
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(gauge("plexus_agent_nsdb_initial_read_records") >= 1.0);
    let read_s = gauge("plexus_agent_nsdb_initial_read_seconds");
    assert!((0.0..20.0).contains(&read_s), "{read_s}");
    let done = gauge("plexus_agent_nsdb_initial_read_done_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        done <= now && now - done < 120.0,
        "read done at {done}, now {now}"
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
    let mut node = node(&etcd, "plexus-late-etcd");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        node.api.0.try_wait().unwrap().is_none() && node.agent.0.try_wait().unwrap().is_none(),
        "the API server and the agent must wait for etcd, not exit"
    );
    etcd.restart();
    node.live_host(Duration::from_secs(30)).await;
}

/// Revokes every lease of `etcd` (the agent's liveness lease, which holds
/// its host's marker and its ports' markers); how many there were.
fn revoke_every_lease(etcd: &support::etcd::EtcdServer) -> usize {
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .arg(format!("--endpoints={}", etcd.client_url))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let leases: Vec<String> = etcdctl(&["lease", "list"])
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    for lease in &leases {
        etcdctl(&["lease", "revoke", lease]);
    }
    leases.len()
}

/// An agent whose etcd lease is lost behind its back (etcd away longer than
/// the TTL, or the agent stalled) grants itself a new one: its host comes
/// back alive, and so do its served ports' markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_comes_back_alive_after_losing_its_lease() {
    let etcd = support::etcd::EtcdServer::start();
    let mut node = node(&etcd, "plexus-lease-test");
    let host = node.live_host(Duration::from_secs(20)).await;
    let nsdb = support::etcd_at_prefix(&etcd.endpoint, "/plexus-lease-test/").await;
    let client = &node.client;
    let tenant = client.create_tenant("lease").await.unwrap();
    let bridge = client.create_bridge(tenant.id, "b").await.unwrap();
    let pod = Pod::new("10.0.8.1/24", None);
    let port = client
        .create_bridge_port(bridge.id, json!({"mac": pod.mac}))
        .await
        .unwrap();
    client.bind(port.id, host.id, &pod.host_if).await.unwrap();
    let served_within = |within: Duration| {
        let nsdb = nsdb.clone();
        async move {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if nsdb.port_active_on(port.id).await.unwrap() == Some(host.id) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(
        served_within(Duration::from_secs(10)).await,
        "the agent never published its port as active"
    );

    assert!(revoke_every_lease(&etcd) > 0, "the agent holds a lease");
    assert!(
        nsdb.port_active_on(port.id).await.unwrap().is_none(),
        "the port's marker goes with the lease"
    );
    node.live_host(Duration::from_secs(15)).await;
    assert!(
        served_within(Duration::from_secs(10)).await,
        "the port's marker must come back under the new lease"
    );
}

/// The soft and hard open-file limits of a running process.
fn open_files_limit(pid: u32) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

/// Every bound port holds descriptors: the agent raises its soft open-file
/// limit to the hard one as it starts (before it reaches etcd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_raises_its_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let nowhere = format!("etcd://{}/plexus-nofile/", free_addr());
    let mut command = Command::new(env!("CARGO_BIN_EXE_plexus"));
    command
        .args(["agent", "--nsdb", &nowhere, "--listen", &free_addr()])
        .env_remove("PLEXUS_NSDB")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: the hook runs in the child between fork and exec and only
    // calls setrlimit(2), which is async-signal-safe, on a local value.
    unsafe {
        command.pre_exec(|| {
            let low = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let agent = Process(command.spawn().expect("run plexus agent"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = open_files_limit(agent.0.id());
        if seen == Some((4096, 4096)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the agent's open-file limit (soft, hard) stayed {seen:?}");
}
