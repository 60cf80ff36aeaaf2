//! The operator tools that talk to the API: `plexus raw`, `plexus topology`
//! and `plexus trace`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::{read_token, ADMIN_TOKEN_FILE};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TraceProtocol {
    Icmp,
    Tcp,
    Udp,
}

#[derive(Parser)]
pub struct TraceArgs {
    /// The ingress port (id); with --live, a port the packets enter or
    /// leave by.
    #[arg(long, required_unless_present_any = ["live"])]
    port: Option<uuid::Uuid>,
    /// Destination IPv4 address; with --live, an address or network the
    /// packets go to (any if not given).
    #[arg(long, required_unless_present_any = ["live"])]
    dst_ip: Option<String>,
    /// Source IPv4 address (default: the port's allowed address); with
    /// --live, an address or network the packets come from.
    #[arg(long)]
    src_ip: Option<String>,
    /// Source MAC (default: the port's MAC).
    #[arg(long)]
    src_mac: Option<nsdb::MacAddr>,
    /// Destination MAC (default: the owner of --dst-ip on the bridge, else its gateway).
    #[arg(long)]
    dst_mac: Option<nsdb::MacAddr>,
    /// Transport protocol (default: icmp; with --live: any).
    #[arg(long, value_enum)]
    proto: Option<TraceProtocol>,
    /// Source port (TCP/UDP; default 49152; with --live: any).
    #[arg(long)]
    sport: Option<u16>,
    /// Destination port (TCP/UDP; default 80; with --live: any).
    #[arg(long)]
    dport: Option<u16>,
    /// Time to live.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
    /// Output format.
    #[arg(long, value_enum, default_value = "tree")]
    format: OutputFormat,
    /// What the engine knows: `empty` (nothing learned: what the NSDB
    /// alone says; run here) or `live` (what the server's own agent has
    /// learned — MACs, ARP answers, connections and NAT; `plexus serve`
    /// runs the trace).
    #[arg(long, value_enum, default_value = "empty")]
    state: TraceStateArg,
    /// With --state live: the host (id) whose agent's state to use
    /// (default: the server's own agent; needed with `plexus api`).
    #[arg(long)]
    host: Option<uuid::Uuid>,
    /// Trace real packets as they pass (a live trace request on every
    /// agent) instead of simulating one: prints each one's steps, with
    /// the receiving host's delivery when it crossed hosts.
    #[arg(long, conflicts_with_all = ["src_mac", "dst_mac", "ttl", "state", "host"])]
    live: bool,
    /// With --live: a bridge or router (id) the packets cross.
    #[arg(long, requires = "live")]
    device: Option<uuid::Uuid>,
    /// With --live: stop after this many packets (each host records at
    /// most this many).
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// With --live: stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[command(flatten)]
    api: ApiClientArgs,
}

impl TraceArgs {
    fn protocol(&self) -> TraceProtocol {
        self.proto.unwrap_or(TraceProtocol::Icmp)
    }

    fn src_port(&self) -> u16 {
        self.sport.unwrap_or(49152)
    }

    fn dst_port(&self) -> u16 {
        self.dport.unwrap_or(80)
    }

    /// The ingress port and addresses of a simulated packet.
    fn packet(&self) -> anyhow::Result<(uuid::Uuid, std::net::IpAddr, Option<std::net::IpAddr>)> {
        let port = self.port.context("--port is required")?;
        let dst = self.dst_ip.as_deref().context("--dst-ip is required")?;
        let dst = dst
            .parse()
            .with_context(|| format!("--dst-ip {dst} is not an IP address"))?;
        let src = match &self.src_ip {
            Some(src) => Some(
                src.parse()
                    .with_context(|| format!("--src-ip {src} is not an IP address"))?,
            ),
            None => None,
        };
        Ok((port, dst, src))
    }
}

/// The learned state `plexus trace` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceStateArg {
    /// Nothing learned.
    Empty,
    /// The server's agent's learned state.
    Live,
}

