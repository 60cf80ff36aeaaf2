//! The CNI execution protocol: the command and its environment variables,
//! and the network configuration on stdin.

use std::collections::HashMap;
use std::path::PathBuf;

use nsdb::{Labels, NAMESPACE_LABEL};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{code, CniError};

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// Where the API listens unless the config says otherwise.
const DEFAULT_API: &str = "http://127.0.0.1:8470";
/// Where the API token is read from unless the config says otherwise.
const DEFAULT_TOKEN_FILE: &str = "/etc/plexus/cni.token";
/// How long ADD waits for the agent to serve the port.
const DEFAULT_ACTIVE_TIMEOUT_MS: u64 = 10_000;
/// The `cluster_network` value of a Kubernetes deployment.
pub const CLUSTER_NETWORK_KUBERNETES: &str = "kubernetes";
/// The cluster tenant's name unless `cluster_tenant` says otherwise.
const DEFAULT_CLUSTER_TENANT: &str = "kubernetes";
/// The longest label value Kubernetes (and the NSDB) accepts.
const MAX_LABEL_VALUE: usize = 63;
/// The port label naming the pod (the same as `k8s::objects::POD_LABEL`;
/// this crate does not depend on the controller's).
pub const POD_LABEL: &str = "plexus.io/pod";
/// The name prefix of an isolated namespace's own tenant, `k8s-<namespace>`
/// (the controller makes it for a namespace annotated
/// `plexus.io/isolated-network: "true"`).
pub const ISOLATED_TENANT_PREFIX: &str = "k8s-";

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment.
    Check,
    /// Report readiness (1.1).
    Status,
    /// Release everything not in the valid attachments (1.1).
    Gc,
    /// List the supported versions.
    Version,
}

/// The environment of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (ADD, CHECK; optional for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: HashMap<String, String>,
}

fn required(vars: &HashMap<String, String>, name: &str) -> Result<String, CniError> {
    match vars.get(name) {
        Some(value) if !value.is_empty() => Ok(value.clone()),
        _ => Err(CniError::new(
            code::INVALID_ENV,
            format!("{name} is not set"),
            format!("{name} must be set for this command"),
        )),
    }
}

/// Parses `CNI_ARGS` (`K=V;K2=V2`).
fn parse_args(raw: &str) -> Result<HashMap<String, String>, CniError> {
    let mut args = HashMap::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CniError::new(
                code::INVALID_ENV,
                "CNI_ARGS is malformed",
                format!("'{pair}' is not KEY=VALUE"),
            ));
        };
        args.insert(key.to_string(), value.to_string());
    }
    Ok(args)
}

impl Env {
    /// Reads the environment variables the command needs from `vars`.
    pub fn parse(vars: &HashMap<String, String>) -> Result<Env, CniError> {
        let raw = required(vars, "CNI_COMMAND")?;
        let command = match raw.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND '{other}'"),
                    "expected ADD, DEL, CHECK, STATUS, GC or VERSION",
                ))
            }
        };
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: HashMap::new(),
        };
        if command == Command::Version {
            return Ok(env);
        }
        required(vars, "CNI_PATH")?;
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            env.container_id = required(vars, "CNI_CONTAINERID")?;
            env.ifname = required(vars, "CNI_IFNAME")?;
            env.netns = match command {
                Command::Del => vars
                    .get("CNI_NETNS")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from),
                _ => Some(PathBuf::from(required(vars, "CNI_NETNS")?)),
            };
            env.args = parse_args(vars.get("CNI_ARGS").map_or("", String::as_str))?;
        }
        Ok(env)
    }
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValidAttachment {
    /// The container id.
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// The network configuration (unknown keys are ignored).
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: String,
    /// `name`: the network name.
    pub name: String,
    /// `api`: the Plexus API's base URL.
    pub api: String,
    /// `token_file`: where the API token is.
    pub token_file: PathBuf,
    /// `tenant`: a fixed tenant name.
    pub tenant: Option<String>,
    /// `cluster_network: "kubernetes"`: the cluster tenant every pod joins
    /// (`cluster_tenant`, default `kubernetes`); `None` in standalone mode.
    pub cluster_tenant: Option<String>,
    /// `bridge`: a bridge id instead of the tenant's default bridge.
    pub bridge: Option<Uuid>,
    /// `mtu`: the pod MTU instead of the deployment's.
    pub mtu: Option<u16>,
    /// `host`: this host's name as its agent registered it.
    pub host: Option<String>,
    /// `active_timeout_ms`: how long ADD waits for the agent.
    pub active_timeout_ms: u64,
    /// `dns`: passed through into the result.
    pub dns: Option<Value>,
    /// `pools`: the IP pools (ids or names) to lease from, at most one per
    /// family; empty: one of each family of the pod's bridge.
    pub pools: Vec<String>,
    /// `prevResult` (ADD in a chain, CHECK, DEL).
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Vec<ValidAttachment>,
}

