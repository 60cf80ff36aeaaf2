//! Pod attachments (what the CNI plugin asks for): a port on the tenant's
//! bridge, bound to a host interface, with an address leased from each of
//! the bridge's pools (one IPv4 and one IPv6 pool make a dual-stack pod),
//! all keyed by (network, container id, interface name).
//!
//! The port's id is derived from that key, so asking twice finds the same
//! port, and the port and its leases are created and removed in one NSDB
//! commit ([`Nsdb::attach_port`]), so a client dying half-way never leaves
//! one without the other. The lease's owner string is the key itself,
//! which is how attachments are listed without a record kind of their own.

use std::net::IpAddr;

use ipnet::IpNet;
use nsdb::{Bridge, Host, IpPool, Labels, MacAddr, Nsdb, NsdbError, Port, Provider, Tenant};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use self::pools::{choose_pools, pools_of_bridge};
use super::new_port;
use crate::problem::Problem;

mod pools;

/// The owner strings of attachment leases start with this.
const OWNER_PREFIX: &str = "cni:";

/// The MTU pods get when the deployment has no provider.
const DEFAULT_MTU: u16 = 1500;

/// Which pod interface an attachment is: the CNI (network, container id,
/// interface name) triple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct AttachmentKey {
    /// The CNI network name.
    pub network: String,
    /// The container id.
    pub container_id: String,
    /// The interface name inside the container.
    pub ifname: String,
}

fn cni_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl AttachmentKey {
    /// Checks the parts: CNI names (alphanumeric first, then `_.-` too) and
    /// a Linux interface name.
    pub fn validate(&self) -> Result<(), Problem> {
        for (field, value) in [
            ("network", &self.network),
            ("container_id", &self.container_id),
        ] {
            if !cni_name_ok(value) {
                return Err(Problem::bad_request(format!(
                    "'{value}' is not a valid {field}: alphanumeric first, then alphanumerics, '_', '.' or '-'"
                ))
                .with_field(field));
            }
        }
        let ifname = &self.ifname;
        if ifname.is_empty()
            || ifname.len() > 15
            || ifname == "."
            || ifname == ".."
            || ifname
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(
                Problem::bad_request(format!("'{ifname}' is not a valid interface name"))
                    .with_field("ifname"),
            );
        }
        Ok(())
    }

    /// The owner of the attachment's lease.
    pub fn owner(&self) -> String {
        format!(
            "{OWNER_PREFIX}{}:{}:{}",
            self.network, self.container_id, self.ifname
        )
    }

    /// The key an owner string names, if it is an attachment's.
    pub fn from_owner(owner: &str) -> Option<AttachmentKey> {
        let mut parts = owner.strip_prefix(OWNER_PREFIX)?.splitn(3, ':');
        let key = AttachmentKey {
            network: parts.next()?.to_string(),
            container_id: parts.next()?.to_string(),
            ifname: parts.next()?.to_string(),
        };
        key.validate().ok().map(|_| key)
    }

    /// The id of the attachment's port (derived, so it is found again).
    pub fn port_id(&self) -> Uuid {
        let hash: [u8; 32] = Sha256::digest(self.owner().as_bytes()).into();
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash[..16]);
        uuid::Builder::from_random_bytes(id).into_uuid()
    }

    /// The MAC of the pod interface: locally administered, unicast, derived
    /// from the port id.
    pub fn mac(&self) -> MacAddr {
        let id = self.port_id();
        let b = id.as_bytes();
        MacAddr([(b[15] & 0xfc) | 0x02, b[10], b[11], b[12], b[13], b[14]])
    }

    /// The host-side veth name: `plx` and 12 hex digits of the port id.
    pub fn host_interface(&self) -> String {
        let hex: String = self.port_id().as_bytes()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("plx{hex}")
    }
}

/// The body of `PUT /v1/attachments/{network}/{container_id}/{ifname}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRequest {
    /// The host whose agent serves the pod.
    pub host_id: Uuid,
    /// The host-side interface (veth) the port is bound to.
    pub interface_name: String,
    /// The tenant by name; created, with its network, when missing.
    pub tenant: String,
    /// The bridge to join (default: the tenant's default bridge).
    #[serde(default)]
    pub bridge_id: Option<Uuid>,
    /// The pod interface's MAC (default: derived from the key).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Labels the port gets when it is created (an existing attachment's
    /// port keeps its own).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The pools to lease from, by id or name: all of one bridge of the
    /// tenant (which `bridge_id`, if given, must be), at most one per
    /// family. Default: one pool of each family of the bridge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
}

/// One address of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttachmentAddress {
    /// The pool it is leased from.
    pub pool_id: Uuid,
    /// The address with the pool's prefix length.
    pub address: IpNet,
    /// The pool's gateway: the pod's default route of this family.
    pub gateway: Option<IpAddr>,
}

