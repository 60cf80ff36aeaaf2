//! The agent: registers its host, follows the NSDB, opens the interfaces of
//! the ports bound to the host and runs the datapath on them.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nsdb::{Host, HostLiveness, Nsdb, NsdbError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::datapath::{serve_tunnel, Datapath, PacketSockets, PollMode, PortCounters, PortHandle};
use crate::feed::{run_feed, InitialRead, SharedTopology};
use crate::markers::PortMarkers;
use crate::snapshot::Topology;
use crate::tunnel::{Tunnel, TunnelConfig};
use crate::uplink::UplinkHost;

mod interfaces;

/// How long a dead agent still looks alive.
const LIVENESS_TTL: Duration = Duration::from_secs(10);

/// Who this agent is.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The host's name (unique in the deployment).
    pub host_name: String,
    /// The address other hosts tunnel to.
    pub tunnel_ip: IpAddr,
    /// The tunnel's UDP port and underlay MTU.
    pub tunnel: TunnelConfig,
    /// How ports are received from (busy polling).
    pub poll: PollMode,
    /// How veth ports are received from (sockets shared or one each).
    pub packet_sockets: PacketSockets,
    /// Receive queues of a veth port with a socket of its own, its socket
    /// included (0: one per two CPUs, 1 to 4). Busy polling keeps one (see
    /// [`Datapath::port_queues`]).
    pub port_queues: usize,
}

impl AgentConfig {
    /// The extra receive queues each veth port with a socket of its own gets.
    pub fn extra_port_queues(&self) -> usize {
        let queues = match self.port_queues {
            // The agent shares the CPUs with the pods: on 2 CPUs a second
            // queue measured slower for small packets (docs/datapath-io.md).
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4)),
            n => n,
        };
        queues.clamp(1, crate::io::MAX_PORT_QUEUES) - 1
    }
}

/// A running agent; dropping it stops everything it started.
pub struct Agent {
    host: Host,
    datapath: Arc<Datapath>,
    topology: Arc<SharedTopology>,
    applied: watch::Receiver<nsdb::Revision>,
    initial_read: Arc<OnceLock<InitialRead>>,
    _liveness: HostLiveness,
    tasks: Vec<JoinHandle<()>>,
    /// Tells the port reconciler to stop serving every port.
    stopping: watch::Sender<bool>,
    /// The port reconciler, which closes the ports once told to stop.
    reconciler: Option<JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for task in self.tasks.iter().chain(&self.reconciler) {
            task.abort();
        }
        self.datapath.stop_poller();
        self.datapath.stop_shared();
    }
}

/// Finds the host by name, creating or updating it as configured.
async fn register(nsdb: &Nsdb, config: &AgentConfig) -> Result<Host, NsdbError> {
    let existing = nsdb
        .list::<Host>()
        .await?
        .into_iter()
        .find(|h| h.name == config.host_name);
    match existing {
        Some(host)
            if host.tunnel_ip == config.tunnel_ip
                && host.underlay_mtu as usize == config.tunnel.underlay_mtu =>
        {
            Ok(host)
        }
        Some(mut host) => {
            let revision = host.revision;
            host.tunnel_ip = config.tunnel_ip;
            host.underlay_mtu = config.tunnel.underlay_mtu as u32;
            nsdb.update(host, Some(revision)).await
        }
        None => {
            let host = Host {
                id: Uuid::new_v4(),
                revision: 0,
                name: config.host_name.clone(),
                tunnel_ip: config.tunnel_ip,
                underlay_mtu: config.tunnel.underlay_mtu as u32,
                alive: false,
            };
            nsdb.create(host).await
        }
    }
}

