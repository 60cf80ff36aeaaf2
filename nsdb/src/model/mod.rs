//! The NSDB's typed model: record kinds, the [`Record`] sum type and the
//! per-kind facts the store needs (references, uniqueness, static rules).

mod constraints;
mod labels;
mod lb;
mod provider_check;
mod records;
mod rule;
mod rule_check;
mod rule_values;

pub use constraints::{key_segment, Reference, UniqueKey, Violation, MAX_TUNNEL_KEY};
pub use labels::*;
pub use lb::*;
pub use records::*;
pub use rule::*;
pub use rule_values::*;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::kv::Revision;

/// The kinds of record the NSDB stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// [`Tenant`].
    Tenant,
    /// [`Router`].
    Router,
    /// [`Bridge`].
    Bridge,
    /// [`Port`].
    Port,
    /// [`Route`].
    Route,
    /// [`Chain`].
    Chain,
    /// [`Rule`].
    Rule,
    /// [`PortGroup`].
    PortGroup,
    /// [`IpAddressGroup`].
    IpAddressGroup,
    /// [`Host`].
    Host,
    /// [`IpPool`].
    IpPool,
    /// [`IpLease`] (kept by IPAM, not a stand-alone record).
    IpLease,
    /// [`ApiToken`].
    ApiToken,
    /// [`Provider`].
    Provider,
    /// [`FloatingIp`].
    FloatingIp,
    /// [`LoadBalancer`].
    LoadBalancer,
    /// [`Pool`].
    Pool,
    /// [`Vip`].
    Vip,
    /// [`PoolMember`].
    PoolMember,
    /// [`HealthMonitor`].
    HealthMonitor,
}

impl Kind {
    /// Every kind stored as a stand-alone record.
    pub const RECORDS: [Kind; 19] = [
        Kind::Tenant,
        Kind::Router,
        Kind::Bridge,
        Kind::Port,
        Kind::Route,
        Kind::Chain,
        Kind::Rule,
        Kind::PortGroup,
        Kind::IpAddressGroup,
        Kind::Host,
        Kind::IpPool,
        Kind::ApiToken,
        Kind::Provider,
        Kind::FloatingIp,
        Kind::LoadBalancer,
        Kind::Pool,
        Kind::Vip,
        Kind::PoolMember,
        Kind::HealthMonitor,
    ];

    /// The kind's name in keys, errors and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Router => "router",
            Kind::Bridge => "bridge",
            Kind::Port => "port",
            Kind::Route => "route",
            Kind::Chain => "chain",
            Kind::Rule => "rule",
            Kind::PortGroup => "port_group",
            Kind::IpAddressGroup => "ip_address_group",
            Kind::Host => "host",
            Kind::IpPool => "ip_pool",
            Kind::IpLease => "ip_lease",
            Kind::ApiToken => "api_token",
            Kind::Provider => "provider",
            Kind::FloatingIp => "floating_ip",
            Kind::LoadBalancer => "load_balancer",
            Kind::Pool => "pool",
            Kind::Vip => "vip",
            Kind::PoolMember => "pool_member",
            Kind::HealthMonitor => "health_monitor",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::RECORDS
            .iter()
            .chain([Kind::IpLease].iter())
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind '{s}'"))
    }
}

/// A typed record of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A tenant.
    Tenant(Tenant),
    /// A router.
    Router(Router),
    /// A bridge.
    Bridge(Bridge),
    /// A port.
    Port(Port),
    /// A route.
    Route(Route),
    /// A chain.
    Chain(Chain),
    /// A rule.
    Rule(Rule),
    /// A port group.
    PortGroup(PortGroup),
    /// An IP address group.
    IpAddressGroup(IpAddressGroup),
    /// A host.
    Host(Host),
    /// An IP pool.
    IpPool(IpPool),
    /// A tenant API token.
    ApiToken(ApiToken),
    /// The provider settings.
    Provider(Provider),
    /// A floating IP.
    FloatingIp(FloatingIp),
    /// A load balancer.
    LoadBalancer(LoadBalancer),
    /// A load-balancer pool.
    Pool(Pool),
    /// A load-balancer VIP.
    Vip(Vip),
    /// A pool member.
    PoolMember(PoolMember),
    /// A pool's health monitor.
    HealthMonitor(HealthMonitor),
}

