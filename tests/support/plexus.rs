//! A real `plexus serve` process for end-to-end tests, stopped by its guard.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A running `plexus serve` on a fresh embedded store.
pub struct Plexus {
    child: Child,
    _data: tempfile::TempDir,
    /// The API's base URL.
    pub url: String,
    /// The admin token.
    pub token: String,
}

impl Plexus {
    /// Starts `plexus serve` (without an uplink) and waits until it answers.
    pub async fn start() -> Plexus {
        Plexus::start_with(&["--no-uplink"]).await
    }

    /// Starts `plexus serve` with extra arguments and waits until it answers.
    pub async fn start_with(extra: &[&str]) -> Plexus {
        let data = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let token = format!("e2e-{}", Uuid::new_v4());
        let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args([
                "serve",
                "--data",
                data.path().to_str().unwrap(),
                "--listen",
                &addr.to_string(),
            ])
            .args([
                "--admin-token",
                &token,
                "--host-name",
                &format!("e2e-{}", Uuid::new_v4()),
            ])
            .args(extra)
            .env_remove("PLEXUS_NSDB")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run plexus serve");
        let plexus = Plexus {
            child,
            _data: data,
            url: format!("http://{addr}"),
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if reqwest::get(format!("{}/healthz", plexus.url))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return plexus;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("plexus serve did not become healthy");
    }

    /// An admin client.
    pub fn client(&self) -> api::Client {
        api::Client::new(&self.url, &self.token).unwrap()
    }

    /// The one host registered (this server's agent).
    pub async fn host(&self) -> Uuid {
        let hosts: Vec<nsdb::Host> = self.client().list("/v1/hosts").await.unwrap();
        hosts
            .iter()
            .find(|h| h.alive)
            .expect("the agent registered its host")
            .id
    }

    /// The value of a Prometheus metric line starting with `prefix`, summed.
    pub async fn metric(&self, prefix: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Plexus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
