//! The topology dump: tenants, their routers (ports, routes) and bridges
//! (ports), every port with its MAC, address, binding and peer.

use std::collections::HashMap;
use std::fmt::Write;

use nsdb::{Bridge, Host, Port, Record, Route, RouteKind, Router, Tenant};
use serde::Serialize;
use uuid::Uuid;

/// Human names for ids, so that output says `router edge` rather than a UUID.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    names: HashMap<Uuid, (String, String)>,
}

impl Names {
    /// Indexes the names of `records`.
    pub fn of(records: &[Record]) -> Names {
        let mut names = HashMap::new();
        for record in records {
            let (kind, name) = match record {
                Record::Tenant(t) => ("tenant", t.name.clone()),
                Record::Router(r) => ("router", r.name.clone()),
                Record::Bridge(b) => ("bridge", b.name.clone()),
                Record::Host(h) => ("host", h.name.clone()),
                Record::Chain(c) => ("chain", c.name.clone()),
                Record::Port(p) => ("port", short(p.id)),
                Record::PortGroup(g) => ("port group", g.name.clone()),
                Record::IpAddressGroup(g) => ("address group", g.name.clone()),
                Record::LoadBalancer(lb) => ("load balancer", lb.name.clone()),
                Record::Pool(p) => ("pool", p.name.clone()),
                Record::Vip(v) => ("vip", v.name.clone()),
                Record::PoolMember(m) => ("member", format!("{}:{}", m.address, m.port)),
                Record::Rule(r) if r.description.is_empty() => ("rule", r.position.to_string()),
                Record::Rule(r) => ("rule", format!("{} ({})", r.position, r.description)),
                _ => continue,
            };
            names.insert(record.id(), (kind.to_string(), name));
        }
        Names { names }
    }

    /// `kind name` for a known id, the short id otherwise.
    pub fn describe(&self, id: Uuid) -> String {
        match self.names.get(&id) {
            Some((kind, name)) => format!("{kind} {name}"),
            None => short(id),
        }
    }

    /// The name of an id, or its short form.
    pub fn name(&self, id: Uuid) -> String {
        self.names
            .get(&id)
            .map_or_else(|| short(id), |(_, n)| n.clone())
    }
}

/// The first 8 hex digits of an id: enough to tell objects apart on screen.
pub fn short(id: Uuid) -> String {
    id.simple().to_string()[..8].to_string()
}

/// A port as dumped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortDump {
    /// The port.
    pub port: Port,
    /// `host interface` of an exterior port's binding.
    pub binding: Option<String>,
    /// `kind name` of the peer port's device, for interior ports.
    pub peer_device: Option<String>,
}

/// A router as dumped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouterDump {
    /// The router.
    pub router: Router,
    /// Its ports.
    pub ports: Vec<PortDump>,
    /// Its routes, most specific first.
    pub routes: Vec<Route>,
    /// Its load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<crate::lb::LbDump>,
}

/// A bridge as dumped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BridgeDump {
    /// The bridge.
    pub bridge: Bridge,
    /// Its ports.
    pub ports: Vec<PortDump>,
}

/// A tenant as dumped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TenantDump {
    /// The tenant.
    pub tenant: Tenant,
    /// Its routers, by name.
    pub routers: Vec<RouterDump>,
    /// Its bridges, by name.
    pub bridges: Vec<BridgeDump>,
}

/// The whole dump.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Dump {
    /// Tenants, by name.
    pub tenants: Vec<TenantDump>,
    #[serde(skip)]
    names: Names,
}

