//! The L4 load balancer's records: a load balancer on a tenant router, its
//! VIPs and pools, the pools' members and health monitors.
//!
//! A VIP is an address, protocol and port on the router; a new connection
//! to it is translated to one member of the VIP's pool, chosen by the
//! engine. Members carry a health status written by the agents that run
//! the pool's monitor.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use uuid::Uuid;

use super::constraints::{check_name, name_key, UniqueKey, Violation};
use crate::kv::Revision;

fn default_true() -> bool {
    true
}

fn default_weight() -> u16 {
    1
}

fn default_affinity_timeout() -> u32 {
    10_800
}

fn default_http_path() -> String {
    "/".into()
}

fn default_expected_status() -> u16 {
    200
}

fn default_failures() -> u8 {
    3
}

fn default_successes() -> u8 {
    2
}

/// The most a member's weight may be.
pub const MAX_MEMBER_WEIGHT: u16 = 256;

/// A load balancer: the VIPs and pools of one tenant router (at most one
/// per router).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancer {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The router whose VIPs it serves.
    pub router_id: Uuid,
    /// Name, unique among the tenant's load balancers.
    pub name: String,
    /// Whether its VIPs answer.
    #[serde(default = "default_true")]
    pub admin_state_up: bool,
}

/// How a pool spreads new connections over its members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// Every usable member gets an equal share (weights are ignored).
    #[default]
    RoundRobin,
    /// Every usable member gets a share proportional to its weight.
    Weighted,
}

/// A pool of members serving one or more VIPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The load balancer it belongs to.
    pub load_balancer_id: Uuid,
    /// Name, unique within the load balancer.
    pub name: String,
    /// How new connections are spread.
    #[serde(default)]
    pub algorithm: LbAlgorithm,
    /// Whether it takes connections.
    #[serde(default = "default_true")]
    pub admin_state_up: bool,
}

/// The transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl LbProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            LbProtocol::Tcp => 6,
            LbProtocol::Udp => 17,
        }
    }

    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "tcp",
            LbProtocol::Udp => "udp",
        }
    }
}

/// Which member a client's new connections go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionAffinity {
    /// Every new connection is spread on its own.
    #[default]
    None,
    /// A client's new connections go to the member its last one went to,
    /// for `affinity_timeout_s` after that one.
    SourceIp,
}

/// A virtual IP: an address, protocol and port on the load balancer's
/// router, served by a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The load balancer it belongs to.
    pub load_balancer_id: Uuid,
    /// Name, unique within the load balancer.
    pub name: String,
    /// The pool serving it (of the same load balancer).
    pub pool_id: Uuid,
    /// The address clients connect to (IPv4 until routers forward IPv6).
    pub address: IpAddr,
    /// The transport protocol.
    pub protocol: LbProtocol,
    /// The port clients connect to.
    pub port: u16,
    /// Session affinity.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// How long an affinity entry lives after the client's last new
    /// connection, in seconds.
    #[serde(default = "default_affinity_timeout")]
    pub affinity_timeout_s: u32,
    /// Whether it answers.
    #[serde(default = "default_true")]
    pub admin_state_up: bool,
}

/// A member's health as its monitor last found it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberHealth {
    /// Not probed (no monitor, or none has answered yet): taken as usable.
    #[default]
    Unknown,
    /// Its monitor's last `successes_to_up` probes succeeded.
    Up,
    /// Its monitor's last `failures_to_down` probes failed.
    Down,
}

/// A backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolMember {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The pool it belongs to.
    pub pool_id: Uuid,
    /// The backend's address (reachable from the load balancer's router).
    pub address: IpAddr,
    /// The backend's port.
    pub port: u16,
    /// Its share under the weighted algorithm (0: no new connections).
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// Whether it takes new connections.
    #[serde(default = "default_true")]
    pub admin_state_up: bool,
    /// Written by the agents running the pool's monitor; read-only in the
    /// API.
    #[serde(default)]
    pub health: MemberHealth,
}

impl PoolMember {
    /// Whether the engine may send new connections to it.
    pub fn usable(&self) -> bool {
        self.admin_state_up && self.weight > 0 && self.health != MemberHealth::Down
    }
}

/// How a monitor probes a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonitorType {
    /// A TCP connect.
    Tcp,
    /// An HTTP GET of `http_path`, expecting `expected_status`.
    Http,
}

/// The health monitor of a pool (at most one per pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthMonitor {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The pool whose members it probes.
    pub pool_id: Uuid,
    /// How it probes.
    #[serde(rename = "type")]
    pub kind: MonitorType,
    /// HTTP monitors: the path requested.
    #[serde(default = "default_http_path")]
    pub http_path: String,
    /// HTTP monitors: the status a healthy member answers.
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
    /// Milliseconds between probes of one member.
    pub interval_ms: u32,
    /// Milliseconds a probe may take (at most `interval_ms`).
    pub timeout_ms: u32,
    /// Consecutive failed probes before a member is down.
    #[serde(default = "default_failures")]
    pub failures_to_down: u8,
    /// Consecutive successful probes before a down member is up.
    #[serde(default = "default_successes")]
    pub successes_to_up: u8,
    /// Whether it probes.
    #[serde(default = "default_true")]
    pub admin_state_up: bool,
}

