//! The `plexus` command: the all-in-one node and its tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nsdb::{EtcdConfig, Nsdb, StoreConfig};

mod k8s_cmd;
mod k8s_health;
mod limits;
mod provider_args;
mod tenant_cmd;
mod tools;

use provider_args::ProviderArgs;
use tools::{raw, show_topology, trace, RawArgs, TopologyArgs, TraceArgs};

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
    /// the REST API.
    Serve(ServeArgs),
    /// Run a stateless API server over an etcd NSDB (run several behind a
    /// load balancer).
    Api(ApiServerArgs),
    /// Run the agent of one host: follow the NSDB and forward the traffic of
    /// the ports bound to this host.
    Agent(AgentArgs),
    /// Call the API directly: `plexus raw GET /v1/tenants`,
    /// `plexus raw POST /v1/tenants '{"name":"acme"}'`.
    Raw(RawArgs),
    /// Show tenants' routers, bridges, ports and routes.
    Topology(TopologyArgs),
    /// Plexus for Kubernetes: reconcile cluster objects into Plexus, from
    /// files (apply) or following a cluster (run).
    #[command(subcommand)]
    K8s(k8s_cmd::K8sCommand),
    /// Simulate a packet entering at a port and show every step it takes.
    Trace(TraceArgs),
    /// Tenants and their default networks.
    #[command(subcommand)]
    Tenant(tenant_cmd::TenantCommand),
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
    #[command(flatten)]
    admin: AdminTokenArgs,
    #[command(flatten)]
    host: HostArgs,
    #[command(flatten)]
    provider: ProviderArgs,
}

/// Who this host is.
#[derive(Parser)]
struct HostArgs {
    /// This host's name in the NSDB (default: the system host name).
    #[arg(long, env = "PLEXUS_HOST_NAME")]
    host_name: Option<String>,
    /// The address other hosts send tunnelled traffic to.
    #[arg(long, env = "PLEXUS_TUNNEL_IP", default_value = "127.0.0.1")]
    tunnel_ip: std::net::IpAddr,
    /// The UDP port of agent-to-agent VXLAN (the same on every host).
    #[arg(long, env = "PLEXUS_TUNNEL_PORT", default_value_t = vswitch::tunnel::DEFAULT_PORT)]
    tunnel_port: u16,
    /// The underlay's MTU; frames crossing hosts carry at most this minus 50 bytes of IP.
    #[arg(long, env = "PLEXUS_UNDERLAY_MTU", default_value_t = vswitch::tunnel::DEFAULT_UNDERLAY_MTU)]
    underlay_mtu: usize,
    /// How many sockets receive tunnelled traffic, each on a task of its
    /// own, and send it, each from a UDP port of its own (0: one per CPU,
    /// at most 8).
    #[arg(long, env = "PLEXUS_TUNNEL_SOCKETS", default_value_t = 0)]
    tunnel_sockets: usize,
    /// How ports are received from: `off` (every port waits for the
    /// kernel's wakeup), `always` (a thread polls every port without
    /// sleeping: lowest latency, keeps one core busy) or `adaptive` (busy
    /// ports are polled for 200 µs after traffic; `adaptive:<µs>` sets the
    /// hold; experimental: slower than `off` on 2 cores).
    #[arg(long, env = "PLEXUS_POLL_MODE", default_value = "off")]
    poll_mode: vswitch::datapath::PollMode,
    /// How veth ports are received from: `auto` (a socket each for the
    /// first 512 ports, shared sockets for the rest), `shared` (a few
    /// sockets for every port, an eBPF filter naming their interfaces) or
    /// `per-port` (a socket each). Without eBPF, `per-port`.
    #[arg(long, env = "PLEXUS_PACKET_SOCKETS", default_value = "auto")]
    packet_sockets: vswitch::datapath::PacketSockets,
    /// Receive queues of a veth port with a socket of its own, each a
    /// socket in the port's flow-hash fanout group served on a task of its
    /// own, so that one port's flows use several cores (0: one per two
    /// CPUs, 1 to 4; 1: none extra; at most 16). Busy polling
    /// (`--poll-mode`) keeps one.
    #[arg(long, env = "PLEXUS_PORT_QUEUES", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=16))]
    port_queues: u16,
}

impl HostArgs {
    fn config(&self) -> anyhow::Result<vswitch::agent::AgentConfig> {
        let host_name = match &self.host_name {
            Some(name) => name.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .context("reading the host name; give --host-name")?
                .trim()
                .to_string(),
        };
        Ok(vswitch::agent::AgentConfig {
            host_name,
            tunnel_ip: self.tunnel_ip,
            tunnel: vswitch::tunnel::TunnelConfig {
                port: self.tunnel_port,
                underlay_mtu: self.underlay_mtu,
                sockets: self.tunnel_sockets,
            },
            poll: self.poll_mode,
            packet_sockets: self.packet_sockets,
            port_queues: usize::from(self.port_queues),
        })
    }
}

