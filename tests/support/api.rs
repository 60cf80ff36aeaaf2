//! The API over a real TCP socket, in-process, for HTTP-level tests: a
//! [`TestServer`] per test (on either store), raw requests with full control
//! over headers and bodies, problem+json checks, and raw dumps of the
//! test's keyspace to prove that a refused request wrote nothing. Every
//! answer is checked against the OpenAPI document
//! ([`openapi_check`](super::openapi_check)).

use std::future::IntoFuture;

use ::api::{ApiError, Client, Problem};
use nsdb::kv::KvEntry;
use nsdb::Nsdb;
use std::collections::BTreeSet;

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, ETAG};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use uuid::Uuid;

use super::openapi_check::{self, Violations};
use super::Fixture;

/// The admin token every in-process test server accepts.
pub const ADMIN_TOKEN: &str = "plexus-test-admin-token";

/// An API server on `127.0.0.1:<ephemeral>` serving one test's store.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The store behind the server (for setting up what the API cannot do,
    /// e.g. IP leases, and for raw dumps).
    pub nsdb: Nsdb,
    /// A typed client holding the admin token.
    pub admin: Client,
    /// A plain HTTP client for requests the typed client cannot make.
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    violations: Violations,
    _fixture: Fixture,
}

impl Drop for TestServer {
    /// Stops the server and fails the test when any answer it gave
    /// differed from the OpenAPI document.
    fn drop(&mut self) {
        self.task.abort();
        let violations = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "{} answer(s) differ from the OpenAPI document:\n  {}",
                violations.len(),
                violations.join("\n  ")
            );
        }
    }
}

/// `entries` with tokens' last-use times (written in the background when a
/// token is used, at most once a minute) and the revisions they move taken
/// out, so that using a token does not count as a change.
fn without_token_use(entries: Vec<KvEntry>) -> Vec<KvEntry> {
    entries
        .into_iter()
        .map(|mut e| {
            if e.key.contains("api_token/") {
                if let Ok(mut value) = serde_json::from_slice::<Value>(&e.value) {
                    if let Some(object) = value.as_object_mut() {
                        object.remove("last_used_at");
                    }
                    e.value = serde_json::to_vec(&value).unwrap_or_default();
                    e.mod_revision = e.create_revision;
                }
            }
            e
        })
        .collect()
}

/// One HTTP answer, fully read.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The `Content-Type` header, or "".
    pub fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON (panics, failing the test, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}), got {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The ETag header, or "".
    pub fn etag(&self) -> &str {
        self.headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Checks this is a well-formed problem+json answer with the given
    /// status, naming `field` (when `Some`), and returns the problem.
    pub fn problem(&self, status: u16, field: Option<&str>) -> Problem {
        self.problem_in(&[status], field)
    }

    /// Like [`Answer::problem`], accepting any of `statuses`.
    pub fn problem_in(&self, statuses: &[u16], field: Option<&str>) -> Problem {
        let text = String::from_utf8_lossy(&self.body);
        assert!(
            statuses.contains(&self.status),
            "expected status {statuses:?}, got {}: {text}",
            self.status
        );
        let problem = check_problem_shape(self.status, self.content_type(), &self.body);
        if let Some(field) = field {
            assert_eq!(
                problem.field.as_deref(),
                Some(field),
                "the problem should name the field '{field}': {text}"
            );
        }
        problem
    }
}

/// Checks the shape of a problem+json answer (RFC 9457) and decodes it.
pub fn check_problem_shape(status: u16, content_type: &str, body: &[u8]) -> Problem {
    let text = String::from_utf8_lossy(body);
    assert!(
        content_type.starts_with("application/problem+json"),
        "a {status} answer must be application/problem+json, got '{content_type}': {text}"
    );
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("the problem body is not JSON ({e}): {text}"));
    for member in ["type", "title", "detail"] {
        assert!(
            value[member].as_str().is_some_and(|s| !s.is_empty()),
            "the problem has no '{member}': {text}"
        );
    }
    assert_eq!(
        value["status"].as_u64(),
        Some(u64::from(status)),
        "the problem's status must be the HTTP status: {text}"
    );
    serde_json::from_value(value).unwrap_or_else(|e| panic!("not a Problem ({e}): {text}"))
}

