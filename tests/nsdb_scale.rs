//! The NSDB as a large host's agent uses it (issue 17), on both backends:
//! reads and watches larger than one etcd message, a liveness lease lost
//! behind the agent's back, port markers many to a commit.

mod support;

use std::time::Duration;

use nsdb::kv::{CommitOutcome, KvBackend, Op, Revision, WatchMessage};
use nsdb::{keys, Host, ObjectEvent, WatchItem, PORT_MARKERS_PER_COMMIT};
use std::collections::HashSet;
use support::Fixture;
use uuid::Uuid;

/// The etcd client's default message limit, which a whole NSDB exceeds.
const MESSAGE_LIMIT: usize = 4 << 20;
/// A value large enough that a few dozen exceed [`MESSAGE_LIMIT`].
const LARGE: usize = 128 << 10;

/// Puts `(key, value)` pairs in commits of `per_commit`; the last revision.
async fn put_all(kv: &dyn KvBackend, pairs: Vec<(String, Vec<u8>)>, per_commit: usize) -> Revision {
    let mut revision = 0;
    let mut pairs = pairs.into_iter().peekable();
    while pairs.peek().is_some() {
        let ops = pairs
            .by_ref()
            .take(per_commit)
            .map(|(key, value)| Op::Put {
                key,
                value,
                lease: None,
            })
            .collect();
        match kv.commit(Vec::new(), ops).await.unwrap() {
            CommitOutcome::Committed(r) => revision = r,
            CommitOutcome::CompareFailed => unreachable!("no comparison"),
        }
    }
    revision
}

/// `count` values of [`LARGE`] bytes under `prefix`, each telling its index.
fn large_values(prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                format!("{prefix}{i:04}"),
                vec![b'a' + (i % 26) as u8; LARGE],
            )
        })
        .collect()
}

/// A range larger than one etcd message comes back whole and at one
/// revision, while a writer keeps changing the range under the read.
async fn large_range_reads_at_one_revision(f: Fixture) {
    let kv = f.nsdb.backend().clone();
    let mut pairs = large_values("big/large/", 40);
    pairs.extend((0..1_200).map(|i| (format!("big/small/{i:05}"), format!("{i}").into_bytes())));
    let expected: Vec<(String, Vec<u8>)> = {
        let mut sorted = pairs.clone();
        sorted.sort();
        sorted
    };
    let (large, small) = pairs.split_at(40);
    put_all(kv.as_ref(), large.to_vec(), 8).await;
    let written = put_all(kv.as_ref(), small.to_vec(), 100).await;

    // A writer changing the first and the last key of the range, and
    // adding keys, all through the read.
    let writer_kv = kv.clone();
    let writer = tokio::spawn(async move {
        for i in 0.. {
            let pairs = vec![
                ("big/large/0000".to_string(), vec![b'!'; 16]),
                (format!("big/zzz/{i:05}"), Vec::new()),
            ];
            put_all(writer_kv.as_ref(), pairs, 2).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let range = kv.range("big/").await.unwrap();
    writer.abort();
    let _ = writer.await;

    let size: usize = range
        .entries
        .iter()
        .map(|e| e.key.len() + e.value.len())
        .sum();
    assert!(
        size > MESSAGE_LIMIT,
        "the range must exceed one message: {size} bytes"
    );
    assert!(range.revision >= written);
    for entry in &range.entries {
        assert!(
            entry.mod_revision <= range.revision,
            "{} changed at {} after the read's revision {}: pages read at different revisions",
            entry.key,
            entry.mod_revision,
            range.revision
        );
    }
    // What the writer did up to the read's revision, and nothing after it.
    let at_revision = kv.range("big/zzz/").await.unwrap().entries;
    let added: Vec<_> = at_revision
        .iter()
        .filter(|e| e.mod_revision <= range.revision)
        .map(|e| e.key.clone())
        .collect();
    let read: Vec<(String, Vec<u8>)> = range
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    let rewritten = read[0].1 != expected[0].1;
    let mut want = expected.clone();
    if rewritten {
        want[0].1 = vec![b'!'; 16];
    }
    want.extend(added.into_iter().map(|key| (key, Vec::new())));
    assert_eq!(read.len(), want.len(), "every key, once");
    assert!(read == want, "the range read differs from what was written");
}

/// A watch that catches up over history larger than one etcd message
/// delivers all of it.
async fn watch_catches_up_over_a_large_history(f: Fixture) {
    let kv = f.nsdb.backend().clone();
    let from = kv.current_revision().await.unwrap() + 1;
    put_all(kv.as_ref(), large_values("history/", 40), 1).await;
    let mut watch = kv.watch("history/", from).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let message = tokio::time::timeout(Duration::from_secs(15), watch.recv())
            .await
            .unwrap_or_else(|_| panic!("the watch stalled after {} of 40 events", seen.len()));
        match message {
            Some(WatchMessage::Events(events)) => seen.extend(events),
            other => panic!("the watch ended: {other:?}"),
        }
    }
    let keys: Vec<String> = seen.iter().map(|e| e.key.clone()).collect();
    let want: Vec<String> = large_values("history/", 40)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, want);
    assert!(seen.iter().all(|e| e.value.len() == LARGE));
}

fn host(name: &str, ip: &str) -> Host {
    Host {
        id: Uuid::new_v4(),
        revision: 0,
        name: name.into(),
        tunnel_ip: ip.parse().unwrap(),
        underlay_mtu: 1500,
        alive: false,
    }
}

/// A host whose liveness lease is lost (revoked here; expired when etcd
/// was away longer than its TTL) comes back alive under a new lease.
async fn liveness_comes_back_after_its_lease_is_lost(f: Fixture) {
    let db = &f.nsdb;
    let h = db.create(host("lease-lost", "192.0.2.60")).await.unwrap();
    let alive = db
        .keep_host_alive(h.id, Duration::from_secs(1))
        .await
        .unwrap();
    let mut leases = alive.leases();
    let lost = alive.lease();
    let mut watch = db
        .watch(db.current_revision().await.unwrap() + 1)
        .await
        .unwrap();
    db.backend().revoke_lease(lost).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap_or_else(|_| panic!("the host's liveness went {seen:?}, then nothing for 5 s"));
        let Some(WatchItem::Commit { events, .. }) = item else {
            panic!("the watch ended: {item:?}");
        };
        seen.extend(events.into_iter().filter_map(|e| match e {
            ObjectEvent::HostLiveness { host_id, alive } if host_id == h.id => Some(alive),
            _ => None,
        }));
    }
    assert_eq!(
        seen,
        vec![false, true],
        "dead with the lost lease, then alive again"
    );
    leases.wait_for(|l| *l != lost).await.unwrap();
    assert_ne!(alive.lease(), lost);
    assert!(db.fetch::<Host>(h.id).await.unwrap().alive);
    // And stays so: the new lease is renewed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(db.fetch::<Host>(h.id).await.unwrap().alive);
    alive.stop().await.unwrap();
    assert!(!db.fetch::<Host>(h.id).await.unwrap().alive);
}