impl Dump {
    /// Builds the dump of `records`, keeping only `tenant` (an id or a name)
    /// when given.
    pub fn build(records: &[Record], tenant: Option<&str>) -> Dump {
        let names = Names::of(records);
        let hosts: HashMap<Uuid, &Host> = records
            .iter()
            .filter_map(|r| {
                if let Record::Host(h) = r {
                    Some((h.id, h))
                } else {
                    None
                }
            })
            .collect();
        let ports: HashMap<Uuid, &Port> = records
            .iter()
            .filter_map(|r| {
                if let Record::Port(p) = r {
                    Some((p.id, p))
                } else {
                    None
                }
            })
            .collect();
        let port_dump = |p: &Port| PortDump {
            port: p.clone(),
            binding: p.host_id.map(|h| {
                let host = hosts.get(&h).map_or_else(|| short(h), |h| h.name.clone());
                format!("{host} {}", p.interface_name.clone().unwrap_or_default())
            }),
            peer_device: p
                .peer_id
                .and_then(|peer| ports.get(&peer))
                .map(|peer| names.describe(peer.device_id)),
        };
        let ports_of = |device: Uuid| {
            let mut list: Vec<PortDump> = ports
                .values()
                .filter(|p| p.device_id == device)
                .map(|p| port_dump(p))
                .collect();
            list.sort_by_key(|p| (p.port.address.map(|a| a.to_string()), p.port.mac));
            list
        };
        let mut tenants: Vec<TenantDump> = records
            .iter()
            .filter_map(|r| {
                if let Record::Tenant(t) = r {
                    Some(t)
                } else {
                    None
                }
            })
            .filter(|t| tenant.is_none_or(|want| t.name == want || t.id.to_string() == want))
            .map(|t| {
                let mut routers: Vec<RouterDump> = records
                    .iter()
                    .filter_map(|r| {
                        if let Record::Router(x) = r {
                            Some(x)
                        } else {
                            None
                        }
                    })
                    .filter(|r| r.tenant_id == t.id)
                    .map(|r| {
                        let mut routes: Vec<Route> = records
                            .iter()
                            .filter_map(|x| {
                                if let Record::Route(x) = x {
                                    Some(x)
                                } else {
                                    None
                                }
                            })
                            .filter(|x| x.router_id == r.id)
                            .cloned()
                            .collect();
                        routes.sort_by_key(|x| {
                            (
                                std::cmp::Reverse(x.dst.prefix_len()),
                                x.weight,
                                x.dst.to_string(),
                            )
                        });
                        RouterDump {
                            router: r.clone(),
                            ports: ports_of(r.id),
                            routes,
                            load_balancer: crate::lb::LbDump::of(records, r.id),
                        }
                    })
                    .collect();
                routers.sort_by(|a, b| a.router.name.cmp(&b.router.name));
                let mut bridges: Vec<BridgeDump> = records
                    .iter()
                    .filter_map(|r| {
                        if let Record::Bridge(x) = r {
                            Some(x)
                        } else {
                            None
                        }
                    })
                    .filter(|b| b.tenant_id == t.id)
                    .map(|b| BridgeDump {
                        bridge: b.clone(),
                        ports: ports_of(b.id),
                    })
                    .collect();
                bridges.sort_by(|a, b| a.bridge.name.cmp(&b.bridge.name));
                TenantDump {
                    tenant: t.clone(),
                    routers,
                    bridges,
                }
            })
            .collect();
        tenants.sort_by(|a, b| a.tenant.name.cmp(&b.tenant.name));
        Dump { tenants, names }
    }

    /// The dump as an indented tree.
    pub fn render_tree(&self) -> String {
        let mut out = String::new();
        for t in &self.tenants {
            let access = match t.tenant.network {
                Some(n) => match (n.pod_cidr, n.nat_only) {
                    (Some(pods), false) => format!(" pods {pods} host access direct"),
                    (Some(pods), true) => format!(" pods {pods} host access NAT only"),
                    (None, true) => " host access NAT only".to_string(),
                    (None, false) => String::new(),
                },
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "tenant {} ({}){access}",
                t.tenant.name,
                short(t.tenant.id)
            );
            for r in &t.routers {
                let state = if r.router.admin_state_up {
                    ""
                } else {
                    " [down]"
                };
                let _ = writeln!(
                    out,
                    "    router {} ({}){state}",
                    r.router.name,
                    short(r.router.id)
                );
                for p in &r.ports {
                    self.render_port(&mut out, p);
                }
                for route in &r.routes {
                    let _ = writeln!(out, "        {}", self.render_route(route));
                }
                if let Some(lb) = &r.load_balancer {
                    lb.render(&mut out);
                }
            }
            for b in &t.bridges {
                let state = if b.bridge.admin_state_up {
                    ""
                } else {
                    " [down]"
                };
                let _ = writeln!(
                    out,
                    "    bridge {} ({}){state} flood key {}",
                    b.bridge.name,
                    short(b.bridge.id),
                    b.bridge.tunnel_key
                );
                for p in &b.ports {
                    self.render_port(&mut out, p);
                }
            }
        }
        if out.is_empty() {
            out.push_str("(no tenants)\n");
        }
        out
    }

    fn render_port(&self, out: &mut String, p: &PortDump) {
        let mut line = format!("        port {} mac {}", short(p.port.id), p.port.mac);
        if let Some(addr) = p.port.address {
            let _ = write!(line, " address {addr}");
        }
        for addr in &p.port.extra_addresses {
            let _ = write!(line, " address {addr}");
        }
        for allowed in &p.port.allowed_addresses {
            let _ = write!(line, " allowed {} {}", allowed.mac, allowed.ip);
        }
        match (&p.port.peer_id, &p.binding) {
            (Some(peer), _) => {
                let device = p.peer_device.clone().unwrap_or_else(|| "?".into());
                let _ = write!(line, " ↔ port {} on {device}", short(*peer));
            }
            (None, Some(binding)) => {
                let _ = write!(line, " bound to {binding}");
            }
            (None, None) => line.push_str(" (unbound)"),
        }
        if let Some(vtep) = &p.port.vtep {
            let _ = write!(
                line,
                " vtep vni {} remote {}:{}",
                vtep.vni, vtep.remote_ip, vtep.remote_port
            );
        }
        let _ = write!(line, " key {}", p.port.tunnel_key);
        let _ = writeln!(out, "{line}");
    }

