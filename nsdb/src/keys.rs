//! The key layout of the NSDB inside a backend's keyspace.
//!
//! - `obj/{kind}/{id}`: a record (JSON);
//! - `obj/liveness/{host_id}`: present while the host's agent holds its lease;
//! - `refs/{target_id}/{kind}/{id}`: record `{kind}/{id}` references the target
//!   (value: the referencing fields), kept in the same commit as the record;
//! - `uniq/...`: a unique value, held by the id stored as the value;
//! - `ipam/{pool_id}/addr/{ip}` and `ipam/{pool_id}/owner/{owner}`: leases;
//! - `status/port/{port_id}`: the host serving the port (under the agent's lease);
//! - `podnets/{network}_{prefix}`: a tenant's routed pod subnet (value: the tenant id).

use uuid::Uuid;

use crate::model::{key_segment, Kind};

/// Prefix of all records (and the one typed watches follow).
pub const OBJECTS: &str = "obj/";

/// Prefix of host liveness markers.
pub const LIVENESS: &str = "obj/liveness/";

/// The key of one record.
pub fn object(kind: Kind, id: Uuid) -> String {
    format!("obj/{kind}/{id}")
}

/// The prefix of all records of one kind.
pub fn objects_of(kind: Kind) -> String {
    format!("obj/{kind}/")
}

/// The liveness marker of a host.
pub fn liveness(host_id: Uuid) -> String {
    format!("{LIVENESS}{host_id}")
}

/// The back-reference from `kind/id` to `target`.
pub fn reference(target: Uuid, kind: Kind, id: Uuid) -> String {
    format!("refs/{target}/{kind}/{id}")
}

/// The prefix of all back-references to `target`.
pub fn references_to(target: Uuid) -> String {
    format!("refs/{target}/")
}

/// The prefix of back-references to `target` from records of one kind.
pub fn references_to_of(target: Uuid, kind: Kind) -> String {
    format!("refs/{target}/{kind}/")
}

/// The lease of one address in a pool.
pub fn lease_by_address(pool: Uuid, address: std::net::IpAddr) -> String {
    format!("ipam/{pool}/addr/{address}")
}

/// The prefix of all address leases of a pool.
pub fn leases_of(pool: Uuid) -> String {
    format!("ipam/{pool}/addr/")
}

/// The owner index of a pool's leases.
pub fn lease_by_owner(pool: Uuid, owner: &str) -> String {
    format!("ipam/{pool}/owner/{}", key_segment(owner))
}

/// The prefix of the routed pod subnet index.
pub const POD_SUBNETS: &str = "podnets/";

/// The index key of one routed pod subnet.
pub fn pod_subnet(cidr: ipnet::IpNet) -> String {
    format!("{POD_SUBNETS}{}_{}", cidr.network(), cidr.prefix_len())
}

/// The pod subnet an index key under [`POD_SUBNETS`] names.
pub fn parse_pod_subnet(key: &str) -> Option<ipnet::IpNet> {
    let (network, prefix) = key.strip_prefix(POD_SUBNETS)?.split_once('_')?;
    ipnet::IpNet::new(network.parse().ok()?, prefix.parse().ok()?).ok()
}

/// The marker of the agent serving a port.
pub fn port_status(port: Uuid) -> String {
    format!("status/port/{port}")
}

/// What a key under [`OBJECTS`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKey {
    /// A record.
    Record(Kind, Uuid),
    /// A host liveness marker.
    Liveness(Uuid),
}

/// Parses a key under [`OBJECTS`]; `None` for anything else.
pub fn parse_object(key: &str) -> Option<ObjectKey> {
    let rest = key.strip_prefix(OBJECTS)?;
    let (kind, id) = rest.split_once('/')?;
    let id = Uuid::parse_str(id).ok()?;
    if kind == "liveness" {
        return Some(ObjectKey::Liveness(id));
    }
    Some(ObjectKey::Record(kind.parse().ok()?, id))
}

/// Parses a back-reference key into the referencing kind and id.
pub fn parse_reference(key: &str) -> Option<(Kind, Uuid)> {
    let mut parts = key.strip_prefix("refs/")?.splitn(3, '/');
    let _target = parts.next()?;
    let kind = parts.next()?.parse().ok()?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    Some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip() {
        let id = Uuid::new_v4();
        for kind in Kind::RECORDS {
            assert_eq!(
                parse_object(&object(kind, id)),
                Some(ObjectKey::Record(kind, id))
            );
        }
        assert_eq!(parse_object(&liveness(id)), Some(ObjectKey::Liveness(id)));
        assert_eq!(parse_object("obj/nonsense/xyz"), None);
        assert_eq!(parse_object("refs/a/b"), None);
    }

    #[test]
    fn reference_keys_round_trip() {
        let (t, id) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            parse_reference(&reference(t, Kind::Port, id)),
            Some((Kind::Port, id))
        );
        assert!(reference(t, Kind::Port, id).starts_with(&references_to(t)));
    }
}
