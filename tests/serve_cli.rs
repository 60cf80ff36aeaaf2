//! End-to-end: the `plexus serve` binary on both stores.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `plexus serve`, killed on drop if still running.
struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn start(args: &[&str]) -> Serve {
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .arg("serve")
        .args(["--listen", &addr])
        // No uplink TAP in the root namespace for these tests.
        .arg("--no-uplink")
        .args(args)
        .env_remove("PLEXUS_NSDB")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run plexus serve");
    let serve = Serve { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(&serve.addr, "/healthz") {
            return serve;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("plexus serve {args:?} never became healthy");
}

fn stop(mut serve: Serve) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = serve.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "plexus serve exited with {status} on SIGTERM"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("plexus serve ignored SIGTERM");
}

fn revision(body: &str) -> i64 {
    let json: serde_json::Value = serde_json::from_str(body).expect("healthz answers JSON");
    assert_eq!(json["status"], "ok");
    json["nsdb_revision"]
        .as_i64()
        .expect("healthz reports the NSDB revision")
}

#[test]
fn serve_on_embedded_store_restarts_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let serve = start(&["--data", data_arg]);
    assert!(
        Path::new(&data).join("nsdb.redb").exists(),
        "the embedded store lives in the data dir"
    );
    let (_, body) = http_get(&serve.addr, "/healthz").unwrap();
    let first = revision(&body);
    stop(serve);

    // Write through the store while the server is down, then restart on it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend = nsdb::EmbeddedBackend::open(&data.join("nsdb.redb")).unwrap();
        let db = nsdb::Nsdb::new(std::sync::Arc::new(backend));
        db.create(nsdb::Tenant {
            id: uuid::Uuid::new_v4(),
            revision: 0,
            name: "kept".into(),
            network: None,
        })
        .await
        .unwrap();
    });
    drop(rt);
    let serve = start(&["--data", data_arg]);
    let (_, body) = http_get(&serve.addr, "/healthz").unwrap();
    assert!(
        revision(&body) > first,
        "the restarted server sees what was written"
    );
    stop(serve);
}

#[test]
fn serve_on_etcd() {
    let url = format!(
        "etcd://{}/plexus-serve-test-{}/",
        support::etcd::shared(),
        uuid::Uuid::new_v4()
    );
    let serve = start(&["--nsdb", &url]);
    let (_, body) = http_get(&serve.addr, "/healthz").unwrap();
    assert!(revision(&body) >= 1);
    stop(serve);
}

#[test]
fn serve_rejects_a_bad_nsdb_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["serve", "--listen", &free_addr(), "--nsdb", "mysql://nope"])
        .env_remove("PLEXUS_NSDB")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mysql://nope") && stderr.contains("etcd[s]://HOST:PORT"),
        "the error names the bad value and what is expected: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn plexus_raw(envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_plexus"))
        .arg("raw")
        .args(args)
        .env_remove("PLEXUS_API")
        .env_remove("PLEXUS_TOKEN")
        .envs(envs.iter().copied())
        .output()
        .expect("run plexus raw")
}

#[test]
fn cli_finds_the_api_by_flag_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token = "cli-test-admin-token";
    let serve = start(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--admin-token",
        token,
    ]);
    let url = format!("http://{}", serve.addr);

    let created = plexus_raw(
        &[],
        &[
            "--api",
            &url,
            "--token",
            token,
            "POST",
            "/v1/tenants",
            r#"{"name":"from-cli"}"#,
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let tenant: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(tenant["name"], "from-cli");

    let listed = plexus_raw(
        &[("PLEXUS_API", &url), ("PLEXUS_TOKEN", token)],
        &["GET", "/v1/tenants"],
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(
        items.iter().any(|t| t["id"] == tenant["id"]),
        "the tenant is listed (beside the provider's): {page}"
    );

    let refused = plexus_raw(
        &[("PLEXUS_API", &url), ("PLEXUS_TOKEN", "wrong")],
        &["GET", "/v1/tenants"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "the CLI reports the API's refusal"
    );

    let unreachable = plexus_raw(
        &[],
        &[
            "--api",
            "http://127.0.0.1:1",
            "--token",
            token,
            "GET",
            "/v1/tenants",
        ],
    );
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("unreachable"));
    stop(serve);
}

#[test]
fn topology_shows_what_the_api_holds() {
    let dir = tempfile::tempdir().unwrap();
    let token = "topology-test-admin-token";
    let serve = start(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--admin-token",
        token,
    ]);
    let url = format!("http://{}", serve.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tenant_token = rt.block_on(async {
        let client = api::Client::new(&url, token).unwrap();
        let tenant = client.create_tenant("acme").await.unwrap();
        let router = client.create_router(tenant.id, "edge").await.unwrap();
        let bridge = client.create_bridge(tenant.id, "web").await.unwrap();
        let rport = client.create_router_port(router.id, "10.0.1.1/24").await.unwrap();
        let bport = client.create_bridge_port(bridge.id, serde_json::json!({})).await.unwrap();
        client.link(rport.id, bport.id).await.unwrap();
        let route = serde_json::json!({"dst": "0.0.0.0/0", "next_hop_port": rport.id, "next_hop_gateway": "10.0.1.254"});
        client.create_route(router.id, route).await.unwrap();
        let other = client.create_tenant("zeta").await.unwrap();
        client.create_router(other.id, "hidden").await.unwrap();
        client.issue_tenant_token(tenant.id, "topology test").await.unwrap().token
    });

    let run = |token: &str, extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(["topology", "--api", &url, "--token", token])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let tree = run(token, &[]);
    for expected in [
        "tenant acme",
        "router edge",
        "address 10.0.1.1/24",
        "bridge web",
        "on router edge",
        "route 0.0.0.0/0",
        "gw 10.0.1.254",
        "tenant zeta",
        "router hidden",
    ] {
        assert!(tree.contains(expected), "missing '{expected}' in:\n{tree}");
    }
    let only_acme = run(token, &["--tenant", "acme"]);
    assert!(
        only_acme.contains("router edge") && !only_acme.contains("zeta"),
        "{only_acme}"
    );
    // A tenant token sees its own tenant only.
    let as_tenant = run(&tenant_token, &[]);
    assert!(
        as_tenant.contains("router edge") && !as_tenant.contains("hidden"),
        "{as_tenant}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(token, &["--format", "json", "--tenant", "acme"])).unwrap();
    assert_eq!(json["tenants"][0]["routers"][0]["router"]["name"], "edge");
    // As a graph: DOT text, and SVG drawn by Graphviz.
    let dot = run(token, &["--format", "dot", "--tenant", "acme"]);
    assert!(dot.starts_with("graph plexus {"), "{dot}");
    for expected in ["tenant acme", "router edge", "bridge web", "10.0.1.1/24"] {
        assert!(dot.contains(expected), "missing '{expected}' in:\n{dot}");
    }
    let svg = run(token, &["--format", "svg", "--tenant", "acme"]);
    assert!(svg.contains("<svg"), "{svg}");
    for expected in ["router edge", "bridge web", "10.0.1.1/24"] {
        assert!(svg.contains(expected), "missing '{expected}' in the SVG");
    }
    stop(serve);
}