#[derive(Parser)]
struct AgentArgs {
    /// Address of the agent's /healthz and /metrics (datapath counters).
    #[arg(long, default_value = "127.0.0.1:8471", env = "PLEXUS_AGENT_LISTEN")]
    listen: SocketAddr,
    /// Directory of the embedded store (when --nsdb is not given).
    #[arg(long, default_value = "./plexus-data", env = "PLEXUS_DATA")]
    data: PathBuf,
    #[command(flatten)]
    nsdb: NsdbArgs,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Parser)]
struct ApiServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8470", env = "PLEXUS_LISTEN")]
    listen: SocketAddr,
    #[command(flatten)]
    nsdb: NsdbArgs,
    #[command(flatten)]
    admin: AdminTokenArgs,
    #[command(flatten)]
    provider: ProviderArgs,
    /// The host (by name) whose agent serves the provider uplink; without
    /// it the provider router is created without an uplink.
    #[arg(long, env = "PLEXUS_UPLINK_HOST")]
    uplink_host: Option<String>,
}

/// The admin credential of an API server.
#[derive(Parser)]
struct AdminTokenArgs {
    /// File holding the admin token.
    #[arg(long, env = "PLEXUS_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The admin token itself.
    #[arg(
        long = "admin-token",
        env = "PLEXUS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
}

/// Name of the generated admin token file in the data dir.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin.token";

pub(crate) fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token)
}

impl AdminTokenArgs {
    /// The admin token: given, read from a file, or (with a data dir)
    /// generated on first start and kept in the data dir with mode 0600.
    fn resolve(&self, data: Option<&std::path::Path>) -> anyhow::Result<String> {
        if let Some(token) = self
            .admin_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return Ok(token.to_string());
        }
        if let Some(path) = &self.admin_token_file {
            return read_token(path);
        }
        let data =
            data.context("give the admin token with --admin-token-file or PLEXUS_ADMIN_TOKEN")?;
        let path = data.join(ADMIN_TOKEN_FILE);
        if path.exists() {
            return read_token(&path);
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        let token = api::auth::generate_token();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
        println!("plexus: generated an admin token in {}", path.display());
        Ok(token)
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    limits::raise_open_files_limit();
    let config = args.nsdb.store_config(&args.data)?;
    let admin_token = args.admin.resolve(Some(&args.data))?;
    let nsdb = Nsdb::open(&config)
        .await
        .with_context(|| format!("opening the NSDB ({config:?})"))?;
    let agent = vswitch::agent::Agent::start(nsdb.clone(), args.host.config()?)
        .await
        .context("starting the agent")?;
    let plan = args.provider.plan(Some(agent.host().id))?;
    api::provision::ensure_provider(&nsdb, &plan)
        .await
        .context("creating the provider router")?;
    let app = api::app_with_datapath(
        nsdb,
        api::auth::token_hash(&admin_token),
        datapath_hooks(&agent),
    );
    let result = run_http(app, args.listen).await;
    agent.stop().await;
    result
}

/// What the API of `plexus serve` reads from its own agent's datapath.
fn datapath_hooks(agent: &vswitch::agent::Agent) -> api::DatapathHooks {
    use api::routes::counters::{DatapathCounters, PortCounterSample};
    use std::sync::atomic::Ordering::Relaxed;
    use vswitch::io::PortIo;
    let metrics: api::server::ExtraMetrics = std::sync::Arc::new(agent.metrics());
    let datapath = agent.datapath().clone();
    let host_id = agent.host().id;
    let counters: api::routes::counters::PortCounterSource = std::sync::Arc::new(move || {
        let ports = datapath
            .attached()
            .into_iter()
            .filter_map(|id| datapath.port(id))
            .map(|port| PortCounterSample {
                port_id: port.id,
                host_id,
                interface: port.io.ifname().to_string(),
                rx_packets: port.counters.rx.load(Relaxed),
                rx_bytes: port.counters.rx_bytes.load(Relaxed),
                tx_packets: port.counters.tx.load(Relaxed),
                tx_bytes: port.counters.tx_bytes.load(Relaxed),
                rx_dropped: port.counters.drops.load(Relaxed),
                rx_answered: port.counters.answered.load(Relaxed),
                rx_held: port.counters.held.load(Relaxed),
            })
            .collect();
        DatapathCounters { host_id, ports }
    });
    let datapath = agent.datapath().clone();
    let live_trace = api::server::LiveTrace {
        host: host_id,
        run: std::sync::Arc::new(move |records, spec| {
            datapath.with_learned(|learned| topology::run_trace_with(records, spec, learned))
        }),
    };
    api::DatapathHooks {
        metrics: Some(metrics),
        port_counters: Some(counters),
        live_trace: Some(live_trace),
    }
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    limits::raise_open_files_limit();
    let config = args.nsdb.store_config(&args.data)?;
    let host = args.host.config()?;
    let mut delay = std::time::Duration::from_millis(200);
    let agent = loop {
        let started = match open_waiting(&config).await {
            Ok(nsdb) => vswitch::agent::Agent::start(nsdb, host.clone()).await,
            Err(error) => return Err(error),
        };
        match started {
            Ok(agent) => break agent,
            Err(nsdb::NsdbError::Store(nsdb::StoreError::Unavailable(reason))) => {
                tracing::warn!(%reason, "the NSDB went away while registering; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(error) => return Err(error).context("starting the agent"),
        }
    };
    println!(
        "plexus: agent for host {} ({}) running",
        agent.host().name,
        agent.host().id
    );
    let metrics = std::sync::Arc::new(agent.metrics());
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics() }
            }),
        );
    let result = run_http(app, args.listen).await;
    agent.stop().await;
    result
}

