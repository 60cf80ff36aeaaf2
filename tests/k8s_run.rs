//! `plexus k8s run` as a process, against a fake Kubernetes API server
//! named by a kubeconfig: it follows the cluster and hands each reconcile
//! the whole of it; into a real Plexus API, a policy follows the cluster
//! through a watch outage the API server no longer has the history of
//! (410 Gone), and with --dry-run it logs what it would reconcile.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use api::provision::{ensure_provider, ProviderPlan};
use k8s::fake_apiserver::FakeApiServer;
use serde_json::json;
use support::api::{TestServer, ADMIN_TOKEN};

/// A running `plexus k8s run`, killed on drop, its log lines on a channel.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn start(kubeconfig: &std::path::Path, args: &[&str]) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(["k8s", "run", "--debounce", "20ms"])
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run plexus k8s run");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("plexus k8s run: {line}");
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Run { child, lines }
    }

    /// The next "would reconcile" line, within 10 s.
    fn next_reconcile(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("would reconcile") => return line,
                Ok(_) => continue,
                Err(error) => panic!("no reconcile logged: {error}"),
            }
        }
    }
}

fn policy(name: &str) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_follows_the_cluster_a_kubeconfig_names() {
    let server = FakeApiServer::start().await;
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    server.apply(policy("deny-all"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();

    let run = Run::start(&kubeconfig, &["--dry-run"]);
    let first = tokio::task::block_in_place(|| run.next_reconcile());
    assert!(first.contains("namespaces=1"), "{first}");
    assert!(first.contains(r#"["x/deny-all"]"#), "{first}");

    server.apply(policy("allow-web"));
    server.delete("NetworkPolicy", "x", "deny-all");
    let line = tokio::task::block_in_place(|| loop {
        let line = run.next_reconcile();
        if line.contains(r#"["x/allow-web"]"#) {
            break line;
        }
    });
    assert!(!line.contains("deny-all"), "{line}");
}

/// The policies (`NS/NAME`) the cluster tenant has chains or groups of
/// (named `k8s NS/NAME@…`).
async fn policy_chains(s: &TestServer) -> Vec<String> {
    let tenants: Vec<nsdb::Tenant> = s.admin.list("/v1/tenants").await.unwrap();
    let Some(tenant) = tenants.into_iter().find(|t| t.name == "kubernetes") else {
        return Vec::new();
    };
    let query = format!("?tenant_id={}", tenant.id);
    let chains: Vec<nsdb::Chain> = s.admin.list(&format!("/v1/chains{query}")).await.unwrap();
    let groups: Vec<nsdb::PortGroup> = s
        .admin
        .list(&format!("/v1/port_groups{query}"))
        .await
        .unwrap();
    let mut names: Vec<String> = chains
        .into_iter()
        .map(|c| c.name)
        .chain(groups.into_iter().map(|g| g.name))
        .filter_map(|name| Some(name.strip_prefix("k8s ")?.split('@').next()?.to_string()))
        .filter(|name| name.contains('/'))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Waits until the policies Plexus holds are `want`.
async fn until_policies(s: &TestServer, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let have = policy_chains(s).await;
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "policies in Plexus: {have:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_the_cluster_into_plexus_through_a_410() {
    let s = TestServer::embedded().await;
    ensure_provider(&s.nsdb, &ProviderPlan::default())
        .await
        .unwrap();
    let server = FakeApiServer::start().await;
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    server.apply(policy("deny-all"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();

    let _run = Run::start(&kubeconfig, &["--api", &s.base, "--token", ADMIN_TOKEN]);
    until_policies(&s, &["x/deny-all"]).await;
    server.apply(policy("allow-web"));
    until_policies(&s, &["x/allow-web", "x/deny-all"]).await;

    // The watch is down while deny-all is deleted, and the API server
    // forgets that history: the controller relists and Plexus drops it.
    server.go_down();
    server.delete("NetworkPolicy", "x", "deny-all");
    server.apply(policy("allow-dns"));
    server.compact();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.go_up();
    until_policies(&s, &["x/allow-dns", "x/allow-web"]).await;
    assert_eq!(server.lists("networkpolicies"), 2);
}

/// The status and body of `GET url`, or `None` when nothing answers.
async fn probe(url: &str) -> Option<(u16, String)> {
    let answer = reqwest::get(url).await.ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.text().await.unwrap_or_default()))
}

/// `/healthz` answers while the controller runs; `/readyz` only once a
/// reconcile has succeeded: not while the API server cannot list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_say_alive_and_ready_after_a_reconcile() {
    let s = TestServer::embedded().await;
    ensure_provider(&s.nsdb, &ProviderPlan::default())
        .await
        .unwrap();
    let server = FakeApiServer::start().await;
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    server.go_down();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _run = Run::start(
        &kubeconfig,
        &[
            "--api",
            &s.base,
            "--token",
            ADMIN_TOKEN,
            "--health-listen",
            &listen,
        ],
    );
    let until = |path: &'static str, want: u16| {
        let url = format!("http://{listen}{path}");
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = probe(&url).await;
                if got.as_ref().is_some_and(|(status, _)| *status == want) {
                    return got.unwrap().1;
                }
                assert!(Instant::now() < deadline, "{url}: {got:?}, want {want}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    until("/healthz", 200).await;
    let waiting = until("/readyz", 503).await;
    assert!(waiting.contains("no reconcile yet"), "{waiting}");
    server.go_up();
    until("/readyz", 200).await;
}
