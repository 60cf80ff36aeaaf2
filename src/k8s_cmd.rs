//! `plexus k8s`: Plexus for a Kubernetes cluster. `apply -f` reconciles
//! Kubernetes objects read from files exactly as the controller reconciles
//! what its watches see.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s::objects::Objects;
use k8s::reconcile::{reconcile, Settings, DEFAULT_TENANT};

use crate::tools::ApiClientArgs;

/// `plexus k8s` subcommands.
#[derive(Subcommand)]
pub enum K8sCommand {
    /// Reconcile Kubernetes objects from files (Namespace, Pod, NetworkPolicy,
    /// Service, EndpointSlice; YAML or JSON, `---`-separated, Lists too) into
    /// Plexus. The files are the whole cluster: policies and Services not in
    /// them are removed, as after a controller's resync.
    Apply(ApplyArgs),
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

/// Runs a `plexus k8s` subcommand.
pub async fn run(command: K8sCommand) -> anyhow::Result<()> {
    match command {
        K8sCommand::Apply(args) => apply(args).await,
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