fn check_port(field: &'static str, port: u16) -> Result<(), Violation> {
    if port == 0 {
        return Err((field, "0 is not a port; use 1-65535".into()));
    }
    Ok(())
}

fn check_unicast(field: &'static str, address: IpAddr) -> Result<(), Violation> {
    let bad = address.is_unspecified()
        || address.is_multicast()
        || address.is_loopback()
        || matches!(address, IpAddr::V4(a) if a.is_broadcast());
    if bad {
        return Err((field, format!("{address} is not a unicast address")));
    }
    Ok(())
}

/// Static rules of a load balancer's own fields.
pub(super) fn validate_load_balancer(lb: &LoadBalancer) -> Result<(), Violation> {
    check_name(&lb.name)
}

/// Static rules of a pool's own fields.
pub(super) fn validate_pool(pool: &Pool) -> Result<(), Violation> {
    check_name(&pool.name)
}

/// Static rules of a VIP's own fields.
pub(super) fn validate_vip(vip: &Vip) -> Result<(), Violation> {
    check_name(&vip.name)?;
    check_unicast("address", vip.address)?;
    if vip.address.is_ipv6() {
        return Err((
            "address",
            "IPv6 VIPs wait for routers to forward IPv6; use an IPv4 address".into(),
        ));
    }
    check_port("port", vip.port)?;
    if vip.session_affinity == SessionAffinity::SourceIp
        && !(1..=86_400).contains(&vip.affinity_timeout_s)
    {
        return Err((
            "affinity_timeout_s",
            format!("{} is outside 1-86400 seconds", vip.affinity_timeout_s),
        ));
    }
    Ok(())
}

/// Static rules of a member's own fields.
pub(super) fn validate_member(member: &PoolMember) -> Result<(), Violation> {
    check_unicast("address", member.address)?;
    if member.address.is_ipv6() {
        return Err((
            "address",
            "IPv6 members wait for routers to forward IPv6; use an IPv4 address".into(),
        ));
    }
    check_port("port", member.port)?;
    if member.weight > MAX_MEMBER_WEIGHT {
        return Err((
            "weight",
            format!("{} is outside 0-{MAX_MEMBER_WEIGHT}", member.weight),
        ));
    }
    Ok(())
}

/// Static rules of a monitor's own fields.
pub(super) fn validate_monitor(monitor: &HealthMonitor) -> Result<(), Violation> {
    if !(100..=3_600_000).contains(&monitor.interval_ms) {
        return Err((
            "interval_ms",
            format!("{} is outside 100-3600000", monitor.interval_ms),
        ));
    }
    if monitor.timeout_ms < 10 {
        return Err(("timeout_ms", "must be at least 10".into()));
    }
    if monitor.timeout_ms > monitor.interval_ms {
        return Err((
            "timeout_ms",
            format!(
                "{} is longer than interval_ms {}: a probe must end before the next starts",
                monitor.timeout_ms, monitor.interval_ms
            ),
        ));
    }
    for (field, count) in [
        ("failures_to_down", monitor.failures_to_down),
        ("successes_to_up", monitor.successes_to_up),
    ] {
        if !(1..=10).contains(&count) {
            return Err((field, format!("{count} is outside 1-10")));
        }
    }
    if monitor.kind == MonitorType::Http {
        let path = &monitor.http_path;
        let printable = path.bytes().all(|b| b.is_ascii_graphic());
        if !path.starts_with('/') || !printable || path.len() > 1024 {
            return Err((
                "http_path",
                format!("'{path}' is not an absolute request path (printable ASCII, no spaces)"),
            ));
        }
        if !(100..=599).contains(&monitor.expected_status) {
            return Err((
                "expected_status",
                format!("{} is not an HTTP status", monitor.expected_status),
            ));
        }
    }
    Ok(())
}

/// The unique values of a load-balancer record.
pub(super) fn lb_unique_keys(record: &super::Record) -> Vec<UniqueKey> {
    use super::Record;
    let named =
        |kind: &'static str, scope: Uuid, name: &str| name_key(kind, &scope.to_string(), name);
    match record {
        Record::LoadBalancer(lb) => vec![
            named("load_balancer", lb.tenant_id, &lb.name),
            UniqueKey {
                constraint: "one load balancer per router",
                key: format!("uniq/lb_router/{}", lb.router_id),
                value: lb.router_id.to_string(),
            },
        ],
        Record::Pool(p) => vec![named("pool", p.load_balancer_id, &p.name)],
        Record::Vip(v) => vec![
            named("vip", v.load_balancer_id, &v.name),
            UniqueKey {
                constraint: "address, protocol and port on the load balancer",
                key: format!(
                    "uniq/vip/{}/{}/{}/{}",
                    v.load_balancer_id,
                    v.address,
                    v.protocol.as_str(),
                    v.port
                ),
                value: format!("{}/{}:{}", v.protocol.as_str(), v.address, v.port),
            },
        ],
        Record::PoolMember(m) => vec![UniqueKey {
            constraint: "address and port in pool",
            key: format!("uniq/member/{}/{}/{}", m.pool_id, m.address, m.port),
            value: format!("{}:{}", m.address, m.port),
        }],
        Record::HealthMonitor(h) => vec![UniqueKey {
            constraint: "one health monitor per pool",
            key: format!("uniq/monitor/{}", h.pool_id),
            value: h.pool_id.to_string(),
        }],
        _ => Vec::new(),
    }
}