/// An attachment as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attachment {
    /// Which pod interface this is.
    pub key: AttachmentKey,
    /// The tenant.
    pub tenant_id: Uuid,
    /// The bridge the port is on.
    pub bridge_id: Uuid,
    /// The pool of the first address (IPv4 when the pod has one).
    pub pool_id: Uuid,
    /// The port (bound, with the addresses as its allowed addresses).
    pub port: Port,
    /// The first address (IPv4 when the pod has one) with its prefix length.
    pub address: IpNet,
    /// The first address's gateway.
    pub gateway: Option<IpAddr>,
    /// Every address of the pod, IPv4 first (one per family).
    #[serde(default)]
    pub addresses: Vec<AttachmentAddress>,
    /// The MTU the pod interface gets.
    pub mtu: u16,
    /// Whether the agent of the port's host serves the port now.
    pub active: bool,
}

/// The pod MTU: the provider's setting, lowered to what the tunnel between
/// the registered hosts carries (the smallest underlay MTU − the overhead).
async fn pod_mtu(nsdb: &Nsdb) -> Result<u16, Problem> {
    let configured = nsdb
        .list::<Provider>()
        .await?
        .first()
        .map_or(DEFAULT_MTU, |p| p.pod_mtu);
    let tunnel = nsdb
        .list::<Host>()
        .await?
        .iter()
        .map(|h| {
            h.underlay_mtu
                .saturating_sub(vswitch::tunnel::overhead(h.tunnel_ip) as u32)
        })
        .min();
    Ok(match tunnel {
        Some(fits) => configured.min(u16::try_from(fits).unwrap_or(u16::MAX)),
        None => configured,
    })
}

