//! Staging a batch of record mutations into one transaction, with every
//! integrity rule of the model checked against the batch's final state.
//!
//! All rules live here, above the backend trait, so both backends enforce
//! exactly the same ones. Every check reads through the transaction, so a
//! concurrent writer that would invalidate a check makes the commit fail
//! and the batch run again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use uuid::Uuid;

use crate::error::{NsdbError, Referrer, StoreError};
use crate::keys;
use crate::kv::Revision;
use crate::model::{DeviceType, Kind, Record};
use crate::txn::Tx;

mod chains;
mod lb;
mod pod_subnets;
mod ports;
mod scope;

pub use scope::Scope;

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Create a record; fails if its id exists.
    Create(Record),
    /// Replace a record, optionally only if it is still at `expected_revision`.
    Update {
        /// The new content (same kind and id as the stored record).
        record: Record,
        /// Compare-and-swap guard; `None` writes unconditionally.
        expected_revision: Option<Revision>,
    },
    /// Delete a record, optionally only if it is still at `expected_revision`.
    Delete {
        /// The record's kind.
        kind: Kind,
        /// The record's id.
        id: Uuid,
        /// Compare-and-swap guard; `None` deletes unconditionally.
        expected_revision: Option<Revision>,
    },
}

impl Mutation {
    fn target(&self) -> (Kind, Uuid) {
        match self {
            Mutation::Create(r) | Mutation::Update { record: r, .. } => (r.kind(), r.id()),
            Mutation::Delete { kind, id, .. } => (*kind, *id),
        }
    }
}

/// A record as stored before and after the batch.
struct Touched {
    kind: Kind,
    id: Uuid,
    old: Option<Record>,
    new: Option<Record>,
}

