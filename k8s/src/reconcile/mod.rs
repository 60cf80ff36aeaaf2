//! The reconcile: makes the Plexus API match the cluster, whether the
//! cluster comes from watches (`plexus k8s run`) or from files
//! (`plexus k8s apply -f`). Level-triggered and idempotent: it reads what
//! Plexus holds, computes what it should hold from all of [`Objects`], and
//! writes the difference, each NetworkPolicy in one transaction (see
//! [`plan`] for the rare policy too large for one).
//!
//! What it keeps: the cluster tenant (`kubernetes` unless configured) with
//! its network; a tenant `k8s-<namespace>` per namespace annotated
//! `plexus.io/isolated-network: "true"`; the policy chains and groups; the
//! pods' ports' labels and chains (ports are created by the CNI, which
//! labels them with the pod's namespace and name).

mod plan;
mod records;
mod services;

use std::collections::{BTreeMap, BTreeSet};

use api::client::{ApiError, Client};
use nsdb::{IpAddressGroup, Port, Provider, Record, Tenant, NAMESPACE_LABEL};
use uuid::Uuid;

use crate::objects::{Objects, POD_LABEL};
use crate::pods::port_labels;
use crate::policy::{owner_of, translate, Cluster, OWNED_PREFIX};
use plan::{batches, Diff};

/// The tenant of the cluster network unless configured otherwise.
pub const DEFAULT_TENANT: &str = "kubernetes";

/// The tenant name of an isolated namespace's own network.
pub fn isolated_tenant(namespace: &str) -> String {
    format!("k8s-{namespace}")
}

/// What the reconcile needs to know besides the cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster network's tenant name.
    pub tenant: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            tenant: DEFAULT_TENANT.into(),
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Transactions committed.
    pub transactions: usize,
    /// Records created or replaced.
    pub written: usize,
    /// Records removed.
    pub deleted: usize,
    /// Policies left out, and why.
    pub refused: Vec<String>,
    /// Pods (`namespace/name`) whose port does not exist (yet).
    pub pods_without_port: Vec<String>,
    /// What failed (the rest was still reconciled).
    pub errors: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} transactions: {} written, {} removed",
            self.transactions, self.written, self.deleted
        )?;
        for refused in &self.refused {
            write!(f, "\n  not applied: {refused}")?;
        }
        if !self.pods_without_port.is_empty() {
            write!(
                f,
                "\n  pods without a port yet: {}",
                self.pods_without_port.join(", ")
            )?;
        }
        for error in &self.errors {
            write!(f, "\n  failed: {error}")?;
        }
        Ok(())
    }
}

/// The tenant called `name` with its network, created when missing.
async fn ensure_tenant(client: &Client, name: &str) -> Result<Tenant, ApiError> {
    let find = || async {
        let tenants: Vec<Tenant> = client.list("/v1/tenants").await?;
        Ok::<_, ApiError>(tenants.into_iter().find(|t| t.name == name))
    };
    let tenant = match find().await? {
        Some(tenant) => tenant,
        None => match client.create_tenant(name).await {
            Ok(tenant) => tenant,
            Err(error) if error.status() == Some(409) => find().await?.ok_or(error)?,
            Err(error) => return Err(error),
        },
    };
    if tenant.network.is_some() {
        return Ok(tenant);
    }
    match client.init_tenant_network(tenant.id, None).await {
        Ok(_) => {}
        Err(error) if error.status() == Some(409) => {}
        Err(error) => return Err(error),
    }
    client.get(&format!("/v1/tenants/{}", tenant.id)).await
}

/// The nodes' address group (the host side of the uplink, which kubelet
/// probes come from: its IPv4 address, and its IPv6 one on a dual-stack
/// provider), if the provider has an uplink gateway.
async fn nodes_group(client: &Client, cluster: &Cluster) -> Result<Option<Record>, ApiError> {
    let provider: Provider = match client.get("/v1/provider").await {
        Ok(provider) => provider,
        Err(error) if error.status() == Some(404) => return Ok(None),
        Err(error) => return Err(error),
    };
    let host6 = provider.ipv6.and_then(|v6| v6.uplink_gateway);
    Ok(provider.uplink_gateway.map(|gateway| {
        let mut addresses = vec![ipnet::IpNet::from(std::net::IpAddr::V4(gateway))];
        addresses.extend(host6.map(|g| ipnet::IpNet::from(std::net::IpAddr::V6(g))));
        Record::IpAddressGroup(IpAddressGroup {
            id: cluster.nodes_group(),
            revision: 0,
            tenant_id: cluster.tenant,
            name: format!("{OWNED_PREFIX}cluster:nodes"),
            addresses,
            selector: None,
        })
    }))
}

