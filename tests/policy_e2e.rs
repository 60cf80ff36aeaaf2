//! End-to-end: rule chains on pods' ports with real packets: filtering,
//! stateful policy, reject, and rule/group changes reaching cached flows;
//! `plexus trace` names the rule that decided. Needs root.

mod support;

use support::live_trace::LiveTrace;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::netns::Pod;
use support::world::{tcp_probe, tcp_server, udp_probe, udp_server, wait_ping, Deployment};
use uuid::Uuid;

/// Attaches a new chain of `rules` as the outbound filter of `port`
/// (packets leaving the bridge toward the pod); returns the chain.
async fn guard_port(d: &Deployment, tenant: Uuid, port: Uuid, name: &str, rules: &[Value]) -> Uuid {
    let chain = d.client.create_chain(tenant, name).await.unwrap().id;
    for rule in rules {
        d.client.create_rule(chain, rule.clone()).await.unwrap();
    }
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{port}"),
            &json!({ "outbound_chain_id": chain }),
            None,
        )
        .await
        .unwrap();
    chain
}

/// Waits until `ping_ok` from `pod` to `dst` is what pings show (3 s at most),
/// then checks it stays so for two more pings.
fn expect_ping(pod: &Pod, dst: &str, ping_ok: bool, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if (pod.ping(dst, 1, &[]).0 == 1) == ping_ok {
            break;
        }
    }
    let (received, text) = pod.ping(dst, 2, &[]);
    assert_eq!(received == 2, ping_ok, "{why}: {text}");
}