/// `plexus trace --state live`: the server runs the trace on its agent's
/// state (`POST /v1/trace`) and says so.
async fn trace_live(args: &TraceArgs) -> anyhow::Result<()> {
    use api::routes::trace::{TraceAnswer, TraceProtocol as Proto, TraceRequest, TraceState};
    let (port_id, dst_ip, src_ip) = args.packet()?;
    let request = TraceRequest {
        port_id,
        dst_ip,
        src_ip,
        src_mac: args.src_mac,
        dst_mac: args.dst_mac,
        protocol: match args.protocol() {
            TraceProtocol::Icmp => Proto::Icmp,
            TraceProtocol::Tcp => Proto::Tcp,
            TraceProtocol::Udp => Proto::Udp,
        },
        src_port: args.src_port(),
        dst_port: args.dst_port(),
        ttl: args.ttl,
        state: TraceState::Live,
        host_id: args.host,
    };
    let answer: TraceAnswer = args
        .api
        .client()?
        .post("/v1/trace", &serde_json::to_value(&request)?)
        .await?;
    match args.format {
        OutputFormat::Tree => {
            println!("{}", answer.summary);
            println!("state: {}", answer.state);
            print!("{}", answer.text);
        }
        OutputFormat::Json => {
            let mut trace = answer.trace;
            trace.insert("state".into(), answer.state.into());
            println!("{}", serde_json::to_string_pretty(&trace)?);
        }
    }
    Ok(())
}

/// `plexus trace --live`: makes a live trace request, prints the packets
/// the agents record as they come, and ends the request when done (count
/// reached, time up, or Ctrl-C).
async fn trace_real_packets(args: &TraceArgs) -> anyhow::Result<()> {
    use api::routes::trace_requests::{TraceRequestBody, TraceRequestInfo};
    let body = TraceRequestBody {
        port_id: args.port,
        device_id: args.device,
        src_ip: args.src_ip.clone(),
        dst_ip: args.dst_ip.clone(),
        protocol: args.proto.map(|p| format!("{p:?}").to_ascii_lowercase()),
        src_port: args.sport,
        dst_port: args.dport,
        limit_packets: args.count,
        limit_seconds: args.seconds,
    };
    let client = args.api.client()?;
    let request: TraceRequestInfo = client
        .post("/v1/trace_requests", &serde_json::to_value(&body)?)
        .await?;
    eprintln!(
        "live trace {}: waiting for up to {} packets for {} s (Ctrl-C ends it)",
        request.id, args.count, args.seconds
    );
    let path = format!("/v1/trace_requests/{}/events", request.id);
    let format = args.format;
    let mut seen = 0;
    let stream = client.stream_events(&path, |name, data| {
        if name != "trace" {
            eprintln!("live trace ended: {data}");
            return false;
        }
        let Ok(trace) = serde_json::from_str::<serde_json::Value>(data) else {
            return true;
        };
        match format {
            OutputFormat::Tree => println!("{}", trace["text"].as_str().unwrap_or_default()),
            OutputFormat::Json => println!("{trace}"),
        }
        seen += 1;
        seen < args.count
    });
    let outcome = tokio::select! {
        outcome = stream => outcome.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let path = format!("/v1/trace_requests/{}", request.id);
    if let Err(error) = client.delete(&path, None).await {
        eprintln!("ending the live trace: {error}");
    }
    outcome
}

pub async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    if args.live {
        return trace_real_packets(&args).await;
    }
    if args.state == TraceStateArg::Live {
        return trace_live(&args).await;
    }
    if args.host.is_some() {
        anyhow::bail!("--host names whose learned state to use: give --state live too");
    }
    let records = fetch_records(&args.api.client()?).await?;
    let (port, dst_ip, src_ip) = args.packet()?;
    let spec = topology::TraceSpec {
        port,
        dst_ip,
        src_ip,
        src_mac: args.src_mac.map(|m| m.0),
        dst_mac: args.dst_mac.map(|m| m.0),
        protocol: match args.protocol() {
            TraceProtocol::Icmp => vswitch::probe::ProbeProtocol::Icmp,
            TraceProtocol::Tcp => vswitch::probe::ProbeProtocol::Tcp,
            TraceProtocol::Udp => vswitch::probe::ProbeProtocol::Udp,
        },
        src_port: args.src_port(),
        dst_port: args.dst_port(),
        ttl: args.ttl,
    };
    let run = topology::run_trace(&records, &spec)?;
    match args.format {
        OutputFormat::Tree => {
            println!("{}", run.header());
            println!("state: empty (nothing learned)");
            print!("{}", run.text());
        }
        OutputFormat::Json => {
            let mut trace = run.json();
            trace["state"] = "empty (nothing learned)".into();
            println!("{}", serde_json::to_string_pretty(&trace)?)
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// Indented text for people.
    Tree,
    /// JSON for programs.
    Json,
}

/// How `plexus topology` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TopologyFormat {
    /// Indented text for people.
    Tree,
    /// JSON for programs.
    Json,
    /// A Graphviz graph.
    Dot,
    /// The graph drawn as SVG (needs Graphviz's `dot`).
    Svg,
}

#[derive(Parser)]
pub struct TopologyArgs {
    /// Only this tenant (name or id).
    #[arg(long)]
    tenant: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "tree")]
    format: TopologyFormat,
    #[command(flatten)]
    api: ApiClientArgs,
}

