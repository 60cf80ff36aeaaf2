//! `plexus k8s`: Plexus for a Kubernetes cluster. `run` follows a cluster
//! and reconciles it; `apply -f` reconciles Kubernetes objects read from
//! files exactly as `run` reconciles what its watches see.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s::controller::{self, Reconciler, Timing};
use k8s::objects::Objects;
use k8s::reconcile::{reconcile, ApiReconciler, Settings, DEFAULT_TENANT};

use crate::k8s_health::{Health, Recorded};
use crate::tools::ApiClientArgs;

/// `plexus k8s` subcommands.
#[derive(Subcommand)]
pub enum K8sCommand {
    /// Reconcile Kubernetes objects from files (Namespace, Pod, NetworkPolicy,
    /// Service, EndpointSlice; YAML or JSON, `---`-separated, Lists too) into
    /// Plexus. The files are the whole cluster: policies and Services not in
    /// them are removed, as after a controller's resync.
    Apply(ApplyArgs),
    /// Follow the cluster (Namespaces, Pods, NetworkPolicies, Services,
    /// EndpointSlices) and reconcile it into Plexus: after changes, after
    /// every relist, and every --resync.
    Run(RunArgs),
}

/// `plexus k8s apply`.
#[derive(Parser)]
pub struct ApplyArgs {
    /// A file or a directory (its *.yaml, *.yml and *.json files, in name
    /// order); may be repeated.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The cluster network's tenant.
    #[arg(long, default_value = DEFAULT_TENANT)]
    cluster_tenant: String,
    #[command(flatten)]
    api: ApiClientArgs,
}

/// Where the Kubernetes API server is.
#[derive(Parser)]
pub struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else
    /// the in-cluster service account).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
}

impl KubeArgs {
    /// A client of the cluster these arguments name.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer()
                .await
                .context("finding the cluster (no kubeconfig, not in a cluster)")?,
        };
        kube::Client::try_from(config).context("building the Kubernetes client")
    }
}

/// `plexus k8s run`.
#[derive(Parser)]
pub struct RunArgs {
    #[command(flatten)]
    kube: KubeArgs,
    /// The cluster network's tenant.
    #[arg(long, default_value = DEFAULT_TENANT)]
    cluster_tenant: String,
    #[command(flatten)]
    api: ApiClientArgs,
    /// Follow the cluster and log what would be reconciled, without
    /// touching Plexus.
    #[arg(long)]
    dry_run: bool,
    /// How often the whole cluster is reconciled even without changes.
    #[arg(long, env = "PLEXUS_K8S_RESYNC", default_value = "5m", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// How long after a change the reconcile runs (a burst of changes is
    /// one reconcile).
    #[arg(long, env = "PLEXUS_K8S_DEBOUNCE", default_value = "150ms", value_parser = humantime::parse_duration)]
    debounce: Duration,
    /// Serve `/healthz` (alive) and `/readyz` (the last reconcile
    /// succeeded) here, for the Deployment's probes.
    #[arg(long, env = "PLEXUS_K8S_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<std::net::SocketAddr>,
}

/// Logs the state each reconcile would be given.
struct DryRun;

#[async_trait::async_trait]
impl Reconciler for DryRun {
    async fn reconcile(&self, objects: &Objects) -> Result<(), String> {
        let policies: Vec<String> = objects
            .policies
            .iter()
            .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
            .collect();
        tracing::info!(
            namespaces = objects.namespaces.len(),
            pods = objects.pods.len(),
            services = objects.services.len(),
            endpoint_slices = objects.endpoint_slices.len(),
            ?policies,
            "dry run: would reconcile"
        );
        Ok(())
    }
}

/// Runs a `plexus k8s` subcommand.
pub async fn run(command: K8sCommand) -> anyhow::Result<()> {
    match command {
        K8sCommand::Apply(args) => apply(args).await,
        K8sCommand::Run(args) => follow(args).await,
    }
}

/// The files `path` names: itself, or a directory's manifests in name order.
fn manifests(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let mut objects = Objects::default();
    for path in &args.files {
        for file in manifests(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            objects
                .add_yaml(&text)
                .with_context(|| format!("in {}", file.display()))?;
        }
    }
    let client = args.api.client()?;
    let settings = Settings {
        tenant: args.cluster_tenant,
    };
    let report = reconcile(&client, &settings, &objects).await?;
    println!("{report}");
    if !report.errors.is_empty() {
        anyhow::bail!("{} part(s) of the reconcile failed", report.errors.len());
    }
    Ok(())
}

async fn follow(args: RunArgs) -> anyhow::Result<()> {
    let timing = Timing {
        resync: args.resync,
        debounce: args.debounce,
        ..Timing::default()
    };
    let reconciler: Box<dyn Reconciler> = if args.dry_run {
        Box::new(DryRun)
    } else {
        Box::new(ApiReconciler {
            client: args.api.client()?,
            settings: Settings {
                tenant: args.cluster_tenant,
            },
        })
    };
    let health = Arc::new(Health::default());
    let reconciler = Recorded {
        inner: reconciler,
        health: health.clone(),
    };
    let probes = async {
        match args.health_listen {
            Some(listen) => crate::k8s_health::serve(listen, health).await,
            None => std::future::pending().await,
        }
    };
    let client = args.kube.client().await?;
    tracing::info!(dry_run = args.dry_run, "following the cluster");
    tokio::select! {
        stopped = controller::run(client, &reconciler, timing) => {
            let Err(error) = stopped;
            Err(error).context("the controller stopped")
        }
        served = probes => served.context("the health endpoints stopped"),
        _ = crate::shutdown_signal() => Ok(()),
    }
}