/// The tenant called `name`, created when there is none (concurrent
/// callers get the same one).
async fn tenant_named(nsdb: &Nsdb, name: &str) -> Result<Tenant, Problem> {
    for _ in 0..super::ATTEMPTS {
        if let Some(tenant) = nsdb
            .list::<Tenant>()
            .await?
            .into_iter()
            .find(|t| t.name == name)
        {
            return Ok(tenant);
        }
        let tenant = Tenant {
            id: Uuid::new_v4(),
            revision: 0,
            name: name.to_string(),
            network: None,
        };
        match nsdb.create(tenant).await {
            Ok(tenant) => return Ok(tenant),
            Err(NsdbError::Duplicate { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(NsdbError::Contention {
        attempts: super::ATTEMPTS as u32,
    }
    .into())
}

fn conflict(detail: String) -> Problem {
    Problem::new(
        axum::http::StatusCode::CONFLICT,
        "attachment-conflict",
        "Attachment exists differently",
        detail,
    )
}

/// Creates the attachment `key`, or answers the existing one (with whether
/// it was created now). The tenant and its network are created on the way
/// when missing.
pub async fn ensure_attachment(
    nsdb: &Nsdb,
    key: &AttachmentKey,
    request: &AttachmentRequest,
) -> Result<(Attachment, bool), Problem> {
    key.validate()?;
    if nsdb.get::<Host>(request.host_id).await?.is_none() {
        return Err(Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "missing-reference",
            "A referenced object does not exist",
            format!("host {} not found", request.host_id),
        )
        .with_field("host_id"));
    }
    let port_id = key.port_id();
    if let Some(existing) = nsdb.get::<Port>(port_id).await? {
        let wanted = (Some(request.host_id), Some(&request.interface_name));
        if (existing.host_id, existing.interface_name.as_ref()) != wanted {
            return Err(conflict(format!(
                "{} is attached on host {:?} interface {:?}",
                key.owner(),
                existing.host_id,
                existing.interface_name
            )));
        }
        if let Some(attachment) = attachment(nsdb, key).await? {
            return Ok((attachment, false));
        }
    }
    let tenant = tenant_named(nsdb, &request.tenant).await?;
    let (bridge_id, pools) = choose_pools(nsdb, &tenant, request).await?;
    let mut port = new_port(bridge_id, nsdb::DeviceType::Bridge, None);
    port.id = port_id;
    port.mac = request.mac.unwrap_or_else(|| key.mac());
    port.host_id = Some(request.host_id);
    port.interface_name = Some(request.interface_name.clone());
    port.labels = request.labels.clone();
    let pool_ids: Vec<Uuid> = pools.iter().map(|p| p.id).collect();
    let (port, leases) = nsdb.attach_port(port, &pool_ids, &key.owner()).await?;
    let leased = pools
        .into_iter()
        .zip(leases)
        .map(|(pool, lease)| (pool, lease.address))
        .collect();
    let attachment = assemble(nsdb, key, tenant.id, leased, port).await?;
    Ok((attachment, true))
}

/// An attachment's answer from its stored parts: the leased addresses
/// with their pools, IPv4 first (at least one).
async fn assemble(
    nsdb: &Nsdb,
    key: &AttachmentKey,
    tenant_id: Uuid,
    leased: Vec<(IpPool, IpAddr)>,
    port: Port,
) -> Result<Attachment, Problem> {
    let active = port.host_id.is_some() && nsdb.port_active_on(port.id).await? == port.host_id;
    let addresses: Vec<AttachmentAddress> = leased
        .into_iter()
        .map(|(pool, address)| AttachmentAddress {
            pool_id: pool.id,
            address: IpNet::new(address, pool.cidr.prefix_len()).unwrap_or(pool.cidr),
            gateway: pool.gateway,
        })
        .collect();
    let first = addresses
        .first()
        .cloned()
        .ok_or_else(|| Problem::bad_request(format!("{} has no address", key.owner())))?;
    Ok(Attachment {
        key: key.clone(),
        tenant_id,
        bridge_id: port.device_id,
        pool_id: first.pool_id,
        address: first.address,
        gateway: first.gateway,
        addresses,
        mtu: pod_mtu(nsdb).await?,
        active,
        port,
    })
}

/// The attachment `key`, if it exists (its port and at least one lease).
pub async fn attachment(nsdb: &Nsdb, key: &AttachmentKey) -> Result<Option<Attachment>, Problem> {
    key.validate()?;
    let Some(port) = nsdb.get::<Port>(key.port_id()).await? else {
        return Ok(None);
    };
    let Some(bridge) = nsdb.get::<Bridge>(port.device_id).await? else {
        return Ok(None);
    };
    let owner = key.owner();
    let mut leased = Vec::new();
    for pool in pools_of_bridge(nsdb, bridge.id).await? {
        let lease = nsdb
            .leases(pool.id)
            .await?
            .into_iter()
            .find(|l| l.owner == owner);
        if let Some(lease) = lease {
            leased.push((pool, lease.address));
        }
    }
    if leased.is_empty() {
        return Ok(None);
    }
    let attachment = assemble(nsdb, key, bridge.tenant_id, leased, port).await?;
    Ok(Some(attachment))
}

/// Removes the attachment `key` (port, binding and lease in one commit).
/// Returns whether it existed.
pub async fn delete_attachment(nsdb: &Nsdb, key: &AttachmentKey) -> Result<bool, Problem> {
    key.validate()?;
    let port_id = key.port_id();
    let owner = key.owner();
    let Some(port) = nsdb.get::<Port>(port_id).await? else {
        // No port: leases of this owner can only be in pools whose bridge
        // is gone; look through every pool.
        let mut released = false;
        for pool in nsdb.list::<IpPool>().await? {
            released |= nsdb.release_ip(pool.id, &owner).await?.is_some();
        }
        return Ok(released);
    };
    let pool_ids: Vec<Uuid> = pools_of_bridge(nsdb, port.device_id)
        .await?
        .iter()
        .map(|p| p.id)
        .collect();
    Ok(nsdb.detach_port(port_id, &pool_ids, &owner).await?)
}

/// Every attachment, optionally only those bound on `host` or of `network`.
pub async fn attachments(
    nsdb: &Nsdb,
    host: Option<Uuid>,
    network: Option<&str>,
) -> Result<Vec<Attachment>, Problem> {
    let mut out = Vec::new();
    // A dual-stack attachment has a lease in two pools: list it once.
    let mut seen = std::collections::HashSet::new();
    for pool in nsdb.list::<IpPool>().await? {
        if pool.bridge_id.is_none() {
            continue;
        }
        for lease in nsdb.leases(pool.id).await? {
            let Some(key) = AttachmentKey::from_owner(&lease.owner) else {
                continue;
            };
            if network.is_some_and(|n| n != key.network) || !seen.insert(key.clone()) {
                continue;
            }
            let Some(found) = attachment(nsdb, &key).await? else {
                continue;
            };
            if host.is_none() || found.port.host_id == host {
                out.push(found);
            }
        }
    }
    out.sort_by_key(|a| a.port.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(container: &str, ifname: &str) -> AttachmentKey {
        AttachmentKey {
            network: "plexus".into(),
            container_id: container.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn derived_names_are_stable_and_fit() {
        let k = key("c0ffee", "eth0");
        assert_eq!(k.port_id(), key("c0ffee", "eth0").port_id());
        assert_ne!(k.port_id(), key("c0ffee", "eth1").port_id());
        assert_eq!(k.host_interface().len(), 15);
        assert!(k.host_interface().starts_with("plx"));
        let mac = k.mac().0;
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(AttachmentKey::from_owner(&k.owner()), Some(k));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(key("", "eth0").validate().is_err());
        assert!(key("a/b", "eth0").validate().is_err());
        assert!(key("a:b", "eth0").validate().is_err());
        assert!(key("c1", "eth:0").validate().is_err());
        assert!(key("c1", "a-very-long-interface").validate().is_err());
        assert_eq!(AttachmentKey::from_owner("someone else"), None);
    }
}
