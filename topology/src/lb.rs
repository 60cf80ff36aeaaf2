//! The load balancer of a router in the topology dump: its VIPs, and its
//! pools with their monitor and members' health.

use std::fmt::Write;

use nsdb::{
    HealthMonitor, LoadBalancer, MemberHealth, MonitorType, Pool, PoolMember, Record,
    SessionAffinity, Vip,
};
use serde::Serialize;
use uuid::Uuid;

use crate::dump::short;

/// A pool as dumped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PoolDump {
    /// The pool.
    pub pool: Pool,
    /// Its health monitor.
    pub monitor: Option<HealthMonitor>,
    /// Its members, by address and port.
    pub members: Vec<PoolMember>,
}

/// A load balancer as dumped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LbDump {
    /// The load balancer.
    pub load_balancer: LoadBalancer,
    /// Its VIPs, by name.
    pub vips: Vec<Vip>,
    /// Its pools, by name.
    pub pools: Vec<PoolDump>,
}

fn all<'a, T: 'a>(
    records: &'a [Record],
    pick: impl Fn(&'a Record) -> Option<&'a T> + 'a,
) -> impl Iterator<Item = &'a T> + 'a {
    records.iter().filter_map(pick)
}

impl LbDump {
    /// The load balancer of `router` in `records`, if it has one.
    pub fn of(records: &[Record], router: Uuid) -> Option<LbDump> {
        let load_balancer = all(records, |r| match r {
            Record::LoadBalancer(lb) => Some(lb),
            _ => None,
        })
        .find(|lb| lb.router_id == router)?
        .clone();
        let mut vips: Vec<Vip> = all(records, |r| match r {
            Record::Vip(v) => Some(v),
            _ => None,
        })
        .filter(|v| v.load_balancer_id == load_balancer.id)
        .cloned()
        .collect();
        vips.sort_by(|a, b| a.name.cmp(&b.name));
        let mut pools: Vec<PoolDump> = all(records, |r| match r {
            Record::Pool(p) => Some(p),
            _ => None,
        })
        .filter(|p| p.load_balancer_id == load_balancer.id)
        .map(|pool| {
            let monitor = all(records, |r| match r {
                Record::HealthMonitor(h) => Some(h),
                _ => None,
            })
            .find(|h| h.pool_id == pool.id)
            .cloned();
            let mut members: Vec<PoolMember> = all(records, |r| match r {
                Record::PoolMember(m) => Some(m),
                _ => None,
            })
            .filter(|m| m.pool_id == pool.id)
            .cloned()
            .collect();
            members.sort_by_key(|m| (m.address, m.port));
            PoolDump {
                pool: pool.clone(),
                monitor,
                members,
            }
        })
        .collect();
        pools.sort_by(|a, b| a.pool.name.cmp(&b.pool.name));
        Some(LbDump {
            load_balancer,
            vips,
            pools,
        })
    }

    /// The load balancer as lines of the tree, indented under its router.
    pub fn render(&self, out: &mut String) {
        let lb = &self.load_balancer;
        let _ = writeln!(
            out,
            "        load balancer {} ({}){}",
            lb.name,
            short(lb.id),
            down(lb.admin_state_up)
        );
        let pool_name = |id: Uuid| {
            self.pools
                .iter()
                .find(|p| p.pool.id == id)
                .map_or_else(|| short(id), |p| p.pool.name.clone())
        };
        for vip in &self.vips {
            let affinity = match vip.session_affinity {
                SessionAffinity::None => String::new(),
                SessionAffinity::SourceIp => {
                    format!(" affinity source_ip {}s", vip.affinity_timeout_s)
                }
            };
            let _ = writeln!(
                out,
                "            vip {} {}:{}/{} → pool {}{affinity}{}",
                vip.name,
                vip.address,
                vip.port,
                vip.protocol.as_str(),
                pool_name(vip.pool_id),
                down(vip.admin_state_up)
            );
        }
        for pool in &self.pools {
            let algorithm = serde_json::to_value(pool.pool.algorithm)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "            pool {} ({}) {algorithm}{}",
                pool.pool.name,
                short(pool.pool.id),
                down(pool.pool.admin_state_up)
            );
            if let Some(m) = &pool.monitor {
                let probe = match m.kind {
                    MonitorType::Tcp => "tcp connect".to_string(),
                    MonitorType::Http => {
                        format!("http GET {} expects {}", m.http_path, m.expected_status)
                    }
                };
                let _ = writeln!(
                    out,
                    "                monitor {probe} every {} ms, timeout {} ms, down after {}, up after {}{}",
                    m.interval_ms,
                    m.timeout_ms,
                    m.failures_to_down,
                    m.successes_to_up,
                    down(m.admin_state_up)
                );
            }
            for member in &pool.members {
                let health = match member.health {
                    MemberHealth::Unknown => "unknown",
                    MemberHealth::Up => "up",
                    MemberHealth::Down => "DOWN",
                };
                let _ = writeln!(
                    out,
                    "                member {}:{} weight {} health {health}{}",
                    member.address,
                    member.port,
                    member.weight,
                    down(member.admin_state_up)
                );
            }
        }
    }
}

fn down(up: bool) -> &'static str {
    if up {
        ""
    } else {
        " [down]"
    }
}