impl Agent {
    /// Starts the agent on `nsdb`.
    pub async fn start(nsdb: Nsdb, config: AgentConfig) -> Result<Agent, NsdbError> {
        let host = register(&nsdb, &config).await?;
        let liveness = nsdb.keep_host_alive(host.id, LIVENESS_TTL).await?;
        let topology = Arc::new(SharedTopology::default());
        let datapath = Arc::new(Datapath::new(host.id, topology.clone()));
        if config.packet_sockets != PacketSockets::PerPort {
            open_shared_sockets(&datapath, config.packet_sockets.dedicated());
        }
        datapath.start_poller(config.poll);
        datapath.set_port_queues(config.extra_port_queues());
        let (invalidate_tx, mut invalidate_rx) = mpsc::unbounded_channel();
        let (applied_tx, applied) = watch::channel(0);
        let nsdb_for_health = nsdb.clone();
        let markers = PortMarkers::new(nsdb.clone(), host.id, liveness.leases());
        let initial_read = Arc::new(OnceLock::new());
        let mut tasks = vec![tokio::spawn(run_feed(
            nsdb,
            topology.clone(),
            invalidate_tx,
            applied_tx,
            initial_read.clone(),
        ))];
        match Tunnel::bind(config.tunnel_ip, config.tunnel) {
            Ok(tunnel) => {
                let tunnel = Arc::new(tunnel);
                datapath.set_tunnel(tunnel.clone());
                for k in 0..tunnel.receivers().len() {
                    let (dp, tunnel) = (datapath.clone(), tunnel.clone());
                    tasks.push(tokio::spawn(serve_tunnel(dp, tunnel, k)));
                }
                // Recover the flow state of traffic already passing through
                // this host (after a restart, or joining late): ask the
                // peers a few times while they come into view.
                let dp = datapath.clone();
                tasks.push(tokio::spawn(async move {
                    for wait_ms in [500, 1_500, 3_000, 5_000] {
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        dp.request_sync();
                    }
                }));
                tracing::info!(ip = %config.tunnel_ip, port = tunnel.config().port, sockets = tunnel.receivers().len(), "tunnel listening");
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot open the tunnel; ports on other hosts are unreachable from this one"
            ),
        }
        let (trace_tx, trace_rx) = mpsc::channel(crate::tracing_live::TRACE_EVENT_QUEUE);
        datapath.set_trace_sink(trace_tx);
        tasks.push(tokio::spawn(crate::tracing_live::publish_trace_events(
            nsdb_for_health.clone(),
            trace_rx,
        )));
        tasks.push(tokio::spawn(crate::tracing_live::follow_trace_requests(
            nsdb_for_health.clone(),
            datapath.clone(),
        )));
        tasks.push(tokio::spawn(crate::tracing_live::answer_state_asks(
            nsdb_for_health.clone(),
            datapath.clone(),
        )));
        let dp = datapath.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(change) = invalidate_rx.recv().await {
                dp.invalidate_for(change.generation, &change.tags);
            }
        }));
        let dp = datapath.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                dp.tick();
            }
        }));
        tasks.push(tokio::spawn(crate::health::run_health(
            nsdb_for_health,
            datapath.clone(),
            topology.clone(),
            host.id,
        )));
        let (stopping, stop) = watch::channel(false);
        let reconciler = tokio::spawn(reconcile_ports(
            markers,
            datapath.clone(),
            topology.clone(),
            applied.clone(),
            stop,
        ));
        tracing::info!(host = %host.name, id = %host.id, "agent started");
        Ok(Agent {
            host,
            datapath,
            topology,
            applied,
            initial_read,
            _liveness: liveness,
            tasks,
            stopping,
            reconciler: Some(reconciler),
        })
    }

    /// Stops the agent: stops serving every port, closes their interfaces
    /// all at once, then stops everything else it started. The ports'
    /// active markers go with the host's liveness lease.
    pub async fn stop(mut self) {
        let _ = self.stopping.send(true);
        if let Some(reconciler) = self.reconciler.take() {
            let _ = reconciler.await;
        }
    }

    /// The host this agent serves.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The datapath (counters, flow cache).
    pub fn datapath(&self) -> &Arc<Datapath> {
        &self.datapath
    }

    /// The topology in force.
    pub fn topology(&self) -> &Arc<SharedTopology> {
        &self.topology
    }

    /// The agent's first full read of the NSDB, once done.
    pub fn initial_read(&self) -> Option<InitialRead> {
        self.initial_read.get().copied()
    }

    /// The agent's metrics in Prometheus text, for its `/metrics`: the
    /// datapath's counters and the initial NSDB read.
    pub fn metrics(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let (datapath, initial_read) = (self.datapath.clone(), self.initial_read.clone());
        move || {
            let mut text = datapath.metrics_text();
            if let Some(read) = initial_read.get() {
                initial_read_metrics(&mut text, read);
            }
            text
        }
    }

    /// Waits until the agent has applied the NSDB up to `revision`.
    pub async fn wait_for_revision(&self, revision: nsdb::Revision) {
        let mut applied = self.applied.clone();
        let _ = applied.wait_for(|r| *r >= revision).await;
    }
}

