//! End-to-end: the web UI at `/ui/` in Debian's headless Chromium, against
//! a real `plexus serve` with a tenant (a router linked to the provider
//! uplink, two bridges, a pod on each, pinging): the page logs in, draws
//! every device by name, shows the pods' live counters, runs a trace from
//! its form and highlights the path; then a screenshot is kept as an
//! artifact. A tenant token sees only its own tenant.
//!
//! Needs root (network namespaces) and the `chromium` package; without
//! Chromium the test fails rather than passing unchecked.

mod support;

#[path = "ui_chromium/cdp.rs"]
mod cdp;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::lb::wait_health;
use support::netns::Pod;
use support::world::{tcp_server, wait_ping, Deployment};
use uuid::Uuid;

/// Where the screenshot goes: `$PLEXUS_UI_ARTIFACTS`, else
/// `target/ui-artifacts/`.
fn artifact_dir() -> PathBuf {
    match std::env::var_os("PLEXUS_UI_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target dir")
            .join("ui-artifacts"),
    }
}

fn short(id: Uuid) -> String {
    id.to_string()[..8].to_string()
}

/// A load balancer on `router` with a TCP-monitored pool of two members on
/// the db pod (10.200.2.10, ports 8080 and 8081) behind a VIP;
/// returns the members' ids.
async fn balance(c: &api::Client, router: Uuid) -> Vec<Uuid> {
    let lb: Value = c
        .post(
            "/v1/load_balancers",
            &json!({"router_id": router, "name": "lb"}),
        )
        .await
        .unwrap();
    let pool: Value = c
        .post(
            "/v1/pools",
            &json!({"load_balancer_id": lb["id"], "name": "db"}),
        )
        .await
        .unwrap();
    let mut members = Vec::new();
    for port in [8080, 8081] {
        let member: Value = c
            .post(
                "/v1/members",
                &json!({"pool_id": pool["id"], "address": "10.200.2.10", "port": port}),
            )
            .await
            .unwrap();
        members.push(member["id"].as_str().unwrap().parse().unwrap());
    }
    let _: Value = c
        .post(
            "/v1/vips",
            &json!({"load_balancer_id": lb["id"], "name": "db", "pool_id": pool["id"], "address": "10.96.0.10", "protocol": "tcp", "port": 8080}),
        )
        .await
        .unwrap();
    let _: Value = c
        .post(
            "/v1/health_monitors",
            &json!({"pool_id": pool["id"], "type": "tcp", "interval_ms": 300, "timeout_ms": 250, "failures_to_down": 2, "successes_to_up": 2}),
        )
        .await
        .unwrap();
    members
}

/// The drawn nodes as (kind, name) pairs.
fn drawn(browser: &mut cdp::Browser) -> Vec<(String, String)> {
    let nodes = browser.eval(
        "[...document.querySelectorAll('#graph .node')].map(n => [n.classList[1], n.dataset.name])",
    );
    serde_json::from_value(nodes).unwrap()
}

fn log_in(browser: &mut cdp::Browser, token: &str) {
    browser.wait_for(
        "document.getElementById('login-form') && !document.getElementById('login').hidden",
        Duration::from_secs(10),
        "the login form",
    );
    browser.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('login-form').requestSubmit(); true",
        json!(token)
    ));
    browser.wait_for(
        "document.getElementById('status').dataset.state === 'ready' \
         && document.querySelector('#graph .node') \
         && document.getElementById('graph').dataset.countersAt",
        Duration::from_secs(20),
        "the drawn topology with its counters",
    );
}

