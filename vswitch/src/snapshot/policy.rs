//! The policy part of a snapshot: chains with their rules in evaluation
//! order, group memberships, and which devices track connections.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use nsdb::{Record, Rule};
use uuid::Uuid;

use super::{Device, Topology};

/// A chain and its rules, sorted by position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainInfo {
    /// The chain's name.
    pub name: String,
    /// Its rules in evaluation order.
    pub rules: Vec<Rule>,
}

impl Topology {
    /// Indexes chains, rules and groups, and marks the devices whose
    /// chains (their own or their ports') need connection tracking.
    pub(super) fn index_policy(&mut self, records: &[&Record]) {
        let labelled = labelled_ports(records);
        for record in records {
            match record {
                Record::Chain(c) => {
                    self.chains.entry(c.id).or_default().name = c.name.clone();
                }
                Record::PortGroup(g) => {
                    let members = match &g.selector {
                        Some(selector) => labelled
                            .iter()
                            .filter(|p| p.tenant == g.tenant_id && selector.matches(&p.port.labels))
                            .map(|p| p.port.id)
                            .collect(),
                        None => g.port_ids.iter().copied().collect(),
                    };
                    self.port_groups.insert(g.id, members);
                }
                Record::IpAddressGroup(g) => {
                    let members = match &g.selector {
                        Some(selector) => {
                            let mut nets: Vec<IpNet> = labelled
                                .iter()
                                .filter(|p| {
                                    p.tenant == g.tenant_id && selector.matches(&p.port.labels)
                                })
                                .flat_map(|p| p.port.allowed_addresses.iter().map(|a| a.ip))
                                .collect();
                            nets.sort();
                            nets.dedup();
                            nets
                        }
                        None => g.addresses.clone(),
                    };
                    self.ip_groups.insert(g.id, members);
                }
                _ => {}
            }
        }
        for record in records {
            if let Record::Rule(rule) = record {
                // A rule of a chain that is not (yet) in the snapshot is kept
                // out: evaluating it would be evaluating half a chain.
                if let Some(chain) = self.chains.get_mut(&rule.chain_id) {
                    chain.rules.push(rule.clone());
                }
            }
        }
        for chain in self.chains.values_mut() {
            chain.rules.sort_by_key(|r| r.position);
        }
        let mut memo = HashMap::new();
        let devices: Vec<(Uuid, Vec<Option<Uuid>>)> = self
            .bridges
            .iter()
            .map(|(id, b)| (*id, vec![b.chains.0, b.chains.1]))
            .chain(
                self.routers
                    .iter()
                    .map(|(id, r)| (*id, vec![r.chains.0, r.chains.1])),
            )
            .collect();
        for (device, mut chains) in devices {
            for port in self.ports.values() {
                let owner = match port.device {
                    Device::Bridge(id) | Device::Router(id) => id,
                };
                if owner == device {
                    chains.extend([port.chains.0, port.chains.1]);
                }
            }
            if chains
                .into_iter()
                .flatten()
                .any(|c| self.chain_needs_conntrack(c, &mut memo, &mut HashSet::new()))
            {
                self.stateful.insert(device);
            }
        }
    }

    fn chain_needs_conntrack(
        &self,
        chain: Uuid,
        memo: &mut HashMap<Uuid, bool>,
        visiting: &mut HashSet<Uuid>,
    ) -> bool {
        if let Some(known) = memo.get(&chain) {
            return *known;
        }
        if !visiting.insert(chain) {
            return false;
        }
        let rules = self
            .chains
            .get(&chain)
            .map(|c| c.rules.as_slice())
            .unwrap_or(&[]);
        let needs = rules.iter().any(|r| r.needs_conntrack())
            || rules
                .iter()
                .filter_map(|r| r.jump_chain_id)
                .any(|target| self.chain_needs_conntrack(target, memo, visiting));
        memo.insert(chain, needs);
        needs
    }
}

/// A port with the tenant of its device, for selector groups.
struct Labelled<'a> {
    port: &'a nsdb::Port,
    tenant: Uuid,
}

/// Every port whose device is known, with its device's tenant.
fn labelled_ports<'a>(records: &[&'a Record]) -> Vec<Labelled<'a>> {
    let tenants: HashMap<Uuid, Uuid> = records
        .iter()
        .filter_map(|r| match r {
            Record::Bridge(b) => Some((b.id, b.tenant_id)),
            Record::Router(r) => Some((r.id, r.tenant_id)),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter_map(|r| match r {
            Record::Port(port) => tenants.get(&port.device_id).map(|tenant| Labelled {
                port,
                tenant: *tenant,
            }),
            _ => None,
        })
        .collect()
}

/// The provider settings an agent acts on (the uplink's host side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The provider router.
    pub router: Uuid,
    /// Its uplink port.
    pub uplink_port: Option<Uuid>,
    /// The host side's address beyond the uplink.
    pub uplink_gateway: Option<std::net::Ipv4Addr>,
    /// The default pod range (routed to the uplink on the host).
    pub pod_cidr: ipnet::Ipv4Net,
    /// The floating IP range (routed to the uplink on the host).
    pub external_cidr: ipnet::Ipv4Net,
}

/// Members of IP address groups, by group.
pub type IpGroups = HashMap<Uuid, Vec<IpNet>>;