fn invalid(field: &str, detail: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        format!("invalid network configuration field '{field}'"),
        detail,
    )
}

fn string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(field, format!("expected a string, got {other}"))),
    }
}

/// `pools`: a list of one or two distinct, non-empty pool ids or names.
fn pools(obj: &Map<String, Value>) -> Result<Vec<String>, CniError> {
    let list = match obj.get("pools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(invalid("pools", format!("expected a list, got {other}"))),
    };
    let mut out: Vec<String> = Vec::new();
    for entry in list {
        match entry.as_str() {
            Some(name) if !name.is_empty() && !out.iter().any(|p| p == name) => {
                out.push(name.to_string())
            }
            _ => {
                return Err(invalid(
                    "pools",
                    format!("{entry} is not a pool id or name, or is listed twice"),
                ))
            }
        }
    }
    match out.len() {
        1 | 2 => Ok(out),
        n => Err(invalid(
            "pools",
            format!("a pod gets one address per family: name 1 or 2 pools, not {n}"),
        )),
    }
}

/// The version a config asks for, as far as it can be read (for errors).
pub fn version_of(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    Some(value.get("cniVersion")?.as_str()?.to_string())
}

impl NetConf {
    /// Parses and checks the configuration on stdin.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                "expected a JSON object",
            ));
        };
        let cni_version =
            string(&obj, "cniVersion")?.ok_or_else(|| invalid("cniVersion", "is required"))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("CNI version {cni_version} is not supported"),
                format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        let name = string(&obj, "name")?.ok_or_else(|| invalid("name", "is required"))?;
        let tenant = string(&obj, "tenant")?;
        if tenant.as_deref() == Some("") {
            return Err(invalid("tenant", "must not be empty"));
        }
        let cluster_tenant = match string(&obj, "cluster_network")?.as_deref() {
            None => {
                if obj.get("cluster_tenant").is_some_and(|v| !v.is_null()) {
                    return Err(invalid(
                        "cluster_tenant",
                        "only means something with \"cluster_network\": \"kubernetes\"",
                    ));
                }
                None
            }
            Some(CLUSTER_NETWORK_KUBERNETES) => {
                if tenant.is_some() {
                    return Err(invalid(
                        "tenant",
                        "a Kubernetes cluster network places pods itself; name its tenant with \"cluster_tenant\"",
                    ));
                }
                let name = string(&obj, "cluster_tenant")?
                    .unwrap_or_else(|| DEFAULT_CLUSTER_TENANT.to_string());
                if name.is_empty() {
                    return Err(invalid("cluster_tenant", "must not be empty"));
                }
                Some(name)
            }
            Some(other) => {
                return Err(invalid(
                    "cluster_network",
                    format!(
                    "'{other}' is not a cluster network (only \"{CLUSTER_NETWORK_KUBERNETES}\")"
                ),
                ))
            }
        };
        let bridge = string(&obj, "bridge")?
            .map(|b| Uuid::parse_str(&b).map_err(|e| invalid("bridge", format!("'{b}': {e}"))))
            .transpose()?;
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|m| (576..=65535).contains(m))
                    .ok_or_else(|| invalid("mtu", format!("expected 576..65535, got {v}")))?
                    as u16,
            ),
        };
        let active_timeout_ms = match obj.get("active_timeout_ms") {
            None | Some(Value::Null) => DEFAULT_ACTIVE_TIMEOUT_MS,
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid("active_timeout_ms", format!("expected a number, got {v}"))
            })?,
        };
        let pools = pools(&obj)?;
        let mut valid_attachments = Vec::new();
        if let Some(list) = obj.get("cni.dev/valid-attachments") {
            let entries = list
                .as_array()
                .ok_or_else(|| invalid("cni.dev/valid-attachments", "expected a list"))?;
            for entry in entries {
                let field = |name: &str| {
                    entry
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            invalid(
                                "cni.dev/valid-attachments",
                                format!("entry {entry} lacks '{name}'"),
                            )
                        })
                };
                valid_attachments.push(ValidAttachment {
                    container_id: field("containerID")?,
                    ifname: field("ifname")?,
                });
            }
        }
        Ok(NetConf {
            cni_version,
            name,
            api: string(&obj, "api")?.unwrap_or_else(|| DEFAULT_API.to_string()),
            token_file: string(&obj, "token_file")?
                .unwrap_or_else(|| DEFAULT_TOKEN_FILE.to_string())
                .into(),
            tenant,
            cluster_tenant,
            bridge,
            mtu,
            host: string(&obj, "host")?,
            active_timeout_ms,
            dns: obj.get("dns").filter(|d| !d.is_null()).cloned(),
            pools,
            prev_result: obj.get("prevResult").filter(|d| !d.is_null()).cloned(),
            valid_attachments,
        })
    }

    /// Whether the config's version has `STATUS` and `GC` (1.1.0 and on).
    pub fn has_status_and_gc(&self) -> bool {
        self.cni_version == "1.1.0"
    }

    /// The tenant a pod joins: the fixed one, else its Kubernetes namespace,
    /// else `default` (standalone mode).
    pub fn tenant_for(&self, env: &Env) -> String {
        self.tenant
            .clone()
            .or_else(|| env.args.get("K8S_POD_NAMESPACE").cloned())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "default".to_string())
    }

    /// Where a pod goes and what its port is labelled. Standalone: the
    /// tenant of [`NetConf::tenant_for`], no labels. In a Kubernetes
    /// cluster network: the cluster tenant, unless the pod's namespace has
    /// a tenant of its own (`k8s-<namespace>`, which `tenant_exists` says),
    /// with the port labelled by namespace and pod name.
    pub fn placement(
        &self,
        env: &Env,
        tenant_exists: impl Fn(&str) -> bool,
    ) -> Result<Placement, CniError> {
        let Some(cluster) = &self.cluster_tenant else {
            return Ok(Placement {
                tenant: self.tenant_for(env),
                labels: Labels::new(),
            });
        };
        let arg = |name: &str| {
            env.args
                .get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| {
                    CniError::new(
                        code::INVALID_ENV,
                        format!("CNI_ARGS lacks {name}"),
                        "a Kubernetes cluster network needs K8S_POD_NAMESPACE and K8S_POD_NAME, as kubelet passes them",
                    )
                })
        };
        let (namespace, pod) = (arg("K8S_POD_NAMESPACE")?, arg("K8S_POD_NAME")?);
        let own = format!("{ISOLATED_TENANT_PREFIX}{namespace}");
        let tenant = if tenant_exists(&own) {
            own
        } else {
            cluster.clone()
        };
        let mut labels = Labels::new();
        labels.insert(NAMESPACE_LABEL.to_string(), namespace);
        // Pod names may be DNS subdomains of up to 253 bytes; a label value
        // holds 63. A longer name is left out (the pod's address still
        // identifies its port).
        if pod.len() <= MAX_LABEL_VALUE {
            labels.insert(POD_LABEL.to_string(), pod);
        }
        Ok(Placement { tenant, labels })
    }
}

