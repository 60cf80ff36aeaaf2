//! ADD and DEL.

use std::time::{Duration, Instant};

use api::provision::{Attachment, AttachmentKey, AttachmentRequest};
use nsdb::Tenant;
use serde_json::Value;
use uuid::Uuid;

use crate::chain::PrevResult;
use crate::error::{code, CniError};
use crate::plumbing::{self, PodAddress};
use crate::result::{mac_string, Outcome};
use crate::spec::{Env, Placement};
use crate::Plugin;

/// How often ADD asks whether the agent serves the port yet.
const ACTIVE_POLL: Duration = Duration::from_millis(5);

/// ADD: see the crate docs. Any failure after the veth exists undoes
/// everything (as a DEL would) before returning the error. A `prevResult`
/// is checked before anything is created, and the result is it plus this
/// attachment (see [`crate::chain`]).
pub(crate) async fn add(plugin: &Plugin, env: &Env) -> Result<Value, CniError> {
    let key = plugin.key(env)?;
    let prev = plugin
        .conf
        .prev_result
        .as_ref()
        .map(PrevResult::parse)
        .transpose()?;
    let netns_path = env.netns.clone().unwrap_or_default();
    let netns = plumbing::open_netns(&netns_path)?;
    let host_id = plugin.host_id().await?;
    let placement = placement(plugin, env).await?;
    let host_if = key.host_interface();
    plumbing::ensure_veth(&host_if, &key.owner(), &netns, &env.ifname, key.mac().0)?;
    match attach(plugin, env, &key, host_id, placement, &netns).await {
        Ok(outcome) => {
            let version = &plugin.conf.cni_version;
            let own = outcome.to_json(version);
            Ok(match prev {
                Some(prev) => prev.merge(&own, version),
                None => own,
            })
        }
        Err(error) => {
            if let Err(undo) = remove(plugin, &key).await {
                eprintln!(
                    "plexus-cni: undoing the failed ADD: {}: {}",
                    undo.msg, undo.details
                );
            }
            Err(error)
        }
    }
}

/// The steps of ADD after the veth exists.
async fn attach(
    plugin: &Plugin,
    env: &Env,
    key: &AttachmentKey,
    host_id: Uuid,
    placement: Placement,
    netns: &std::fs::File,
) -> Result<Outcome, CniError> {
    let sandbox = env.netns.clone().unwrap_or_default().display().to_string();
    let host_if = key.host_interface();
    let alias = key.owner();
    plumbing::configure_host_end(&host_if, &alias, plugin.conf.mtu)?;
    let request = AttachmentRequest {
        host_id,
        interface_name: host_if.clone(),
        tenant: placement.tenant,
        bridge_id: plugin.conf.bridge,
        mac: Some(key.mac()),
        labels: placement.labels,
        pools: plugin.conf.pools.clone(),
    };
    let attachment = plugin.client.put_attachment(key, &request).await?;
    let mtu = plugin.conf.mtu.unwrap_or(attachment.mtu);
    let host_mac = plumbing::configure_host_end(&host_if, &alias, Some(mtu))?;
    let addresses = pod_addresses(&attachment);
    plumbing::configure_pod_end(netns, &env.ifname, mtu, &addresses)?;
    let attachment = wait_active(plugin, key, attachment).await?;
    if addresses.iter().any(|a| a.address.addr().is_ipv6()) {
        let timeout = Duration::from_millis(plugin.conf.active_timeout_ms);
        plumbing::wait_ipv6_ready(netns, &env.ifname, &addresses, timeout).await?;
    }
    Ok(Outcome {
        host_interface: (host_if, mac_string(&host_mac)),
        pod_interface: (env.ifname.clone(), attachment.port.mac.to_string(), sandbox),
        mtu,
        addresses,
        dns: plugin.conf.dns.clone(),
    })
}

/// The pod's addresses (IPv4 first) with their gateways.
pub(crate) fn pod_addresses(attachment: &Attachment) -> Vec<PodAddress> {
    attachment
        .addresses
        .iter()
        .map(|a| PodAddress {
            address: a.address,
            gateway: a.gateway,
        })
        .collect()
}

/// The pod's tenant and port labels (see [`crate::spec::NetConf::placement`]);
/// a Kubernetes cluster network asks the API which tenants exist.
async fn placement(plugin: &Plugin, env: &Env) -> Result<Placement, CniError> {
    let tenants: Vec<Tenant> = match plugin.conf.cluster_tenant {
        Some(_) => plugin.client.list("/v1/tenants").await?,
        None => Vec::new(),
    };
    plugin
        .conf
        .placement(env, |name| tenants.iter().any(|t| t.name == name))
}

/// Waits (bounded by the config's `active_timeout_ms`) until the agent
/// serves the attachment's port.
async fn wait_active(
    plugin: &Plugin,
    key: &AttachmentKey,
    mut attachment: Attachment,
) -> Result<Attachment, CniError> {
    let deadline = Instant::now() + Duration::from_millis(plugin.conf.active_timeout_ms);
    while !attachment.active {
        if Instant::now() >= deadline {
            return Err(CniError::new(
                code::NOT_ACTIVE,
                "the Plexus agent did not start serving the pod's port in time",
                format!(
                    "port {} bound to {} on host '{}' still inactive after {} ms",
                    attachment.port.id,
                    key.host_interface(),
                    plugin.host_name,
                    plugin.conf.active_timeout_ms
                ),
            ));
        }
        tokio::time::sleep(ACTIVE_POLL).await;
        attachment = plugin.client.attachment(key).await?.ok_or_else(|| {
            CniError::new(
                code::TRY_AGAIN,
                "the attachment vanished while ADD waited for it",
                key.owner(),
            )
        })?;
    }
    Ok(attachment)
}

/// Removes the attachment, then the veth (in that order, so that the agent
/// stops serving the port before its interface goes).
async fn remove(plugin: &Plugin, key: &AttachmentKey) -> Result<(), CniError> {
    plugin.client.delete_attachment(key).await?;
    plumbing::delete_veth(&key.host_interface())
}

/// DEL: removes the attachment and the veth; succeeds when there is
/// nothing (left) to remove, and without the network namespace.
pub(crate) async fn del(plugin: &Plugin, env: &Env) -> Result<(), CniError> {
    // A key that does not validate was never added.
    let Ok(key) = plugin.key(env) else {
        return Ok(());
    };
    remove(plugin, &key).await
}