async fn api_server(args: ApiServerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nsdb.nsdb.is_some(),
        "plexus api needs --nsdb etcd://HOST:PORT (use plexus serve for a single node)"
    );
    let config = args.nsdb.store_config(std::path::Path::new("."))?;
    let admin_token = args.admin.resolve(None)?;
    let nsdb = open_waiting(&config).await?;
    tokio::spawn(keep_provider(nsdb.clone(), args.provider, args.uplink_host));
    run_http(
        api::app(nsdb, api::auth::token_hash(&admin_token)),
        args.listen,
    )
    .await
}

/// Opens the NSDB, waiting with backoff while it cannot be reached (an agent
/// or API server may start before etcd does); other errors end it.
async fn open_waiting(config: &nsdb::StoreConfig) -> anyhow::Result<Nsdb> {
    let mut delay = std::time::Duration::from_millis(200);
    let mut warned = false;
    loop {
        match Nsdb::open(config).await {
            Ok(nsdb) => {
                if warned {
                    tracing::info!("the NSDB is reachable");
                }
                return Ok(nsdb);
            }
            Err(nsdb::NsdbError::Store(nsdb::StoreError::Unavailable(reason))) => {
                if !warned {
                    tracing::warn!(%reason, "waiting for the NSDB");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("opening the NSDB ({config:?})"))
            }
        }
    }
}

/// Creates the provider router once the NSDB (and the uplink host, when
/// one is named) can be reached, retrying in the background so that the
/// API serves meanwhile.
async fn keep_provider(nsdb: Nsdb, provider: ProviderArgs, uplink_host: Option<String>) {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        let host = match &uplink_host {
            None => Ok(Some(None)),
            Some(name) => nsdb.list::<nsdb::Host>().await.map(|hosts| {
                hosts
                    .into_iter()
                    .find(|h| &h.name == name)
                    .map(|h| Some(h.id))
            }),
        };
        let outcome = match host {
            Ok(Some(host)) => match provider.plan(host) {
                Ok(plan) => match api::provision::ensure_provider(&nsdb, &plan).await {
                    // The flags contradict the stored provider: retrying cannot help.
                    Err(error @ nsdb::NsdbError::Rejected { .. }) => {
                        tracing::error!(%error, "the provider settings are refused");
                        return;
                    }
                    other => other.map_err(anyhow::Error::from),
                },
                Err(error) => {
                    tracing::error!(%error, "bad provider settings");
                    return;
                }
            },
            Ok(None) => Err(anyhow::anyhow!(
                "the uplink host has not registered yet (is its agent running?)"
            )),
            Err(error) => Err(error.into()),
        };
        match outcome {
            Ok(_) => return,
            Err(error) => tracing::warn!(%error, "cannot create the provider router yet; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn run_http(app: axum::Router, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(%listen, "plexus API serving");
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
        Command::Api(args) => api_server(args).await,
        Command::Agent(args) => agent(args).await,
        Command::Raw(args) => raw(args).await,
        Command::Topology(args) => show_topology(args).await,
        Command::Trace(args) => trace(args).await,
        Command::Tenant(command) => tenant_cmd::run(command).await,
        Command::K8s(command) => k8s_cmd::run(command).await,
    }
}