fn invalid(kind: Kind, id: Uuid, field: &str, reason: impl Into<String>) -> NsdbError {
    NsdbError::Invalid {
        kind,
        id,
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn rejected(kind: Kind, id: Uuid, field: &str, reason: impl Into<String>) -> NsdbError {
    NsdbError::Rejected {
        kind,
        id,
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn corrupt(key: &str, reason: impl ToString) -> NsdbError {
    NsdbError::Store(StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    })
}

/// Reads a record through the transaction (its own writes included).
pub(crate) async fn read(tx: &mut Tx, kind: Kind, id: Uuid) -> Result<Option<Record>, NsdbError> {
    let key = keys::object(kind, id);
    match tx.get(&key).await? {
        None => Ok(None),
        Some(bytes) => Record::decode(kind, &bytes)
            .map(Some)
            .map_err(|e| corrupt(&key, e)),
    }
}

async fn read_committed(tx: &mut Tx, kind: Kind, id: Uuid) -> Result<Option<Record>, NsdbError> {
    let key = keys::object(kind, id);
    match tx.get_committed(&key).await? {
        None => Ok(None),
        Some(entry) => {
            let mut record = Record::decode(kind, &entry.value).map_err(|e| corrupt(&key, e))?;
            record.set_revision(entry.mod_revision);
            Ok(Some(record))
        }
    }
}

/// Stages `batch` into `tx`. Returns the final records in batch order
/// (`None` for deletions). Nothing is written unless every rule holds.
pub(crate) async fn stage(
    tx: &mut Tx,
    batch: &[Mutation],
    scope: Scope,
) -> Result<Vec<Option<Record>>, NsdbError> {
    let mut touched = load(tx, batch).await?;
    for t in touched.iter_mut() {
        prepare(tx, t).await?;
    }
    for t in &touched {
        match &t.new {
            Some(record) => tx.put(keys::object(t.kind, t.id), record.encode()),
            None => tx.delete(keys::object(t.kind, t.id)),
        }
    }
    write_unique_keys(tx, &touched).await?;
    pod_subnets::write_index(tx, &touched).await?;
    write_references(tx, &touched);
    for t in &touched {
        scope::check_scope(tx, t, scope).await?;
        if let Some(new) = &t.new {
            check_references_exist(tx, t, new).await?;
            check_relations(tx, t, new).await?;
        } else {
            check_unreferenced(tx, t).await?;
        }
    }
    Ok(touched.into_iter().map(|t| t.new).collect())
}

async fn load(tx: &mut Tx, batch: &[Mutation]) -> Result<Vec<Touched>, NsdbError> {
    let mut seen = HashSet::new();
    let mut touched = Vec::with_capacity(batch.len());
    for mutation in batch {
        let (kind, id) = mutation.target();
        if !Kind::RECORDS.contains(&kind) {
            return Err(invalid(kind, id, "kind", "is not a stored record kind"));
        }
        if !seen.insert((kind, id)) {
            return Err(invalid(
                kind,
                id,
                "id",
                "appears more than once in one transaction",
            ));
        }
        let old = read_committed(tx, kind, id).await?;
        let actual = old.as_ref().map_or(0, Record::revision);
        let cas = |expected: &Option<Revision>| match expected {
            Some(expected) if *expected != actual => Err(NsdbError::RevisionConflict {
                kind,
                id,
                expected: *expected,
                actual,
            }),
            _ => Ok(()),
        };
        let new = match mutation {
            Mutation::Create(record) => {
                if old.is_some() {
                    return Err(NsdbError::AlreadyExists { kind, id });
                }
                Some(record.clone())
            }
            Mutation::Update {
                record,
                expected_revision,
            } => {
                if old.is_none() {
                    return Err(NsdbError::NotFound { kind, id });
                }
                cas(expected_revision)?;
                Some(record.clone())
            }
            Mutation::Delete {
                expected_revision, ..
            } => {
                if old.is_none() {
                    return Err(NsdbError::NotFound { kind, id });
                }
                cas(expected_revision)?;
                None
            }
        };
        touched.push(Touched { kind, id, old, new });
    }
    Ok(touched)
}

/// Fills defaults, keeps immutable fields immutable, validates the record alone.
async fn prepare(tx: &mut Tx, t: &mut Touched) -> Result<(), NsdbError> {
    let Some(new) = t.new.as_mut() else {
        return Ok(());
    };
    let (kind, id) = (t.kind, t.id);
    match (new, t.old.as_ref()) {
        (Record::Port(p), old) => {
            if p.tunnel_key == 0 {
                p.tunnel_key = match old {
                    Some(Record::Port(o)) => o.tunnel_key,
                    _ => allocate_tunnel_key(tx, kind, id).await?,
                };
            }
            if let Some(Record::Port(o)) = old {
                if (o.device_id, o.device_type) != (p.device_id, p.device_type) {
                    return Err(invalid(kind, id, "device_id", "is immutable"));
                }
            }
        }
        (Record::Bridge(b), old) if b.tunnel_key == 0 => {
            b.tunnel_key = match old {
                Some(Record::Bridge(o)) => o.tunnel_key,
                _ => allocate_tunnel_key(tx, kind, id).await?,
            };
        }
        (Record::Host(h), _) => h.alive = false,
        (Record::IpPool(p), old) => {
            if p.gateway.is_none() {
                // The first host address; an IPv6 prefix's `hosts()` starts
                // with the network (subnet-router anycast) address.
                p.gateway = p.cidr.hosts().find(|a| *a != p.cidr.network());
            }
            if let Some(Record::IpPool(o)) = old {
                if (o.cidr, o.gateway) != (p.cidr, p.gateway) {
                    return Err(invalid(kind, id, "cidr", "cidr and gateway are immutable"));
                }
            }
        }
        (Record::Route(r), Some(Record::Route(o))) if r.router_id != o.router_id => {
            return Err(invalid(kind, id, "router_id", "is immutable"));
        }
        (Record::Rule(r), Some(Record::Rule(o))) if r.chain_id != o.chain_id => {
            return Err(invalid(kind, id, "chain_id", "is immutable"));
        }
        _ => {}
    }
    let new = t.new.as_mut().map(|r| {
        r.set_revision(0);
        &*r
    });
    if let (Some(new), Some(old)) = (new, t.old.as_ref()) {
        if new.tenant_id() != old.tenant_id() {
            return Err(invalid(kind, id, "tenant_id", "is immutable"));
        }
    }
    if let Some(new) = t.new.as_ref() {
        new.validate()
            .map_err(|(field, reason)| invalid(kind, id, field, reason))?;
    }
    Ok(())
}

/// Picks an unused tunnel key at random: no shared counter for concurrent
/// port creations to fight over; the unique index settles collisions.
async fn allocate_tunnel_key(tx: &mut Tx, kind: Kind, id: Uuid) -> Result<u32, NsdbError> {
    for _ in 0..32 {
        let candidate = rand::random_range(1..=crate::model::MAX_TUNNEL_KEY);
        if tx
            .get(&format!("uniq/tunnel_key/{candidate}"))
            .await?
            .is_none()
        {
            return Ok(candidate);
        }
    }
    Err(invalid(kind, id, "tunnel_key", "no free tunnel key found"))
}

async fn write_unique_keys(tx: &mut Tx, touched: &[Touched]) -> Result<(), NsdbError> {
    let keys_of =
        |r: &Option<Record>| -> Vec<_> { r.iter().flat_map(Record::unique_keys).collect() };
    // Release first, so a batch can move a value from one record to another.
    for t in touched {
        let new_keys: HashSet<String> = keys_of(&t.new).into_iter().map(|k| k.key).collect();
        for old in keys_of(&t.old) {
            if !new_keys.contains(&old.key) {
                tx.delete(old.key);
            }
        }
    }
    for t in touched {
        let held: HashSet<String> = keys_of(&t.old).into_iter().map(|k| k.key).collect();
        for unique in keys_of(&t.new)
            .into_iter()
            .filter(|k| !held.contains(&k.key))
        {
            let id = t.id.to_string();
            match tx.get(&unique.key).await? {
                Some(owner) if owner != id.as_bytes() => {
                    return Err(NsdbError::Duplicate {
                        kind: t.kind,
                        id: t.id,
                        constraint: unique.constraint.to_string(),
                        value: unique.value,
                        owner: String::from_utf8_lossy(&owner).into_owned(),
                    });
                }
                Some(_) => {}
                None => tx.put(unique.key, id.into_bytes()),
            }
        }
    }
    Ok(())
}

fn referenced_fields(record: &Option<Record>) -> BTreeMap<Uuid, BTreeSet<&'static str>> {
    let mut by_target: BTreeMap<Uuid, BTreeSet<&'static str>> = BTreeMap::new();
    for r in record.iter().flat_map(Record::references) {
        by_target.entry(r.id).or_default().insert(r.field);
    }
    by_target
}

fn write_references(tx: &mut Tx, touched: &[Touched]) {
    for t in touched {
        let (old, new) = (referenced_fields(&t.old), referenced_fields(&t.new));
        for target in old.keys().filter(|target| !new.contains_key(target)) {
            tx.delete(keys::reference(*target, t.kind, t.id));
        }
        for (target, fields) in new {
            if old.get(&target) != Some(&fields) {
                let value = serde_json::to_vec(&fields).unwrap_or_default();
                tx.put(keys::reference(target, t.kind, t.id), value);
            }
        }
    }
}

/// The references `new` adds over the stored record. References it already
/// had need no re-check: their back-reference keys already exist, so the
/// targets cannot have been deleted under them.
fn added_references(t: &Touched, new: &Record) -> Vec<crate::model::Reference> {
    let old: HashSet<_> = t.old.iter().flat_map(Record::references).collect();
    new.references()
        .into_iter()
        .filter(|r| !old.contains(r))
        .collect()
}

async fn check_references_exist(
    tx: &mut Tx,
    t: &Touched,
    record: &Record,
) -> Result<(), NsdbError> {
    for r in added_references(t, record) {
        if read(tx, r.kind, r.id).await?.is_none() {
            return Err(NsdbError::MissingReference {
                kind: record.kind(),
                id: record.id(),
                field: r.field.to_string(),
                target_kind: r.kind,
                target_id: r.id,
            });
        }
    }
    Ok(())
}

/// The parent a record's tenant comes from (device, router, chain), or
/// the tenant it names itself.
fn tenant_source(record: &Record) -> Result<(Kind, Uuid), Option<Uuid>> {
    match record {
        Record::Port(p) => Ok(match p.device_type {
            DeviceType::Bridge => (Kind::Bridge, p.device_id),
            DeviceType::Router => (Kind::Router, p.device_id),
        }),
        Record::Route(r) => Ok((Kind::Router, r.router_id)),
        Record::Rule(r) => Ok((Kind::Chain, r.chain_id)),
        Record::Tenant(t) => Err(Some(t.id)),
        other => Err(other.tenant_id()),
    }
}

/// The tenant a record belongs to, following device, router and chain
/// links, as the transaction will leave them.
async fn owning_tenant(tx: &mut Tx, record: &Record) -> Result<Option<Uuid>, NsdbError> {
    match tenant_source(record) {
        Ok((kind, parent)) => Ok(read(tx, kind, parent).await?.and_then(|p| p.tenant_id())),
        Err(tenant) => Ok(tenant),
    }
}

/// [`owning_tenant`] as committed before the transaction.
async fn owning_tenant_committed(tx: &mut Tx, record: &Record) -> Result<Option<Uuid>, NsdbError> {
    match tenant_source(record) {
        Ok((kind, parent)) => Ok(read_committed(tx, kind, parent)
            .await?
            .and_then(|p| p.tenant_id())),
        Err(tenant) => Ok(tenant),
    }
}

async fn check_relations(tx: &mut Tx, t: &Touched, new: &Record) -> Result<(), NsdbError> {
    let (kind, id) = (t.kind, t.id);
    // Chains, port-group members and pool bridges never cross tenants.
    let scoped: Vec<_> = added_references(t, new)
        .into_iter()
        .filter(|r| {
            r.kind == Kind::Chain
                || (r.kind == Kind::Port && kind == Kind::PortGroup)
                || (r.kind == Kind::Bridge && kind == Kind::IpPool)
                || (kind == Kind::Rule
                    && matches!(r.kind, Kind::Port | Kind::PortGroup | Kind::IpAddressGroup))
                || (kind == Kind::Tenant && matches!(r.kind, Kind::Router | Kind::Bridge))
                || (kind == Kind::FloatingIp && matches!(r.kind, Kind::Router | Kind::Rule))
                || matches!(r.kind, Kind::LoadBalancer | Kind::Pool)
                || (kind == Kind::LoadBalancer && r.kind == Kind::Router)
        })
        .collect();
    let tenant = match new {
        _ if scoped.is_empty() => None,
        Record::Tenant(tenant) => Some(tenant.id),
        _ => owning_tenant(tx, new).await?,
    };
    for r in scoped {
        if let Some(target) = read(tx, r.kind, r.id).await? {
            let target_tenant = owning_tenant(tx, &target).await?;
            if tenant.is_some() && target_tenant != tenant {
                return Err(rejected(
                    kind,
                    id,
                    r.field,
                    format!("{} {} belongs to another tenant", r.kind, r.id),
                ));
            }
        }
    }
    match new {
        Record::Port(port) => ports::check_port(tx, t, port).await,
        Record::Vip(vip) => lb::check_vip(tx, vip).await,
        Record::PoolMember(member) => lb::check_member(tx, t.old.as_ref(), member).await,
        Record::Rule(rule) => chains::check_jump_loop(tx, rule).await,
        Record::Route(route) => {
            if let Some(Record::Route(old)) = &t.old {
                if (old.next_hop_port_id, old.next_hop_gateway)
                    == (route.next_hop_port_id, route.next_hop_gateway)
                {
                    return Ok(());
                }
            }
            let (Some(port_id), Some(Record::Port(port))) = (
                route.next_hop_port_id,
                match route.next_hop_port_id {
                    Some(p) => read(tx, Kind::Port, p).await?,
                    None => None,
                },
            ) else {
                return Ok(());
            };
            if port.device_type != DeviceType::Router || port.device_id != route.router_id {
                return Err(rejected(
                    kind,
                    id,
                    "next_hop_port",
                    format!("port {port_id} belongs to another device"),
                ));
            }
            // The gateway is on one of the port's subnets (its address or
            // an extra address, e.g. an IPv6 gateway on a dual-stack port).
            if let (Some(gw), Some(addr)) = (route.next_hop_gateway, port.address) {
                let mut subnets = std::iter::once(&addr).chain(&port.extra_addresses);
                if !subnets.any(|a| a.contains(&gw)) {
                    return Err(rejected(
                        kind,
                        id,
                        "next_hop_gateway",
                        format!("{gw} is not within port {port_id}'s subnet {addr}"),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn check_unreferenced(tx: &mut Tx, t: &Touched) -> Result<(), NsdbError> {
    let mut referrers = Vec::new();
    for (key, fields) in tx.range(&keys::references_to(t.id)).await? {
        if let Some((kind, id)) = keys::parse_reference(&key) {
            let fields: Vec<String> = serde_json::from_slice(&fields).unwrap_or_default();
            referrers.push(Referrer {
                kind,
                id: id.to_string(),
                field: fields.join(","),
            });
        }
    }
    match t.kind {
        Kind::IpPool => {
            for (_, lease) in tx.range(&keys::leases_of(t.id)).await? {
                let owner = serde_json::from_slice::<crate::model::IpLease>(&lease)
                    .map(|l| format!("{} ({})", l.owner, l.address))
                    .unwrap_or_default();
                referrers.push(Referrer {
                    kind: Kind::IpLease,
                    id: owner,
                    field: "pool_id".into(),
                });
            }
        }
        Kind::Host => tx.delete(keys::liveness(t.id)),
        _ => {}
    }
    if referrers.is_empty() {
        Ok(())
    } else {
        Err(NsdbError::StillReferenced {
            kind: t.kind,
            id: t.id,
            referrers,
        })
    }
}
