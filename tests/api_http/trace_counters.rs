//! `POST /v1/trace` and `GET /v1/port_counters`, the two calls the web UI
//! needs beyond the collections: answers, refusals naming the field, and
//! what a tenant token may see.

use reqwest::Method;
use serde_json::json;

use crate::support::api::*;

/// Two pods on two bridges behind a router; a trace between them is
/// delivered, as `plexus trace` would say.
pub async fn trace_over_http(s: &TestServer) {
    let acme = tenant(s, "acme").await;
    let router = router(s, &acme, "edge").await;
    // Bound to a host this server runs no agent for: the trace still routes.
    let elsewhere = host(s, "elsewhere", "192.0.2.77").await;
    let mut pods = Vec::new();
    for n in 1..=2 {
        let bridge = bridge(s, &acme, &format!("net{n}")).await;
        let rport = router_port(s, &router, &format!("10.0.{n}.1/24")).await;
        let bport = bridge_port(s, &bridge).await;
        link(s, &rport, &bport).await;
        let mac = format!("02:00:00:00:0{n}:10");
        let pod = create(
            s,
            &format!("/v1/bridges/{bridge}/ports"),
            "ports",
            json!({"mac": mac, "allowed_addresses": [{"mac": mac, "ip": format!("10.0.{n}.10/32")}]}),
        )
        .await;
        let binding = json!({"host_id": elsewhere, "interface_name": format!("veth{n}")});
        let path = format!("/v1/ports/{}/binding", id_of(&pod));
        let answer = send(s.json(Method::PUT, &path, &binding)).await;
        assert_eq!(answer.status, 200, "{}", text(&answer));
        pods.push(id_of(&pod));
    }
    let body =
        json!({"port_id": pods[0], "dst_ip": "10.0.2.10", "protocol": "udp", "dst_port": 53});
    let answer = send(s.json(Method::POST, "/v1/trace", &body)).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let trace = answer.json();
    assert_eq!(trace["trace"]["verdict"], "deliver", "{trace}");
    assert!(trace["summary"]
        .as_str()
        .unwrap()
        .starts_with("trace: udp 10.0.1.10 > 10.0.2.10 ttl 64"));
    assert!(trace["text"].as_str().unwrap().contains("router edge"));
    assert_eq!(trace["trace"]["outputs"][0]["port"], pods[1].as_str());

    // The owner's token traces its own ports; another tenant's cannot
    // tell they exist.
    let own = token(s, &acme).await;
    let answer = send(s.json_as(&own, Method::POST, "/v1/trace", &body)).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let globex = tenant(s, "globex").await;
    let stranger = token(s, &globex).await;
    let answer = send(s.json_as(&stranger, Method::POST, "/v1/trace", &body)).await;
    answer.problem(404, None);

    // Refusals name the field at fault.
    let cases = [
        (json!({"port_id": pods[0]}), "dst_ip"),
        (
            json!({"port_id": pods[0], "dst_ip": "10.0.2.10", "ttl": 300}),
            "ttl",
        ),
        (
            json!({"port_id": pods[0], "dst_ip": "10.0.2.10", "protocol": "sctp"}),
            "protocol",
        ),
        (
            json!({"port_id": pods[0], "dst_ip": "10.0.2.10", "color": "red"}),
            "color",
        ),
    ];
    for (body, field) in cases {
        let answer = send(s.json(Method::POST, "/v1/trace", &body)).await;
        answer.problem(400, Some(field));
    }
    let rport = router_port(s, &router, "10.0.9.1/24").await;
    let body = json!({"port_id": rport, "dst_ip": "10.0.2.10"});
    let answer = send(s.json(Method::POST, "/v1/trace", &body)).await;
    answer.problem(422, Some("dst_mac"));

    // The state it ran on is named; a server without a datapath (this one)
    // has no live state to offer.
    let body = json!({"port_id": pods[0], "dst_ip": "10.0.2.10"});
    let answer = send(s.json(Method::POST, "/v1/trace", &body)).await;
    assert_eq!(answer.json()["state"], "empty (nothing learned)");
    let live = json!({"port_id": pods[0], "dst_ip": "10.0.2.10", "state": "live"});
    let answer = send(s.json(Method::POST, "/v1/trace", &live)).await;
    answer.problem(422, Some("state"));
    // Another host's agent is asked only when it is alive (this one never
    // ran an agent).
    let remote =
        json!({"port_id": pods[0], "dst_ip": "10.0.2.10", "state": "live", "host_id": elsewhere});
    let answer = send(s.json(Method::POST, "/v1/trace", &remote)).await;
    answer.problem(422, Some("host_id"));
}

