//! The load-balancer stage of a router: a new connection to one of the
//! router's VIPs is translated to a pool member (tracked like any DNAT, so
//! later packets follow it and replies come back from the VIP), and a
//! connection whose member sits behind the port the client came in by is
//! also translated to the router's address there (hairpin), so the
//! member's replies come back through the router — except behind a bridge,
//! which sends the member's replies to the router itself (see
//! `engine::bridge`), so the member sees the client's own address.

use crate::engine::Stage;
use std::net::IpAddr;

use uuid::Uuid;

use super::{Here, Run, Stop};
use crate::conntrack::ConnKey;
use crate::engine::chain::Tracked;
use crate::engine::{lb, nat, Learned, Learning, Rewrite, Tag};
use crate::snapshot::Device;

impl<L: Learned + ?Sized> Run<'_, L> {
    /// Balances a new connection to a VIP of `router`'s load balancer,
    /// arrived by `in_port`. `Err` when no member can take it.
    pub(super) fn balance(
        &mut self,
        router: Uuid,
        in_port: Uuid,
        here: &mut Here,
    ) -> Result<(), Stop> {
        let Some(balancer) = self.topo.load_balancers.get(&router) else {
            return Ok(());
        };
        let device = Some(Device::Router(router));
        let (Tracked::New, Some(key), false) = (here.tracked, here.key(), here.dnat_done) else {
            if let Some((_, conn)) = here.conn {
                // An established connection depends on the member it uses.
                let backend = conn.reply.src;
                if let IpAddr::V4(address) = backend {
                    let members =
                        balancer
                            .backends
                            .get(&(address, conn.reply.proto, conn.reply.sport));
                    for member in members.into_iter().flatten() {
                        self.sim.tag(Tag::LbMember(*member));
                    }
                }
            }
            return Ok(());
        };
        let IpAddr::V4(dst) = key.dst else {
            return Ok(());
        };
        let Some(vip) = balancer.vips.get(&(dst, key.proto, key.dport)) else {
            return Ok(());
        };
        let affinity = vip
            .affinity_ms
            .and_then(|_| self.learned.affinity(vip.id, key.src));
        let Some((member, why)) = lb::choose(vip, &key, affinity) else {
            self.sim.step(
                device,
                Some(in_port),
                Stage::LoadBalancer,
                format_args!(
                    "vip {} {dst}:{} pool {}: no member can take a new connection",
                    vip.name, key.dport, vip.pool
                ),
            );
            return Err(Stop::NoMember);
        };
        self.sim.tag(Tag::LbMember(member.id));
        self.sim.step(
            device,
            Some(in_port),
            Stage::LoadBalancer,
            format_args!(
                "vip {} {dst}:{} pool {}: member {} {}:{} ({why})",
                vip.name, key.dport, vip.pool, member.id, member.address, member.port
            ),
        );
        let mut translated = ConnKey {
            dst: IpAddr::V4(member.address),
            dport: member.port,
            ..key
        };
        if !nat::free(self.learned, router, &translated) {
            // Another live connection already answers from the member to
            // this client port: move this one's source port, as NAT does.
            match nat::masquerade(self.learned, router, translated, key.src) {
                Ok(moved) => {
                    self.sim.step(
                        device,
                        Some(in_port),
                        Stage::Nat,
                        format_args!(
                            "{translated} collides with a tracked connection: source port {} → {}",
                            key.sport, moved.sport
                        ),
                    );
                    translated = moved;
                }
                Err(nat::Exhausted) => {
                    self.sim.step(
                        device,
                        Some(in_port),
                        Stage::Nat,
                        format_args!("{translated} collides and no source port is free"),
                    );
                    return Err(Stop::Exhausted);
                }
            }
        }
        if let Some(timeout_ms) = vip.affinity_ms {
            self.sim.learned.push(Learning::Affinity {
                vip: vip.id,
                client: key.src,
                member: member.id,
                timeout_ms,
            });
        }
        self.sim.step(
            device,
            Some(in_port),
            Stage::Nat,
            format_args!("dnat {key} → {translated}"),
        );
        here.apply(Rewrite {
            ip_dst: nat::changed(key.dst, translated.dst),
            dst_port: (translated.dport != key.dport).then_some(translated.dport),
            src_port: (translated.sport != key.sport).then_some(translated.sport),
            ..Rewrite::default()
        });
        here.dnat_done = true;
        here.balanced_from = Some(in_port);
        Ok(())
    }

    /// A balanced connection leaving by the port its client came in by:
    /// its source becomes the router's address on that port, so the
    /// member answers the router, not the client directly.
    pub(super) fn hairpin(
        &mut self,
        router: Uuid,
        out: Uuid,
        branch: &mut Here,
    ) -> Result<(), Stop> {
        if branch.balanced_from != Some(out) || branch.snat_done {
            return Ok(());
        }
        // Behind a bridge, the member's replies come back to the router
        // (the bridge sends them here), so the client keeps its address —
        // unless the member is the client itself, which would see a packet
        // from its own address.
        let bridged = self
            .topo
            .ports
            .get(&out)
            .and_then(|p| p.peer)
            .and_then(|peer| self.topo.ports.get(&peer))
            .is_some_and(|peer| matches!(peer.device, Device::Bridge(_)));
        if let (true, Some(key)) = (bridged, branch.key()) {
            if key.src != key.dst {
                return Ok(());
            }
        }
        let device = Some(Device::Router(router));
        // Load-balanced VIPs are IPv4: so is the hairpin's source.
        let address = self
            .topo
            .ports
            .get(&out)
            .and_then(|p| p.address)
            .map(|a| IpAddr::V4(a.addr()));
        let (Some(address), Some(key)) = (address, branch.key().filter(|k| k.src.is_ipv4())) else {
            return Ok(());
        };
        match nat::masquerade(self.learned, router, key, address) {
            Ok(new) => {
                self.sim.step(
                    device,
                    Some(out),
                    Stage::Nat,
                    format_args!("hairpin: member is behind the client's port; snat {key} → {new}"),
                );
                branch.apply(Rewrite {
                    ip_src: nat::changed(key.src, new.src),
                    src_port: (new.sport != key.sport).then_some(new.sport),
                    ..Rewrite::default()
                });
                branch.snat_done = true;
                Ok(())
            }
            Err(nat::Exhausted) => {
                self.sim.step(
                    device,
                    Some(out),
                    Stage::Nat,
                    format_args!("hairpin: no free port on {address} for {key}"),
                );
                Err(Stop::Exhausted)
            }
        }
    }
}
