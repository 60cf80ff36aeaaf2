//! Rendering a simulation as a trace: each device the packet crossed, what
//! it matched and changed, where the packet went, and the final verdict.

use std::fmt::Write;

use serde_json::{json, Value};
use uuid::Uuid;
use vswitch::engine::{Rewrite, Simulation};
use vswitch::snapshot::Device;

use crate::dump::Names;

/// Replaces every UUID in `text` by the name `names` knows for it.
fn with_names(text: &str, names: &Names) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_hexdigit()) {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        match candidate.get(..36).and_then(|s| Uuid::parse_str(s).ok()) {
            Some(id) if candidate.as_bytes().get(8) == Some(&b'-') => {
                out.push_str(&names.name(id));
                rest = &candidate[36..];
            }
            _ => {
                let len = candidate.chars().next().map_or(1, char::len_utf8);
                out.push_str(&candidate[..len]);
                rest = &candidate[len..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn device_name(device: &Device, names: &Names) -> String {
    match device {
        Device::Bridge(id) | Device::Router(id) => names.describe(*id),
    }
}

fn mac(m: &[u8; 6]) -> String {
    nsdb::MacAddr(*m).to_string()
}

fn describe_rewrite(rewrite: &Rewrite) -> String {
    let mut parts = Vec::new();
    if let Some(src) = rewrite.eth_src {
        parts.push(format!("eth.src={}", mac(&src)));
    }
    if let Some(dst) = rewrite.eth_dst {
        parts.push(format!("eth.dst={}", mac(&dst)));
    }
    if rewrite.ttl_decrement > 0 {
        parts.push(format!("ttl-{}", rewrite.ttl_decrement));
    }
    if parts.is_empty() {
        "unchanged".into()
    } else {
        parts.join(" ")
    }
}

/// The trace as text, one block per device crossed.
pub fn render_trace(sim: &Simulation, names: &Names) -> String {
    let mut out = String::new();
    let mut current: Option<Device> = None;
    for step in &sim.trace {
        if step.device != current || step.stage == "ingress" {
            if let Some(device) = &step.device {
                let _ = writeln!(out, "{}", device_name(device, names));
            }
            current = step.device;
        }
        let _ = writeln!(
            out,
            "    {}: {}",
            step.stage,
            with_names(&step.detail, names)
        );
    }
    let _ = writeln!(out, "verdict: {}", sim.verdict());
    for output in &sim.outputs {
        let _ = writeln!(
            out,
            "    deliver to port {} ({})",
            names.name(output.egress.port),
            describe_rewrite(&output.rewrite)
        );
    }
    for generated in &sim.generated {
        let _ = writeln!(
            out,
            "    reply of {} bytes out of port {}",
            generated.frame.len(),
            names.name(generated.egress.port)
        );
    }
    for drop in &sim.drops {
        let _ = writeln!(out, "    dropped: {drop:?}");
    }
    if let Some((router, ip)) = sim.held_for {
        let _ = writeln!(
            out,
            "    held until {} resolves {ip}",
            names.describe(router)
        );
    }
    out
}

/// The trace as JSON.
pub fn trace_json(sim: &Simulation, names: &Names) -> Value {
    let device = |d: &Option<Device>| match d {
        Some(Device::Bridge(id)) => json!({"type": "bridge", "id": id, "name": names.name(*id)}),
        Some(Device::Router(id)) => json!({"type": "router", "id": id, "name": names.name(*id)}),
        None => Value::Null,
    };
    json!({
        "verdict": sim.verdict(),
        "steps": sim.trace.iter().map(|s| json!({
            "device": device(&s.device),
            "port": s.port,
            "stage": s.stage,
            "detail": with_names(&s.detail, names),
        })).collect::<Vec<_>>(),
        "outputs": sim.outputs.iter().map(|o| json!({
            "port": o.egress.port,
            "host": o.egress.host,
            "rewrite": describe_rewrite(&o.rewrite),
        })).collect::<Vec<_>>(),
        "replies": sim.generated.iter().map(|g| json!({"port": g.egress.port, "bytes": g.frame.len()})).collect::<Vec<_>>(),
        "drops": sim.drops.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>(),
        "held_for": sim.held_for.map(|(router, ip)| json!({"router": router, "ip": ip})),
    })
}