/// A server without a datapath (this one) says so: no hosts, no counters;
/// the query is checked and the token needed.
pub async fn port_counters_over_http(s: &TestServer) {
    let acme = tenant(s, "acme").await;
    for path in [
        "/v1/port_counters".to_string(),
        format!("/v1/port_counters?tenant_id={acme}"),
    ] {
        let answer = send(s.req(Method::GET, &path)).await;
        assert_eq!(answer.status, 200, "{}", text(&answer));
        assert_eq!(answer.json(), json!({"hosts": [], "items": []}));
    }
    let own = token(s, &acme).await;
    let answer = send(s.as_token(&own, Method::GET, "/v1/port_counters")).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let answer = send(s.req(Method::GET, "/v1/port_counters?tenant_id=acme")).await;
    answer.problem(400, Some("tenant_id"));
    let answer = send(s.req(Method::GET, "/v1/port_counters?limit=5")).await;
    answer.problem(400, Some("limit"));
    let answer = send(s.anonymous(Method::GET, "/v1/port_counters")).await;
    answer.problem(401, None);
}

/// Live trace requests: made, listed, shown, streamed and ended; checked
/// fields; a tenant traces only its own ports and sees only its requests.
pub async fn live_trace_requests_over_http(s: &TestServer) {
    let acme = tenant(s, "acme").await;
    let bridge = bridge(s, &acme, "net").await;
    let port = bridge_port(s, &bridge).await;
    let body = json!({"port_id": port, "dst_ip": "10.0.0.0/24", "protocol": "tcp", "dst_port": 22, "limit_packets": 5, "limit_seconds": 30});
    let answer = send(s.json(Method::POST, "/v1/trace_requests", &body)).await;
    assert_eq!(answer.status, 201, "{}", text(&answer));
    let made = answer.json();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["protocol"], 6);
    assert_eq!(made["dst_ip"], "10.0.0.0/24");
    assert_eq!(made["tenant_id"], serde_json::Value::Null);
    let listed = send(s.req(Method::GET, "/v1/trace_requests")).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let path = format!("/v1/trace_requests/{id}");
    let shown = send(s.req(Method::GET, &path)).await;
    assert_eq!(shown.json()["id"], id.as_str());

    // The stream stays open until the request ends, then says so.
    let events = tokio::spawn(send(s.req(Method::GET, &format!("{path}/events"))));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ended = send(s.req(Method::DELETE, &path)).await;
    assert_eq!(ended.status, 204, "{}", text(&ended));
    let stream = events.await.unwrap();
    assert_eq!(stream.status, 200);
    assert!(stream.content_type().starts_with("text/event-stream"));
    assert!(text(&stream).contains("event: end"), "{}", text(&stream));
    send(s.req(Method::GET, &path)).await.problem(404, None);
    send(s.req(Method::DELETE, &path)).await.problem(404, None);

    // Refusals name the field at fault.
    let other = uuid::Uuid::new_v4();
    for (body, status, field) in [
        (json!({"port_id": port, "src_ip": "10.0.0"}), 422, "src_ip"),
        (
            json!({"port_id": port, "protocol": "gre2"}),
            422,
            "protocol",
        ),
        (
            json!({"port_id": port, "limit_packets": 0}),
            422,
            "limit_packets",
        ),
        (
            json!({"port_id": port, "limit_seconds": 7200}),
            422,
            "limit_seconds",
        ),
        (json!({"port_id": other}), 404, "port_id"),
        (json!({"device_id": other}), 404, "device_id"),
        (json!({"port_id": port, "colour": "red"}), 400, "colour"),
    ] {
        let answer = send(s.json(Method::POST, "/v1/trace_requests", &body)).await;
        answer.problem(status, Some(field));
    }

    // Tenants: their own ports only, a port or device named, their own
    // requests seen.
    let own = token(s, &acme).await;
    let globex = tenant(s, "globex").await;
    let stranger = token(s, &globex).await;
    let mine = json!({"device_id": bridge});
    let answer = send(s.json_as(&own, Method::POST, "/v1/trace_requests", &mine)).await;
    assert_eq!(answer.status, 201, "{}", text(&answer));
    let theirs = answer.json();
    assert_eq!(theirs["tenant_id"], acme.as_str());
    let anything = json!({"protocol": "icmp"});
    let answer = send(s.json_as(&own, Method::POST, "/v1/trace_requests", &anything)).await;
    answer.problem(422, Some("port_id"));
    let answer = send(s.json_as(&stranger, Method::POST, "/v1/trace_requests", &mine)).await;
    answer.problem(404, Some("device_id"));
    let seen = send(s.as_token(&stranger, Method::GET, "/v1/trace_requests")).await;
    assert_eq!(seen.json(), json!([]));
    let path = format!("/v1/trace_requests/{}", theirs["id"].as_str().unwrap());
    send(s.as_token(&stranger, Method::GET, &path))
        .await
        .problem(404, None);
    send(s.as_token(&stranger, Method::DELETE, &path))
        .await
        .problem(404, None);
    let ended = send(s.as_token(&own, Method::DELETE, &path)).await;
    assert_eq!(ended.status, 204, "{}", text(&ended));
}
