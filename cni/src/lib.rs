//! `plexus-cni`: the CNI plugin that puts pods on their tenant's Plexus
//! network (CNI spec 1.1.0, also answering 0.4.0 and 1.0.0 configs).
//!
//! ADD creates a veth pair (the pod end straight into `CNI_NETNS` as
//! `CNI_IFNAME`), asks the API for the attachment (tenant and network if
//! missing, port, binding to the host end, one address lease per
//! family of the bridge's pools: one commit), configures the pod end (IPv6
//! without DAD), and waits until the host's agent serves the
//! port; given a `prevResult` (plugins ran before it in the chain), its
//! result is that one with its own interfaces and address added. DEL removes the attachment and the veth; GC removes every
//! attachment and veth of the network on this host that the runtime no
//! longer lists; CHECK compares the kernel and the NSDB with `prevResult`;
//! STATUS says whether the API and this host's agent are up.
//!
//! Which tenant: one per Kubernetes namespace standalone; with
//! `"cluster_network": "kubernetes"`, the one cluster tenant (or the
//! namespace's own `k8s-<namespace>` when it exists), the port labelled
//! with the pod's namespace and name (see [`spec::NetConf::placement`]).
#![warn(missing_docs)]

mod add;
pub mod chain;
mod check;
pub mod error;
mod gc;
mod plumbing;
pub mod result;
pub mod spec;

use std::collections::HashMap;
use std::io::{Read, Write};

use api::provision::AttachmentKey;
use nsdb::Host;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{code, CniError};
use crate::spec::{Command, Env, NetConf, SUPPORTED_VERSIONS};

/// One invocation's configuration, API client and host.
pub(crate) struct Plugin {
    conf: NetConf,
    client: api::Client,
    host_name: String,
}

impl Plugin {
    fn new(conf: NetConf) -> Result<Plugin, CniError> {
        let token = std::fs::read_to_string(&conf.token_file).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("cannot read token_file {}", conf.token_file.display()),
                e.to_string(),
            )
        })?;
        let client = api::Client::new(&conf.api, token.trim()).map_err(CniError::from)?;
        let host_name = match &conf.host {
            Some(host) => host.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_err(|e| {
                    CniError::new(code::IO_FAILURE, "cannot read the host name", e.to_string())
                })?
                .trim()
                .to_string(),
        };
        Ok(Plugin {
            conf,
            client,
            host_name,
        })
    }

    /// The attachment this invocation is about.
    fn key(&self, env: &Env) -> Result<AttachmentKey, CniError> {
        let key = AttachmentKey {
            network: self.conf.name.clone(),
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        };
        key.validate().map_err(|p| {
            let field = p.field.as_deref().unwrap_or("");
            let (code, var) = match field {
                "network" => (code::INVALID_CONFIG, "name"),
                "container_id" => (code::INVALID_ENV, "CNI_CONTAINERID"),
                _ => (code::INVALID_ENV, "CNI_IFNAME"),
            };
            CniError::new(code, format!("invalid {var}"), p.detail)
        })?;
        Ok(key)
    }

    /// This host as its agent registered it.
    async fn host(&self) -> Result<Host, CniError> {
        let hosts: Vec<Host> = self.client.list("/v1/hosts").await?;
        hosts
            .into_iter()
            .find(|h| h.name == self.host_name)
            .ok_or_else(|| {
                CniError::new(
                    code::TRY_AGAIN,
                    format!("no Plexus agent registered as host '{}'", self.host_name),
                    "start `plexus agent` (or `plexus serve`) on this host, or set \"host\" in the config",
                )
            })
    }

    async fn host_id(&self) -> Result<Uuid, CniError> {
        Ok(self.host().await?.id)
    }
}

/// Runs one invocation: the environment `vars` and the bytes on stdin.
/// Returns what to print on success (nothing for DEL, CHECK, GC, STATUS).
pub async fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let env = Env::parse(vars)?;
    if env.command == Command::Version {
        let asked = spec::version_of(stdin)
            .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
            .unwrap_or_else(|| "1.1.0".to_string());
        return Ok(Some(json!({
            "cniVersion": asked,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    if matches!(env.command, Command::Status | Command::Gc) && !conf.has_status_and_gc() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CNI version {} has no {:?}", conf.cni_version, env.command),
            "STATUS and GC need cniVersion 1.1.0",
        ));
    }
    let plugin = Plugin::new(conf)?;
    match env.command {
        Command::Add => add::add(&plugin, &env).await.map(Some),
        Command::Del => add::del(&plugin, &env).await.map(|_| None),
        Command::Check => check::check(&plugin, &env).await.map(|_| None),
        Command::Gc => gc::gc(&plugin).await.map(|_| None),
        Command::Status => gc::status(&plugin).await.map(|_| None),
        Command::Version => Ok(None),
    }
}

/// The plugin's entry point: reads the environment and stdin, runs, prints
/// the result or the error JSON on stdout, and returns the exit status.
pub fn main() -> std::process::ExitCode {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    // SAFETY: isatty only inspects descriptor 0.
    let read = if unsafe { libc::isatty(0) } == 1 {
        // Run by hand without input: do not wait on the terminal.
        Ok(0)
    } else {
        std::io::stdin().read_to_end(&mut stdin)
    };
    let outcome = match read {
        Err(e) => Err(CniError::new(
            code::IO_FAILURE,
            "cannot read stdin",
            e.to_string(),
        )),
        Ok(_) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(&vars, &stdin)),
            Err(e) => Err(CniError::new(
                code::IO_FAILURE,
                "cannot start the runtime",
                e.to_string(),
            )),
        },
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(value)) => {
            let _ = writeln!(out, "{value}");
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let version = spec::version_of(&stdin)
                .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| "1.1.0".to_string());
            let _ = writeln!(out, "{}", error.to_json(&version));
            eprintln!("plexus-cni: {}: {}", error.msg, error.details);
            std::process::ExitCode::FAILURE
        }
    }
}
