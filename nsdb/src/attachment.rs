//! Attachments: a bound exterior port together with the address lease it
//! sends from, created and removed in one commit, so that a client that
//! dies half-way never leaves a port without its lease or the reverse.
//!
//! Agents publish which ports they serve under `status/port/{port_id}`,
//! attached to their liveness lease: the marker disappears with the agent.
//! A host serves thousands of ports, so markers are written many to a
//! commit.

use ipnet::IpNet;
use uuid::Uuid;

use crate::error::{NsdbError, StoreError};
use crate::integrity::{self, Mutation};
use crate::keys;
use crate::kv::LeaseId;
use crate::model::{AllowedAddress, IpLease, Kind, Port, Record};
use crate::store::Nsdb;
use crate::txn::{self, Tx, MAX_ATTEMPTS};

/// The most port markers [`Nsdb::write_port_markers`] writes in one
/// commit: etcd takes at most 128 operations in one transaction by default.
pub const PORT_MARKERS_PER_COMMIT: usize = 100;

impl Nsdb {
    /// Creates `port` with the leases of `owner` in each of `pool_ids` (one
    /// address per pool: a dual-stack port names an IPv4 and an IPv6
    /// pool), the leased addresses as the port's allowed addresses, in one
    /// commit. Idempotent: when a port with `port.id` exists it is returned
    /// with the owner's leases (those missing allocated now). The leases
    /// come back in the order of `pool_ids`.
    pub async fn attach_port(
        &self,
        port: Port,
        pool_ids: &[Uuid],
        owner: &str,
    ) -> Result<(Port, Vec<IpLease>), NsdbError> {
        'attempts: for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new(self.backend().clone());
            let mut leases = Vec::with_capacity(pool_ids.len());
            for pool_id in pool_ids {
                match self.stage_lease(&mut tx, *pool_id, owner).await? {
                    Some(lease) => leases.push(lease),
                    None => {
                        txn::backoff(attempt).await;
                        continue 'attempts;
                    }
                }
            }
            let all_held = leases.iter().all(|l| l.revision != 0);
            let existing = integrity::read(&mut tx, Kind::Port, port.id).await?;
            let staged = match existing {
                Some(Record::Port(_)) if all_held => {
                    return Ok((self.fetch::<Port>(port.id).await?, leases));
                }
                // The port outlived a lease (released by hand): it gets
                // the new address.
                Some(Record::Port(mut stored)) => {
                    stored.allowed_addresses = allowed(&stored, &leases);
                    Mutation::Update {
                        record: Record::Port(stored),
                        expected_revision: None,
                    }
                }
                _ => {
                    let mut port = port.clone();
                    port.allowed_addresses = allowed(&port, &leases);
                    Mutation::Create(Record::Port(port))
                }
            };
            let records = integrity::stage(&mut tx, &[staged], self.scope()).await?;
            if let Some(revision) = tx.commit().await? {
                let Some(Some(Record::Port(mut stored))) = records.into_iter().next() else {
                    return Err(txn::contention());
                };
                stored.revision = revision;
                for lease in &mut leases {
                    if lease.revision == 0 {
                        lease.revision = revision;
                    }
                }
                return Ok((stored, leases));
            }
            txn::backoff(attempt).await;
        }
        Err(txn::contention())
    }

    /// Deletes port `port_id` and releases `owner`'s leases in each of
    /// `pool_ids` in one commit. Returns whether anything existed
    /// (detaching twice is not an error).
    pub async fn detach_port(
        &self,
        port_id: Uuid,
        pool_ids: &[Uuid],
        owner: &str,
    ) -> Result<bool, NsdbError> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new(self.backend().clone());
            let mut released = false;
            for pool_id in pool_ids {
                released |= Nsdb::stage_release(&mut tx, *pool_id, owner)
                    .await?
                    .is_some();
            }
            let exists = integrity::read(&mut tx, Kind::Port, port_id)
                .await?
                .is_some();
            if exists {
                let delete = Mutation::Delete {
                    kind: Kind::Port,
                    id: port_id,
                    expected_revision: None,
                };
                integrity::stage(&mut tx, &[delete], self.scope()).await?;
            }
            if !exists && !released {
                return Ok(false);
            }
            if tx.commit().await?.is_some() {
                return Ok(true);
            }
            txn::backoff(attempt).await;
        }
        Err(txn::contention())
    }

    /// Publishes that this host's agent serves each port of `active`, for
    /// as long as `lease` (the agent's liveness lease) lives, and withdraws
    /// the markers of `inactive`, in one commit: at most
    /// [`PORT_MARKERS_PER_COMMIT`] of both together.
    pub async fn write_port_markers(
        &self,
        host_id: Uuid,
        lease: LeaseId,
        active: &[Uuid],
        inactive: &[Uuid],
    ) -> Result<(), NsdbError> {
        if active.is_empty() && inactive.is_empty() {
            return Ok(());
        }
        let mut tx = Tx::new(self.backend().clone());
        let host = host_id.to_string().into_bytes();
        for port_id in active {
            tx.put_with_lease(keys::port_status(*port_id), host.clone(), lease);
        }
        for port_id in inactive {
            tx.delete(keys::port_status(*port_id));
        }
        match tx.commit().await? {
            Some(_) => Ok(()),
            // Nothing was read, so no comparison can fail.
            None => Err(StoreError::Backend(
                "port markers: a commit without comparisons failed".into(),
            )
            .into()),
        }
    }

    /// The host whose agent currently serves `port_id`, if any.
    pub async fn port_active_on(&self, port_id: Uuid) -> Result<Option<Uuid>, NsdbError> {
        let Some(entry) = self.backend().get(&keys::port_status(port_id)).await? else {
            return Ok(None);
        };
        Ok(Uuid::parse_str(&String::from_utf8_lossy(&entry.value)).ok())
    }
}

/// The anti-spoofing entries of a port sending from the leases' addresses.
fn allowed(port: &Port, leases: &[IpLease]) -> Vec<AllowedAddress> {
    leases
        .iter()
        .map(|lease| AllowedAddress {
            mac: port.mac,
            ip: IpNet::from(lease.address),
        })
        .collect()
}