/// Sends a request and reads the whole answer.
pub async fn send(request: RequestBuilder) -> Answer {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("read the body").to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

/// The problem of a refused typed call (panics when the call succeeded).
pub fn problem_of<T: std::fmt::Debug>(result: Result<T, ApiError>) -> Problem {
    match result {
        Err(ApiError::Problem(problem)) => problem,
        other => panic!("expected a problem, got {other:?}"),
    }
}

/// Checks a refused typed call's status (any of `statuses`) and field.
pub fn refused<T: std::fmt::Debug>(
    result: Result<T, ApiError>,
    statuses: &[u16],
    field: Option<&str>,
) -> Problem {
    let problem = problem_of(result);
    assert!(
        statuses.contains(&problem.status),
        "expected status {statuses:?}, got {problem:?}"
    );
    if let Some(field) = field {
        assert_eq!(
            problem.field.as_deref(),
            Some(field),
            "the problem should name '{field}': {problem:?}"
        );
    }
    problem
}

impl TestServer {
    /// Serves `fixture`'s store on a fresh loopback port.
    pub async fn start(fixture: Fixture) -> TestServer {
        let nsdb = fixture.nsdb.clone();
        let violations = Violations::default();
        let app = ::api::app(nsdb.clone(), ::api::auth::token_hash(ADMIN_TOKEN)).layer(
            axum::middleware::from_fn_with_state(violations.clone(), openapi_check::middleware),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let serve = axum::serve(listener, app).into_future();
        let task = tokio::spawn(async move {
            if let Err(error) = serve.await {
                panic!("the test server failed: {error}");
            }
        });
        let admin = Client::new(&base, ADMIN_TOKEN).expect("client");
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("http client");
        TestServer {
            base,
            nsdb,
            admin,
            http,
            task,
            violations,
            _fixture: fixture,
        }
    }

    /// A second API server over the same keyspace: its own etcd client
    /// when the store is on the shared etcd (as another `plexus api` of
    /// the deployment would be), the same store otherwise.
    pub async fn peer(&self) -> TestServer {
        self.peer_via(super::etcd::shared()).await
    }

    /// [`TestServer::peer`], its etcd client connecting to `endpoint`
    /// (a proxy in front of the shared etcd, say).
    pub async fn peer_via(&self, endpoint: &str) -> TestServer {
        let nsdb = match &self._fixture.etcd_prefix {
            Some(prefix) => super::etcd_at_prefix(endpoint, prefix).await,
            None => self.nsdb.clone(),
        };
        TestServer::start(Fixture {
            nsdb,
            dir: None,
            etcd: None,
            etcd_prefix: self._fixture.etcd_prefix.clone(),
        })
        .await
    }

    /// An embedded store under a server.
    pub async fn embedded() -> TestServer {
        TestServer::start(super::embedded()).await
    }

    /// The shared etcd, under a fresh prefix, under a server.
    pub async fn etcd() -> TestServer {
        TestServer::start(super::etcd_shared().await).await
    }

    /// A typed client with another token.
    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.base, token).expect("client")
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request with the admin token.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.as_token(ADMIN_TOKEN, method, path)
    }

    /// A request with `token`.
    pub fn as_token(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path)
            .header(AUTHORIZATION, format!("Bearer {token}"))
    }

    /// A request with the admin token and a JSON body.
    pub fn json(&self, method: Method, path: &str, body: &Value) -> RequestBuilder {
        self.json_as(ADMIN_TOKEN, method, path, body)
    }

    /// A request with `token` and a JSON body.
    pub fn json_as(&self, token: &str, method: Method, path: &str, body: &Value) -> RequestBuilder {
        self.as_token(token, method, path)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }

    /// Every key of this test's keyspace, with values and revisions.
    pub async fn dump(&self) -> Vec<KvEntry> {
        self.nsdb
            .backend()
            .range("")
            .await
            .expect("range the whole keyspace")
            .entries
    }

    /// Fails unless the keyspace is exactly `before` (keys, values, revisions).
    pub async fn assert_unchanged(&self, before: &[KvEntry], what: &str) {
        let after = without_token_use(self.dump().await);
        let before = without_token_use(before.to_vec());
        let before = before.as_slice();
        if after != before {
            let describe = |e: &KvEntry| {
                format!(
                    "{} @{}/{} = {}",
                    e.key,
                    e.create_revision,
                    e.mod_revision,
                    String::from_utf8_lossy(&e.value)
                )
            };
            let gone: Vec<String> = before
                .iter()
                .filter(|e| !after.contains(e))
                .map(describe)
                .collect();
            let new: Vec<String> = after
                .iter()
                .filter(|e| !before.contains(e))
                .map(describe)
                .collect();
            panic!("{what} changed the store:\n  before: {gone:#?}\n  after: {new:#?}");
        }
    }

    /// Sends `request` (built with the admin token or any other), checks
    /// that it is refused with a problem of one of `statuses` naming
    /// `field`, and that the store did not change.
    pub async fn refuse(
        &self,
        what: &str,
        request: RequestBuilder,
        statuses: &[u16],
        field: Option<&str>,
    ) -> Problem {
        let before = self.dump().await;
        let answer = send(request).await;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        assert!(
            statuses.contains(&answer.status),
            "{what}: expected status {statuses:?}, got {}: {text}",
            answer.status
        );
        let problem = answer.problem_in(statuses, None);
        if let Some(field) = field {
            assert_eq!(
                problem.field.as_deref(),
                Some(field),
                "{what}: the problem should name the field '{field}': {text}"
            );
        }
        self.assert_unchanged(&before, what).await;
        problem
    }

    /// [`TestServer::refuse`] for an admin request with a JSON body.
    pub async fn refuse_json(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: &Value,
        statuses: &[u16],
        field: Option<&str>,
    ) -> Problem {
        self.refuse(what, self.json(method, path, body), statuses, field)
            .await
    }

    /// Answers `/healthz` with 200 (the server is still serving).
    pub async fn assert_healthy(&self) {
        let answer = send(self.anonymous(Method::GET, "/healthz")).await;
        assert_eq!(answer.status, 200, "healthz: {:?}", answer);
        assert_eq!(answer.json()["status"], "ok");
    }
}

