//! End-to-end: IPv6 between two pods of one bridge obeys the same rule
//! chains and port security as IPv4, with real packets (`nc -6`). Needs root.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::netns::Pod;
use support::world::{tcp6_server, Deployment};

const A6: &str = "fd00:14::10";
const B6: &str = "fd00:14::11";
const NOT_OWNED: &str = "fd00:14::99";

/// Sends one line over TCP with `nc -6` from `pod` to `[dst]:port`
/// (optionally from `source`); the server's answer, or "" on failure.
fn nc6(pod: &Pod, dst: &str, port: u16, source: Option<&str>) -> String {
    let source = source.map_or(String::new(), |s| format!("-s {s} "));
    let line = format!("echo hi | nc -6 -w 2 -N {source}{dst} {port}");
    let out = pod.try_exec(&["sh", "-c", &line]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Allows `v6` (with the pod's MAC) on `port` besides its IPv4 address and
/// gives the pod that address (no DAD: the test owns the subnet).
async fn add_ipv6(d: &Deployment, pod: &Pod, port: uuid::Uuid, v4: &str, v6: &str) {
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{port}"),
            &json!({"allowed_addresses": [
                {"mac": pod.mac, "ip": format!("{v4}/32")},
                {"mac": pod.mac, "ip": format!("{v6}/128")},
            ]}),
            None,
        )
        .await
        .unwrap();
    pod.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
}

/// Retries `probe` until `ok` says it has the wanted answer (5 s at most).
fn eventually(what: &str, mut probe: impl FnMut() -> String, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = probe();
        if ok(&answer) || Instant::now() > deadline {
            assert!(ok(&answer), "{what}: got {answer:?}");
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_obeys_port_chains_and_port_security() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, a_port) = d.pod(&t, 10).await;
    let (b, b_port) = d.pod(&t, 11).await;
    add_ipv6(&d, &a, a_port, &t.address(10).to_string(), A6).await;
    add_ipv6(&d, &b, b_port, &t.address(11).to_string(), B6).await;
    let _server = tcp6_server(&b.netns, &[22, 8080], "b");

    // Without a rule, IPv6 reaches both ports and the server sees a's address.
    let ssh = eventually(
        "TCP/22 over IPv6 before any rule",
        || nc6(&a, B6, 22, None),
        |s| s.starts_with("b "),
    );
    assert!(
        ssh.contains(A6),
        "the server sees the pod's own address: {ssh}"
    );

    let chain = d.client.create_chain(t.id, "no-ssh-v6").await.unwrap().id;
    d.client
        .create_rule(
            chain,
            json!({"position": 1, "action": "drop", "protocol": "tcp", "dst_ports": "22"}),
        )
        .await
        .unwrap();
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{b_port}"),
            &json!({ "outbound_chain_id": chain }),
            None,
        )
        .await
        .unwrap();
    eventually(
        "the drop rule stops TCP/22 over IPv6",
        || nc6(&a, B6, 22, None),
        |s| s.is_empty(),
    );
    assert_eq!(nc6(&a, B6, 22, None), "", "TCP/22 over IPv6 stays dropped");
    let web = nc6(&a, B6, 8080, None);
    assert!(web.starts_with("b "), "TCP/8080 over IPv6 passes: {web:?}");

    // A source address the port does not own is dropped and counted.
    let spoofed = "plexus_datapath_drops_total{reason=\"spoofed\"}";
    let before = d.plexus.metric(spoofed).await;
    a.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{NOT_OWNED}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let stolen = nc6(&a, B6, 8080, Some(NOT_OWNED));
    assert_eq!(stolen, "", "a spoofed IPv6 source must not get through");
    assert!(
        d.plexus.metric(spoofed).await > before,
        "the spoofed IPv6 packets are counted"
    );
    // The owned address still works afterwards.
    let web = nc6(&a, B6, 8080, Some(A6));
    assert!(web.starts_with("b "), "{web:?}");
}