/// The address group of the ClusterIPs of `objects`' Services (of
/// namespaces on the cluster network), if there are any.
fn services_group(
    cluster: &Cluster,
    objects: &Objects,
    flat: &dyn Fn(&str) -> bool,
) -> Option<Record> {
    let mut addresses: Vec<ipnet::IpNet> = objects
        .services
        .iter()
        .filter(|s| flat(&s.metadata.namespace))
        .filter(|s| s.spec.service_type.as_deref() != Some("ExternalName"))
        .filter_map(|s| s.spec.virtual_ip())
        .filter(std::net::IpAddr::is_ipv4)
        .map(ipnet::IpNet::from)
        .collect();
    addresses.sort();
    addresses.dedup();
    (!addresses.is_empty()).then(|| {
        Record::IpAddressGroup(IpAddressGroup {
            id: cluster.services_group(),
            revision: 0,
            tenant_id: cluster.tenant,
            name: format!("{OWNED_PREFIX}cluster:services"),
            addresses,
            selector: None,
        })
    })
}

/// Writes `diff` in as few transactions as keep each owner whole.
async fn write(
    client: &Client,
    diff: Diff,
    hooks: &BTreeSet<Uuid>,
    report: &mut Report,
) -> Result<(), ApiError> {
    let (written, deleted) = (diff.creates.len() + diff.updates.len(), diff.deletes.len());
    for batch in batches(diff, hooks) {
        client.batch(batch).await?;
        report.transactions += 1;
    }
    report.written += written;
    report.deleted += deleted;
    Ok(())
}

/// Makes Plexus match `objects`.
pub async fn reconcile(
    client: &Client,
    settings: &Settings,
    objects: &Objects,
) -> Result<Report, ApiError> {
    let mut report = Report::default();
    let isolated: BTreeSet<&str> = objects
        .namespaces
        .iter()
        .filter(|n| n.isolated())
        .map(|n| n.metadata.name.as_str())
        .collect();
    for namespace in &isolated {
        ensure_tenant(client, &isolated_tenant(namespace)).await?;
    }
    let tenant = ensure_tenant(client, &settings.tenant).await?;
    let mut cluster = Cluster {
        tenant: tenant.id,
        nodes: None,
        services: None,
    };
    let nodes = nodes_group(client, &cluster).await?;
    cluster.nodes = nodes.as_ref().map(Record::id);
    let flat = |ns: &str| !isolated.contains(ns);
    let services = services_group(&cluster, objects, &flat);
    cluster.services = services.as_ref().map(Record::id);
    let policies: Vec<_> = objects
        .policies
        .iter()
        .filter(|p| flat(&p.metadata.namespace))
        .cloned()
        .collect();
    let pods: Vec<_> = objects
        .pods
        .iter()
        .filter(|p| flat(&p.metadata.namespace) && !p.spec.host_network)
        .cloned()
        .collect();
    let translation = translate(&cluster, &policies, &pods);
    report.refused = translation
        .refused
        .iter()
        .map(ToString::to_string)
        .collect();

    // What is, by owner: the cluster's (None) and each policy's.
    let hooks: BTreeSet<Uuid> = cluster.hook_chains().into_iter().collect();
    let actual = records::owned(client, tenant.id).await?;
    let mut actual_by_owner: BTreeMap<Option<String>, BTreeMap<Uuid, Record>> = BTreeMap::new();
    for (id, record) in &actual {
        let owner = owner_in(record, &actual);
        actual_by_owner
            .entry(owner)
            .or_default()
            .insert(*id, record.clone());
    }
    let mut desired_by_owner: BTreeMap<Option<String>, BTreeMap<Uuid, Record>> = BTreeMap::new();
    let cluster_records = desired_by_owner.entry(None).or_default();
    for record in translation
        .cluster
        .iter()
        .chain(nodes.iter())
        .chain(services.iter())
    {
        cluster_records.insert(record.id(), record.clone());
    }
    for (key, records) in &translation.policies {
        let mine = desired_by_owner.entry(Some(key.clone())).or_default();
        for record in records {
            mine.insert(record.id(), record.clone());
        }
    }
    // The cluster's records first (policies hang off them), then each
    // policy, then the pods' ports (which name the cluster chains); a
    // policy's records are removed last only when the policy is gone.
    let empty = BTreeMap::new();
    let cluster_diff = Diff::between(
        actual_by_owner.get(&None).unwrap_or(&empty),
        &desired_by_owner[&None],
    );
    let mut stale_cluster = Diff {
        deletes: Vec::new(),
        ..cluster_diff
    };
    let cluster_deletes = std::mem::take(&mut stale_cluster.deletes);
    write(client, stale_cluster, &hooks, &mut report).await?;
    let owners: BTreeSet<&Option<String>> = actual_by_owner
        .keys()
        .chain(desired_by_owner.keys())
        .filter(|o| o.is_some())
        .collect();
    for owner in owners {
        let diff = Diff::between(
            actual_by_owner.get(owner).unwrap_or(&empty),
            desired_by_owner.get(owner).unwrap_or(&empty),
        );
        if let Err(error) = write(client, diff, &hooks, &mut report).await {
            report.errors.push(format!(
                "NetworkPolicy {}: {error}",
                owner.as_deref().unwrap_or_default()
            ));
        }
    }
    if !cluster_deletes.is_empty() {
        let diff = Diff {
            deletes: cluster_deletes,
            ..Diff::default()
        };
        if let Err(error) = write(client, diff, &hooks, &mut report).await {
            report.errors.push(format!("the cluster chains: {error}"));
        }
    }
    let (ports, unnamed) = pod_ports(client, &tenant).await?;
    let pod_ips = ports
        .iter()
        .filter_map(|(pod, port)| {
            let address = port.allowed_addresses.first()?.ip.addr();
            Some((pod.clone(), address))
        })
        .collect();
    services::reconcile_services(client, &tenant, objects, &pod_ips, &mut report).await?;
    let router_port = router_port_toward_pods(client, &tenant).await?;
    let ports = PodPorts {
        by_pod: &ports,
        unnamed: &unnamed,
    };
    reconcile_ports(
        ports,
        router_port,
        client,
        &cluster,
        objects,
        &pods,
        &mut report,
    )
    .await;
    Ok(report)
}

