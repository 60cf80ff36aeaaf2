//! Services → load-balancer VIPs. A ClusterIP Service's ports become VIPs
//! on the cluster router's load balancer, each with a pool whose members
//! are the Service's ready endpoints (from its EndpointSlices; without
//! any, from the pods its selector picks, as the EndpointSlice controller
//! would); `ClientIP` affinity becomes `source_ip`; a NodePort becomes a
//! VIP on the provider router's uplink address (what the host reaches).
//! Headless and ExternalName Services get nothing. Each Service owns its
//! pools, VIPs and members, written in one transaction.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nsdb::{
    LbAlgorithm, LbProtocol, LoadBalancer, MemberHealth, Pool, PoolMember, Record, SessionAffinity,
    Vip,
};
use uuid::Uuid;

use crate::objects::{Objects, Pod, Service, ServicePort};
use crate::policy::{Unsupported, OWNED_PREFIX};
use crate::types::IntOrString;

/// Upstream's default `ClientIP` affinity timeout.
const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// A load balancer Services go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balancer {
    /// Its tenant.
    pub tenant: Uuid,
    /// Its router.
    pub router: Uuid,
}

impl Balancer {
    /// The load balancer's fixed id.
    pub fn id(&self) -> Uuid {
        Uuid::new_v5(&self.tenant, b"cluster:services")
    }

    /// The load balancer record.
    pub fn record(&self) -> Record {
        Record::LoadBalancer(LoadBalancer {
            id: self.id(),
            revision: 0,
            tenant_id: self.tenant,
            router_id: self.router,
            name: format!("{OWNED_PREFIX}cluster:services"),
            admin_state_up: true,
        })
    }
}

/// Where Services go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// The cluster router's load balancer (ClusterIPs).
    pub cluster: Balancer,
    /// The provider router's load balancer and the uplink address
    /// (NodePorts), if there is an uplink.
    pub node_ports: Option<(Balancer, IpAddr)>,
}

/// The translation: per Service (`namespace/name`), its records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceTranslation {
    /// Per Service, its pools, VIPs and members.
    pub services: BTreeMap<String, Vec<Record>>,
    /// Services (or ports of them) not translated, and why.
    pub refused: Vec<Unsupported>,
}

fn protocol(port: &ServicePort) -> Result<(LbProtocol, &str), String> {
    match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Ok((LbProtocol::Tcp, "TCP")),
        "UDP" => Ok((LbProtocol::Udp, "UDP")),
        other => Err(format!(
            "protocol {other} (the load balancer serves TCP and UDP)"
        )),
    }
}

