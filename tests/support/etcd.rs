//! A real etcd server for tests: the system's `etcd` binary on free
//! loopback ports with a temporary data dir.
//!
//! [`shared`] starts one server per test binary. It is spawned from a
//! thread that lives as long as the process, with PR_SET_PDEATHSIG, so the
//! kernel kills it if the test binary dies; an `atexit` hook stops it and
//! removes its data dir on a normal exit. [`EtcdServer::start`] gives a test
//! its own server (for compaction or restarts, which would disturb others),
//! stopped by its guard's `Drop`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running etcd process.
pub struct EtcdServer {
    child: Child,
    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub client_url: String,
    /// `HOST:PORT` of the client URL.
    pub endpoint: String,
    peer_port: u16,
    data_dir: PathBuf,
    /// Directory of `ca.pem`, `server.pem`, `server-key.pem` when serving TLS.
    tls: Option<PathBuf>,
}

/// Two distinct free loopback ports (both held while probing, so the
/// kernel cannot hand out the same one twice).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("no free loopback port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("bound socket has an address").port();
    (port(&a), port(&b))
}

/// Where etcd keeps its data: tmpfs when there is one. The data is thrown
/// away after the run, so durability buys nothing, while an fsync per
/// commit on a slow disk would dominate the suite's run time.
fn scratch_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

impl EtcdServer {
    /// Starts a new etcd with a fresh data dir; panics (failing the test) if
    /// the binary is missing or the server does not come up.
    pub fn start() -> EtcdServer {
        EtcdServer::start_inner(None)
    }

    /// Starts an etcd that serves TLS with client-certificate authentication,
    /// using `ca.pem`, `server.pem` and `server-key.pem` from `cert_dir`.
    pub fn start_tls(cert_dir: &std::path::Path) -> EtcdServer {
        EtcdServer::start_inner(Some(cert_dir.to_path_buf()))
    }

    fn start_inner(tls: Option<PathBuf>) -> EtcdServer {
        let mut last_error = String::new();
        for _ in 0..3 {
            let data_dir = scratch_dir().join(format!("plexus-etcd-{}", uuid::Uuid::new_v4()));
            let (client_port, peer_port) = free_ports();
            let mut server = EtcdServer {
                child: spawn(&data_dir, client_port, peer_port, tls.as_deref()),
                client_url: format!(
                    "{}://127.0.0.1:{client_port}",
                    if tls.is_some() { "https" } else { "http" }
                ),
                endpoint: format!("127.0.0.1:{client_port}"),
                peer_port,
                data_dir,
                tls: tls.clone(),
            };
            match server.wait_ready() {
                Ok(()) => return server,
                // A port taken between probing and binding: try other ports.
                Err(error) => last_error = error,
            }
        }
        panic!("etcd would not start: {last_error}");
    }

    /// Stops the server (SIGTERM) and starts it again on the same ports and
    /// data, as an operator restart or a crash-and-recover would.
    pub fn restart(&mut self) {
        self.stop();
        let client_port: u16 = self
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        self.child = spawn(
            &self.data_dir,
            client_port,
            self.peer_port,
            self.tls.as_deref(),
        );
        if let Err(error) = self.wait_ready() {
            panic!("etcd did not come back after a restart: {error}");
        }
    }

    /// Stops the server without removing its data.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.data_dir.join("etcd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "etcd exited during start-up ({status}): {}",
                    tail.join(" | ")
                ));
            }
            if std::net::TcpStream::connect(&self.endpoint).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "etcd did not start listening on {} within 20 s",
            self.endpoint
        ))
    }
}

fn spawn(
    data_dir: &std::path::Path,
    client_port: u16,
    peer_port: u16,
    tls: Option<&std::path::Path>,
) -> Child {
    std::fs::create_dir_all(data_dir).expect("cannot create etcd data dir");
    let log = std::fs::File::create(data_dir.join("etcd.log")).expect("cannot create etcd log");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new("etcd");
    if let Some(dir) = tls {
        command
            .arg("--cert-file")
            .arg(dir.join("server.pem"))
            .arg("--key-file")
            .arg(dir.join("server-key.pem"))
            .arg("--trusted-ca-file")
            .arg(dir.join("ca.pem"))
            .arg("--client-cert-auth");
    }
    command
        .args(["--name", "t", "--data-dir"])
        .arg(data_dir.join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--initial-cluster",
            &format!("t={peer}"),
            "--initial-cluster-state",
            "new",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cannot clone log handle"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and only affects the forked child.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .spawn()
        .expect("cannot run `etcd`: install Debian's etcd-server (scripts/test.sh does)")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

static SHARED: OnceLock<(String, u32, PathBuf)> = OnceLock::new();
static SHARED_SERVER: Mutex<Option<EtcdServer>> = Mutex::new(None);

extern "C" fn stop_shared() {
    if let Ok(mut guard) = SHARED_SERVER.lock() {
        drop(guard.take());
    }
}

/// The endpoint (`HOST:PORT`) of this test binary's shared etcd.
pub fn shared() -> &'static str {
    let (endpoint, _, _) = SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The spawning thread must outlive the tests: PDEATHSIG fires when
        // the thread that forked the child exits.
        std::thread::spawn(move || {
            let server = EtcdServer::start();
            let info = (
                server.endpoint.clone(),
                server.child.id(),
                server.data_dir.clone(),
            );
            *SHARED_SERVER.lock().expect("shared etcd lock") = Some(server);
            // SAFETY: registering a plain extern "C" fn with atexit(3).
            unsafe { libc::atexit(stop_shared) };
            tx.send(info).expect("test thread gone");
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared etcd failed to start")
    });
    endpoint
}