/// The owner of an actual record: the policy its name (or, for a rule,
/// its chain's name; for a hook rule, the name of the chain it jumps to or
/// the group it selects with) belongs to; `None` for the cluster's own.
fn owner_in(record: &Record, actual: &BTreeMap<Uuid, Record>) -> Option<String> {
    let name_of = |id: Option<Uuid>| -> Option<String> {
        match actual.get(&id?)? {
            Record::Chain(c) => owner_of(&c.name),
            Record::PortGroup(g) => owner_of(&g.name),
            Record::IpAddressGroup(g) => owner_of(&g.name),
            _ => None,
        }
    };
    match record {
        Record::Chain(c) => owner_of(&c.name),
        Record::PortGroup(g) => owner_of(&g.name),
        Record::IpAddressGroup(g) => owner_of(&g.name),
        Record::Rule(r) => name_of(Some(r.chain_id))
            .or_else(|| name_of(r.jump_chain_id))
            .or_else(|| name_of(r.out_port_group_id))
            .or_else(|| name_of(r.in_port_group_id)),
        _ => None,
    }
}

/// The ports of the cluster network's pods, by (namespace, name), as the
/// CNI labelled them; and the pods' ports without a name label (a pod
/// name too long for a label value), found by the pod's address.
async fn pod_ports(
    client: &Client,
    tenant: &Tenant,
) -> Result<(BTreeMap<(String, String), Port>, Vec<Port>), ApiError> {
    let Some(network) = &tenant.network else {
        return Ok((BTreeMap::new(), Vec::new()));
    };
    let ports: Vec<Port> = client
        .list(&format!("/v1/bridges/{}/ports", network.bridge_id))
        .await?;
    let mut by_pod = BTreeMap::new();
    let mut unnamed = Vec::new();
    for port in ports {
        match (port.labels.get(NAMESPACE_LABEL), port.labels.get(POD_LABEL)) {
            (Some(ns), Some(pod)) => {
                by_pod.insert((ns.clone(), pod.clone()), port);
            }
            (Some(_), None) => unnamed.push(port),
            _ => {}
        }
    }
    Ok((by_pod, unnamed))
}

