//! IP address management: leases from CIDR pools.
//!
//! A lease is two keys written in one commit: the address (so no address
//! is handed out twice) and the owner (so the same owner gets the same
//! address back). Allocation starts probing at a position derived from the
//! owner, so concurrent allocators mostly try different addresses and
//! rarely collide; when they do, the loser's commit fails and it retries.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use uuid::Uuid;

use crate::error::{NsdbError, StoreError};
use crate::integrity;
use crate::keys;
use crate::model::{IpLease, IpPool, Kind, Record};
use crate::store::Nsdb;
use crate::txn::{self, Tx, MAX_ATTEMPTS};

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(net: &IpNet, value: u128) -> IpAddr {
    match net {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// The allocatable host offsets of a pool: 1 ..= size - 2 (the network and
/// broadcast addresses are never handed out), as (first, count).
fn host_span(net: &IpNet) -> (u128, u128) {
    let bits = (net.max_prefix_len() - net.prefix_len()) as u32;
    let size = if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    };
    (1, size.saturating_sub(2))
}

fn owner_hash(owner: &str) -> u128 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    owner.hash(&mut hasher);
    hasher.finish() as u128
}

fn corrupt(key: &str, reason: impl ToString) -> NsdbError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
    .into()
}

async fn read_pool(tx: &mut Tx, pool_id: Uuid) -> Result<IpPool, NsdbError> {
    match integrity::read(tx, Kind::IpPool, pool_id).await? {
        Some(Record::IpPool(pool)) => Ok(pool),
        _ => Err(NsdbError::NotFound {
            kind: Kind::IpPool,
            id: pool_id,
        }),
    }
}

async fn existing_lease(
    tx: &mut Tx,
    pool: Uuid,
    owner: &str,
) -> Result<Option<IpLease>, NsdbError> {
    let owner_key = keys::lease_by_owner(pool, owner);
    let Some(address) = tx.get(&owner_key).await? else {
        return Ok(None);
    };
    let address: IpAddr = String::from_utf8_lossy(&address)
        .parse()
        .map_err(|e: std::net::AddrParseError| corrupt(&owner_key, e))?;
    let addr_key = keys::lease_by_address(pool, address);
    let entry = tx
        .get_committed(&addr_key)
        .await?
        .ok_or_else(|| corrupt(&owner_key, "lease without address"))?;
    let mut lease: IpLease =
        serde_json::from_slice(&entry.value).map_err(|e| corrupt(&addr_key, e))?;
    lease.revision = entry.mod_revision;
    Ok(Some(lease))
}