/// The gauges of the initial NSDB read (absent until it is done), so that
/// a benchmark can time cold start from the end of the read.
fn initial_read_metrics(out: &mut String, read: &InitialRead) {
    let done_at = read
        .done_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "# TYPE plexus_agent_nsdb_initial_read_seconds gauge\nplexus_agent_nsdb_initial_read_seconds {:.6}",
        read.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# TYPE plexus_agent_nsdb_initial_read_records gauge\nplexus_agent_nsdb_initial_read_records {}",
        read.records
    );
    let _ = writeln!(
        out,
        "# TYPE plexus_agent_nsdb_initial_read_done_timestamp_seconds gauge\nplexus_agent_nsdb_initial_read_done_timestamp_seconds {:.6}",
        done_at.as_secs_f64()
    );
}

/// Keeps the host side of every uplink TAP this agent created as the
/// topology says (address, routes to pods and floating IPs).
fn sync_uplinks(topo: &Topology, uplinks: &mut HashMap<Uuid, (UplinkHost, Option<String>)>) {
    for (id, (host_side, last_error)) in uplinks.iter_mut() {
        let Some(plan) = crate::uplink::plan(topo, *id) else {
            continue;
        };
        match host_side.apply(&plan) {
            Ok(()) => {
                if last_error.take().is_some() {
                    tracing::info!(port = %id, "uplink host side configured");
                }
            }
            Err(error) => {
                let error = error.to_string();
                if last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(port = %id, %error, "cannot configure the uplink's host side; retrying");
                    *last_error = Some(error);
                }
            }
        }
    }
}

/// Shared packet sockets per core. Each interface's frames stay on one
/// socket, so with one socket per core two busy ports often share one
/// receiver; with several per core the receivers' tasks spread over the
/// workers as ports' tasks do.
const SHARED_SOCKETS_PER_CORE: usize = 8;

/// Opens the sockets veth ports beyond the first `dedicated` are received
/// through; where they cannot be (no eBPF), ports get a socket each.
fn open_shared_sockets(datapath: &Arc<Datapath>, dedicated: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = cores * SHARED_SOCKETS_PER_CORE;
    match crate::io::SharedSockets::open(count, &crate::io::AfPacketOptions::default()) {
        Ok(sockets) => {
            tracing::info!(sockets = sockets.len(), "veth ports share packet sockets");
            datapath.serve_shared(sockets, dedicated);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot share packet sockets among ports; each port gets its own")
        }
    }
}

