//! Provisioning in one step: the provider router of a deployment, a
//! tenant's default network, floating IPs.
//!
//! Each operation builds every object it needs into one NSDB batch, so it
//! either happens completely or not at all, and retries when a concurrent
//! writer took an address, a subnet or a rule position it planned to use.

mod attachment;
mod floating;
mod host_access;
mod provider;
mod provider6;
mod tenant;
mod tenant6;
mod tenant6_add;
mod tenant_plan;

pub use attachment::{
    attachment, attachments, delete_attachment, ensure_attachment, Attachment, AttachmentAddress,
    AttachmentKey, AttachmentRequest,
};
pub use floating::{create_floating_ip, delete_floating_ip, FloatingIpRequest};
pub use provider::{ensure_provider, Ipv6Plan, ProviderPlan, UplinkPlan};
pub use tenant::{delete_tenant_network, init_tenant_network, tenant_network, TenantNetwork};

use ipnet::{IpNet, Ipv4Net};
use nsdb::{DeviceType, MacAddr, NsdbError, Port, Record};
use uuid::Uuid;

use crate::problem::Problem;

/// How many times a provisioning batch is planned again after losing a race.
const ATTEMPTS: usize = 30;

/// Whether `error` means "someone else committed first": plan again.
fn lost_race(error: &NsdbError) -> bool {
    match error {
        NsdbError::RevisionConflict { .. } | NsdbError::AlreadyExists { .. } => true,
        NsdbError::Duplicate {
            kind, constraint, ..
        } => {
            matches!(
                constraint.as_str(),
                "subnet on router"
                    | "position in chain"
                    | "floating address"
                    | "mac on device"
                    | "tunnel key"
            ) || (*kind == nsdb::Kind::IpPool && constraint == "name")
        }
        _ => false,
    }
}

/// A port with a fresh id and MAC (tunnel key allocated by the NSDB).
fn new_port(device_id: Uuid, device_type: DeviceType, address: Option<Ipv4Net>) -> Port {
    Port {
        id: Uuid::new_v4(),
        revision: 0,
        device_id,
        device_type,
        mac: MacAddr::random_local(),
        address: address.map(IpNet::V4),
        extra_addresses: Vec::new(),
        peer_id: None,
        host_id: None,
        interface_name: None,
        inbound_chain_id: None,
        outbound_chain_id: None,
        allowed_addresses: Vec::new(),
        tunnel_key: 0,
        vtep: None,
        labels: Default::default(),
    }
}

/// Two new ports linked to each other.
fn linked(mut a: Port, mut b: Port) -> (Port, Port) {
    a.peer_id = Some(b.id);
    b.peer_id = Some(a.id);
    (a, b)
}

/// The IPv4 network of a port address, if it has one.
fn v4(net: Option<IpNet>) -> Option<Ipv4Net> {
    match net {
        Some(IpNet::V4(n)) => Some(n),
        _ => None,
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first subnet of `within` with prefix `len` that overlaps none of `used`.
fn first_free(within: Ipv4Net, len: u8, used: &[Ipv4Net]) -> Option<Ipv4Net> {
    within
        .subnets(len)
        .ok()?
        .find(|candidate| !used.iter().any(|u| overlaps(u, candidate)))
}

fn unavailable(detail: impl Into<String>) -> Problem {
    Problem::new(
        axum::http::StatusCode::CONFLICT,
        "not-provisioned",
        "Not provisioned",
        detail,
    )
}

fn records_of<T: nsdb::Resource>(records: Vec<Option<Record>>) -> Vec<T> {
    records
        .into_iter()
        .flatten()
        .filter_map(T::from_record)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_subnets_skip_every_overlap() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let used = [net("10.0.0.0/30"), net("10.0.0.8/29"), net("10.0.0.4/32")];
        assert_eq!(
            first_free(net("10.0.0.0/24"), 30, &used),
            Some(net("10.0.0.16/30"))
        );
        assert_eq!(first_free(net("10.0.0.0/30"), 30, &used), None);
        assert_eq!(first_free(net("10.0.0.0/30"), 24, &used), None);
    }
}
