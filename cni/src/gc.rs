//! GC and STATUS (CNI 1.1).

use std::collections::HashSet;

use api::provision::AttachmentKey;

use crate::error::{code, CniError};
use crate::plumbing;
use crate::spec::ValidAttachment;
use crate::Plugin;

/// GC: removes every attachment of this network bound on this host, and
/// every veth this plugin created for this network, that the runtime's
/// `cni.dev/valid-attachments` does not list.
pub(crate) async fn gc(plugin: &Plugin) -> Result<(), CniError> {
    let valid: HashSet<&ValidAttachment> = plugin.conf.valid_attachments.iter().collect();
    let is_valid = |key: &AttachmentKey| {
        valid.contains(&ValidAttachment {
            container_id: key.container_id.clone(),
            ifname: key.ifname.clone(),
        })
    };
    let network = plugin.conf.name.as_str();
    let host = plugin.host_id().await?;
    let mut failures = Vec::new();
    for attachment in plugin.client.attachments(Some(host), Some(network)).await? {
        if is_valid(&attachment.key) {
            continue;
        }
        if let Err(error) = plugin.client.delete_attachment(&attachment.key).await {
            failures.push(format!("{}: {error}", attachment.key.owner()));
            continue;
        }
        if let Err(error) = plumbing::delete_veth(&attachment.key.host_interface()) {
            failures.push(format!("{}: {}", attachment.key.owner(), error.details));
        }
    }
    // Veths whose ADD died before its attachment was made.
    let links = rtnl::links().map_err(|e| CniError::kernel("list links", e))?;
    for link in links {
        let Some(key) = link.alias.as_deref().and_then(AttachmentKey::from_owner) else {
            continue;
        };
        if key.network != network || key.host_interface() != link.name || is_valid(&key) {
            continue;
        }
        if let Err(error) = plumbing::delete_veth(&link.name) {
            failures.push(format!("{}: {}", link.name, error.details));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::TRY_AGAIN,
            "GC could not remove everything",
            failures.join("; "),
        ))
    }
}

/// STATUS: the API answers and this host's agent is alive.
pub(crate) async fn status(plugin: &Plugin) -> Result<(), CniError> {
    let unavailable =
        |msg: String, details: String| CniError::new(code::NOT_AVAILABLE, msg, details);
    let host = plugin
        .host()
        .await
        .map_err(|e| unavailable(e.msg, e.details))?;
    if !host.alive {
        return Err(unavailable(
            format!("the Plexus agent of host '{}' is not alive", host.name),
            "its liveness lease expired; is `plexus agent` running?".into(),
        ));
    }
    Ok(())
}
