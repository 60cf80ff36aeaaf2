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
    /// While stopped: the client and peer ports, bound but not listening, so
    /// clients are refused as by a stopped server and no other test's
    /// `bind(:0)` is handed them before [`Self::restart`].
    held_ports: Vec<PortHold>,
}

/// A TCP port bound on 127.0.0.1 without listening: connections to it are
/// refused, and the kernel gives it to nobody else while it is held.
struct PortHold(libc::c_int);

impl PortHold {
    fn bind(port: u16) -> PortHold {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned
        // by the returned PortHold and closed once, in its Drop.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let hold = PortHold(fd);
        let one: libc::c_int = 1;
        // SAFETY: setsockopt(2) reading a c_int that outlives the call. Reuse
        // lets the hold bind past the stopped server's TIME_WAIT connections.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `addr` is a valid sockaddr_in that outlives the call and
        // the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        // A port in TIME_WAIT or taken in the instant after the stop cannot
        // be held; the restart then finds out whether it is free.
        if rc != 0 {
            eprintln!(
                "etcd test server: cannot hold port {port}: {}",
                std::io::Error::last_os_error()
            );
        }
        hold
    }
}

impl Drop for PortHold {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this PortHold owns, exactly once.
        unsafe { libc::close(self.0) };
    }
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
                held_ports: Vec::new(),
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
        self.held_ports.clear();
        self.child = spawn(
            &self.data_dir,
            self.client_port(),
            self.peer_port,
            self.tls.as_deref(),
        );
        if let Err(error) = self.wait_ready() {
            panic!("etcd did not come back after a restart: {error}");
        }
    }

    /// Stops the server without removing its data; its ports stay reserved
    /// (refusing connections) until [`Self::restart`] or the drop.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // Already reaped: its PID may belong to another process.
        }
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.held_ports = vec![
            PortHold::bind(self.client_port()),
            PortHold::bind(self.peer_port),
        ];
    }

    fn client_port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the server answers as a healthy etcd: `GET /health` over plain
    /// HTTP (so another test's server on a reused port is not taken for it);
    /// with TLS, that it accepts connections.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(&self.endpoint) else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {}\r\n\r\n", self.endpoint);
        let mut reply = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply.contains("\"health\":\"true\"")
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
            if self.answers() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "etcd did not report itself healthy on {} within 20 s",
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
