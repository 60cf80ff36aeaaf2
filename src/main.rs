//! The `plexus` command: the all-in-one node and its tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
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
    /// Simulate a packet entering at a port and show every step it takes.
    Trace(TraceArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TraceProtocol {
    Icmp,
    Tcp,
    Udp,
}

#[derive(Parser)]
struct TraceArgs {
    /// The ingress port (id).
    #[arg(long)]
    port: uuid::Uuid,
    /// Destination IPv4 address.
    #[arg(long)]
    dst_ip: std::net::Ipv4Addr,
    /// Source IPv4 address (default: the port's allowed address).
    #[arg(long)]
    src_ip: Option<std::net::Ipv4Addr>,
    /// Source MAC (default: the port's MAC).
    #[arg(long)]
    src_mac: Option<nsdb::MacAddr>,
    /// Destination MAC (default: the owner of --dst-ip on the bridge, else its gateway).
    #[arg(long)]
    dst_mac: Option<nsdb::MacAddr>,
    /// Transport protocol.
    #[arg(long, value_enum, default_value = "icmp")]
    proto: TraceProtocol,
    /// Source port (TCP/UDP).
    #[arg(long, default_value_t = 49152)]
    sport: u16,
    /// Destination port (TCP/UDP).
    #[arg(long, default_value_t = 80)]
    dport: u16,
    /// Time to live.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
    /// Output format.
    #[arg(long, value_enum, default_value = "tree")]
    format: OutputFormat,
    #[command(flatten)]
    api: ApiClientArgs,
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    use vswitch::snapshot::{Device, Topology};
    let records = fetch_records(&args.api.client()?).await?;
    let topo = Topology::build(0, &records);
    let port = topo
        .ports
        .get(&args.port)
        .with_context(|| format!("no port {} (or not visible to this token)", args.port))?;
    let src_ip = match args.src_ip {
        Some(ip) => ip,
        None => port
            .allowed
            .iter()
            .find_map(|(_, net)| match net.addr() {
                std::net::IpAddr::V4(ip) => Some(ip),
                _ => None,
            })
            .or(port.address.map(|a| a.addr()))
            .context("the port has no IPv4 address; give --src-ip")?,
    };
    let dst_mac = match (args.dst_mac, port.device) {
        (Some(mac), _) => mac.0,
        (None, Device::Bridge(bridge)) => {
            let info = topo
                .bridges
                .get(&bridge)
                .context("the port's bridge is missing")?;
            let gateway = info
                .ports
                .iter()
                .filter_map(|p| topo.ports.get(p)?.peer)
                .filter_map(|peer| topo.ports.get(&peer))
                .find(|peer| matches!(peer.device, Device::Router(_)))
                .map(|peer| peer.mac);
            info.arp
                .get(&args.dst_ip)
                .copied()
                .or(gateway)
                .unwrap_or([0xff; 6])
        }
        (None, Device::Router(_)) => {
            anyhow::bail!("give --dst-mac for a packet entering at a router port")
        }
    };
    let probe = vswitch::probe::Probe {
        src_mac: args.src_mac.map_or(port.mac, |m| m.0),
        dst_mac,
        src_ip,
        dst_ip: args.dst_ip,
        protocol: match args.proto {
            TraceProtocol::Icmp => vswitch::probe::ProbeProtocol::Icmp,
            TraceProtocol::Tcp => vswitch::probe::ProbeProtocol::Tcp,
            TraceProtocol::Udp => vswitch::probe::ProbeProtocol::Udp,
        },
        src_port: args.sport,
        dst_port: args.dport,
        ttl: args.ttl,
    };
    let frame = probe
        .frame()
        .map_err(|e| anyhow::anyhow!("cannot build the probe: {e}"))?;
    let sim = vswitch::engine::simulate(&topo, &vswitch::engine::NothingLearned, args.port, &frame);
    let names = topology::Names::of(&records);
    match args.format {
        OutputFormat::Tree => {
            println!(
                "trace: {} {} > {} ttl {} from port {}",
                format!("{:?}", args.proto).to_lowercase(),
                src_ip,
                args.dst_ip,
                args.ttl,
                names.name(args.port)
            );
            print!("{}", topology::render_trace(&sim, &names));
        }
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&topology::trace_json(&sim, &names))?
        ),
    }
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    /// Indented text for people.
    Tree,
    /// JSON for programs.
    Json,
}

#[derive(Parser)]
struct TopologyArgs {
    /// Only this tenant (name or id).
    #[arg(long)]
    tenant: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "tree")]
    format: OutputFormat,
    #[command(flatten)]
    api: ApiClientArgs,
}

