//! Records as the batch API writes them, and the owned records as they
//! are: what the reconcile compares.

use std::collections::BTreeMap;

use api::client::{ApiError, Client};
use api::resource::ApiResource;
use api::routes::batch::BatchOperation;
use nsdb::{Chain, IpAddressGroup, PortGroup, Record, Rule};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::policy::OWNED_PREFIX;

fn object<T: Serialize>(record: &T) -> serde_json::Map<String, Value> {
    match serde_json::to_value(record) {
        Ok(Value::Object(mut map)) => {
            map.remove("revision");
            map
        }
        _ => serde_json::Map::new(),
    }
}

/// A record's batch collection (the API's own name for it) and its body
/// without the revision.
fn parts(record: &Record) -> (&'static str, serde_json::Map<String, Value>) {
    fn of<R: ApiResource>(record: &R) -> (&'static str, serde_json::Map<String, Value>) {
        (R::COLLECTION, object(record))
    }
    match record {
        Record::Chain(r) => of(r),
        Record::Rule(r) => of(r),
        Record::PortGroup(r) => of(r),
        Record::IpAddressGroup(r) => of(r),
        Record::Port(r) => of(r),
        Record::LoadBalancer(r) => of(r),
        Record::Pool(r) => of(r),
        Record::Vip(r) => of(r),
        Record::PoolMember(r) => of(r),
        Record::HealthMonitor(r) => of(r),
        // Not a batch collection: the server refuses it by name.
        other => (other.kind().as_str(), serde_json::Map::new()),
    }
}

/// A put of `record`.
pub(crate) fn put(record: &Record) -> BatchOperation {
    let (collection, record) = parts(record);
    BatchOperation::Put {
        collection: collection.into(),
        record,
        if_revision: None,
    }
}

/// A delete of `record`.
pub(crate) fn delete(record: &Record) -> BatchOperation {
    BatchOperation::Delete {
        collection: parts(record).0.into(),
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
