//! The controller's watch side against a fake API server over HTTP: the
//! reconciler always gets the whole cluster as the API server has it,
//! through an initial list, events, a watch that breaks, a resourceVersion
//! that is too old (410 Gone, as an event and as a status), a failing
//! reconcile and a kind whose list fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s::controller::{self, Reconciler, Timing};
use k8s::fake_apiserver::FakeApiServer;
use k8s::objects::Objects;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Records every reconcile; fails the first `failures` of them.
struct Recorder {
    calls: mpsc::UnboundedSender<(Instant, Objects)>,
    failures: AtomicUsize,
}

#[async_trait::async_trait]
impl Reconciler for Recorder {
    async fn reconcile(&self, objects: &Objects) -> Result<(), String> {
        self.calls.send((Instant::now(), objects.clone())).unwrap();
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        match failing {
            true => Err("the Plexus API is unavailable".into()),
            false => Ok(()),
        }
    }
}

const TIMING: Timing = Timing {
    debounce: Duration::from_millis(30),
    resync: Duration::from_secs(3600),
    retry_min: Duration::from_millis(100),
    retry_max: Duration::from_millis(400),
};

/// A controller running against `server`, and its reconciles.
struct Running {
    calls: mpsc::UnboundedReceiver<(Instant, Objects)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(server: &FakeApiServer, timing: Timing, failures: usize) -> Running {
    let (calls, received) = mpsc::unbounded_channel();
    let recorder = Arc::new(Recorder {
        calls,
        failures: AtomicUsize::new(failures),
    });
    let client = server.client();
    let task = tokio::spawn(async move {
        let error = controller::run(client, &*recorder, timing)
            .await
            .unwrap_err();
        panic!("the controller stopped: {error}");
    });
    Running {
        calls: received,
        task,
    }
}

impl Running {
    /// The next reconcile, within `within`.
    async fn next(&mut self, within: Duration) -> Option<(Instant, Objects)> {
        tokio::time::timeout(within, self.calls.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for a reconcile of exactly what `server` holds; panics with
    /// the last one seen after 10 s.
    async fn until_in_sync(&mut self, server: &FakeApiServer) -> Objects {
        let want = expected(server);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left).await {
                Some((_, objects)) if objects == want => return objects,
                Some((_, objects)) => last = Some(objects),
                None => break,
            }
        }
        panic!("never reconciled what the API server holds\nwant: {want:#?}\nlast: {last:#?}");
    }

    /// Asserts that no reconcile happens for `quiet`.
    async fn none_for(&mut self, quiet: Duration) {
        if let Some((_, objects)) = self.next(quiet).await {
            panic!("an unexpected reconcile: {objects:#?}");
        }
    }
}

/// What the API server holds, as the reconcile should see it.
fn expected(server: &FakeApiServer) -> Objects {
    let mut objects = Objects::default();
    for object in server.objects() {
        objects.add(object).unwrap();
    }
    objects
}

fn names(objects: &[impl Named]) -> Vec<String> {
    objects.iter().map(Named::name).collect()
}

trait Named {
    fn name(&self) -> String;
}
impl Named for k8s::types::NetworkPolicy {
    fn name(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}
impl Named for k8s::objects::Pod {
    fn name(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"ns": name}}})
}

fn pod(ns: &str, name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "web",
            "ports": [{"name": "serve-80", "containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"podIP": ip, "phase": "Running"}})
}

fn policy(ns: &str, name: &str, from_pod: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": from_pod}}}],
                "ports": [{"protocol": "TCP", "port": 80}]}]}})
}

fn service(ns: &str, name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
            "selector": {"pod": "a"},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "serve-80"}]}})
}

fn endpoint_slice(ns: &str, service: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": ns,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-1"}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
}

/// Three namespaces, pods, a policy each, a Service with its slice: more
/// than a page of most kinds.
fn seed(server: &FakeApiServer) {
    for (n, ns) in ["x", "y", "z"].into_iter().enumerate() {
        server.apply(namespace(ns));
        for (m, name) in ["a", "b", "c"].into_iter().enumerate() {
            server.apply(pod(ns, name, &format!("10.0.{n}.{}", m + 10)));
        }
        server.apply(policy(ns, "allow-b", "b"));
    }
    server.apply(service("x", "web", "10.96.0.10"));
    server.apply(endpoint_slice("x", "web", "10.0.0.10"));
}

const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_initial_list_of_every_kind_is_one_reconcile_of_everything() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut running = start(&server, TIMING, 0);
    let (_, objects) = running.next(SOON).await.expect("a reconcile");
    assert_eq!(objects, expected(&server));
    assert_eq!(objects.namespaces.len(), 3);
    assert_eq!(objects.pods.len(), 9);
    assert_eq!(objects.pods[0].named_port("serve-80", "TCP"), Some(80));
    assert_eq!(
        names(&objects.policies),
        ["x/allow-b", "y/allow-b", "z/allow-b"]
    );
    assert_eq!(
        objects.services[0].spec.virtual_ip(),
        Some("10.96.0.10".parse().unwrap())
    );
    assert_eq!(objects.endpoint_slices[0].service(), Some("web"));
    // Lists were paged (two objects a page), each kind listed once.
    assert!(server.requests().iter().any(|r| r.contains("continue=")));
    for plural in [
        "namespaces",
        "pods",
        "networkpolicies",
        "services",
        "endpointslices",
    ] {
        assert_eq!(server.lists(plural), 1, "{plural}");
    }
    // Nothing changed: no second reconcile.
    running.none_for(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn added_modified_and_deleted_objects_are_reconciled() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut running = start(&server, TIMING, 0);
    running.until_in_sync(&server).await;

    server.apply(policy("y", "allow-c", "c"));
    let objects = running.until_in_sync(&server).await;
    assert_eq!(
        names(&objects.policies),
        ["x/allow-b", "y/allow-b", "y/allow-c", "z/allow-b"]
    );

    let mut relabelled = pod("x", "b", "10.0.0.11");
    relabelled["metadata"]["labels"]["role"] = json!("client");
    server.apply(relabelled);
    let objects = running.until_in_sync(&server).await;
    assert_eq!(objects.pods[1].metadata.labels["role"], "client");

    server.delete("NetworkPolicy", "x", "allow-b");
    server.delete("Pod", "z", "c");
    let objects = running.until_in_sync(&server).await;
    assert_eq!(
        names(&objects.policies),
        ["y/allow-b", "y/allow-c", "z/allow-b"]
    );
    assert!(!names(&objects.pods).contains(&"z/c".to_string()));
}