/// Keeps the served ports equal to the ports bound on this host.
async fn reconcile_ports(
    mut markers: PortMarkers,
    datapath: Arc<Datapath>,
    topology: Arc<SharedTopology>,
    mut applied: watch::Receiver<nsdb::Revision>,
    mut stop: watch::Receiver<bool>,
) {
    // A port's task (none for a port of the shared sockets).
    let mut serving: HashMap<Uuid, (String, Option<JoinHandle<()>>)> = HashMap::new();
    let mut uplinks: HashMap<Uuid, (UplinkHost, Option<String>)> = HashMap::new();
    let mut leases = markers.leases();
    // The VTEP endpoint each served VTEP port was opened for.
    let mut endpoints: HashMap<Uuid, nsdb::VtepEndpoint> = HashMap::new();
    let mut interfaces_checked = Instant::now();
    loop {
        let topo = topology.load();
        let desired: HashMap<Uuid, String> = topo
            .ports_on_host(datapath.host())
            .filter_map(|p| Some((p.id, p.interface.clone()?)))
            .collect();
        // Whether the shared sockets' ports still have their interfaces
        // (the kernel tells no shared socket of an interface deleted).
        let check_interfaces = interfaces_checked.elapsed() >= Duration::from_secs(1);
        if check_interfaces {
            interfaces_checked = Instant::now();
        }
        serving.retain(|id, (ifname, task)| {
            let working = match task {
                Some(task) => !task.is_finished(),
                None => !check_interfaces || datapath.port(*id).is_some_and(|p| p.is_current()),
            };
            let keep = desired.get(id) == Some(ifname)
                && working
                && topo.tunnel.vteps.get(id) == endpoints.get(id);
            if !keep {
                if let Some(task) = task {
                    task.abort();
                }
                // Its sockets close off the runtime's threads (each close
                // waits for the kernel).
                let detached = datapath.detach(*id);
                tokio::task::spawn_blocking(move || drop(detached));
                uplinks.remove(id);
                endpoints.remove(id);
                tracing::info!(port = %id, %ifname, "port detached");
            }
            keep
        });
        let new: Vec<(Uuid, String)> = desired
            .into_iter()
            .filter(|(id, _)| !serving.contains_key(id))
            .collect();
        let mut opened = interfaces::open_interfaces(&datapath, &topo, new);
        while let Some((id, ifname, result)) = opened.recv().await {
            match result {
                Ok((io, created_tap)) => {
                    if created_tap {
                        uplinks.insert(id, (UplinkHost::new(&ifname), Some(String::new())));
                    }
                    let handle = Arc::new(PortHandle {
                        id,
                        io,
                        counters: PortCounters::default(),
                        poll: Default::default(),
                        lane: datapath.next_lane(),
                    });
                    datapath.attach(handle.clone());
                    let task = handle.io.receives().then(|| {
                        let dp = datapath.clone();
                        tokio::spawn(async move {
                            if let Err(error) = dp.serve(handle).await {
                                tracing::warn!(port = %id, %error, "port stopped");
                            }
                        })
                    });
                    tracing::info!(port = %id, %ifname, "port attached");
                    if let Some(endpoint) = topo.tunnel.vteps.get(&id) {
                        endpoints.insert(id, *endpoint);
                    }
                    serving.insert(id, (ifname, task));
                }
                Err(error) => {
                    tracing::warn!(port = %id, %ifname, %error, "cannot open the port's interface; retrying")
                }
            }
        }
        sync_uplinks(&topo, &mut uplinks);
        // Publishing waits on the NSDB (for as long as it is unreachable):
        // a stop does not wait for it.
        tokio::select! {
            () = markers.sync(&serving) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        // Re-check on every NSDB change and new liveness lease, and every
        // second for interfaces that appeared or failed.
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = leases.changed(), if leases.has_changed().is_ok() => {}
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    close_ports(&datapath, serving).await;
}

/// Stops serving every port and closes their interfaces all at once (see
/// [`crate::io::close_all`]: one at a time, 1,000 ports took 16 s).
async fn close_ports(
    datapath: &Datapath,
    serving: HashMap<Uuid, (String, Option<JoinHandle<()>>)>,
) {
    // The poller lets go of its ports first (it exits within a loop).
    datapath.stop_poller();
    datapath.stop_shared();
    let tasks: Vec<JoinHandle<()>> = serving.into_values().filter_map(|(_, task)| task).collect();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    let count = datapath.attached().len();
    let started = std::time::Instant::now();
    // The ports' receive queues' tasks, aborted with their ports' tasks,
    // let go of the handles when the runtime next polls them: waited for
    // briefly, so that their sockets close here, all at once. A handle
    // still shared after that (a batch in flight elsewhere) closes when its
    // last user lets go.
    let handles = datapath.detach_all();
    let waiting = std::time::Instant::now();
    while handles.iter().any(|handle| Arc::strong_count(handle) > 1)
        && waiting.elapsed() < Duration::from_millis(200)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every socket closes at once, a port's queues included.
    let mut sockets: Vec<Box<dyn Send>> = Vec::with_capacity(handles.len());
    for handle in handles {
        let Ok(mut port) = Arc::try_unwrap(handle) else {
            continue;
        };
        let queues = port.io.take_queues().into_iter();
        sockets.extend(queues.map(|queue| Box::new(queue) as Box<dyn Send>));
        sockets.push(Box::new(port));
    }
    let _ = tokio::task::spawn_blocking(move || crate::io::close_all(sockets)).await;
    tracing::info!(
        ports = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ports closed"
    );
}
