//! The Services part of the reconcile: each Service's pools, VIPs and
//! members against what the load balancers hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::client::{ApiError, Client};
use nsdb::{LoadBalancer, Pool, PoolMember, Port, Provider, Record, Tenant, Vip};
use uuid::Uuid;

use super::plan::Diff;
use super::{write, Report};
use crate::objects::Objects;
use crate::services::{service_of, translate_services, Balancer, Targets};

/// The provider's load balancer and uplink address, if it has an uplink.
async fn node_ports(client: &Client) -> Result<Option<(Balancer, IpAddr)>, ApiError> {
    let provider: Provider = match client.get("/v1/provider").await {
        Ok(provider) => provider,
        Err(error) if error.status() == Some(404) => return Ok(None),
        Err(error) => return Err(error),
    };
    let Some(uplink) = provider.uplink_port_id else {
        return Ok(None);
    };
    let port: Port = client.get(&format!("/v1/ports/{uplink}")).await?;
    Ok(port.address.map(|address| {
        (
            Balancer {
                tenant: provider.tenant_id,
                router: provider.router_id,
            },
            address.addr(),
        )
    }))
}

/// The owned load-balancer objects of `balancer`'s tenant, by id.
async fn owned(client: &Client, tenant: Uuid) -> Result<BTreeMap<Uuid, Record>, ApiError> {
    let mut records = BTreeMap::new();
    let balancers: Vec<LoadBalancer> = client
        .list(&format!("/v1/load_balancers?tenant_id={tenant}"))
        .await?;
    for balancer in balancers {
        let pools: Vec<Pool> = client
            .list(&format!("/v1/pools?load_balancer_id={}", balancer.id))
            .await?;
        for pool in pools.into_iter().filter(|p| service_of(&p.name).is_some()) {
            let members: Vec<PoolMember> = client
                .list(&format!("/v1/members?pool_id={}", pool.id))
                .await?;
            for member in members {
                records.insert(member.id, Record::PoolMember(member));
            }
            records.insert(pool.id, Record::Pool(pool));
        }
        let vips: Vec<Vip> = client
            .list(&format!("/v1/vips?load_balancer_id={}", balancer.id))
            .await?;
        for vip in vips.into_iter().filter(|v| service_of(&v.name).is_some()) {
            records.insert(vip.id, Record::Vip(vip));
        }
        records.insert(balancer.id, Record::LoadBalancer(balancer));
    }
    Ok(records)
}

/// The Service an owned record belongs to.
fn owner(record: &Record, actual: &BTreeMap<Uuid, Record>) -> Option<String> {
    match record {
        Record::Pool(p) => service_of(&p.name),
        Record::Vip(v) => service_of(&v.name),
        Record::PoolMember(m) => match actual.get(&m.pool_id)? {
            Record::Pool(p) => service_of(&p.name),
            _ => None,
        },
        _ => None,
    }
}

/// Makes the load balancers serve `objects`' Services.
pub(super) async fn reconcile_services(
    client: &Client,
    tenant: &Tenant,
    objects: &Objects,
    pod_ips: &BTreeMap<(String, String), IpAddr>,
    report: &mut Report,
) -> Result<(), ApiError> {
    let Some(network) = &tenant.network else {
        return Ok(());
    };
    let targets = Targets {
        cluster: Balancer {
            tenant: tenant.id,
            router: network.router_id,
        },
        node_ports: node_ports(client).await?,
    };
    let translation = translate_services(objects, &targets, pod_ips);
    report.refused.extend(
        translation
            .refused
            .iter()
            .map(|u| format!("Service {}: {}", u.policy, u.what)),
    );
    let mut actual = owned(client, tenant.id).await?;
    let mut balancers = vec![targets.cluster];
    if let Some((balancer, _)) = targets.node_ports {
        actual.extend(owned(client, balancer.tenant).await?);
        balancers.push(balancer);
    }
    // The load balancers, when a Service needs them (kept afterwards).
    if !translation.services.is_empty() {
        let missing: Vec<Record> = balancers
            .iter()
            .map(Balancer::record)
            .filter(|r| !actual.contains_key(&r.id()))
            .collect();
        let diff = Diff {
            creates: missing,
            ..Diff::default()
        };
        write(client, diff, &BTreeSet::new(), report).await?;
    }
    let mut actual_by_service: BTreeMap<String, BTreeMap<Uuid, Record>> = BTreeMap::new();
    for (id, record) in &actual {
        if let Some(service) = owner(record, &actual) {
            actual_by_service
                .entry(service)
                .or_default()
                .insert(*id, record.clone());
        }
    }
    let services: BTreeSet<&String> = actual_by_service
        .keys()
        .chain(translation.services.keys())
        .collect();
    let empty = BTreeMap::new();
    for service in services {
        let have = actual_by_service.get(service).unwrap_or(&empty);
        let mut want: BTreeMap<Uuid, Record> = BTreeMap::new();
        for record in translation.services.get(service).into_iter().flatten() {
            let mut record = record.clone();
            let stored = have.get(&record.id());
            // Health is the agents' to write.
            if let (Record::PoolMember(m), Some(Record::PoolMember(stored))) = (&mut record, stored)
            {
                m.health = stored.health;
            }
            want.insert(record.id(), record);
        }
        let diff = Diff::between(have, &want);
        if let Err(error) = write(client, diff, &BTreeSet::new(), report).await {
            report.errors.push(format!("Service {service}: {error}"));
        }
    }
    Ok(())
}