#[tokio::test]
async fn a_change_the_reconcile_does_not_see_is_not_reconciled() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut running = start(&server, TIMING, 0);
    running.until_in_sync(&server).await;
    // A pod's phase changes: not part of what Plexus follows.
    let mut pending = pod("x", "a", "10.0.0.10");
    pending["status"]["phase"] = json!("Succeeded");
    server.apply(pending);
    running.none_for(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_broken_watch_resumes_from_the_last_resource_version_and_loses_nothing() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut running = start(&server, TIMING, 0);
    running.until_in_sync(&server).await;
    let seen = server.apply(policy("x", "allow-c", "c"));
    running.until_in_sync(&server).await;

    // The connection drops; while it is down the cluster changes.
    server.go_down();
    server.apply(policy("z", "allow-a", "a"));
    server.delete("NetworkPolicy", "y", "allow-b");
    server.delete("Pod", "y", "a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.go_up();

    let objects = running.until_in_sync(&server).await;
    assert_eq!(
        names(&objects.policies),
        ["x/allow-b", "x/allow-c", "z/allow-a", "z/allow-b"]
    );
    // Caught up by watching from the last event seen, not by listing.
    let watches = server.watches("networkpolicies");
    assert!(watches.len() >= 2, "{watches:?}");
    assert_eq!(watches.last(), Some(&seen), "{watches:?}");
    assert_eq!(server.lists("networkpolicies"), 1);
    assert_eq!(server.lists("pods"), 1);

    // A watch that just ends (the server's timeout) is resumed too.
    server.break_watches();
    server.apply(policy("x", "allow-d", "c"));
    running.until_in_sync(&server).await;
    assert_eq!(server.lists("networkpolicies"), 1);
}

async fn too_old_resource_version_relists(gone_as_status: bool) {
    let server = FakeApiServer::start().await;
    if gone_as_status {
        server.gone_as_status();
    }
    seed(&server);
    let mut running = start(&server, TIMING, 0);
    running.until_in_sync(&server).await;

    // Down long enough for the API server to forget what happened meanwhile.
    server.go_down();
    server.delete("NetworkPolicy", "x", "allow-b");
    server.apply(policy("y", "allow-c", "c"));
    server.delete("Pod", "x", "c");
    server.compact();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.go_up();

    let objects = running.until_in_sync(&server).await;
    // The policy deleted during the outage is gone, the new one is there.
    assert_eq!(
        names(&objects.policies),
        ["y/allow-b", "y/allow-c", "z/allow-b"]
    );
    assert!(!names(&objects.pods).contains(&"x/c".to_string()));
    assert_eq!(
        server.lists("networkpolicies"),
        2,
        "{:#?}",
        server.requests()
    );
    assert_eq!(server.lists("pods"), 2);

    // And it goes on watching from the new list.
    server.apply(policy("z", "allow-c", "c"));
    running.until_in_sync(&server).await;
    assert_eq!(server.lists("networkpolicies"), 2);
}

#[tokio::test]
async fn a_watch_answered_410_gone_by_an_error_event_relists() {
    too_old_resource_version_relists(false).await;
}

#[tokio::test]
async fn a_watch_answered_410_gone_by_its_status_relists() {
    too_old_resource_version_relists(true).await;
}

#[tokio::test]
async fn a_failed_reconcile_is_retried_after_a_backoff() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut running = start(&server, TIMING, 2);
    let (first, objects) = running.next(SOON).await.expect("a first attempt");
    assert_eq!(objects, expected(&server));
    let (second, again) = running.next(SOON).await.expect("a retry");
    let (third, _) = running.next(SOON).await.expect("a second retry");
    assert_eq!(again, objects);
    assert!(second - first >= TIMING.retry_min, "{:?}", second - first);
    assert!(
        third - second >= TIMING.retry_min * 2,
        "{:?}",
        third - second
    );
    // It succeeded: nothing more.
    running.none_for(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn nothing_is_reconciled_before_every_kind_is_listed() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.fail_lists("endpointslices", true);
    let mut running = start(&server, TIMING, 0);
    // Everything else is listed; a reconcile now would remove every
    // Service's endpoints.
    running.none_for(Duration::from_millis(800)).await;
    assert_eq!(server.lists("networkpolicies"), 1);
    server.fail_lists("endpointslices", false);
    let (_, objects) = running.next(SOON).await.expect("a reconcile");
    assert_eq!(objects, expected(&server));
}

#[tokio::test]
async fn the_full_state_is_resynced_periodically() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let timing = Timing {
        resync: Duration::from_millis(300),
        ..TIMING
    };
    let mut running = start(&server, timing, 0);
    let (first, objects) = running.next(SOON).await.expect("a reconcile");
    let (second, again) = running.next(SOON).await.expect("a resync");
    assert_eq!(again, objects);
    assert!(second - first >= timing.resync, "{:?}", second - first);
}
