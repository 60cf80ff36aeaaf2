//! The `plexus` command: the all-in-one node and its tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::{Parser, Subcommand};
use nsdb::{EtcdConfig, Nsdb, StoreConfig};

/// Plexus: a multi-tenant software-defined network.
#[derive(Parser)]
#[command(name = "plexus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Plexus all-in-one: the NSDB (embedded unless --nsdb is given) and
    /// its HTTP endpoint.
    Serve(ServeArgs),
}

/// Where the NSDB is: shared by every command that opens it.
#[derive(Parser)]
struct NsdbArgs {
    /// Use etcd instead of the embedded store:
    /// etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (etcds:// for TLS; default prefix /plexus/).
    #[arg(long, env = "PLEXUS_NSDB")]
    nsdb: Option<String>,
    /// etcd user name.
    #[arg(long, env = "PLEXUS_ETCD_USER", requires = "etcd_password_file")]
    etcd_user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long, env = "PLEXUS_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// PEM CA certificate that signed etcd's server certificates.
    #[arg(long, env = "PLEXUS_ETCD_CA_FILE")]
    etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate for etcd mutual TLS.
    #[arg(long, env = "PLEXUS_ETCD_CERT_FILE", requires = "etcd_key_file")]
    etcd_cert_file: Option<PathBuf>,
    /// PEM private key of --etcd-cert-file.
    #[arg(long, env = "PLEXUS_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    etcd_key_file: Option<PathBuf>,
}

impl NsdbArgs {
    /// The store to open: etcd when --nsdb is given, else the embedded file in `data`.
    fn store_config(&self, data: &std::path::Path) -> anyhow::Result<StoreConfig> {
        let Some(url) = &self.nsdb else {
            return Ok(StoreConfig::Embedded {
                path: data.join("nsdb.redb"),
            });
        };
        let mut config = EtcdConfig::from_url(url)?;
        if let Some(file) = &self.etcd_password_file {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("reading the etcd password from {}", file.display()))?;
            config.user = self.etcd_user.clone();
            config.password = Some(password.trim_end_matches(['\r', '\n']).to_string());
        }
        config.ca_file = self.etcd_ca_file.clone();
        config.cert_file = self.etcd_cert_file.clone();
        config.key_file = self.etcd_key_file.clone();
        Ok(StoreConfig::Etcd(config))
    }
}

#[derive(Parser)]
struct ServeArgs {
    /// Directory of the embedded store and generated credentials.
    #[arg(long, default_value = "./plexus-data", env = "PLEXUS_DATA")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8470", env = "PLEXUS_LISTEN")]
    listen: SocketAddr,
    #[command(flatten)]
    nsdb: NsdbArgs,
}

async fn healthz(State(nsdb): State<Nsdb>) -> (StatusCode, Json<serde_json::Value>) {
    match nsdb.current_revision().await {
        Ok(revision) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ok", "nsdb_revision": revision })),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "error": error.to_string() })),
        ),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.nsdb.store_config(&args.data)?;
    let nsdb = Nsdb::open(&config)
        .await
        .with_context(|| format!("opening the NSDB ({config:?})"))?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(nsdb);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "plexus serving");
    println!("plexus: serving on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("plexus: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
    }
}