fn plexus(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plexus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `plexus trace` of a TCP packet from `port` to `dst`, with `extra` flags.
fn trace_tcp(d: &Deployment, port: Uuid, dst: &str, extra: &[&str]) -> String {
    let (url, token, port) = (&d.plexus.url, &d.plexus.token, port.to_string());
    let base = [
        "trace", "--api", url, "--token", token, "--port", &port, "--dst-ip", dst, "--proto", "tcp",
    ];
    plexus(&[&base[..], extra].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_chain_drops_ssh_and_the_trace_names_the_rule() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, a_port) = d.pod(&t, 10).await;
    let (b, b_port) = d.pod(&t, 11).await;
    let b_ip = t.address(11).to_string();
    let _server = tcp_server(&b.netns, &[22, 8080], "b");
    assert_eq!(
        tcp_probe(&a, &b_ip, 22, 3.0, None).split(' ').next(),
        Some("b")
    );

    let chain = guard_port(
        &d,
        t.id,
        b_port,
        "no-ssh",
        &[json!({"position": 1, "action": "drop", "protocol": "tcp", "dst_ports": "22", "description": "no ssh"})],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while tcp_probe(&a, &b_ip, 22, 0.5, None).starts_with("b ") {
        assert!(Instant::now() < deadline, "the new rule never took effect");
    }
    let ssh = tcp_probe(&a, &b_ip, 22, 1.5, None);
    assert!(ssh.contains("Timeout"), "TCP/22 must time out: {ssh}");
    let web = tcp_probe(&a, &b_ip, 8080, 3.0, None);
    assert!(web.starts_with("b "), "TCP/8080 still works: {web}");
    // The drop rule counted the SYNs it dropped (first ones through the
    // engine, retransmissions through the cached flow).
    let rules: Vec<nsdb::Rule> = d
        .client
        .list(&format!("/v1/chains/{chain}/rules"))
        .await
        .unwrap();
    let series = format!(
        "plexus_rule_hits_total{{chain=\"{chain}\",rule=\"{}\"}}",
        rules[0].id
    );
    let hits = d.plexus.metric(&series).await;
    assert!(hits >= 2, "{series} = {hits}");

    let dropped = trace_tcp(&d, a_port, &b_ip, &["--dport", "22"]);
    for expected in ["chain no-ssh rule 1 (no ssh): drop", "verdict: drop"] {
        assert!(
            dropped.contains(expected),
            "missing '{expected}' in:\n{dropped}"
        );
    }
    let allowed = trace_tcp(&d, a_port, &b_ip, &["--dport", "8080"]);
    assert!(allowed.contains("verdict: deliver"), "{allowed}");

    // The live trace of a real SYN to port 22 names the rule that dropped
    // it; traffic to 8080 matches no request and is not shown.
    let port = a_port.to_string();
    let flags = [
        "--port",
        &port,
        "--proto",
        "tcp",
        "--dport",
        "22",
        "--count",
        "1",
        "--seconds",
        "30",
    ];
    let live = LiveTrace::start(&d.plexus.url, &d.plexus.token, &flags).await;
    let (out, err) = live.run_while(Duration::from_secs(20), || {
        tcp_probe(&a, &b_ip, 8080, 1.0, None);
        tcp_probe(&a, &b_ip, 22, 0.5, None);
    });
    for expected in [
        "in by port",
        "chain no-ssh rule 1 (no ssh): drop",
        "verdict: drop",
        "dropped: RuleDrop",
        "by rule 1 (no ssh) in chain no-ssh",
    ] {
        assert!(
            out.contains(expected),
            "missing '{expected}' in:\n{out}\n{err}"
        );
    }
    assert!(!out.contains("8080"), "only the matching packet: {out}");
    let left: Vec<serde_json::Value> = d.client.get("/v1/trace_requests").await.unwrap();
    assert!(left.is_empty(), "the CLI ends its request: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_established_drop_new_lets_only_the_pods_own_connections_in() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, a_port) = d.pod(&t, 10).await;
    let (b, b_port) = d.pod(&t, 11).await;
    let (a_ip, b_ip) = (t.address(10).to_string(), t.address(11).to_string());
    let _a_server = tcp_server(&a.netns, &[8080], "a");
    let _b_server = tcp_server(&b.netns, &[8080], "b");
    guard_port(
        &d,
        t.id,
        b_port,
        "stateful",
        &[
            json!({"position": 1, "action": "accept", "conn_state": ["established", "related"]}),
            json!({"position": 2, "action": "drop", "conn_state": ["new"]}),
        ],
    )
    .await;
    expect_ping(&a, &b_ip, false, "new inbound pings are dropped");
    let inbound = tcp_probe(&a, &b_ip, 8080, 1.5, None);
    assert!(
        inbound.starts_with("ERR"),
        "a new inbound connection must fail: {inbound}"
    );
    let outbound = tcp_probe(&b, &a_ip, 8080, 3.0, None);
    assert!(
        outbound.starts_with("a "),
        "b's own connection works: {outbound}"
    );
    let (received, text) = b.ping(&a_ip, 3, &[]);
    assert_eq!(received, 3, "b's own pings get their replies: {text}");

    // A trace of the reply to b's open connection: with nothing learned it
    // is a new connection (dropped); on the agent's live state it is
    // established (delivered), and the output says which state it used.
    let client = format!(
        "import socket,time\ns=socket.socket();s.bind(('{b_ip}',40001))\n\
         s.connect(('{a_ip}',8080));s.sendall(b'hi\\n');print(s.makefile().readline().strip(),flush=True)\n\
         time.sleep(5)"
    );
    let mut open = std::process::Command::new("ip")
        .args(["netns", "exec", &b.netns, "python3", "-c", &client])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = open.stdout.take().unwrap();
    // Killed by its guard, also when an assertion below fails.
    let _open = support::cluster::Process(open);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(line.starts_with("a "), "b's connection is open: {line}");
    let reply = ["--sport", "8080", "--dport", "40001"];
    let empty = trace_tcp(&d, a_port, &b_ip, &reply);
    assert!(
        empty.contains("state: empty") && empty.contains("verdict: drop"),
        "{empty}"
    );
    let live = trace_tcp(
        &d,
        a_port,
        &b_ip,
        &[&reply[..], &["--state", "live"]].concat(),
    );
    assert!(
        live.contains("state: live (learned by host") && live.contains("verdict: deliver"),
        "{live}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_answers_tcp_with_a_reset_and_udp_with_port_unreachable() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, _) = d.pod(&t, 10).await;
    let (b, b_port) = d.pod(&t, 11).await;
    let b_ip = t.address(11).to_string();
    // Servers listen on the rejected ports too: the refusal is Plexus's.
    let _tcp = tcp_server(&b.netns, &[23, 24], "b");
    let _udp53 = udp_server(&b.netns, 53, "b");
    let _udp54 = udp_server(&b.netns, 54, "b");
    guard_port(
        &d,
        t.id,
        b_port,
        "rejects",
        &[
            json!({"position": 1, "action": "reject", "protocol": "tcp", "dst_ports": "23"}),
            json!({"position": 2, "action": "reject", "protocol": "udp", "dst_ports": "53"}),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !tcp_probe(&a, &b_ip, 23, 0.5, None).starts_with("ERR") {
        assert!(
            Instant::now() < deadline,
            "the reject rule never took effect"
        );
    }
    let started = Instant::now();
    let telnet = tcp_probe(&a, &b_ip, 23, 3.0, None);
    assert_eq!(telnet, "ERR ConnectionRefusedError", "TCP gets a reset");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused, not timed out"
    );
    let dns = udp_probe(&a, &b_ip, 53, 3.0);
    assert_eq!(
        dns, "ERR ConnectionRefusedError",
        "UDP gets port unreachable"
    );
    assert!(tcp_probe(&a, &b_ip, 24, 3.0, None).starts_with("b "));
    assert!(udp_probe(&a, &b_ip, 54, 3.0).starts_with("b "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_and_group_changes_reach_cached_flows() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, a_port) = d.pod(&t, 10).await;
    let (_b, b_port) = d.pod(&t, 11).await;
    let (a_ip, b_ip) = (t.address(10).to_string(), t.address(11).to_string());
    let chain = guard_port(&d, t.id, b_port, "changing", &[]).await;
    // The flow is cached before any rule exists.
    expect_ping(&a, &b_ip, true, "no rule yet");

    let drop = d
        .client
        .create_rule(
            chain,
            json!({"position": 1, "action": "drop", "protocol": "icmp"}),
        )
        .await
        .unwrap();
    expect_ping(
        &a,
        &b_ip,
        false,
        "an inserted drop rule stops the cached flow",
    );
    let accept = d
        .client
        .create_rule(
            chain,
            json!({"position": 1, "action": "accept", "protocol": "icmp"}),
        )
        .await
        .unwrap();
    expect_ping(&a, &b_ip, true, "an accept inserted above the drop wins");
    let _: nsdb::Rule = d
        .client
        .put(
            &format!("/v1/rules/{}/position", accept.id),
            &json!({"position": 2}),
        )
        .await
        .unwrap();
    expect_ping(&a, &b_ip, false, "moving the accept below the drop");
    d.client
        .delete(&format!("/v1/rules/{}", drop.id), None)
        .await
        .unwrap();
    expect_ping(&a, &b_ip, true, "deleting the drop");
    d.client
        .delete(&format!("/v1/rules/{}", accept.id), None)
        .await
        .unwrap();

    // Port groups.
    let group: Value = d
        .client
        .post(
            "/v1/port_groups",
            &json!({"tenant_id": t.id, "name": "blocked"}),
        )
        .await
        .unwrap();
    let group = group["id"].as_str().unwrap().to_string();
    d.client
        .create_rule(
            chain,
            json!({"position": 1, "action": "drop", "in_port_group_id": group}),
        )
        .await
        .unwrap();
    expect_ping(&a, &b_ip, true, "the group is empty");
    let member = format!("/v1/port_groups/{group}/ports/{a_port}");
    let _: Value = d.client.put(&member, &json!({})).await.unwrap();
    expect_ping(&a, &b_ip, false, "a's port joined the blocked group");
    d.client.delete(&member, None).await.unwrap();
    expect_ping(&a, &b_ip, true, "a's port left the blocked group");

    // IP address groups.
    let ips: Value = d
        .client
        .post(
            "/v1/ip_address_groups",
            &json!({"tenant_id": t.id, "name": "bad-sources"}),
        )
        .await
        .unwrap();
    let ips = ips["id"].as_str().unwrap().to_string();
    d.client
        .create_rule(
            chain,
            json!({"position": 1, "action": "drop", "src_ip_group_id": ips}),
        )
        .await
        .unwrap();
    expect_ping(&a, &b_ip, true, "the address group is empty");
    let _: Value = d
        .client
        .post(
            &format!("/v1/ip_address_groups/{ips}/addresses"),
            &json!({"address": format!("{a_ip}/32")}),
        )
        .await
        .unwrap();
    expect_ping(&a, &b_ip, false, "a's address joined the group");
    d.client
        .delete(
            &format!("/v1/ip_address_groups/{ips}/addresses/{a_ip}%2F32"),
            None,
        )
        .await
        .unwrap();
    expect_ping(&a, &b_ip, true, "a's address left the group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_may_not_send_from_another_address_even_inside_its_tenant() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, a_port) = d.pod(&t, 10).await;
    let (_b, _) = d.pod(&t, 11).await;
    let b_ip = t.address(11).to_string();
    wait_ping(&a, &b_ip);
    let spoof = t.address(12).to_string();
    a.exec(&["ip", "addr", "add", &format!("{spoof}/32"), "dev", "eth0"]);
    let (received, text) = a.ping(&b_ip, 3, &["-I", &spoof]);
    assert_eq!(received, 0, "a spoofed source must be dropped: {text}");
    let trace = plexus(&[
        "trace",
        "--api",
        &d.plexus.url,
        "--token",
        &d.plexus.token,
        "--port",
        &a_port.to_string(),
        "--dst-ip",
        &b_ip,
        "--src-ip",
        &spoof,
    ]);
    assert!(
        trace.contains("port_security")
            && trace.contains("is not allowed")
            && trace.contains("Spoofed"),
        "the trace shows the anti-spoofing drop:\n{trace}"
    );
}