/// The tenant a pod joins and the labels its port is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The tenant's name.
    pub tenant: String,
    /// The port's labels.
    pub labels: Labels,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_needs_what_the_command_needs() {
        let e = Env::parse(&vars(&[])).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(Env::parse(&vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
        let e = Env::parse(&vars(&[("CNI_COMMAND", "ADD"), ("CNI_PATH", "/x")])).unwrap_err();
        assert_eq!(e.msg, "CNI_CONTAINERID is not set");
        let del = Env::parse(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_PATH", "/x"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=blue"),
        ]))
        .unwrap();
        assert_eq!(del.netns, None);
        assert_eq!(del.args["K8S_POD_NAMESPACE"], "blue");
        assert_eq!(
            Env::parse(&vars(&[("CNI_COMMAND", "FROB")]))
                .unwrap_err()
                .code,
            code::INVALID_ENV
        );
    }

    fn add_env(args: &str) -> Env {
        Env::parse(&vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_PATH", "/x"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/var/run/netns/c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args),
        ]))
        .unwrap()
    }

    #[test]
    fn standalone_pods_join_their_namespace_s_tenant_unlabelled() {
        let conf = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
        assert_eq!(conf.cluster_tenant, None);
        let env = add_env("K8S_POD_NAMESPACE=x;K8S_POD_NAME=a");
        let placed = conf.placement(&env, |_| true).unwrap();
        assert_eq!(placed.tenant, "x");
        assert!(placed.labels.is_empty());
        assert_eq!(
            conf.placement(&add_env(""), |_| true).unwrap().tenant,
            "default"
        );
    }

    #[test]
    fn cluster_pods_join_the_cluster_tenant_unless_their_namespace_has_one() {
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","cluster_network":"kubernetes"}"#)
                .unwrap();
        assert_eq!(conf.cluster_tenant.as_deref(), Some("kubernetes"));
        let env = add_env("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a");
        let placed = conf.placement(&env, |t| t == "k8s-y").unwrap();
        assert_eq!(placed.tenant, "kubernetes");
        let labels: Vec<_> = placed
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(labels, ["plexus.io/namespace=x", "plexus.io/pod=a"]);
        let isolated = conf.placement(&env, |t| t == "k8s-x").unwrap();
        assert_eq!(isolated.tenant, "k8s-x");
        assert_eq!(isolated.labels, placed.labels);
        let named = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","cluster_network":"kubernetes","cluster_tenant":"k"}"#,
        )
        .unwrap();
        assert_eq!(named.placement(&env, |_| false).unwrap().tenant, "k");
        for args in [
            "K8S_POD_NAME=a",
            "K8S_POD_NAMESPACE=x",
            "K8S_POD_NAMESPACE=;K8S_POD_NAME=a",
        ] {
            let error = conf.placement(&add_env(args), |_| false).unwrap_err();
            assert_eq!(error.code, code::INVALID_ENV, "{args}");
        }
        let long = format!("K8S_POD_NAMESPACE=x;K8S_POD_NAME={}", "p".repeat(64));
        let placed = conf.placement(&add_env(&long), |_| false).unwrap();
        assert_eq!(
            placed.labels.len(),
            1,
            "a pod name too long for a label value"
        );
    }

    #[test]
    fn cluster_network_config_is_checked() {
        for bad in [
            r#"{"cniVersion":"1.1.0","name":"n","cluster_network":"flat"}"#,
            r#"{"cniVersion":"1.1.0","name":"n","cluster_network":7}"#,
            r#"{"cniVersion":"1.1.0","name":"n","cluster_tenant":"k"}"#,
            r#"{"cniVersion":"1.1.0","name":"n","cluster_network":"kubernetes","cluster_tenant":""}"#,
            r#"{"cniVersion":"1.1.0","name":"n","cluster_network":"kubernetes","tenant":"t"}"#,
        ] {
            let error = NetConf::parse(bad.as_bytes()).unwrap_err();
            assert_eq!(error.code, code::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn config_errors_have_their_codes() {
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code, code::DECODE);
        let old = br#"{"cniVersion":"0.3.1","name":"n","type":"plexus-cni"}"#;
        assert_eq!(
            NetConf::parse(old).unwrap_err().code,
            code::INCOMPATIBLE_VERSION
        );
        let nameless = br#"{"cniVersion":"1.1.0","type":"plexus-cni"}"#;
        assert_eq!(
            NetConf::parse(nameless).unwrap_err().code,
            code::INVALID_CONFIG
        );
        for bad_pools in [
            r#""v4""#,
            "[]",
            r#"["a","a"]"#,
            r#"["a",""]"#,
            r#"["a","b","c"]"#,
            "[7]",
        ] {
            let conf = format!(r#"{{"cniVersion":"1.1.0","name":"n","pools":{bad_pools}}}"#);
            let error = NetConf::parse(conf.as_bytes()).unwrap_err();
            assert_eq!(error.code, code::INVALID_CONFIG, "{bad_pools}");
        }
        let dual = br#"{"cniVersion":"1.1.0","name":"n","pools":["pods-v4","pods-v6"]}"#;
        assert_eq!(NetConf::parse(dual).unwrap().pools, ["pods-v4", "pods-v6"]);
        let bad_mtu = br#"{"cniVersion":"1.0.0","name":"n","mtu":"big"}"#;
        assert_eq!(
            NetConf::parse(bad_mtu).unwrap_err().code,
            code::INVALID_CONFIG
        );
        let ok = br#"{"cniVersion":"1.1.0","name":"n","type":"plexus-cni","whatever":{"x":1},
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
        let conf = NetConf::parse(ok).unwrap();
        assert_eq!(conf.valid_attachments.len(), 1);
        assert_eq!(conf.api, DEFAULT_API);
    }
}