/// A record type stored by the NSDB.
pub trait Resource:
    Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + fmt::Debug + 'static
{
    /// The record's kind.
    const KIND: Kind;
    /// The record's id.
    fn id(&self) -> Uuid;
    /// The revision the record was read at.
    fn revision(&self) -> Revision;
    /// Sets the revision (done by the store on read).
    fn set_revision(&mut self, revision: Revision);
    /// Wraps the record in [`Record`].
    fn into_record(self) -> Record;
    /// Unwraps a [`Record`] of this kind.
    fn from_record(record: Record) -> Option<Self>;
}

macro_rules! resources {
    ($($kind:ident),* $(,)?) => {
        $(
            impl Resource for $kind {
                const KIND: Kind = Kind::$kind;
                fn id(&self) -> Uuid { self.id }
                fn revision(&self) -> Revision { self.revision }
                fn set_revision(&mut self, revision: Revision) { self.revision = revision; }
                fn into_record(self) -> Record { Record::$kind(self) }
                fn from_record(record: Record) -> Option<Self> {
                    match record { Record::$kind(r) => Some(r), _ => None }
                }
            }
        )*

        impl Record {
            /// The record's kind.
            pub fn kind(&self) -> Kind {
                match self { $(Record::$kind(_) => Kind::$kind,)* }
            }

            /// The record's id.
            pub fn id(&self) -> Uuid {
                match self { $(Record::$kind(r) => r.id,)* }
            }

            /// The revision the record was read at.
            pub fn revision(&self) -> Revision {
                match self { $(Record::$kind(r) => r.revision,)* }
            }

            /// Sets the revision (done by the store on read).
            pub fn set_revision(&mut self, revision: Revision) {
                match self { $(Record::$kind(r) => r.revision = revision,)* }
            }

            /// Serializes the record for storage (the revision is not stored).
            pub fn encode(&self) -> Vec<u8> {
                let mut copy = self.clone();
                copy.set_revision(0);
                let encoded = match &copy { $(Record::$kind(r) => serde_json::to_vec(r),)* };
                // Serializing these plain structs to JSON cannot fail.
                encoded.unwrap_or_default()
            }

            /// Decodes a stored record of the given kind.
            pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Record, String> {
                match kind {
                    $(Kind::$kind => serde_json::from_slice(bytes)
                        .map(Record::$kind)
                        .map_err(|e| e.to_string()),)*
                    other => Err(format!("{other} is not a stored record kind")),
                }
            }
        }
    };
}

resources!(
    Tenant,
    Router,
    Bridge,
    Port,
    Route,
    Chain,
    Rule,
    PortGroup,
    IpAddressGroup,
    Host,
    IpPool,
    ApiToken,
    Provider,
    FloatingIp,
    LoadBalancer,
    Pool,
    Vip,
    PoolMember,
    HealthMonitor,
);

impl Record {
    /// The tenant the record belongs to, when it names one directly.
    pub fn tenant_id(&self) -> Option<Uuid> {
        match self {
            Record::Router(r) => Some(r.tenant_id),
            Record::Bridge(r) => Some(r.tenant_id),
            Record::Chain(r) => Some(r.tenant_id),
            Record::PortGroup(r) => Some(r.tenant_id),
            Record::IpAddressGroup(r) => Some(r.tenant_id),
            Record::IpPool(r) => r.tenant_id,
            Record::ApiToken(r) => Some(r.tenant_id),
            Record::Provider(r) => Some(r.tenant_id),
            Record::FloatingIp(r) => Some(r.tenant_id),
            Record::LoadBalancer(r) => Some(r.tenant_id),
            Record::Pool(r) => Some(r.tenant_id),
            Record::Vip(r) => Some(r.tenant_id),
            Record::PoolMember(r) => Some(r.tenant_id),
            Record::HealthMonitor(r) => Some(r.tenant_id),
            Record::Tenant(_)
            | Record::Port(_)
            | Record::Route(_)
            | Record::Rule(_)
            | Record::Host(_) => None,
        }
    }

    /// The record's parent, for listing by parent (device of a port, router
    /// of a route, chain of a rule, tenant of tenant-owned records).
    pub fn parent_id(&self) -> Option<Uuid> {
        match self {
            Record::Port(p) => Some(p.device_id),
            Record::Route(r) => Some(r.router_id),
            Record::Rule(r) => Some(r.chain_id),
            Record::LoadBalancer(r) => Some(r.router_id),
            Record::Pool(r) => Some(r.load_balancer_id),
            Record::Vip(r) => Some(r.load_balancer_id),
            Record::PoolMember(r) => Some(r.pool_id),
            Record::HealthMonitor(r) => Some(r.pool_id),
            other => other.tenant_id(),
        }
    }
}
