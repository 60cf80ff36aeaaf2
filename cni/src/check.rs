//! CHECK: the kernel and the NSDB still hold what ADD set up, and agree
//! with `prevResult`.

use ipnet::IpNet;

use crate::chain::PrevResult;
use crate::error::{code, CniError};
use crate::plumbing;
use crate::result::mac_string;
use crate::spec::Env;
use crate::Plugin;

/// CHECK: every difference found is listed in the error's details. The
/// `prevResult` may hold other plugins' interfaces too (a chain); only
/// this attachment's entries are compared.
pub(crate) async fn check(plugin: &Plugin, env: &Env) -> Result<(), CniError> {
    let key = plugin.key(env)?;
    let Some(prev) = &plugin.conf.prev_result else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult",
            "the runtime passes the result of ADD as prevResult",
        ));
    };
    let prev = PrevResult::parse(prev)?;
    let netns = plumbing::open_netns(&env.netns.clone().unwrap_or_default())?;
    let host = plugin.host().await?;
    let Some(attachment) = plugin.client.attachment(&key).await? else {
        return Err(CniError::new(
            code::CHECK_FAILED,
            "the attachment does not exist",
            format!("no port or lease for {}", key.owner()),
        ));
    };
    let host_if = key.host_interface();
    let mut wrong = Vec::new();
    if attachment.port.host_id != Some(host.id) {
        wrong.push(format!(
            "the port is bound to host {:?}, not {} ({})",
            attachment.port.host_id, host.id, host.name
        ));
    }
    if attachment.port.interface_name.as_deref() != Some(host_if.as_str()) {
        wrong.push(format!(
            "the port is bound to interface {:?}, not {host_if}",
            attachment.port.interface_name
        ));
    }
    if !attachment.active {
        wrong.push("the agent does not serve the port".to_string());
    }
    match rtnl::link_by_name(&host_if).map_err(|e| CniError::kernel("list links", e))? {
        None => wrong.push(format!("the host interface {host_if} is missing")),
        Some(link) if !link.up => wrong.push(format!("the host interface {host_if} is down")),
        Some(_) => {}
    }
    let view = plumbing::pod_view(&netns, &env.ifname)?;
    let pod_mac = attachment.port.mac.to_string();
    match &view.link {
        None => wrong.push(format!("{} is missing in the container", env.ifname)),
        Some(link) => {
            if mac_string(&link.mac) != pod_mac {
                wrong.push(format!(
                    "{} has MAC {}, not {pod_mac}",
                    env.ifname,
                    mac_string(&link.mac)
                ));
            }
            if !link.up {
                wrong.push(format!("{} is down", env.ifname));
            }
        }
    }
    let addresses = crate::add::pod_addresses(&attachment);
    for wanted in &addresses {
        match view.addresses.iter().find(|a| a.address == wanted.address) {
            None => wrong.push(format!(
                "{} lacks address {} (has {:?})",
                env.ifname,
                wanted.address,
                view.addresses.iter().map(|a| a.address).collect::<Vec<_>>()
            )),
            Some(a) if a.tentative() || a.dad_failed() => wrong.push(format!(
                "{}'s address {} is not usable (flags {:#x})",
                env.ifname, a.address, a.flags
            )),
            Some(_) => {}
        }
        if let Some(gateway) = wanted.gateway {
            if !view.default_gateways.contains(&gateway) {
                wrong.push(format!("no default route via {gateway} on {}", env.ifname));
            }
        }
    }
    if addresses.iter().any(|a| a.address.addr().is_ipv6()) {
        if let Some(problem) = view.link_local_problem() {
            wrong.push(format!("{}: {problem}", env.ifname));
        }
    }
    let listed: Vec<IpNet> = addresses.iter().map(|a| a.address).collect();
    wrong.extend(against_prev_result(&prev, &listed, &pod_mac, &env.ifname));
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::CHECK_FAILED,
            "the attachment is not as ADD left it",
            wrong.join("; "),
        ))
    }
}

/// What in `prev` (the ADD result, maybe with other plugins' entries)
/// disagrees with the attachment: the sandbox interface `ifname` must be
/// listed with `mac`, and each of `addresses` must be listed on it.
fn against_prev_result(
    prev: &PrevResult,
    addresses: &[IpNet],
    mac: &str,
    ifname: &str,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let pod = prev
        .interfaces()
        .iter()
        .position(|i| i["name"] == ifname && i.get("sandbox").is_some());
    match pod {
        None => wrong.push(format!("prevResult has no sandbox interface {ifname}")),
        Some(index) if prev.interfaces()[index]["mac"].as_str() != Some(mac) => {
            wrong.push(format!(
                "prevResult says {ifname} has MAC {}, not {mac}",
                prev.interfaces()[index]["mac"]
            ))
        }
        Some(_) => {}
    }
    for address in addresses {
        let address = address.to_string();
        let listed = prev
            .ips()
            .iter()
            .find(|ip| ip["address"].as_str() == Some(address.as_str()));
        match (listed, pod) {
            (None, _) => {
                let ips: Vec<&str> = prev
                    .ips()
                    .iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .collect();
                wrong.push(format!("prevResult lists ips {ips:?}, not {address}"));
            }
            (Some(ip), Some(index)) => match ip["interface"].as_u64() {
                Some(on) if on as usize != index => wrong.push(format!(
                    "prevResult puts {address} on interface {on} ({}), not {index} ({ifname})",
                    prev.interfaces()[on as usize]["name"]
                )),
                _ => {}
            },
            (Some(_), None) => {}
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prev_result_mismatches_are_named() {
        let prev = PrevResult::parse(&json!({
            "ips": [{"address": "10.0.0.5/24"}],
            "interfaces": [{"name": "plx1"}, {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/x"}],
        }))
        .unwrap();
        let addr: IpNet = "10.0.0.5/24".parse().unwrap();
        assert!(against_prev_result(&prev, &[addr], "02:00:00:00:00:01", "eth0").is_empty());
        let other: IpNet = "10.0.0.6/24".parse().unwrap();
        assert_eq!(
            against_prev_result(&prev, &[other], "02:00:00:00:00:02", "eth0").len(),
            2
        );
        assert_eq!(
            against_prev_result(&prev, &[addr], "02:00:00:00:00:01", "eth1").len(),
            1
        );
    }

    #[test]
    fn a_chained_prev_result_is_checked_on_this_interface_only() {
        let chained = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "net1", "mac": "66:b4:9d:e0:21:b9", "sandbox": "/x"},
                {"name": "plx1", "mac": "02:00:00:00:00:09"},
                {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/x"},
            ],
            "ips": [
                {"interface": 0, "address": "10.99.0.5/24"},
                {"interface": 2, "address": "10.0.0.5/24"},
            ],
        });
        let addr: IpNet = "10.0.0.5/24".parse().unwrap();
        let prev = PrevResult::parse(&chained).unwrap();
        assert!(against_prev_result(&prev, &[addr], "02:00:00:00:00:01", "eth0").is_empty());
        // The address listed on another plugin's interface is a difference.
        let mut misplaced = chained.clone();
        misplaced["ips"][1]["interface"] = json!(0);
        let prev = PrevResult::parse(&misplaced).unwrap();
        let wrong = against_prev_result(&prev, &[addr], "02:00:00:00:00:01", "eth0");
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].contains("net1"), "{wrong:?}");
    }
}