// ---------------------------------------------------------------------------
// Helpers over JSON objects and the admin token
// ---------------------------------------------------------------------------

pub fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

pub fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

pub fn uuid() -> String {
    Uuid::new_v4().to_string()
}

pub fn revision_of(value: &Value) -> i64 {
    value["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no revision in {value}"))
}

/// The object has exactly these members (the full object, nothing more).
pub fn assert_members(value: &Value, members: &[&str]) {
    let got: BTreeSet<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = members.iter().copied().collect();
    assert_eq!(got, want, "members of {value}");
}

/// `POST path body` as admin: checks 201, the ETag, that every given field
/// is echoed, and that `GET /v1/{item}/{id}` answers the same object.
pub async fn create(s: &TestServer, path: &str, item: &str, body: Value) -> Value {
    let answer = send(s.json(Method::POST, path, &body)).await;
    assert_eq!(answer.status, 201, "POST {path} {body}: {}", text(&answer));
    assert!(
        answer.content_type().starts_with("application/json"),
        "POST {path}: content type {}",
        answer.content_type()
    );
    let created = answer.json();
    let revision = revision_of(&created);
    assert!(revision > 0, "a stored object has a revision: {created}");
    assert_eq!(
        answer.etag(),
        format!("\"{revision}\""),
        "POST {path}: the ETag is the revision"
    );
    for (field, value) in body.as_object().expect("object body") {
        assert_eq!(&created[field], value, "POST {path}: '{field}' is echoed");
    }
    let got = get_ok(s, &format!("/v1/{item}/{}", id_of(&created))).await;
    assert_eq!(got, created, "GET answers what POST created");
    created
}

