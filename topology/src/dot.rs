//! The topology as a Graphviz graph (`plexus topology --format dot`): one
//! cluster per tenant, routers as boxes, bridges as ellipses, exterior
//! ports as notes with their binding and addresses, and an edge per link
//! between interior ports (labelled with the router side's address).

use std::collections::BTreeMap;
use std::fmt::Write;

use uuid::Uuid;

use crate::dump::{short, Dump, PortDump};

/// `text` as a DOT string literal.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The DOT id of a record.
fn node(id: Uuid) -> String {
    quoted(&id.to_string())
}

/// An exterior port's label: its short id, binding, addresses.
fn port_label(port: &PortDump) -> String {
    let mut label = format!("port {}", short(port.port.id));
    if let Some(binding) = &port.binding {
        label.push_str(&format!("\n{binding}"));
    }
    if let Some(vtep) = &port.port.vtep {
        label.push_str(&format!("\nvtep vni {} → {}", vtep.vni, vtep.remote_ip));
    }
    for allowed in &port.port.allowed_addresses {
        label.push_str(&format!("\n{}", allowed.ip));
    }
    label
}

impl Dump {
    /// The dump as a Graphviz graph.
    pub fn render_dot(&self) -> String {
        let mut out = String::from(
            "graph plexus {\n  graph [rankdir=LR, fontname=\"sans-serif\"];\n  node [fontname=\"sans-serif\", fontsize=10];\n  edge [fontname=\"sans-serif\", fontsize=9];\n",
        );
        // Each link once, by its ports (lower id first), with its label.
        let mut links: BTreeMap<(Uuid, Uuid), String> = BTreeMap::new();
        for (n, tenant) in self.tenants.iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_{n} {{");
            let _ = writeln!(
                out,
                "    label={};",
                quoted(&format!("tenant {}", tenant.tenant.name))
            );
            let devices = tenant
                .routers
                .iter()
                .map(|r| {
                    (
                        r.router.id,
                        format!("router {}", r.router.name),
                        "box",
                        &r.ports,
                    )
                })
                .chain(tenant.bridges.iter().map(|b| {
                    (
                        b.bridge.id,
                        format!("bridge {}", b.bridge.name),
                        "ellipse",
                        &b.ports,
                    )
                }));
            for (id, label, shape, ports) in devices {
                let _ = writeln!(
                    out,
                    "    {} [label={}, shape={shape}];",
                    node(id),
                    quoted(&label)
                );
                for port in ports {
                    let p = &port.port;
                    match p.peer_id {
                        Some(peer) => {
                            let label = links.entry((p.id.min(peer), p.id.max(peer))).or_default();
                            let addresses: Vec<String> = p
                                .address
                                .iter()
                                .chain(&p.extra_addresses)
                                .map(|a| a.to_string())
                                .collect();
                            if !addresses.is_empty() {
                                // A router side names the link.
                                if !label.is_empty() {
                                    label.push_str(" — ");
                                }
                                label.push_str(&addresses.join(", "));
                            }
                        }
                        None => {
                            let _ = writeln!(
                                out,
                                "    {} [label={}, shape=note];",
                                node(p.id),
                                quoted(&port_label(port))
                            );
                            let label = p
                                .address
                                .iter()
                                .chain(&p.extra_addresses)
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(", ");
                            let _ = writeln!(
                                out,
                                "    {} -- {} [label={}];",
                                node(id),
                                node(p.id),
                                quoted(&label)
                            );
                        }
                    }
                }
            }
            out.push_str("  }\n");
        }
        // A link joins the devices of its two ports (either may be in
        // another tenant, such as the provider router).
        let device_of = |port: Uuid| -> Option<Uuid> {
            self.tenants.iter().find_map(|t| {
                t.routers
                    .iter()
                    .find(|r| r.ports.iter().any(|p| p.port.id == port))
                    .map(|r| r.router.id)
                    .or_else(|| {
                        t.bridges
                            .iter()
                            .find(|b| b.ports.iter().any(|p| p.port.id == port))
                            .map(|b| b.bridge.id)
                    })
            })
        };
        for ((a, b), label) in &links {
            if let (Some(from), Some(to)) = (device_of(*a), device_of(*b)) {
                let _ = writeln!(
                    out,
                    "  {} -- {} [label={}, penwidth=2];",
                    node(from),
                    node(to),
                    quoted(label)
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use nsdb::{Bridge, DeviceType, MacAddr, Port, Record, Router, Tenant};
    use uuid::Uuid;

    use crate::Dump;

    fn port(id: u128, device: u128, device_type: DeviceType, peer: Option<u128>) -> Port {
        Port {
            id: Uuid::from_u128(id),
            revision: 1,
            device_id: Uuid::from_u128(device),
            device_type,
            mac: MacAddr([2, 0, 0, 0, 0, id as u8]),
            address: None,
            extra_addresses: Vec::new(),
            peer_id: peer.map(Uuid::from_u128),
            host_id: None,
            interface_name: None,
            inbound_chain_id: None,
            outbound_chain_id: None,
            allowed_addresses: vec![],
            tunnel_key: id as u32,
            vtep: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn a_tenant_router_bridge_link_and_pod_port() {
        let tenant = Uuid::from_u128(1);
        let mut router_port = port(0x21, 0x10, DeviceType::Router, Some(0x22));
        router_port.address = Some("10.0.0.1/24".parse().unwrap());
        let mut pod = port(0x23, 0x11, DeviceType::Bridge, None);
        pod.interface_name = Some("veth\"x".into());
        pod.allowed_addresses = vec![nsdb::AllowedAddress {
            mac: pod.mac,
            ip: "10.0.0.5/32".parse().unwrap(),
        }];
        let records = vec![
            Record::Tenant(Tenant {
                id: tenant,
                revision: 1,
                name: "acme".into(),
                network: None,
            }),
            Record::Router(Router {
                id: Uuid::from_u128(0x10),
                revision: 1,
                tenant_id: tenant,
                name: "edge".into(),
                admin_state_up: true,
                inbound_chain_id: None,
                outbound_chain_id: None,
            }),
            Record::Bridge(Bridge {
                id: Uuid::from_u128(0x11),
                revision: 1,
                tenant_id: tenant,
                name: "pods".into(),
                admin_state_up: true,
                inbound_chain_id: None,
                outbound_chain_id: None,
                tunnel_key: 7,
            }),
            Record::Port(router_port),
            Record::Port(port(0x22, 0x11, DeviceType::Bridge, Some(0x21))),
            Record::Port(pod),
        ];
        let dot = Dump::build(&records, None).render_dot();
        let router = format!("\"{}\"", Uuid::from_u128(0x10));
        let bridge = format!("\"{}\"", Uuid::from_u128(0x11));
        let pod = format!("\"{}\"", Uuid::from_u128(0x23));
        assert!(dot.starts_with("graph plexus {"), "{dot}");
        assert!(dot.contains("label=\"tenant acme\""), "{dot}");
        assert!(
            dot.contains(&format!("{router} [label=\"router edge\", shape=box]")),
            "{dot}"
        );
        assert!(
            dot.contains(&format!("{bridge} [label=\"bridge pods\", shape=ellipse]")),
            "{dot}"
        );
        // One edge for the link, named by the router's address.
        let link = format!("{router} -- {bridge} [label=\"10.0.0.1/24\", penwidth=2]");
        assert_eq!(dot.matches(&link).count(), 1, "{dot}");
        assert!(dot.contains(&format!("{bridge} -- {pod}")), "{dot}");
        assert!(dot.contains("10.0.0.5/32"), "{dot}");
        assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{dot}");
    }
}
