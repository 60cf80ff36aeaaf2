//! `plexus trace --live` run as an operator would, while a test makes the
//! traffic it traces.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::Process;

/// A running `plexus trace --live`, killed on drop.
pub struct LiveTrace {
    process: Process,
}

impl LiveTrace {
    /// Starts `plexus trace --live` against the API at `url` with `token`
    /// and the match flags `args`; returns once the request is in force
    /// (listed by the API, and a moment for the agents to watch it).
    pub async fn start(url: &str, token: &str, args: &[&str]) -> LiveTrace {
        let client = api::Client::new(url, token).unwrap();
        let before: Vec<serde_json::Value> = client.get("/v1/trace_requests").await.unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(["trace", "--live", "--api", url, "--token", token])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run plexus trace --live");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now: Vec<serde_json::Value> = client.get("/v1/trace_requests").await.unwrap();
            if now.len() > before.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the live trace request never appeared"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        LiveTrace {
            process: Process(child),
        }
    }

    /// Whether it has exited.
    pub fn done(&mut self) -> bool {
        matches!(self.process.0.try_wait(), Ok(Some(_)))
    }

    /// Calls `traffic` until the trace exits (or `within` passes), then
    /// returns what it printed (stdout) and said (stderr).
    pub fn run_while(mut self, within: Duration, mut traffic: impl FnMut()) -> (String, String) {
        let deadline = Instant::now() + within;
        while !self.done() && Instant::now() < deadline {
            traffic();
        }
        let exited = self.done();
        if !exited {
            self.process.kill();
        }
        let mut out = String::new();
        let mut err = String::new();
        if let Some(stdout) = self.process.0.stdout.as_mut() {
            let _ = stdout.read_to_string(&mut out);
        }
        if let Some(stderr) = self.process.0.stderr.as_mut() {
            let _ = stderr.read_to_string(&mut err);
        }
        assert!(exited, "the live trace never finished:\n{out}\n{err}");
        (out, err)
    }
}
