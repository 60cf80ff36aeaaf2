//! Running `plexus-cni` the way a runtime does: environment variables and
//! a network configuration on stdin, the answer on stdout.

use std::io::Write;
use std::process::{Command, Stdio};

use api::provision::AttachmentKey;
use serde_json::{json, Value};

use super::netns::{run, unique, Pod};

/// The plugin binary.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_plexus-cni");

/// What one invocation answered.
#[derive(Debug)]
pub struct Answer {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its stdout as JSON (`Null` when empty).
    pub json: Value,
    /// Its stderr.
    pub stderr: String,
}

impl Answer {
    /// The error code of a failed invocation, checking the error's shape.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {:?}", self.json);
        assert!(
            self.json["msg"].is_string(),
            "error without msg: {}",
            self.json
        );
        assert!(
            self.json["cniVersion"].is_string(),
            "error without cniVersion: {}",
            self.json
        );
        self.json["code"].as_u64().expect("numeric code")
    }

    /// The JSON of a successful invocation.
    pub fn result(&self) -> &Value {
        assert!(self.ok, "plugin failed: {} {}", self.json, self.stderr);
        &self.json
    }
}

/// Runs the plugin with exactly `vars` in its environment and `stdin`.
pub fn invoke(vars: &[(&str, &str)], stdin: &[u8]) -> Answer {
    invoke_plugin(std::path::Path::new(PLUGIN), vars, stdin)
}

/// Runs the CNI plugin `binary` with exactly `vars` in its environment and
/// `stdin`.
pub fn invoke_plugin(binary: &std::path::Path, vars: &[(&str, &str)], stdin: &[u8]) -> Answer {
    let name = binary.display();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {name}: {e}"));
    let json = if output.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{name} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    };
    Answer {
        ok: output.status.success(),
        json,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A network configuration for a Plexus API, with its token in a file.
pub struct Network {
    /// The configuration (add keys as a test needs).
    pub conf: Value,
    _dir: tempfile::TempDir,
}

impl Network {
    /// A network of `cniVersion` 1.1.0 on the API at `url`, for the agent
    /// registered as `host`. Its name is unique: GC removes every veth of
    /// its network on the host, and tests share one host.
    pub fn new(url: &str, token: &str, host: &str) -> Network {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("cni.token");
        std::fs::write(&token_file, token).unwrap();
        Network {
            conf: json!({
                "cniVersion": "1.1.0",
                "name": unique("plexus"),
                "type": "plexus-cni",
                "api": url,
                "token_file": token_file,
                "host": host,
            }),
            _dir: dir,
        }
    }

    /// The configuration with `extra` keys merged in.
    pub fn with(&self, extra: Value) -> Vec<u8> {
        let mut conf = self.conf.clone();
        if let (Some(conf), Value::Object(extra)) = (conf.as_object_mut(), extra) {
            conf.extend(extra);
        }
        serde_json::to_vec(&conf).unwrap()
    }

    /// Runs `command` for container `id`'s `ifname` in `netns` (if any).
    pub fn call(
        &self,
        command: &str,
        id: &str,
        ifname: &str,
        netns: Option<&str>,
        args: &str,
        stdin: &[u8],
    ) -> Answer {
        let netns_path = netns.map(|n| format!("/var/run/netns/{n}"));
        let mut vars = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/usr/lib/cni"),
            ("CNI_ARGS", args),
        ];
        if let Some(path) = &netns_path {
            vars.push(("CNI_NETNS", path));
        }
        invoke(&vars, stdin)
    }

    /// The plugin's host veths of this network present now (see
    /// [`network_veths`]).
    pub fn veths(&self) -> Vec<String> {
        network_veths(self.conf["name"].as_str().unwrap())
    }

    /// The attachment key of container `id`'s `ifname` on this network.
    pub fn key(&self, id: &str, ifname: &str) -> AttachmentKey {
        AttachmentKey {
            network: self.conf["name"].as_str().unwrap().to_string(),
            container_id: id.to_string(),
            ifname: ifname.to_string(),
        }
    }
}

/// A container sandbox: an empty network namespace, removed (with the host
/// veth CNI made for it) by its guard.
pub fn sandbox(network: &Network, id: &str) -> Pod {
    let netns = unique("pxc");
    run(&["ip", "netns", "add", &netns]);
    Pod {
        netns,
        host_if: network.key(id, "eth0").host_interface(),
        mac: String::new(),
    }
}

/// The names of the plugin's host veths (`plx…`) present now.
pub fn host_veths() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("plx"))
        .collect();
    names.sort();
    names
}

/// The plugin's host veths of CNI network `network` present now (their
/// alias is an attachment owner of that network), sorted: unlike
/// [`host_veths`], not disturbed by tests running beside this one.
pub fn network_veths(network: &str) -> Vec<String> {
    let prefix = format!("cni:{network}:");
    host_veths()
        .into_iter()
        .filter(|name| {
            std::fs::read_to_string(format!("/sys/class/net/{name}/ifalias"))
                .is_ok_and(|alias| alias.starts_with(&prefix))
        })
        .collect()
}

/// The pod address (without prefix) of an ADD result.
pub fn address_of(result: &Value) -> String {
    let address = result["ips"][0]["address"].as_str().expect("an address");
    address.split('/').next().unwrap().to_string()
}
