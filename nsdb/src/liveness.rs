//! Host liveness: an agent proves it is alive by keeping a lease on its
//! host's liveness marker. When the agent stops renewing, the lease expires,
//! the marker disappears and watchers see the host go dead.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::NsdbError;
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
    lease: LeaseId,
    keeper: JoinHandle<()>,
}

impl HostLiveness {
    /// The lease holding the host's liveness marker.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Revokes the lease now, so the host is reported dead immediately.
    pub async fn stop(self) -> Result<(), NsdbError> {
        self.keeper.abort();
        Ok(self.kv.revoke_lease(self.lease).await?)
    }
}

impl Drop for HostLiveness {
    fn drop(&mut self) {
        self.keeper.abort();
    }
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
        let lease = kv.grant_lease(ttl).await?;
        let mut committed = false;
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new(kv.clone());
            if integrity::read(&mut tx, Kind::Host, host_id)
                .await?
                .is_none()
            {
                let _ = kv.revoke_lease(lease).await;
                return Err(NsdbError::NotFound {
                    kind: Kind::Host,
                    id: host_id,
                });
            }
            tx.put_with_lease(keys::liveness(host_id), Vec::new(), lease);
            if tx.commit().await?.is_some() {
                committed = true;
                break;
            }
            txn::backoff(attempt).await;
        }
        if !committed {
            let _ = kv.revoke_lease(lease).await;
            return Err(txn::contention());
        }
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
                if let Err(error) = kv.keep_alive(lease).await {
                    tracing::warn!(%host_id, %error, "host liveness keep-alive failed");
                }
            }
        });
        Ok(HostLiveness { kv, lease, keeper })
    }
}
