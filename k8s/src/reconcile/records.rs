//! Records as the batch API writes them, and the owned records as they
//! are: what the reconcile compares.

use std::collections::BTreeMap;

use api::client::{ApiError, Client};
use api::routes::batch::BatchOperation;
use nsdb::{Chain, IpAddressGroup, Kind, PortGroup, Record, Rule};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::policy::OWNED_PREFIX;

/// The batch collection of a record kind.
pub(crate) fn collection(kind: Kind) -> &'static str {
    match kind {
        Kind::Chain => "chains",
        Kind::Rule => "rules",
        Kind::PortGroup => "port_groups",
        Kind::IpAddressGroup => "ip_address_groups",
        Kind::Port => "ports",
        Kind::LoadBalancer => "load_balancers",
        Kind::Pool => "pools",
        Kind::Vip => "vips",
        Kind::PoolMember => "members",
        Kind::HealthMonitor => "health_monitors",
        _ => "unsupported",
    }
}

fn object<T: Serialize>(record: &T) -> serde_json::Map<String, Value> {
    match serde_json::to_value(record) {
        Ok(Value::Object(mut map)) => {
            map.remove("revision");
            map
        }
        _ => serde_json::Map::new(),
    }
}

/// A put of `record`.
pub(crate) fn put(record: &Record) -> BatchOperation {
    let record_json = match record {
        Record::Chain(r) => object(r),
        Record::Rule(r) => object(r),
        Record::PortGroup(r) => object(r),
        Record::IpAddressGroup(r) => object(r),
        Record::Port(r) => object(r),
        Record::LoadBalancer(r) => object(r),
        Record::Pool(r) => object(r),
        Record::Vip(r) => object(r),
        Record::PoolMember(r) => object(r),
        Record::HealthMonitor(r) => object(r),
        _ => serde_json::Map::new(),
    };
    BatchOperation::Put {
        collection: collection(record.kind()).into(),
        record: record_json,
        if_revision: None,
    }
}

/// A delete of `record`.
pub(crate) fn delete(record: &Record) -> BatchOperation {
    BatchOperation::Delete {
        collection: collection(record.kind()).into(),
        id: record.id(),
        if_revision: None,
    }
}

/// `record` without its revision, for comparing content.
pub(crate) fn content(record: &Record) -> Record {
    let mut record = record.clone();
    record.set_revision(0);
    record
}

/// The records of `tenant` the translation owns (named `k8s …`), with the
/// rules of their chains, by id.
pub(crate) async fn owned(
    client: &Client,
    tenant: Uuid,
) -> Result<BTreeMap<Uuid, Record>, ApiError> {
    let mut records = BTreeMap::new();
    let owned = |name: &str| name.starts_with(OWNED_PREFIX);
    let chains: Vec<Chain> = client
        .list(&format!("/v1/chains?tenant_id={tenant}"))
        .await?;
    for chain in chains.into_iter().filter(|c| owned(&c.name)) {
        let rules: Vec<Rule> = client
            .list(&format!("/v1/chains/{}/rules", chain.id))
            .await?;
        for rule in rules {
            records.insert(rule.id, Record::Rule(rule));
        }
        records.insert(chain.id, Record::Chain(chain));
    }
    let groups: Vec<PortGroup> = client
        .list(&format!("/v1/port_groups?tenant_id={tenant}"))
        .await?;
    for group in groups.into_iter().filter(|g| owned(&g.name)) {
        records.insert(group.id, Record::PortGroup(group));
    }
    let groups: Vec<IpAddressGroup> = client
        .list(&format!("/v1/ip_address_groups?tenant_id={tenant}"))
        .await?;
    for group in groups.into_iter().filter(|g| owned(&g.name)) {
        records.insert(group.id, Record::IpAddressGroup(group));
    }
    Ok(records)
}
