//! The datapath's counters in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::Datapath;
use crate::feed::BuildKind;
use crate::io::PortIo;

impl Datapath {
    /// Prometheus text of the datapath's counters.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let stats = self.core_stats();
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_hits_total counter\nplexus_flow_cache_hits_total {}",
            stats.flows.hits
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_misses_total counter\nplexus_flow_cache_misses_total {}",
            stats.flows.misses
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_invalidations_total counter\nplexus_flow_cache_invalidations_total {}",
            stats.flows.invalidations
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_flows gauge\nplexus_flow_cache_flows {}",
            stats.flow_count
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_learned_entries gauge\nplexus_learned_entries{{table=\"mac\"}} {}",
            stats.macs
        );
        let _ = writeln!(
            out,
            "plexus_learned_entries{{table=\"arp\"}} {}",
            stats.arps
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_conntrack_entries gauge\nplexus_conntrack_entries {}",
            stats.conns
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_conntrack_refused_total counter\nplexus_conntrack_refused_total {}",
            stats.conns_refused
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_poller_batches_total counter\nplexus_poller_batches_total {}",
            self.polled_batches()
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_poller_tunnel_batches_total counter\nplexus_poller_tunnel_batches_total {}",
            self.polled_tunnel_batches()
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_port_queue_frames_total counter\nplexus_port_queue_frames_total {}",
            self.queue_frames()
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_shared_packet_sockets gauge\nplexus_shared_packet_sockets {}",
            self.shared_socket_count()
        );
        if let Some(tunnel) = self.tunnel() {
            let _ = writeln!(
                out,
                "# TYPE plexus_tunnel_sockets gauge\nplexus_tunnel_sockets {}\n\
                 # TYPE plexus_tunnel_reads_total counter",
                tunnel.receivers().len()
            );
            for (k, socket) in tunnel.receivers().iter().enumerate() {
                let _ = writeln!(
                    out,
                    "plexus_tunnel_reads_total{{socket=\"{k}\"}} {}",
                    socket.reads()
                );
            }
        }
        let _ = writeln!(
            out,
            "# TYPE plexus_generated_frames_total counter\nplexus_generated_frames_total {}",
            self.generated.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_tunnel_offloaded_frames_total counter\n\
             plexus_tunnel_offloaded_frames_total{{way=\"sent\",carried=\"pieces\"}} {}\n\
             plexus_tunnel_offloaded_frames_total{{way=\"received\",carried=\"pieces\"}} {}\n\
             plexus_tunnel_offloaded_frames_total{{way=\"sent\",carried=\"whole\"}} {}\n\
             plexus_tunnel_offloaded_frames_total{{way=\"received\",carried=\"whole\"}} {}",
            self.offloads_sent.load(Ordering::Relaxed),
            self.offloads_received.load(Ordering::Relaxed),
            self.offloads_sent_whole.load(Ordering::Relaxed),
            self.offloads_received_whole.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_tunnel_gathered_frames_total counter\n\
             plexus_tunnel_gathered_frames_total {}",
            self.offloads_gathered.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_udp_datagrams_merged_total counter\n\
             plexus_udp_datagrams_merged_total {}",
            self.udp_merged.load(Ordering::Relaxed)
        );
        let kinds = [BuildKind::Whole, BuildKind::Routes, BuildKind::Bindings];
        let _ = writeln!(out, "# TYPE plexus_topology_builds_total counter");
        for kind in kinds {
            let (builds, _) = self.topology.builds(kind);
            let name = kind.name();
            let _ = writeln!(
                out,
                "plexus_topology_builds_total{{kind=\"{name}\"}} {builds}"
            );
        }
        let _ = writeln!(out, "# TYPE plexus_topology_build_seconds_total counter");
        for kind in kinds {
            let (_, seconds) = self.topology.builds(kind);
            let name = kind.name();
            let _ = writeln!(
                out,
                "plexus_topology_build_seconds_total{{kind=\"{name}\"}} {seconds:.6}"
            );
        }
        let _ = writeln!(
            out,
            "# TYPE plexus_tcp_segments_merged_total counter\n\
             plexus_tcp_segments_merged_total {}",
            self.tcp_merged.load(Ordering::Relaxed)
        );
        let ports = self.ports.read().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# TYPE plexus_port_packets_total counter");
        for (id, port) in ports.iter() {
            let c = &port.counters;
            let packets = [
                ("rx", &c.rx),
                ("tx", &c.tx),
                ("drop", &c.drops),
                ("answered", &c.answered),
                ("held", &c.held),
            ];
            for (dir, value) in packets {
                let _ = writeln!(
                    out,
                    "plexus_port_packets_total{{port=\"{id}\",interface=\"{}\",direction=\"{dir}\"}} {}",
                    port.io.ifname(),
                    value.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# TYPE plexus_port_bytes_total counter");
        for (id, port) in ports.iter() {
            let c = &port.counters;
            for (dir, value) in [("rx", &c.rx_bytes), ("tx", &c.tx_bytes)] {
                let _ = writeln!(
                    out,
                    "plexus_port_bytes_total{{port=\"{id}\",interface=\"{}\",direction=\"{dir}\"}} {}",
                    port.io.ifname(),
                    value.load(Ordering::Relaxed)
                );
            }
        }
        let mut rules: Vec<_> = self.core.rule_hits().into_iter().collect();
        rules.sort_unstable();
        let _ = writeln!(out, "# TYPE plexus_rule_hits_total counter");
        for (hit, count) in rules {
            let _ = writeln!(
                out,
                "plexus_rule_hits_total{{chain=\"{}\",rule=\"{}\"}} {count}",
                hit.chain, hit.rule
            );
        }
        let _ = writeln!(out, "# TYPE plexus_datapath_drops_total counter");
        for (reason, count) in self.drops.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "plexus_datapath_drops_total{{reason=\"{reason}\"}} {count}"
            );
        }
        out
    }
}
