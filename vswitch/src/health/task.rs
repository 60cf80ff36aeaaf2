//! The agent's health-monitor task: runs the [`Prober`] against the
//! datapath (probes injected, answers taken back) and writes the members'
//! health to the NSDB, where every agent's snapshot picks it up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nsdb::{MemberHealth, Nsdb, NsdbError, PoolMember};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::prober::Prober;
use super::targets;
use crate::datapath::Datapath;
use crate::feed::SharedTopology;

/// How often due probes are started and timeouts checked.
const POLL: Duration = Duration::from_millis(50);
/// How often the members to probe are planned again without a topology
/// change (ARP may have placed a member since).
const REPLAN: Duration = Duration::from_secs(3);
/// How long a failed health write waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Probes the members this host is responsible for, for ever.
pub async fn run_health(
    nsdb: Nsdb,
    datapath: Arc<Datapath>,
    topology: Arc<SharedTopology>,
    host: Uuid,
) {
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_health(nsdb, changes_rx));
    let mut prober = Prober::default();
    let started = Instant::now();
    let mut revision = None;
    let mut planned = Instant::now();
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = datapath.local_ready() => {}
        }
        let now = started.elapsed().as_millis() as u64;
        let topo = topology.load();
        if revision != Some(topo.revision) || planned.elapsed() >= REPLAN {
            revision = Some(topo.revision);
            planned = Instant::now();
            let plan = targets(&topo, host, |ingress, frame| {
                datapath.dry_run(ingress, frame)
            });
            prober.set_targets(plan, now);
        }
        let mut actions = prober.poll(now);
        for frame in datapath.take_local() {
            let more = prober.receive(&frame);
            actions.frames.extend(more.frames);
            actions.changes.extend(more.changes);
        }
        for (ingress, frame) in actions.frames {
            datapath.inject(ingress, frame);
        }
        for (member, health, why) in actions.changes {
            tracing::info!(%member, ?health, %why, "member health changed");
            let _ = changes_tx.send((member, health));
        }
    }
}

/// Writes health changes to the NSDB, the latest per member, retrying
/// while the NSDB is unreachable.
async fn write_health(nsdb: Nsdb, mut changes: mpsc::UnboundedReceiver<(Uuid, MemberHealth)>) {
    let mut pending: HashMap<Uuid, MemberHealth> = HashMap::new();
    loop {
        if pending.is_empty() {
            match changes.recv().await {
                Some((member, health)) => {
                    pending.insert(member, health);
                }
                None => return,
            }
        }
        while let Ok((member, health)) = changes.try_recv() {
            pending.insert(member, health);
        }
        let mut failed = HashMap::new();
        for (member, health) in pending.drain() {
            if let Err(error) = set_health(&nsdb, member, health).await {
                tracing::warn!(%member, %error, "cannot record member health; retrying");
                failed.insert(member, health);
            }
        }
        if !failed.is_empty() {
            pending = failed;
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Sets one member's health, unless it is gone or already so.
async fn set_health(nsdb: &Nsdb, member: Uuid, health: MemberHealth) -> Result<(), NsdbError> {
    loop {
        let Some(mut record) = nsdb.get::<PoolMember>(member).await? else {
            return Ok(());
        };
        if record.health == health {
            return Ok(());
        }
        let revision = record.revision;
        record.health = health;
        match nsdb.update(record, Some(revision)).await {
            Err(NsdbError::RevisionConflict { .. }) => continue,
            Err(NsdbError::NotFound { .. }) => return Ok(()),
            other => return other.map(|_| ()),
        }
    }
}