/// Every record the caller may see, read through the API.
async fn fetch_records(client: &api::Client) -> anyhow::Result<Vec<nsdb::Record>> {
    use nsdb::Resource;
    let mut records: Vec<nsdb::Record> = Vec::new();
    let routers: Vec<nsdb::Router> = client.list("/v1/routers").await?;
    for router in &routers {
        let routes: Vec<nsdb::Route> = client
            .list(&format!("/v1/routers/{}/routes", router.id))
            .await?;
        records.extend(routes.into_iter().map(Resource::into_record));
    }
    records.extend(routers.into_iter().map(Resource::into_record));
    let tenants: Vec<nsdb::Tenant> = client.list("/v1/tenants").await?;
    records.extend(tenants.into_iter().map(Resource::into_record));
    let bridges: Vec<nsdb::Bridge> = client.list("/v1/bridges").await?;
    records.extend(bridges.into_iter().map(Resource::into_record));
    let ports: Vec<nsdb::Port> = client.list("/v1/ports").await?;
    records.extend(ports.into_iter().map(Resource::into_record));
    // Hosts are provider infrastructure: a tenant token cannot list them.
    match client.list::<nsdb::Host>("/v1/hosts").await {
        Ok(hosts) => records.extend(hosts.into_iter().map(Resource::into_record)),
        Err(error) if error.status() == Some(403) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(records)
}

async fn show_topology(args: TopologyArgs) -> anyhow::Result<()> {
    let records = fetch_records(&args.api.client()?).await?;
    let dump = topology::Dump::build(&records, args.tenant.as_deref());
    if let Some(wanted) = &args.tenant {
        anyhow::ensure!(
            !dump.tenants.is_empty(),
            "no tenant named or with id '{wanted}'"
        );
    }
    match args.format {
        OutputFormat::Tree => print!("{}", dump.render_tree()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&dump)?),
    }
    Ok(())
}

/// How a command that talks to the API finds and authenticates to it.
#[derive(Parser)]
struct ApiClientArgs {
    /// The API's base URL.
    #[arg(
        long = "api",
        default_value = "http://127.0.0.1:8470",
        env = "PLEXUS_API"
    )]
    url: String,
    /// The token (default: the admin token in ./plexus-data/admin.token).
    #[arg(long, env = "PLEXUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ApiClientArgs {
    fn client(&self) -> anyhow::Result<api::Client> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => read_token(&PathBuf::from("./plexus-data").join(ADMIN_TOKEN_FILE)).context(
                "no --token or PLEXUS_TOKEN given, and no token in the default data dir",
            )?,
        };
        Ok(api::Client::new(&self.url, &token)?)
    }
}

#[derive(Parser)]
struct RawArgs {
    /// HTTP method: GET, POST, PUT, PATCH or DELETE.
    method: String,
    /// Path, e.g. /v1/routers?tenant_id=…
    path: String,
    /// JSON body.
    body: Option<String>,
    /// Only if the object is still at this revision (If-Match).
    #[arg(long)]
    if_match: Option<i64>,
    #[command(flatten)]
    api: ApiClientArgs,
}

async fn raw(args: RawArgs) -> anyhow::Result<()> {
    let method: reqwest::Method = args
        .method
        .to_ascii_uppercase()
        .parse()
        .context("not an HTTP method")?;
    let body = match &args.body {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .context("the body is not valid JSON")?,
        ),
        None => None,
    };
    let answer: serde_json::Value = args
        .api
        .client()?
        .call(method, &args.path, body.as_ref(), args.if_match)
        .await?;
    if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
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
const ADMIN_TOKEN_FILE: &str = "admin.token";

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
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
    let config = args.nsdb.store_config(&args.data)?;
    let admin_token = args.admin.resolve(Some(&args.data))?;
    let nsdb = Nsdb::open(&config)
        .await
        .with_context(|| format!("opening the NSDB ({config:?})"))?;
    let agent = vswitch::agent::Agent::start(nsdb.clone(), args.host.config()?)
        .await
        .context("starting the agent")?;
    let datapath = agent.datapath().clone();
    let metrics: api::server::ExtraMetrics = std::sync::Arc::new(move || datapath.metrics_text());
    let app = api::app_with_metrics(nsdb, api::auth::token_hash(&admin_token), Some(metrics));
    let result = run_http(app, args.listen).await;
    drop(agent);
    result
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let config = args.nsdb.store_config(&args.data)?;
    let nsdb = Nsdb::open(&config)
        .await
        .with_context(|| format!("opening the NSDB ({config:?})"))?;
    let agent = vswitch::agent::Agent::start(nsdb, args.host.config()?)
        .await
        .context("starting the agent")?;
    println!(
        "plexus: agent for host {} ({}) running",
        agent.host().name,
        agent.host().id
    );
    let datapath = agent.datapath().clone();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let datapath = datapath.clone();
                async move { datapath.metrics_text() }
            }),
        );
    run_http(app, args.listen).await
}

async fn api_server(args: ApiServerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nsdb.nsdb.is_some(),
        "plexus api needs --nsdb etcd://HOST:PORT (use plexus serve for a single node)"
    );
    let config = args.nsdb.store_config(std::path::Path::new("."))?;
    let admin_token = args.admin.resolve(None)?;
    run_api(config, admin_token, args.listen).await
}

async fn run_api(
    config: StoreConfig,
    admin_token: String,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let nsdb = Nsdb::open(&config)
        .await
        .with_context(|| format!("opening the NSDB ({config:?})"))?;
    run_http(api::app(nsdb, api::auth::token_hash(&admin_token)), listen).await
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
    }
}