/// `GET path` as admin, expecting 200 with an ETag equal to the revision
/// (for single objects).
pub async fn get_ok(s: &TestServer, path: &str) -> Value {
    let answer = send(s.req(Method::GET, path)).await;
    assert_eq!(answer.status, 200, "GET {path}: {}", text(&answer));
    let value = answer.json();
    if value.get("revision").is_some() {
        assert_eq!(
            answer.etag(),
            format!("\"{}\"", revision_of(&value)),
            "GET {path}: the ETag is the revision"
        );
    }
    value
}

/// `PATCH path fields` as admin, expecting 200 and a fresh ETag.
pub async fn patch_ok(s: &TestServer, path: &str, fields: Value) -> Value {
    let answer = send(s.json(Method::PATCH, path, &fields)).await;
    assert_eq!(
        answer.status,
        200,
        "PATCH {path} {fields}: {}",
        text(&answer)
    );
    let value = answer.json();
    assert_eq!(answer.etag(), format!("\"{}\"", revision_of(&value)));
    value
}

/// `DELETE path` as admin, expecting 204 with no body, then 404 on GET.
pub async fn delete_ok(s: &TestServer, path: &str) {
    let answer = send(s.req(Method::DELETE, path)).await;
    assert_eq!(answer.status, 204, "DELETE {path}: {}", text(&answer));
    assert!(answer.body.is_empty(), "a 204 has no body");
    let gone = send(s.req(Method::GET, path)).await;
    gone.problem(404, None);
    let again = send(s.req(Method::DELETE, path)).await;
    again.problem(404, None);
}

/// `PATCH` changed exactly `changed` (and the revision) and nothing else.
pub fn assert_patched(before: &Value, after: &Value, changed: &Value) {
    assert!(
        revision_of(after) > revision_of(before),
        "a PATCH moves the revision: {before} -> {after}"
    );
    let mut expected = before.clone();
    for (field, value) in changed.as_object().expect("object") {
        expected[field] = value.clone();
    }
    expected["revision"] = after["revision"].clone();
    assert_eq!(
        after, &expected,
        "PATCH {changed} changes only those fields"
    );
}

pub async fn tenant(s: &TestServer, name: &str) -> String {
    id_of(&create(s, "/v1/tenants", "tenants", json!({ "name": name })).await)
}

pub async fn router(s: &TestServer, tenant: &str, name: &str) -> String {
    id_of(
        &create(
            s,
            "/v1/routers",
            "routers",
            json!({ "tenant_id": tenant, "name": name }),
        )
        .await,
    )
}

pub async fn bridge(s: &TestServer, tenant: &str, name: &str) -> String {
    id_of(
        &create(
            s,
            "/v1/bridges",
            "bridges",
            json!({ "tenant_id": tenant, "name": name }),
        )
        .await,
    )
}

pub async fn chain(s: &TestServer, tenant: &str, name: &str) -> String {
    id_of(
        &create(
            s,
            "/v1/chains",
            "chains",
            json!({ "tenant_id": tenant, "name": name }),
        )
        .await,
    )
}

pub async fn bridge_port(s: &TestServer, bridge: &str) -> String {
    id_of(
        &create(
            s,
            &format!("/v1/bridges/{bridge}/ports"),
            "ports",
            json!({}),
        )
        .await,
    )
}

pub async fn router_port(s: &TestServer, router: &str, address: &str) -> String {
    id_of(
        &create(
            s,
            &format!("/v1/routers/{router}/ports"),
            "ports",
            json!({ "address": address }),
        )
        .await,
    )
}