    fn render_route(&self, route: &Route) -> String {
        let mut line = format!("route {}", route.dst);
        if route.src.prefix_len() != 0 {
            let _ = write!(line, " from {}", route.src);
        }
        match route.kind {
            RouteKind::Blackhole => line.push_str(" blackhole"),
            RouteKind::Reject => line.push_str(" reject"),
            RouteKind::Normal => {
                if let Some(port) = route.next_hop_port_id {
                    let _ = write!(line, " via port {}", short(port));
                }
                if let Some(gw) = route.next_hop_gateway {
                    let _ = write!(line, " gw {gw}");
                }
            }
        }
        let _ = write!(line, " weight {}", route.weight);
        line
    }

    /// The names index used for rendering.
    pub fn names(&self) -> &Names {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsdb::{DeviceType, MacAddr};

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n << 96)
    }

    fn port(
        n: u128,
        device: Uuid,
        device_type: DeviceType,
        mac: u8,
        address: Option<&str>,
    ) -> Port {
        Port {
            id: id(n),
            revision: 1,
            device_id: device,
            device_type,
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            address: address.map(|a| a.parse().unwrap()),
            extra_addresses: Vec::new(),
            peer_id: None,
            host_id: None,
            interface_name: None,
            inbound_chain_id: None,
            outbound_chain_id: None,
            allowed_addresses: Vec::new(),
            tunnel_key: n as u32,
            vtep: None,
            labels: Default::default(),
        }
    }

    fn sample() -> Vec<Record> {
        let tenant = Tenant {
            id: id(1),
            revision: 1,
            name: "acme".into(),
            network: Some(nsdb::TenantNetworkRef {
                router_id: id(2),
                bridge_id: id(3),
                pod_cidr: Some("10.0.1.0/24".parse().unwrap()),
                pod_cidr6: None,
                nat_only: false,
            }),
        };
        let router = Router {
            id: id(2),
            revision: 1,
            tenant_id: tenant.id,
            name: "edge".into(),
            admin_state_up: true,
            inbound_chain_id: None,
            outbound_chain_id: None,
        };
        let bridge = Bridge {
            id: id(3),
            revision: 1,
            tenant_id: tenant.id,
            name: "web".into(),
            admin_state_up: false,
            inbound_chain_id: None,
            outbound_chain_id: None,
            tunnel_key: 4,
        };
        let host = Host {
            id: id(4),
            revision: 1,
            name: "node1".into(),
            tunnel_ip: "192.0.2.1".parse().unwrap(),
            underlay_mtu: 1500,
            alive: true,
        };
        let mut rp = port(5, router.id, DeviceType::Router, 1, Some("10.0.1.1/24"));
        let mut bp = port(6, bridge.id, DeviceType::Bridge, 2, None);
        rp.peer_id = Some(bp.id);
        bp.peer_id = Some(rp.id);
        let mut pod = port(7, bridge.id, DeviceType::Bridge, 3, None);
        pod.host_id = Some(host.id);
        pod.interface_name = Some("veth-a".into());
        pod.vtep = Some(nsdb::VtepEndpoint {
            vni: 42,
            remote_ip: "192.0.2.50".parse().unwrap(),
            remote_port: 4789,
        });
        let route = Route {
            id: id(8),
            revision: 1,
            router_id: router.id,
            dst: "0.0.0.0/0".parse().unwrap(),
            src: "0.0.0.0/0".parse().unwrap(),
            next_hop_port_id: Some(rp.id),
            next_hop_gateway: Some("10.0.1.254".parse().unwrap()),
            weight: 10,
            kind: RouteKind::Normal,
        };
        let other = Tenant {
            id: id(9),
            revision: 1,
            name: "zeta".into(),
            network: Some(nsdb::TenantNetworkRef {
                router_id: id(10),
                bridge_id: id(11),
                pod_cidr: Some("10.0.1.0/24".parse().unwrap()),
                pod_cidr6: None,
                nat_only: true,
            }),
        };
        vec![
            Record::Tenant(tenant),
            Record::Router(router),
            Record::Bridge(bridge),
            Record::Host(host),
            Record::Port(rp),
            Record::Port(bp),
            Record::Port(pod),
            Record::Route(route),
            Record::Tenant(other),
        ]
    }

    #[test]
    fn renders_a_readable_tree() {
        let tree = Dump::build(&sample(), None).render_tree();
        let expected = "\
tenant acme (00000001) pods 10.0.1.0/24 host access direct
    router edge (00000002)
        port 00000005 mac 02:00:00:00:00:01 address 10.0.1.1/24 ↔ port 00000006 on bridge web key 5
        route 0.0.0.0/0 via port 00000005 gw 10.0.1.254 weight 10
    bridge web (00000003) [down] flood key 4
        port 00000006 mac 02:00:00:00:00:02 ↔ port 00000005 on router edge key 6
        port 00000007 mac 02:00:00:00:00:03 bound to node1 veth-a vtep vni 42 remote 192.0.2.50:4789 key 7
tenant zeta (00000009) pods 10.0.1.0/24 host access NAT only
";
        assert_eq!(tree, expected);
    }

    #[test]
    fn renders_a_load_balancer_under_its_router() {
        use nsdb::{
            HealthMonitor, LbAlgorithm, LbProtocol, LoadBalancer, MemberHealth, MonitorType, Pool,
            PoolMember, SessionAffinity, Vip,
        };
        let mut records = sample();
        let (tenant_id, lb, pool) = (id(1), id(20), id(21));
        records.push(Record::LoadBalancer(LoadBalancer {
            id: lb,
            revision: 1,
            tenant_id,
            router_id: id(2),
            name: "front".into(),
            admin_state_up: true,
        }));
        records.push(Record::Pool(Pool {
            id: pool,
            revision: 1,
            tenant_id,
            load_balancer_id: lb,
            name: "web".into(),
            algorithm: LbAlgorithm::Weighted,
            admin_state_up: true,
        }));
        records.push(Record::Vip(Vip {
            id: id(22),
            revision: 1,
            tenant_id,
            load_balancer_id: lb,
            name: "http".into(),
            pool_id: pool,
            address: "10.96.0.10".parse().unwrap(),
            protocol: LbProtocol::Tcp,
            port: 80,
            session_affinity: SessionAffinity::SourceIp,
            affinity_timeout_s: 60,
            admin_state_up: true,
        }));
        records.push(Record::HealthMonitor(HealthMonitor {
            id: id(23),
            revision: 1,
            tenant_id,
            pool_id: pool,
            kind: MonitorType::Http,
            http_path: "/healthz".into(),
            expected_status: 200,
            interval_ms: 1000,
            timeout_ms: 500,
            failures_to_down: 2,
            successes_to_up: 3,
            admin_state_up: true,
        }));
        for (n, health, up) in [
            (24, MemberHealth::Up, true),
            (25, MemberHealth::Down, false),
        ] {
            records.push(Record::PoolMember(PoolMember {
                id: id(n),
                revision: 1,
                tenant_id,
                pool_id: pool,
                address: format!("10.0.1.{n}").parse().unwrap(),
                port: 8080,
                weight: 2,
                admin_state_up: up,
                health,
            }));
        }
        let tree = Dump::build(&records, Some("acme")).render_tree();
        let expected = "\
        load balancer front (00000014)
            vip http 10.96.0.10:80/tcp → pool web affinity source_ip 60s
            pool web (00000015) weighted
                monitor http GET /healthz expects 200 every 1000 ms, timeout 500 ms, down after 2, up after 3
                member 10.0.1.24:8080 weight 2 health up
                member 10.0.1.25:8080 weight 2 health DOWN [down]
";
        assert!(tree.contains(expected), "{tree}");
        let names = Names::of(&records);
        assert_eq!(names.describe(id(24)), "member 10.0.1.24:8080");
    }

    #[test]
    fn filters_by_tenant_name_or_id_and_serializes() {
        let records = sample();
        let by_name = Dump::build(&records, Some("zeta"));
        assert_eq!(by_name.tenants.len(), 1);
        let by_id = Dump::build(&records, Some(&id(1).to_string()));
        assert_eq!(by_id.tenants[0].tenant.name, "acme");
        let json = serde_json::to_value(&by_id).unwrap();
        assert_eq!(
            json["tenants"][0]["routers"][0]["ports"][0]["port"]["address"],
            "10.0.1.1/24"
        );
        assert_eq!(
            json["tenants"][0]["bridges"][0]["ports"][1]["binding"],
            "node1 veth-a"
        );
        assert_eq!(
            Dump::build(&records, Some("nope")).render_tree(),
            "(no tenants)\n"
        );
    }
}