/// Port markers are written many to a commit (one commit for
/// [`PORT_MARKERS_PER_COMMIT`], within etcd's 128 operations), and go with
/// the lease they were written under.
async fn port_markers_are_written_many_to_a_commit(f: Fixture) {
    let db = &f.nsdb;
    let h = db.create(host("markers", "192.0.2.61")).await.unwrap();
    let alive = db
        .keep_host_alive(h.id, Duration::from_secs(5))
        .await
        .unwrap();
    let ports: Vec<Uuid> = (0..PORT_MARKERS_PER_COMMIT)
        .map(|_| Uuid::new_v4())
        .collect();
    db.write_port_markers(h.id, alive.lease(), &ports, &[])
        .await
        .unwrap();
    let mut revisions = HashSet::new();
    for port in &ports {
        assert_eq!(db.port_active_on(*port).await.unwrap(), Some(h.id));
        let marker = db.backend().get(&keys::port_status(*port)).await.unwrap();
        revisions.insert(marker.unwrap().mod_revision);
    }
    assert_eq!(revisions.len(), 1, "one commit: {revisions:?}");

    let (gone, kept) = ports.split_at(40);
    let more = [Uuid::new_v4()];
    db.write_port_markers(h.id, alive.lease(), &more, gone)
        .await
        .unwrap();
    for port in gone {
        assert_eq!(db.port_active_on(*port).await.unwrap(), None);
    }
    for port in kept.iter().chain(&more) {
        assert_eq!(db.port_active_on(*port).await.unwrap(), Some(h.id));
    }
    alive.stop().await.unwrap();
    for port in kept.iter().chain(&more) {
        assert_eq!(
            db.port_active_on(*port).await.unwrap(),
            None,
            "gone with the lease"
        );
    }
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::embedded()).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::etcd_shared().await).await
                }
            )*
        }
    };
}

on_both_backends!(
    large_range_reads_at_one_revision,
    watch_catches_up_over_a_large_history,
    liveness_comes_back_after_its_lease_is_lost,
    port_markers_are_written_many_to_a_commit,
);