/// Every record the caller may see, read through the API.
pub async fn fetch_records(client: &api::Client) -> anyhow::Result<Vec<nsdb::Record>> {
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
    let chains: Vec<nsdb::Chain> = client.list("/v1/chains").await?;
    for chain in &chains {
        let rules: Vec<nsdb::Rule> = client
            .list(&format!("/v1/chains/{}/rules", chain.id))
            .await?;
        records.extend(rules.into_iter().map(Resource::into_record));
    }
    records.extend(chains.into_iter().map(Resource::into_record));
    let groups: Vec<nsdb::PortGroup> = client.list("/v1/port_groups").await?;
    records.extend(groups.into_iter().map(Resource::into_record));
    let groups: Vec<nsdb::IpAddressGroup> = client.list("/v1/ip_address_groups").await?;
    records.extend(groups.into_iter().map(Resource::into_record));
    let lbs: Vec<nsdb::LoadBalancer> = client.list("/v1/load_balancers").await?;
    records.extend(lbs.into_iter().map(Resource::into_record));
    let pools: Vec<nsdb::Pool> = client.list("/v1/pools").await?;
    records.extend(pools.into_iter().map(Resource::into_record));
    let vips: Vec<nsdb::Vip> = client.list("/v1/vips").await?;
    records.extend(vips.into_iter().map(Resource::into_record));
    let members: Vec<nsdb::PoolMember> = client.list("/v1/members").await?;
    records.extend(members.into_iter().map(Resource::into_record));
    let monitors: Vec<nsdb::HealthMonitor> = client.list("/v1/health_monitors").await?;
    records.extend(monitors.into_iter().map(Resource::into_record));
    // Hosts are provider infrastructure: a tenant token cannot list them.
    match client.list::<nsdb::Host>("/v1/hosts").await {
        Ok(hosts) => records.extend(hosts.into_iter().map(Resource::into_record)),
        Err(error) if error.status() == Some(403) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(records)
}

pub async fn show_topology(args: TopologyArgs) -> anyhow::Result<()> {
    let records = fetch_records(&args.api.client()?).await?;
    let dump = topology::Dump::build(&records, args.tenant.as_deref());
    if let Some(wanted) = &args.tenant {
        anyhow::ensure!(
            !dump.tenants.is_empty(),
            "no tenant named or with id '{wanted}'"
        );
    }
    match args.format {
        TopologyFormat::Tree => print!("{}", dump.render_tree()),
        TopologyFormat::Json => println!("{}", serde_json::to_string_pretty(&dump)?),
        TopologyFormat::Dot => print!("{}", dump.render_dot()),
        TopologyFormat::Svg => print!("{}", draw_svg(&dump.render_dot())?),
    }
    Ok(())
}

/// `dot` drawn as SVG by Graphviz.
fn draw_svg(dot: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running Graphviz's dot (install graphviz; --format dot prints the graph)")?;
    child
        .stdin
        .take()
        .context("dot's input")?
        .write_all(dot.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "dot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// How a command that talks to the API finds and authenticates to it.
#[derive(Parser)]
pub struct ApiClientArgs {
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
    pub fn client(&self) -> anyhow::Result<api::Client> {
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
pub struct RawArgs {
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

pub async fn raw(args: RawArgs) -> anyhow::Result<()> {
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
