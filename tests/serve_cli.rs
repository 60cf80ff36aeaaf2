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
