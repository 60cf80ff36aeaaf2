//! The provider router: created once per deployment, admin-owned, with an
//! uplink port bound to an interface of one host.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use nsdb::{
    Chain, DeviceType, Kind, Mutation, Nsdb, NsdbError, Port, Provider, Record, Route, RouteKind,
    Router, Rule, RuleAction, Tenant,
};
use uuid::Uuid;

use super::{lost_race, new_port, ATTEMPTS};

/// The name of the admin-owned tenant holding the provider devices.
pub const PROVIDER_TENANT: &str = "provider";

/// Where the provider router's uplink port is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkPlan {
    /// The host whose agent serves the uplink.
    pub host_id: Uuid,
    /// The interface on that host (created as a TAP device when missing).
    pub interface: String,
    /// The uplink port's address and prefix.
    pub address: Ipv4Net,
    /// The next hop beyond the uplink (the host side); the default route.
    pub gateway: Ipv4Addr,
}

/// The deployment's provider settings, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPlan {
    /// The uplink, if this deployment has one.
    pub uplink: Option<UplinkPlan>,
    /// Per-tenant link subnets come from here.
    pub link_cidr: Ipv4Net,
    /// Default tenant pod subnets come from here.
    pub pod_cidr: Ipv4Net,
    /// Prefix length of a default tenant pod subnet.
    pub pod_prefix_len: u8,
    /// Floating IPs come from here.
    pub external_cidr: Ipv4Net,
    /// The MTU pods get.
    pub pod_mtu: u16,
}

impl Default for ProviderPlan {
    fn default() -> Self {
        ProviderPlan {
            uplink: None,
            link_cidr: Ipv4Net::new(Ipv4Addr::new(169, 254, 0, 0), 16).unwrap_or_default(),
            pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 12).unwrap_or_default(),
            pod_prefix_len: 24,
            external_cidr: Ipv4Net::new(Ipv4Addr::new(100, 64, 1, 0), 24).unwrap_or_default(),
            pod_mtu: 1450,
        }
    }
}

/// The provider record, creating the provider tenant, router, uplink port,
/// uplink masquerade chain and default route on first use. On later starts
/// the existing provider is kept (its address plans never change under
/// existing tenants) and only the uplink binding follows the plan, so that
/// the uplink can move to another host or interface.
pub async fn ensure_provider(nsdb: &Nsdb, plan: &ProviderPlan) -> Result<Provider, NsdbError> {
    for _ in 0..ATTEMPTS {
        let result = match nsdb.list::<Provider>().await?.into_iter().next() {
            Some(existing) => rebind_uplink(nsdb, existing, plan).await,
            None => create_provider(nsdb, plan).await,
        };
        match result {
            Err(error) if lost_race(&error) => continue,
            other => return other,
        }
    }
    Err(NsdbError::Contention {
        attempts: ATTEMPTS as u32,
    })
}

async fn rebind_uplink(
    nsdb: &Nsdb,
    provider: Provider,
    plan: &ProviderPlan,
) -> Result<Provider, NsdbError> {
    let (Some(uplink), Some(port_id)) = (&plan.uplink, provider.uplink_port_id) else {
        return Ok(provider);
    };
    let port: Port = nsdb.fetch(port_id).await?;
    let wanted = (Some(uplink.host_id), Some(uplink.interface.clone()));
    if (port.host_id, port.interface_name.clone()) != wanted {
        tracing::info!(host = %uplink.host_id, interface = %uplink.interface, "moving the provider uplink");
        let revision = port.revision;
        let mut moved = port;
        (moved.host_id, moved.interface_name) = wanted;
        nsdb.update(moved, Some(revision)).await?;
    }
    Ok(provider)
}

async fn create_provider(nsdb: &Nsdb, plan: &ProviderPlan) -> Result<Provider, NsdbError> {
    if let Some(taken) = nsdb
        .list::<Tenant>()
        .await?
        .into_iter()
        .find(|t| t.name == PROVIDER_TENANT)
    {
        return Err(NsdbError::Duplicate {
            kind: Kind::Tenant,
            id: taken.id,
            constraint: "name".into(),
            value: format!(
                "{PROVIDER_TENANT} (a tenant has the provider's reserved name; rename it)"
            ),
            owner: taken.id.to_string(),
        });
    }
    let tenant = Tenant {
        id: Uuid::new_v4(),
        revision: 0,
        name: PROVIDER_TENANT.into(),
        network: None,
    };
    let router = Router {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant.id,
        name: "provider".into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
    };
    let mut batch = vec![
        Mutation::Create(Record::Tenant(tenant.clone())),
        Mutation::Create(Record::Router(router.clone())),
    ];
    let mut uplink_port_id = None;
    if let Some(uplink) = &plan.uplink {
        // Tenant traffic reaches the outside from the uplink's address.
        let chain = Chain {
            id: Uuid::new_v4(),
            revision: 0,
            tenant_id: tenant.id,
            name: "uplink-out".into(),
        };
        let masquerade = Rule {
            src_cidr: Some(IpNet::V4(plan.link_cidr)),
            description: "tenant traffic leaves with the uplink's address".into(),
            ..Rule::new(chain.id, 1, RuleAction::Masquerade)
        };
        let mut port = new_port(router.id, DeviceType::Router, Some(uplink.address));
        port.host_id = Some(uplink.host_id);
        port.interface_name = Some(uplink.interface.clone());
        port.outbound_chain_id = Some(chain.id);
        let default_route = Route {
            id: Uuid::new_v4(),
            revision: 0,
            router_id: router.id,
            dst: IpNet::V4(Ipv4Net::default()),
            src: IpNet::V4(Ipv4Net::default()),
            next_hop_port_id: Some(port.id),
            next_hop_gateway: Some(uplink.gateway.into()),
            weight: 0,
            kind: RouteKind::Normal,
        };
        uplink_port_id = Some(port.id);
        batch.extend([
            Mutation::Create(Record::Chain(chain)),
            Mutation::Create(Record::Rule(masquerade)),
            Mutation::Create(Record::Port(port)),
            Mutation::Create(Record::Route(default_route)),
        ]);
    }
    let provider = Provider {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant.id,
        router_id: router.id,
        uplink_port_id,
        uplink_gateway: plan.uplink.as_ref().map(|u| u.gateway),
        link_cidr: plan.link_cidr,
        pod_cidr: plan.pod_cidr,
        pod_prefix_len: plan.pod_prefix_len,
        external_cidr: plan.external_cidr,
        pod_mtu: plan.pod_mtu,
    };
    batch.push(Mutation::Create(Record::Provider(provider)));
    let applied = nsdb.apply(batch).await?;
    tracing::info!(router = %router.id, "created the provider router");
    super::records_of::<Provider>(applied.records)
        .pop()
        .ok_or_else(|| nsdb::StoreError::Backend("commit returned no provider".into()).into())
}
