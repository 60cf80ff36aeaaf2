//! Host liveness: an agent proves it is alive by keeping a lease on its
//! host's liveness marker. When the agent stops renewing, the lease expires,
//! the marker disappears and watchers see the host go dead.
//!
//! A lease can also expire while the agent still runs (etcd unreachable for
//! longer than the TTL, or the agent stalled); the keeper then grants a new
//! lease and marks the host alive again under it. Keys other parts of the
//! agent put under the lease (port markers) went with the old one: they
//! follow [`HostLiveness::leases`] and put them back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{NsdbError, StoreError};
use crate::integrity;
use crate::keys;
use crate::kv::{KvBackend, LeaseId};
use crate::model::Kind;
use crate::store::Nsdb;
use crate::txn::{self, Tx, MAX_ATTEMPTS};

/// Keeps a host marked alive while it exists. Dropping it stops the
/// keep-alives (the host goes dead after the lease's TTL); [`Self::stop`]
/// marks it dead at once.
pub struct HostLiveness {
    kv: Arc<dyn KvBackend>,
    lease: watch::Receiver<LeaseId>,
    keeper: JoinHandle<()>,
}

impl HostLiveness {
    /// The lease holding the host's liveness marker now.
    pub fn lease(&self) -> LeaseId {
        *self.lease.borrow()
    }

    /// The lease holding the marker, changed each time a lost lease is
    /// replaced by a new one.
    pub fn leases(&self) -> watch::Receiver<LeaseId> {
        self.lease.clone()
    }

    /// Revokes the lease now, so the host is reported dead immediately.
    pub async fn stop(self) -> Result<(), NsdbError> {
        self.keeper.abort();
        Ok(self.kv.revoke_lease(self.lease()).await?)
    }
}

impl Drop for HostLiveness {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Grants a lease and puts the host's liveness marker under it.
async fn mark_alive(
    kv: &Arc<dyn KvBackend>,
    host_id: Uuid,
    ttl: Duration,
) -> Result<LeaseId, NsdbError> {
    let lease = kv.grant_lease(ttl).await?;
    for attempt in 0..MAX_ATTEMPTS {
        let mut tx = Tx::new(kv.clone());
        let missing = match integrity::read(&mut tx, Kind::Host, host_id).await {
            Ok(Some(_)) => None,
            Ok(None) => Some(NsdbError::NotFound {
                kind: Kind::Host,
                id: host_id,
            }),
            Err(error) => Some(error),
        };
        if let Some(error) = missing {
            let _ = kv.revoke_lease(lease).await;
            return Err(error);
        }
        tx.put_with_lease(keys::liveness(host_id), Vec::new(), lease);
        match tx.commit().await {
            Ok(Some(_)) => return Ok(lease),
            Ok(None) => txn::backoff(attempt).await,
            Err(error) => {
                let _ = kv.revoke_lease(lease).await;
                return Err(error.into());
            }
        }
    }
    let _ = kv.revoke_lease(lease).await;
    Err(txn::contention())
}

impl Nsdb {
    /// Marks `host_id` alive for as long as the returned handle lives and
    /// keeps renewing; `ttl` bounds how long a dead agent still looks alive.
    pub async fn keep_host_alive(
        &self,
        host_id: Uuid,
        ttl: Duration,
    ) -> Result<HostLiveness, NsdbError> {
        let kv = self.backend().clone();
        let lease = mark_alive(&kv, host_id, ttl).await?;
        let (lease_tx, lease_rx) = watch::channel(lease);
        let renew_every = (ttl / 3).max(Duration::from_millis(100));
        // A weak handle: the keeper must not keep a dropped store open.
        let keeper_kv = Arc::downgrade(&kv);
        let keeper = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(renew_every);
            loop {
                ticker.tick().await;
                let Some(kv) = keeper_kv.upgrade() else {
                    return;
                };
                let lease = *lease_tx.borrow();
                match kv.keep_alive(lease).await {
                    Ok(()) => {}
                    Err(StoreError::LeaseNotFound(_)) => {
                        match mark_alive(&kv, host_id, ttl).await {
                            Ok(new) => {
                                tracing::info!(%host_id, old = lease, new, "host liveness lease was lost; the host is alive again under a new one");
                                lease_tx.send_replace(new);
                            }
                            Err(error) => {
                                tracing::warn!(%host_id, %error, "host liveness lease was lost and cannot be replaced yet; retrying")
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%host_id, %error, "host liveness keep-alive failed")
                    }
                }
            }
        });
        Ok(HostLiveness {
            kv,
            lease: lease_rx,
            keeper,
        })
    }
}
