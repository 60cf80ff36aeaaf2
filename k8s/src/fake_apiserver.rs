//! A fake Kubernetes API server over real HTTP, for tests of the
//! controller (feature `fake-apiserver`): the five collections the
//! controller follows, cluster-wide, with the API server's list and watch
//! semantics as the controller relies on them.
//!
//! - LIST answers pages of at most two objects (fewer than `limit`, as a
//!   real server may) with `continue` tokens, and the collection's
//!   resourceVersion.
//! - WATCH (`?watch=true&resourceVersion=N`) streams JSON lines: every
//!   event after N still in the history, then live events.
//! - [`FakeApiServer::compact`] forgets the history: a WATCH from before
//!   it is answered 410 Gone, as an `ERROR` event (what kube-apiserver
//!   does) or, with [`FakeApiServer::gone_as_status`], as a 410 status.
//! - [`FakeApiServer::go_down`] ends every open watch and answers 503 until
//!   [`FakeApiServer::go_up`]; objects still change meanwhile.
//! - Every request is logged, for tests to check what was asked.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

/// The collections served: path, plural, kind, apiVersion.
const COLLECTIONS: [(&str, &str, &str, &str); 5] = [
    ("/api/v1/namespaces", "namespaces", "Namespace", "v1"),
    ("/api/v1/pods", "pods", "Pod", "v1"),
    (
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networkpolicies",
        "NetworkPolicy",
        "networking.k8s.io/v1",
    ),
    ("/api/v1/services", "services", "Service", "v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
];

const PAGE: usize = 2;

/// A change of one object: resourceVersion, plural, event type, object.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    plural: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Cluster {
    rv: u64,
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(&'static str, String, String), Value>,
    /// Changes after `compacted`.
    history: Vec<Change>,
    compacted: u64,
    down: bool,
    gone_as_status: bool,
    failing_lists: BTreeSet<&'static str>,
    requests: Vec<String>,
}

/// A running fake API server; it stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    cluster: Arc<Mutex<Cluster>>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    epoch: watch::Sender<u64>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    cluster: Arc<Mutex<Cluster>>,
    changes: broadcast::Sender<Change>,
    epoch: watch::Receiver<u64>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeApiServer {
    /// Starts one on a free local port, empty.
    pub async fn start() -> Self {
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        let (changes, _) = broadcast::channel(4096);
        let (epoch, epoch_rx) = watch::channel(0);
        let shared = Shared {
            cluster: cluster.clone(),
            changes: changes.clone(),
            epoch: epoch_rx,
        };
        let app = axum::Router::new().fallback(serve).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeApiServer {
            addr,
            cluster,
            changes,
            epoch,
            server,
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client of this server.
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    /// A kubeconfig naming this server (no credentials: it asks for none).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: nobody, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: nobody}}}}]\n\
             current-context: fake\n",
            self.url()
        )
    }

    /// Creates or replaces an object (by its `kind`, namespace and name);
    /// returns its new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = object["kind"].as_str().expect("a kind").to_string();
        let (_, plural, _, _) = *COLLECTIONS
            .iter()
            .find(|c| c.2 == kind)
            .expect("a followed kind");
        let mut cluster = self.cluster.lock().unwrap();
        cluster.rv += 1;
        let rv = cluster.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key(plural, &object);
        let event = match cluster.objects.insert(key, object.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        self.record(&mut cluster, rv, plural, event, object);
        rv
    }

    /// Deletes an object; returns the deletion's resourceVersion.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let (_, plural, _, _) = *COLLECTIONS.iter().find(|c| c.2 == kind).unwrap();
        let mut cluster = self.cluster.lock().unwrap();
        let mut object = cluster
            .objects
            .remove(&(plural, namespace.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name}"));
        cluster.rv += 1;
        let rv = cluster.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(&mut cluster, rv, plural, "DELETED", object);
        rv
    }

    fn record(
        &self,
        cluster: &mut Cluster,
        rv: u64,
        plural: &'static str,
        kind: &'static str,
        object: Value,
    ) {
        let change = Change {
            rv,
            plural,
            kind,
            object,
        };
        cluster.history.push(change.clone());
        // No receiver (no open watch) is fine.
        let _ = self.changes.send(change);
    }

    /// Every object, as the controller should end up seeing them.
    pub fn objects(&self) -> Vec<Value> {
        self.cluster
            .lock()
            .unwrap()
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Forgets the history so far: watching from before now is 410 Gone.
    pub fn compact(&self) {
        let mut cluster = self.cluster.lock().unwrap();
        cluster.compacted = cluster.rv;
        cluster.history.clear();
    }

    /// Answers a too-old WATCH with a 410 status instead of an `ERROR` event.
    pub fn gone_as_status(&self) {
        self.cluster.lock().unwrap().gone_as_status = true;
    }

    /// Ends every open watch and answers 503 to everything until `go_up`.
    pub fn go_down(&self) {
        self.cluster.lock().unwrap().down = true;
        self.break_watches();
    }

    /// Serves again.
    pub fn go_up(&self) {
        self.cluster.lock().unwrap().down = false;
    }

    /// Ends every open watch (the connection drops); new ones are served.
    pub fn break_watches(&self) {
        self.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Makes the LISTs of `plural` fail with 500 (or serve again).
    pub fn fail_lists(&self, plural: &'static str, failing: bool) {
        let mut cluster = self.cluster.lock().unwrap();
        if failing {
            cluster.failing_lists.insert(plural);
        } else {
            cluster.failing_lists.remove(plural);
        }
    }

    /// The requests so far, as `PATH?QUERY`.
    pub fn requests(&self) -> Vec<String> {
        self.cluster.lock().unwrap().requests.clone()
    }

    /// The LISTs of `plural` so far (first pages only).
    pub fn lists(&self, plural: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| is_of(r, plural) && !r.contains("watch=true") && !r.contains("continue="))
            .count()
    }

    /// The resourceVersions the WATCHes of `plural` started from, in order.
    pub fn watches(&self, plural: &str) -> Vec<u64> {
        self.requests()
            .iter()
            .filter(|r| is_of(r, plural) && r.contains("watch=true"))
            .filter_map(|r| {
                let (_, query) = r.split_once('?')?;
                query
                    .split('&')
                    .find_map(|p| p.strip_prefix("resourceVersion="))
                    .and_then(|rv| rv.parse().ok())
            })
            .collect()
    }
}

fn is_of(request: &str, plural: &str) -> bool {
    request
        .split('?')
        .next()
        .is_some_and(|path| path.ends_with(&format!("/{plural}")))
}

fn key(plural: &'static str, object: &Value) -> (&'static str, String, String) {
    let text = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (plural, text("namespace"), text("name"))
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    let status_code = StatusCode::from_u16(code).unwrap();
    (
        status_code,
        [("content-type", "application/json")],
        status(code, reason, message).to_string(),
    )
        .into_response()
}

async fn serve(
    State(shared): State<Shared>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(&(_, plural, kind, api_version)) = COLLECTIONS.iter().find(|c| c.0 == uri.path())
    else {
        return status_response(404, "NotFound", "not served here");
    };
    let mut cluster = shared.cluster.lock().unwrap();
    cluster.requests.push(uri.to_string());
    if cluster.down {
        return status_response(503, "ServiceUnavailable", "down");
    }
    if query.get("watch").map(String::as_str) == Some("true") {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        return watch(&shared, &cluster, plural, from);
    }
    if cluster.failing_lists.contains(plural) {
        return status_response(500, "InternalError", "list failing");
    }
    let limit = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX)
        .min(PAGE);
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let all: Vec<&Value> = cluster
        .objects
        .iter()
        .filter(|((p, _, _), _)| *p == plural)
        .map(|(_, object)| object)
        .collect();
    let items: Vec<&Value> = all.iter().skip(offset).take(limit).copied().collect();
    let mut metadata = json!({"resourceVersion": cluster.rv.to_string()});
    if offset + items.len() < all.len() {
        metadata["continue"] = json!((offset + items.len()).to_string());
    }
    let list = json!({
        "kind": format!("{kind}List"), "apiVersion": api_version,
        "metadata": metadata, "items": items,
    });
    ([("content-type", "application/json")], list.to_string()).into_response()
}

fn line(event: &str, object: &Value) -> Result<Bytes, std::convert::Infallible> {
    let mut text = json!({"type": event, "object": object}).to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

fn watch(shared: &Shared, cluster: &Cluster, plural: &'static str, from: u64) -> Response {
    if from < cluster.compacted {
        let message = format!("too old resource version: {from} ({})", cluster.compacted);
        if cluster.gone_as_status {
            return status_response(410, "Expired", &message);
        }
        let error = line("ERROR", &status(410, "Expired", &message));
        return Body::from_stream(futures::stream::iter([error])).into_response();
    }
    let backlog: VecDeque<Change> = cluster
        .history
        .iter()
        .filter(|c| c.plural == plural && c.rv > from)
        .cloned()
        .collect();
    // Subscribed under the lock: no change falls between backlog and live.
    let live = shared.changes.subscribe();
    let mut epoch = shared.epoch.clone();
    epoch.mark_unchanged();
    let state = (backlog, live, epoch);
    let events = futures::stream::unfold(
        state,
        move |(mut backlog, mut live, mut epoch)| async move {
            // A dropped connection delivers nothing more, queued or not.
            if epoch.has_changed().unwrap_or(true) {
                return None;
            }
            if let Some(change) = backlog.pop_front() {
                let bytes = line(change.kind, &change.object);
                return Some((bytes, (backlog, live, epoch)));
            }
            loop {
                tokio::select! {
                    biased;
                    _ = epoch.changed() => return None,
                    change = live.recv() => match change {
                        Ok(change) if change.plural == plural && change.rv > from => {
                            let bytes = line(change.kind, &change.object);
                            return Some((bytes, (backlog, live, epoch)));
                        }
                        Ok(_) => continue,
                        Err(_) => return None,
                    },
                }
            }
        },
    );
    Body::from_stream(events).into_response()
}