impl Nsdb {
    /// Allocates an address from `pool_id` to `owner`. Idempotent: an owner
    /// that already holds a lease in the pool gets that lease back.
    pub async fn allocate_ip(&self, pool_id: Uuid, owner: &str) -> Result<IpLease, NsdbError> {
        if owner.is_empty() {
            return Err(NsdbError::Invalid {
                kind: Kind::IpLease,
                id: pool_id,
                field: "owner".into(),
                reason: "must not be empty".into(),
            });
        }
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new(self.backend().clone());
            let Some(lease) = self.stage_lease(&mut tx, pool_id, owner).await? else {
                txn::backoff(attempt).await;
                continue;
            };
            if lease.revision != 0 {
                return Ok(lease);
            }
            if let Some(revision) = tx.commit().await? {
                return Ok(IpLease { revision, ..lease });
            }
            txn::backoff(attempt).await;
        }
        Err(txn::contention())
    }

    /// Stages the lease of `owner` in `pool_id` into `tx`: the owner's
    /// existing lease (revision set, nothing staged), or a new one (revision
    /// 0, its keys staged). `None` means a concurrent allocator took the
    /// address picked: back off and run the transaction again.
    pub(crate) async fn stage_lease(
        &self,
        tx: &mut Tx,
        pool_id: Uuid,
        owner: &str,
    ) -> Result<Option<IpLease>, NsdbError> {
        let pool = read_pool(tx, pool_id).await?;
        if let Some(lease) = existing_lease(tx, pool_id, owner).await? {
            return Ok(Some(lease));
        }
        // Which addresses are taken is read outside the transaction: the
        // commit only depends on the one address chosen being free.
        let used = self.used_addresses(pool_id).await?;
        let Some(address) = pick_free(&pool, &used, owner) else {
            // Confirm exhaustion inside the transaction before saying so.
            let leased = tx.range(&keys::leases_of(pool_id)).await?.len() as u128;
            if leased < host_span(&pool.cidr).1 - u128::from(pool.gateway.is_some()) {
                return Ok(None);
            }
            return Err(NsdbError::PoolExhausted {
                pool: pool_id,
                cidr: pool.cidr.to_string(),
            });
        };
        let addr_key = keys::lease_by_address(pool_id, address);
        if tx.get(&addr_key).await?.is_some() {
            return Ok(None);
        }
        let lease = IpLease {
            pool_id,
            address,
            owner: owner.to_string(),
            revision: 0,
        };
        tx.put(addr_key, serde_json::to_vec(&lease).unwrap_or_default());
        tx.put(
            keys::lease_by_owner(pool_id, owner),
            address.to_string().into_bytes(),
        );
        Ok(Some(lease))
    }

    /// Stages the release of `owner`'s lease in `pool_id` into `tx`;
    /// returns the lease, or `None` when the owner held none.
    pub(crate) async fn stage_release(
        tx: &mut Tx,
        pool_id: Uuid,
        owner: &str,
    ) -> Result<Option<IpLease>, NsdbError> {
        let Some(lease) = existing_lease(tx, pool_id, owner).await? else {
            return Ok(None);
        };
        tx.delete(keys::lease_by_address(pool_id, lease.address));
        tx.delete(keys::lease_by_owner(pool_id, owner));
        Ok(Some(lease))
    }

    /// Releases the lease `owner` holds in `pool_id`. Returns the released
    /// lease, or `None` when the owner held none (releasing is idempotent).
    pub async fn release_ip(
        &self,
        pool_id: Uuid,
        owner: &str,
    ) -> Result<Option<IpLease>, NsdbError> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new(self.backend().clone());
            let Some(lease) = Nsdb::stage_release(&mut tx, pool_id, owner).await? else {
                return Ok(None);
            };
            if tx.commit().await?.is_some() {
                return Ok(Some(lease));
            }
            txn::backoff(attempt).await;
        }
        Err(txn::contention())
    }

    /// Every lease of a pool, in address-key order.
    pub async fn leases(&self, pool_id: Uuid) -> Result<Vec<IpLease>, NsdbError> {
        let range = self.backend().range(&keys::leases_of(pool_id)).await?;
        range
            .entries
            .into_iter()
            .map(|entry| {
                let mut lease: IpLease =
                    serde_json::from_slice(&entry.value).map_err(|e| corrupt(&entry.key, e))?;
                lease.revision = entry.mod_revision;
                Ok(lease)
            })
            .collect()
    }

    async fn used_addresses(&self, pool_id: Uuid) -> Result<HashSet<IpAddr>, NsdbError> {
        let prefix = keys::leases_of(pool_id);
        let range = self.backend().range(&prefix).await?;
        Ok(range
            .entries
            .iter()
            .filter_map(|e| e.key.strip_prefix(&prefix)?.parse().ok())
            .collect())
    }
}

/// The first free address at or after the owner's start offset, wrapping.
fn pick_free(pool: &IpPool, used: &HashSet<IpAddr>, owner: &str) -> Option<IpAddr> {
    let (first, count) = host_span(&pool.cidr);
    if count == 0 {
        return None;
    }
    let base = to_u128(pool.cidr.network());
    let start = owner_hash(owner) % count;
    // At most |used| + 2 probes can hit taken addresses (leases + gateway).
    let probes = (used.len() as u128 + 2).min(count);
    (0..probes)
        .map(|i| from_u128(&pool.cidr, base + first + (start + i) % count))
        .find(|addr| Some(*addr) != pool.gateway && !used.contains(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> IpPool {
        let cidr: IpNet = cidr.parse().unwrap();
        IpPool {
            id: Uuid::new_v4(),
            revision: 0,
            tenant_id: None,
            name: "p".into(),
            cidr,
            gateway: cidr.hosts().next(),
            bridge_id: None,
        }
    }

    #[test]
    fn never_hands_out_network_broadcast_or_gateway() {
        let pool = pool("10.0.0.0/29");
        let mut used = HashSet::new();
        while let Some(addr) = pick_free(&pool, &used, &format!("o{}", used.len())) {
            assert_ne!(addr, pool.cidr.network());
            assert_ne!(addr, pool.cidr.broadcast());
            assert_ne!(Some(addr), pool.gateway);
            assert!(pool.cidr.contains(&addr));
            assert!(used.insert(addr));
        }
        assert_eq!(used.len(), 5);
    }

    #[test]
    fn works_for_ipv6() {
        let pool = pool("fd00::/64");
        let addr = pick_free(&pool, &HashSet::new(), "x").unwrap();
        assert!(pool.cidr.contains(&addr));
        assert_ne!(addr, pool.cidr.network());
    }
}
