//! Port markers: which ports this host's agent serves, published in the
//! NSDB under the host's liveness lease (see [`Nsdb::write_port_markers`]),
//! so that a CNI ADD knows when traffic flows.
//!
//! A host serves thousands of ports: only the markers that changed are
//! written, many to a commit, and a lost liveness lease (its markers gone
//! with it) has every served port published again under the new one.

use std::collections::{HashMap, HashSet};

use nsdb::kv::LeaseId;
use nsdb::{Nsdb, PORT_MARKERS_PER_COMMIT};
use tokio::sync::watch;
use uuid::Uuid;

/// The markers of one host's served ports, kept equal to what it serves.
pub(crate) struct PortMarkers {
    nsdb: Nsdb,
    host_id: Uuid,
    /// The host's liveness lease, which the markers live and die with.
    lease: watch::Receiver<LeaseId>,
    /// The ports whose markers are in the NSDB.
    published: HashSet<Uuid>,
    /// The lease they are under.
    published_under: LeaseId,
}

impl PortMarkers {
    /// No marker published yet; `lease` follows the host's liveness lease.
    pub(crate) fn new(nsdb: Nsdb, host_id: Uuid, lease: watch::Receiver<LeaseId>) -> PortMarkers {
        let published_under = *lease.borrow();
        PortMarkers {
            nsdb,
            host_id,
            lease,
            published: HashSet::new(),
            published_under,
        }
    }

    /// The liveness lease: a change means every marker must be put back.
    pub(crate) fn leases(&self) -> watch::Receiver<LeaseId> {
        self.lease.clone()
    }

    /// Publishes the markers of the served ports not published yet and
    /// withdraws those of ports no longer served; what fails is retried on
    /// the next call.
    pub(crate) async fn sync<T>(&mut self, serving: &HashMap<Uuid, T>) {
        let lease = *self.lease.borrow();
        if lease != self.published_under {
            tracing::info!(
                markers = self.published.len(),
                "the liveness lease was replaced; publishing every served port again"
            );
            self.published.clear();
            self.published_under = lease;
        }
        let changes = batches(serving, &self.published, PORT_MARKERS_PER_COMMIT);
        let count = changes.len();
        for (done, (active, inactive)) in changes.into_iter().enumerate() {
            let written = self
                .nsdb
                .write_port_markers(self.host_id, lease, &active, &inactive)
                .await;
            if let Err(error) = written {
                tracing::warn!(
                    %error,
                    commits_left = count - done,
                    "cannot write the ports' active markers; retrying"
                );
                return;
            }
            self.published.extend(active);
            for id in &inactive {
                self.published.remove(id);
            }
        }
    }
}

/// The marker writes that make `published` equal to the keys of `serving`:
/// (ports to publish, ports to withdraw) a commit, at most `per_commit`
/// of both together in each.
fn batches<T>(
    serving: &HashMap<Uuid, T>,
    published: &HashSet<Uuid>,
    per_commit: usize,
) -> Vec<(Vec<Uuid>, Vec<Uuid>)> {
    let active = serving.keys().filter(|id| !published.contains(id));
    let inactive = published.iter().filter(|id| !serving.contains_key(id));
    let changes: Vec<(Uuid, bool)> = active
        .map(|id| (*id, true))
        .chain(inactive.map(|id| (*id, false)))
        .collect();
    changes
        .chunks(per_commit.max(1))
        .map(|chunk| {
            let pick = |up: bool| chunk.iter().filter(|c| c.1 == up).map(|c| c.0).collect();
            (pick(true), pick(false))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    #[test]
    fn only_changed_markers_are_written_in_bounded_commits() {
        let (kept, new, gone) = (ids(500), ids(250), ids(30));
        let serving: HashMap<Uuid, ()> = kept.iter().chain(&new).map(|id| (*id, ())).collect();
        let published: HashSet<Uuid> = kept.iter().chain(&gone).copied().collect();
        let commits = batches(&serving, &published, 100);
        assert_eq!(commits.len(), 3, "280 changes in commits of 100");
        assert!(commits.iter().all(|(a, i)| a.len() + i.len() <= 100));
        let mut up: Vec<Uuid> = commits.iter().flat_map(|c| c.0.clone()).collect();
        let mut down: Vec<Uuid> = commits.iter().flat_map(|c| c.1.clone()).collect();
        let (mut want_up, mut want_down) = (new.clone(), gone.clone());
        for v in [&mut up, &mut down, &mut want_up, &mut want_down] {
            v.sort();
        }
        assert_eq!((up, down), (want_up, want_down));
        let settled: HashSet<Uuid> = serving.keys().copied().collect();
        assert!(
            batches(&serving, &settled, 100).is_empty(),
            "nothing to write once published"
        );
    }
}
