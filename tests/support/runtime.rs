//! A container runtime's CNI side, done the way libcni executes a
//! conflist: ADD runs the plugins in order, each given the network's
//! `name` and `cniVersion` and the previous plugin's result as
//! `prevResult`; DEL runs them in reverse with the final result; CHECK runs
//! them in order with it. Plugins are found by `type` on `CNI_PATH`: the
//! reference plugins' directory, then `plexus-cni`'s.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::cni::{invoke_plugin, Answer, PLUGIN};

/// Where Debian's containernetworking-plugins are.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A conflist and the container it is run for.
pub struct Runtime {
    conflist: Value,
    /// `CNI_IFNAME` per plugin, in the conflist's order.
    ifnames: Vec<String>,
    container_id: String,
    netns: String,
    cni_path: Vec<PathBuf>,
}

/// A plugin of the chain that failed, and what it answered.
#[derive(Debug)]
pub struct Failure {
    /// The plugin's `type`.
    pub plugin: String,
    /// Its answer.
    pub answer: Answer,
}

impl Runtime {
    /// Runs `conflist` (with `name`, `cniVersion` and `plugins`) for
    /// container `container_id` in the namespace at `netns`, every plugin
    /// with `CNI_IFNAME=ifname` as libcni does.
    pub fn new(conflist: Value, container_id: &str, netns: &str, ifname: &str) -> Runtime {
        let plugins = conflist["plugins"].as_array().expect("a plugin list").len();
        let plexus_dir = Path::new(PLUGIN).parent().expect("the plugin's directory");
        Runtime {
            conflist,
            ifnames: vec![ifname.to_string(); plugins],
            container_id: container_id.to_string(),
            netns: netns.to_string(),
            cni_path: vec![PathBuf::from(REFERENCE_PLUGINS), plexus_dir.to_path_buf()],
        }
    }

    /// Gives plugin `index` its own `CNI_IFNAME`, as a Multus-style runtime
    /// does for each delegate (libcni itself passes one name to the chain).
    pub fn with_ifname(mut self, index: usize, ifname: &str) -> Runtime {
        self.ifnames[index] = ifname.to_string();
        self
    }

    fn plugins(&self) -> &[Value] {
        self.conflist["plugins"].as_array().unwrap()
    }

    /// The binary for plugin `index`'s `type`, the first on `CNI_PATH`.
    fn binary(&self, index: usize) -> PathBuf {
        let kind = self.plugins()[index]["type"].as_str().expect("a type");
        self.cni_path
            .iter()
            .map(|dir| dir.join(kind))
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("no plugin '{kind}' on {:?}", self.cni_path))
    }

    /// Plugin `index`'s stdin: its entry with the network's name and
    /// version, and `prev` as `prevResult`.
    fn stdin(&self, index: usize, prev: Option<&Value>) -> Vec<u8> {
        let mut conf = self.plugins()[index].clone();
        conf["name"] = self.conflist["name"].clone();
        conf["cniVersion"] = self.conflist["cniVersion"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        serde_json::to_vec(&conf).unwrap()
    }

    /// Runs `command` on plugin `index` with `prev` as `prevResult`.
    pub fn exec(&self, command: &str, index: usize, prev: Option<&Value>) -> Answer {
        let path = self
            .cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let vars = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", self.container_id.as_str()),
            ("CNI_NETNS", self.netns.as_str()),
            ("CNI_IFNAME", self.ifnames[index].as_str()),
            ("CNI_PATH", path.as_str()),
        ];
        invoke_plugin(&self.binary(index), &vars, &self.stdin(index, prev))
    }

    fn failure(&self, index: usize, answer: Answer) -> Failure {
        Failure {
            plugin: self.plugins()[index]["type"].as_str().unwrap().to_string(),
            answer,
        }
    }

    /// ADD through the chain; the last plugin's result, or the first failure.
    pub fn add(&self) -> Result<Value, Failure> {
        let mut prev: Option<Value> = None;
        for index in 0..self.plugins().len() {
            let answer = self.exec("ADD", index, prev.as_ref());
            if !answer.ok {
                return Err(self.failure(index, answer));
            }
            prev = Some(answer.json);
        }
        Ok(prev.unwrap_or_else(|| json!({})))
    }

    /// DEL through the chain in reverse, with `result` as `prevResult`.
    pub fn del(&self, result: Option<&Value>) -> Result<(), Failure> {
        for index in (0..self.plugins().len()).rev() {
            let answer = self.exec("DEL", index, result);
            if !answer.ok {
                return Err(self.failure(index, answer));
            }
        }
        Ok(())
    }

    /// CHECK through the chain with `result` as `prevResult`.
    pub fn check(&self, result: &Value) -> Result<(), Failure> {
        for index in 0..self.plugins().len() {
            let answer = self.exec("CHECK", index, Some(result));
            if !answer.ok {
                return Err(self.failure(index, answer));
            }
        }
        Ok(())
    }
}