pub async fn host(s: &TestServer, name: &str, tunnel_ip: &str) -> String {
    id_of(
        &create(
            s,
            "/v1/hosts",
            "hosts",
            json!({ "name": name, "tunnel_ip": tunnel_ip }),
        )
        .await,
    )
}

pub async fn link(s: &TestServer, port: &str, peer: &str) -> Value {
    let answer = send(s.json(
        Method::PUT,
        &format!("/v1/ports/{port}/link"),
        &json!({ "peer_id": peer }),
    ))
    .await;
    assert_eq!(answer.status, 200, "link {port} {peer}: {}", text(&answer));
    answer.json()
}

pub async fn token(s: &TestServer, tenant: &str) -> String {
    let id: Uuid = tenant.parse().expect("tenant id");
    s.admin
        .issue_tenant_token(id, "test")
        .await
        .expect("issue a tenant token")
        .token
}

/// Walks a listing page by page (`limit` per page) with `token`, checking
/// the page protocol, and returns every item.
pub async fn walk(s: &TestServer, token: &str, path: &str, limit: usize) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let url = match &after {
            Some(after) => format!("{path}{separator}limit={limit}&after={after}"),
            None => format!("{path}{separator}limit={limit}"),
        };
        let answer = send(s.as_token(token, Method::GET, &url)).await;
        assert_eq!(answer.status, 200, "GET {url}: {}", text(&answer));
        let page = answer.json();
        let page_items = page["items"].as_array().expect("items").clone();
        assert!(page_items.len() <= limit, "GET {url}: page over the limit");
        match page.get("next_after").filter(|v| !v.is_null()) {
            Some(next) => {
                assert_eq!(
                    page_items.len(),
                    limit,
                    "GET {url}: only the last page may be short"
                );
                assert_eq!(
                    next,
                    &page_items[limit - 1]["id"],
                    "GET {url}: next_after is the page's last id"
                );
                after = Some(next.as_str().expect("uuid").to_string());
                items.extend(page_items);
            }
            None => {
                items.extend(page_items);
                return items;
            }
        }
    }
    panic!("GET {path}: pagination never ends");
}

pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

pub fn id_set(items: &[Value]) -> BTreeSet<String> {
    let list = ids(items);
    let set: BTreeSet<String> = list.iter().cloned().collect();
    assert_eq!(set.len(), list.len(), "an item came twice: {list:?}");
    set
}

pub async fn list_ids(s: &TestServer, token: &str, path: &str) -> BTreeSet<String> {
    id_set(&walk(s, token, path, 1000).await)
}

/// Sends raw bytes as JSON.
pub fn raw_json(
    s: &TestServer,
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
) -> RequestBuilder {
    s.req(method, path)
        .header(CONTENT_TYPE, "application/json")
        .body(body.into())
}

/// Instantiates each `async fn case(server: &TestServer)` of the calling
/// test binary as two tests, one over the embedded store (`embedded::case`)
/// and one over the shared etcd (`etcd::case`). The binary must have
/// `TestServer` in scope at its root.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::TestServer::embedded().await).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::TestServer::etcd().await).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_backends;

/// The provider with its uplink on a fresh host (`plexus0`,
/// 100.64.0.2/24, the host side 100.64.0.1), as a deployment with an
/// uplink has it.
pub async fn provider_with_uplink(s: &TestServer) -> nsdb::Provider {
    let host = s
        .admin
        .create_host(&format!("gw-{}", Uuid::new_v4()), "192.0.2.1")
        .await
        .unwrap();
    let plan = ::api::provision::ProviderPlan {
        uplink: Some(::api::provision::UplinkPlan {
            host_id: host.id,
            interface: "plexus0".into(),
            address: "100.64.0.2/24".parse().unwrap(),
            gateway: "100.64.0.1".parse().unwrap(),
        }),
        ..::api::provision::ProviderPlan::default()
    };
    ::api::provision::ensure_provider(&s.nsdb, &plan)
        .await
        .unwrap()
}