/// The ready endpoints of `service`'s port `port` as (address, port).
fn endpoints(
    objects: &Objects,
    service: &Service,
    port: &ServicePort,
    protocol_name: &str,
    pod_ips: &BTreeMap<(String, String), IpAddr>,
) -> Vec<(IpAddr, u16)> {
    let ns = &service.metadata.namespace;
    let pod_at = |address: IpAddr| -> Option<&Pod> {
        objects.pods.iter().find(|p| {
            p.metadata.namespace == *ns
                && (p.status.pod_ip == Some(address)
                    || pod_ips.get(&(ns.clone(), p.metadata.name.clone())) == Some(&address))
        })
    };
    let target = |pod: Option<&Pod>| -> Option<u16> {
        match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(number)) => Some(*number),
            Some(IntOrString::String(name)) => pod?.named_port(name, protocol_name),
        }
    };
    let slices: Vec<_> = objects
        .endpoint_slices
        .iter()
        .filter(|s| s.metadata.namespace == *ns && s.service() == Some(&service.metadata.name))
        .collect();
    let mut found = Vec::new();
    if slices.is_empty() {
        // No EndpointSlice names the Service: its selector's pods.
        if service.spec.selector.is_empty() {
            return found;
        }
        for pod in objects.pods.iter().filter(|p| {
            p.metadata.namespace == *ns
                && service
                    .spec
                    .selector
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        }) {
            let address = pod.status.pod_ip.or_else(|| {
                pod_ips
                    .get(&(ns.clone(), pod.metadata.name.clone()))
                    .copied()
            });
            if let (Some(address), Some(number)) = (address, target(Some(pod))) {
                found.push((address, number));
            }
        }
    } else {
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let slice_port = slice.ports.iter().find(|p| {
                p.name == port.name && p.protocol.as_deref().unwrap_or("TCP") == protocol_name
            });
            for endpoint in &slice.endpoints {
                if endpoint.conditions.ready == Some(false) {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(address) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let number = match slice_port.and_then(|p| p.port) {
                        Some(number) => Some(number),
                        None => target(pod_at(address)),
                    };
                    if let Some(number) = number {
                        found.push((address, number));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A VIP with its pool and members on `balancer`.
#[allow(clippy::too_many_arguments)]
fn vip(
    records: &mut Vec<Record>,
    balancer: &Balancer,
    key: &str,
    address: IpAddr,
    protocol: LbProtocol,
    port: u16,
    affinity: (SessionAffinity, u32),
    members: &[(IpAddr, u16)],
) {
    let pool_id = Uuid::new_v5(&balancer.tenant, format!("{key}/pool").as_bytes());
    records.push(Record::Pool(Pool {
        id: pool_id,
        revision: 0,
        tenant_id: balancer.tenant,
        load_balancer_id: balancer.id(),
        name: format!("{OWNED_PREFIX}{key}"),
        algorithm: LbAlgorithm::RoundRobin,
        admin_state_up: true,
    }));
    records.push(Record::Vip(Vip {
        id: Uuid::new_v5(&balancer.tenant, format!("{key}/vip").as_bytes()),
        revision: 0,
        tenant_id: balancer.tenant,
        load_balancer_id: balancer.id(),
        name: format!("{OWNED_PREFIX}{key}"),
        pool_id,
        address,
        protocol,
        port,
        session_affinity: affinity.0,
        affinity_timeout_s: affinity.1,
        admin_state_up: true,
    }));
    for (address, number) in members {
        records.push(Record::PoolMember(PoolMember {
            id: Uuid::new_v5(&pool_id, format!("{address}:{number}").as_bytes()),
            revision: 0,
            tenant_id: balancer.tenant,
            pool_id,
            address: *address,
            port: *number,
            weight: 1,
            admin_state_up: true,
            health: MemberHealth::Unknown,
        }));
    }
}

/// Translates the Services of `objects`; `pod_ips` are the pods' addresses
/// as Plexus leased them (for pods whose status does not say).
pub fn translate_services(
    objects: &Objects,
    targets: &Targets,
    pod_ips: &BTreeMap<(String, String), IpAddr>,
) -> ServiceTranslation {
    let mut translation = ServiceTranslation::default();
    for service in &objects.services {
        let key = format!("{}/{}", service.metadata.namespace, service.metadata.name);
        let spec = &service.spec;
        let kind = spec.service_type.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            continue;
        }
        let Some(address) = spec.virtual_ip() else {
            continue; // headless, or no address yet
        };
        if address.is_ipv6() {
            translation.refused.push(Unsupported {
                policy: key.clone(),
                what: "an IPv6 ClusterIP (routers forward IPv4 only so far)".into(),
            });
            continue;
        }
        let affinity = match spec.session_affinity.as_deref() {
            Some("ClientIP") => (
                SessionAffinity::SourceIp,
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S),
            ),
            _ => (SessionAffinity::None, DEFAULT_AFFINITY_TIMEOUT_S),
        };
        let mut records = Vec::new();
        for port in &spec.ports {
            let (protocol, protocol_name) = match protocol(port) {
                Ok(p) => p,
                Err(what) => {
                    translation.refused.push(Unsupported {
                        policy: key.clone(),
                        what,
                    });
                    continue;
                }
            };
            let port_key = format!(
                "svc {key} {}/{}",
                protocol_name.to_ascii_lowercase(),
                port.name.clone().unwrap_or_else(|| port.port.to_string())
            );
            let members = endpoints(objects, service, port, protocol_name, pod_ips);
            vip(
                &mut records,
                &targets.cluster,
                &port_key,
                address,
                protocol,
                port.port,
                affinity,
                &members,
            );
            let node_port = port
                .node_port
                .filter(|_| kind == "NodePort" || kind == "LoadBalancer");
            if let (Some(node_port), Some((balancer, uplink))) = (node_port, targets.node_ports) {
                vip(
                    &mut records,
                    &balancer,
                    &format!("{port_key} nodeport"),
                    uplink,
                    protocol,
                    node_port,
                    affinity,
                    &members,
                );
            }
        }
        translation.services.insert(key, records);
    }
    translation
}

/// The Service (`namespace/name`) an owned load-balancer object's name
/// belongs to.
pub fn service_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix(OWNED_PREFIX)?.strip_prefix("svc ")?;
    rest.split(' ').next().map(str::to_string)
}
