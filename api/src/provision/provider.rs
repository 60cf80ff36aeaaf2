//! The provider router: created once per deployment, admin-owned, with an
//! uplink port bound to an interface of one host.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nsdb::{
    Chain, DeviceType, Kind, Mutation, Nsdb, NsdbError, Port, Provider, Record, Route, RouteKind,
    Router, Rule, RuleAction, Tenant,
};
use uuid::Uuid;

use super::{lost_race, new_port, provider6, ATTEMPTS};

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
    /// IPv6, if tenant networks are dual-stack.
    pub ipv6: Option<Ipv6Plan>,
}

/// The deployment's IPv6 settings: tenant networks get an IPv6 pod prefix,
/// a /126 link and routes each way, and the uplink port an IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Plan {
    /// Per-tenant /126 links to the provider router come from here.
    pub link_cidr: Ipv6Net,
    /// Default tenant IPv6 pod prefixes come from here.
    pub pod_cidr: Ipv6Net,
    /// Prefix length of a default tenant IPv6 pod prefix.
    pub pod_prefix_len: u8,
    /// The uplink port's IPv6 address and prefix (used when there is an
    /// uplink); the host side gets the subnet's first address.
    pub uplink_address: Ipv6Net,
}

/// The unique-local /48 the default IPv6 ranges are carved from
/// (`fd70:6c65:7875::/48`, "plexu" in its global ID).
const ULA: u128 = 0xfd70_6c65_7875 << 80;

impl Default for Ipv6Plan {
    fn default() -> Self {
        let net = |offset: u128, len: u8| {
            Ipv6Net::new(Ipv6Addr::from(ULA | offset), len).unwrap_or_default()
        };
        Ipv6Plan {
            uplink_address: net(2, 64),
            link_cidr: net(1 << 64, 64),
            pod_cidr: net(0x8000 << 64, 49),
            pod_prefix_len: 64,
        }
    }
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
            ipv6: None,
        }
    }
}

/// The provider record, creating the provider tenant, router, uplink port,
/// uplink masquerade chain and default routes on first use. On later starts
/// the existing provider is kept (its address plans never change under
/// existing tenants; a differing IPv4 plan is logged and ignored, a
/// differing IPv6 plan refused) and only the uplink binding follows the
/// plan, so that the uplink can move to another host or interface. An IPv6
/// plan given to a provider created without one adds IPv6 to it.
pub async fn ensure_provider(nsdb: &Nsdb, plan: &ProviderPlan) -> Result<Provider, NsdbError> {
    for _ in 0..ATTEMPTS {
        let result = match nsdb.list::<Provider>().await?.into_iter().next() {
            Some(existing) => {
                warn_if_replanned(&existing, plan);
                match rebind_uplink(nsdb, existing, plan).await {
                    Ok(provider) => provider6::reconcile(nsdb, provider, plan.ipv6.as_ref()).await,
                    Err(error) => Err(error),
                }
            }
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

/// Logs the IPv4 settings of `plan` that differ from the stored ones
/// (which stay: tenant networks are carved from them).
fn warn_if_replanned(provider: &Provider, plan: &ProviderPlan) {
    let stored = (
        provider.link_cidr,
        provider.pod_cidr,
        provider.pod_prefix_len,
        provider.external_cidr,
        provider.pod_mtu,
    );
    let given = (
        plan.link_cidr,
        plan.pod_cidr,
        plan.pod_prefix_len,
        plan.external_cidr,
        plan.pod_mtu,
    );
    if stored != given {
        tracing::warn!(
            ?stored,
            ?given,
            "the provider keeps its stored address plan (link, pod range, pod prefix length, external range, MTU); the flags differ"
        );
    }
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
    let provider_id = Uuid::new_v4();
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
        if let Some(v6) = &plan.ipv6 {
            provider6::check(v6, provider_id)?;
            port.extra_addresses.push(IpNet::V6(v6.uplink_address));
        }
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
        let ipv6_default = plan.ipv6.as_ref().and_then(|v6| {
            let host = provider6::record(v6, true).uplink_gateway?;
            Some(provider6::default_route(router.id, port.id, host))
        });
        uplink_port_id = Some(port.id);
        batch.extend([
            Mutation::Create(Record::Chain(chain)),
            Mutation::Create(Record::Rule(masquerade)),
            Mutation::Create(Record::Port(port)),
            Mutation::Create(Record::Route(default_route)),
        ]);
        batch.extend(ipv6_default.map(|r| Mutation::Create(Record::Route(r))));
    }
    let provider = Provider {
        id: provider_id,
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
        ipv6: plan
            .ipv6
            .as_ref()
            .map(|v6| provider6::record(v6, uplink_port_id.is_some())),
    };
    batch.push(Mutation::Create(Record::Provider(provider)));
    let applied = nsdb.apply(batch).await?;
    tracing::info!(router = %router.id, "created the provider router");
    super::records_of::<Provider>(applied.records)
        .pop()
        .ok_or_else(|| nsdb::StoreError::Backend("commit returned no provider".into()).into())
}