/// The pods' ports, by name and (for unnamed ones) by address.
#[derive(Clone, Copy)]
struct PodPorts<'a> {
    by_pod: &'a BTreeMap<(String, String), Port>,
    unnamed: &'a [Port],
}

impl PodPorts<'_> {
    /// The port of `pod`.
    fn of(&self, pod: &crate::objects::Pod) -> Option<&Port> {
        let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        self.by_pod.get(&key).or_else(|| {
            let address = pod.status.pod_ip?;
            self.unnamed.iter().find(|p| {
                p.labels.get(NAMESPACE_LABEL) == Some(&key.0)
                    && p.allowed_addresses.iter().any(|a| a.ip.addr() == address)
            })
        })
    }
}

/// The cluster router's port linked to the pods' bridge.
async fn router_port_toward_pods(
    client: &Client,
    tenant: &Tenant,
) -> Result<Option<Uuid>, ApiError> {
    let Some(network) = &tenant.network else {
        return Ok(None);
    };
    let ports: Vec<Port> = client
        .list(&format!("/v1/routers/{}/ports", network.router_id))
        .await?;
    let bridge_ports: Vec<Port> = client
        .list(&format!("/v1/bridges/{}/ports", network.bridge_id))
        .await?;
    Ok(ports
        .into_iter()
        .find(|p| {
            p.peer_id
                .is_some_and(|peer| bridge_ports.iter().any(|b| b.id == peer))
        })
        .map(|p| p.id))
}

/// Gives the cluster router's port toward the pods the deferred egress
/// chain (Service traffic after its translation).
async fn deferred_on_router(
    client: &Client,
    router_port: Option<Uuid>,
    cluster: &Cluster,
    report: &mut Report,
) -> Result<(), ApiError> {
    let Some(id) = router_port else {
        return Ok(());
    };
    let port: Port = client.get(&format!("/v1/ports/{id}")).await?;
    match port.outbound_chain_id {
        Some(chain) if chain == cluster.deferred_chain() => return Ok(()),
        Some(other) => {
            report.errors.push(format!(
                "the cluster router's port {id} has an outbound chain of its own ({other}): \
                 egress policies of Service traffic are not enforced"
            ));
            return Ok(());
        }
        None => {}
    }
    let mut wanted = port.clone();
    wanted.outbound_chain_id = Some(cluster.deferred_chain());
    client
        .batch(vec![records::put(&Record::Port(wanted))])
        .await?;
    report.transactions += 1;
    report.written += 1;
    Ok(())
}

/// Gives every pod's port its labels and the cluster chains.
async fn reconcile_ports(
    ports: PodPorts<'_>,
    router_port: Option<Uuid>,
    client: &Client,
    cluster: &Cluster,
    objects: &Objects,
    pods: &[crate::objects::Pod],
    report: &mut Report,
) {
    if let Err(error) = deferred_on_router(client, router_port, cluster, report).await {
        report.errors.push(format!(
            "the cluster router's port toward the pods: {error}"
        ));
    }
    for pod in pods {
        let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        let Some(port) = ports.of(pod) else {
            report
                .pods_without_port
                .push(format!("{}/{}", key.0, key.1));
            continue;
        };
        let mut wanted = port.clone();
        wanted.labels = port_labels(pod, objects.namespace(&key.0));
        wanted.inbound_chain_id = Some(cluster.egress_chain());
        wanted.outbound_chain_id = Some(cluster.ingress_chain());
        let (have, want) = (Record::Port(port.clone()), Record::Port(wanted));
        if records::content(&have) == records::content(&want) {
            continue;
        }
        match client.batch(vec![records::put(&want)]).await {
            Ok(_) => {
                report.transactions += 1;
                report.written += 1;
            }
            Err(error) => report
                .errors
                .push(format!("the port of pod {}/{}: {error}", key.0, key.1)),
        }
    }
}

/// The reconcile behind the controller: against the API with `client`.
pub struct ApiReconciler {
    /// The API.
    pub client: Client,
    /// The settings.
    pub settings: Settings,
}

#[async_trait::async_trait]
impl crate::controller::Reconciler for ApiReconciler {
    async fn reconcile(&self, objects: &Objects) -> Result<(), String> {
        let report = reconcile(&self.client, &self.settings, objects)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!("reconciled: {report}");
        if report.errors.is_empty() {
            Ok(())
        } else {
            Err(report.errors.join("; "))
        }
    }
}