/// Checks the page's files: content types, the policy, no token needed.
async fn check_assets(url: &str) {
    let page = reqwest::get(format!("{url}/ui/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    for (file, media_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let answer = reqwest::get(format!("{url}/ui/{file}")).await.unwrap();
        assert_eq!(answer.status(), 200, "{file}");
        assert_eq!(answer.headers()["content-type"], media_type, "{file}");
    }
    let missing = reqwest::get(format!("{url}/ui/nothing.js")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let counters = reqwest::get(format!("{url}/v1/port_counters"))
        .await
        .unwrap();
    assert_eq!(counters.status(), 401, "data calls need the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_a_tenant_with_counters_and_highlights_a_trace() {
    let started = Instant::now();
    let dep = Deployment::start().await;
    let c = &dep.client;
    check_assets(&dep.plexus.url).await;

    // The tenant: its default network (router "default" linked to the
    // provider router, bridge "default") and a second bridge "db".
    let tenant = dep.tenant(None).await;
    let router = tenant.net.router.id;
    let db = c.create_bridge(tenant.id, "db").await.unwrap();
    let router_port = c.create_router_port(router, "10.200.2.1/24").await.unwrap();
    let db_link = c.create_bridge_port(db.id, json!({})).await.unwrap();
    c.link(router_port.id, db_link.id).await.unwrap();
    let (web, web_port) = dep.pod(&tenant, 10).await;
    let db_pod = Pod::new("10.200.2.10/24", Some("10.200.2.1"));
    let db_port = c
        .create_bridge_port(
            db.id,
            json!({"mac": db_pod.mac, "allowed_addresses": [{"mac": db_pod.mac, "ip": "10.200.2.10/32"}]}),
        )
        .await
        .unwrap();
    c.bind(db_port.id, dep.host, &db_pod.host_if).await.unwrap();
    wait_ping(&web, "10.200.2.10");
    assert_eq!(web.ping("10.200.2.10", 5, &[]).0, 5);
    // A load balancer whose monitor finds one member up and one down
    // (nothing listens on 8081).
    let _backend = tcp_server(&db_pod.netns, &[8080], "db");
    let members = balance(c, router).await;
    wait_health(c, members[0], "up", Duration::from_secs(15)).await;
    wait_health(c, members[1], "down", Duration::from_secs(15)).await;
    let hosts: Vec<nsdb::Host> = c.list("/v1/hosts").await.unwrap();
    let host_name = hosts
        .iter()
        .find(|h| h.id == dep.host)
        .unwrap()
        .name
        .clone();

    let mut browser = cdp::Browser::start(1400, 900);
    browser.navigate(&format!("{}/ui/", dep.plexus.url));
    log_in(&mut browser, &dep.plexus.token);
    let nodes = drawn(&mut browser);
    for (kind, name) in [
        ("router", "default".to_string()),
        ("bridge", "default".to_string()),
        ("bridge", "db".to_string()),
        ("endpoint", short(web_port)),
        ("endpoint", short(db_port.id)),
        ("host", host_name),
        ("uplink", "provider".to_string()),
        ("member", "10.200.2.10:8080".to_string()),
        ("member", "10.200.2.10:8081".to_string()),
    ] {
        assert!(
            nodes.iter().any(|(k, n)| k == kind && *n == name),
            "no {kind} '{name}' drawn: {nodes:?}"
        );
    }

    let health: Vec<String> = serde_json::from_value(browser.eval(
        "[...document.querySelectorAll('#graph .node.member')].map(n => n.dataset.name + ' ' + n.classList[2])",
    ))
    .unwrap();
    assert!(
        health.contains(&"10.200.2.10:8080 health-up".to_string())
            && health.contains(&"10.200.2.10:8081 health-down".to_string()),
        "{health:?}"
    );

    // The pods' counters, from the datapath, on their nodes.
    let counters = |port: Uuid| {
        format!(
            "[...document.querySelectorAll('#graph text.counters[data-port=\"{port}\"]')].map(t => t.textContent).join('; ')"
        )
    };
    for port in [web_port, db_port.id] {
        browser.wait_for(
            &format!(
                "/^rx [1-9]\\d* pkt, [\\d.]+ k?B; tx [1-9]\\d* pkt, [\\d.]+ k?B; .*answered [1-9]/.test({})",
                counters(port)
            ),
            Duration::from_secs(10),
            &format!("packet counters on port {}", short(port)),
        );
    }

    // A trace from the page: web pod to db pod, through the router.
    browser.eval(&format!(
        "document.getElementById('trace-port').value = '{web_port}';
         document.getElementById('trace-dst').value = '10.200.2.10';
         document.getElementById('trace-form').requestSubmit(); true"
    ));
    browser.wait_for(
        "document.getElementById('trace-verdict').textContent.startsWith('verdict')",
        Duration::from_secs(10),
        "the trace's verdict",
    );
    assert_eq!(
        browser.eval("document.getElementById('trace-verdict').textContent"),
        "verdict: deliver"
    );
    let output = browser.eval("document.getElementById('trace-output').textContent");
    let output = output.as_str().unwrap();
    assert!(
        output.contains("trace: icmp 10.128.0.10 > 10.200.2.10") && output.contains("bridge db"),
        "{output}"
    );
    let on_path: Vec<String> = serde_json::from_value(
        browser.eval("[...document.querySelectorAll('#graph .on-path')].map(e => e.dataset.id)"),
    )
    .unwrap();
    for id in [
        router.to_string(),
        tenant.net.bridge.id.to_string(),
        db.id.to_string(),
        format!("port:{web_port}"),
        format!("port:{}", db_port.id),
        format!("attach:{web_port}"),
        format!("attach:{}", db_port.id),
    ] {
        assert!(
            on_path.contains(&id),
            "{id} is not highlighted: {on_path:?}"
        );
    }
    let links = on_path.iter().filter(|id| id.starts_with("link:")).count();
    assert_eq!(
        links, 2,
        "both router-bridge links are on the path: {on_path:?}"
    );
    assert!(
        !on_path
            .iter()
            .any(|id| id.starts_with("uplink") || id.starts_with("host:")),
        "only the path is highlighted: {on_path:?}"
    );

    let dir = artifact_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let shot = dir.join("topology.png");
    std::fs::write(&shot, &png).unwrap();
    println!("ui_chromium: screenshot in {}", shot.display());

    // A tenant token: its own tenant only, the uplink's far side hidden.
    let other = c.create_tenant("other").await.unwrap();
    let token = c.issue_tenant_token(tenant.id, "ui").await.unwrap().token;
    browser.eval("document.getElementById('logout').click(); true");
    log_in(&mut browser, &token);
    let tenants: Vec<String> = serde_json::from_value(
        browser.eval("[...document.getElementById('tenant').options].map(o => o.textContent)"),
    )
    .unwrap();
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_ne!(tenants[0], other.name);
    let nodes = drawn(&mut browser);
    assert!(nodes.iter().any(|(k, n)| k == "bridge" && n == "db"));
    assert!(nodes.iter().any(|(k, _)| k == "uplink"), "{nodes:?}");
    browser.wait_for(
        &format!("/rx [1-9]/.test({})", counters(web_port)),
        Duration::from_secs(10),
        "a tenant's own counters",
    );
    assert_eq!(
        browser.eval("document.getElementById('who').textContent"),
        "tenant token"
    );

    // The one refusal expected: the page asks once whether the token may
    // list hosts (the admin's view), and a tenant token may not.
    let errors: Vec<&String> = browser
        .errors
        .iter()
        .filter(|e| !(e.contains("status of 403") && e.contains("/v1/hosts?")))
        .collect();
    assert!(
        errors.is_empty(),
        "the page reported errors (a blocked script or style shows here): {errors:?}"
    );
    drop(browser);
    println!("ui_chromium: {:.1} s", started.elapsed().as_secs_f64());
}
