//! Typed watches: record changes grouped by commit.

use std::collections::VecDeque;
use uuid::Uuid;

use crate::keys::{self, ObjectKey};
use crate::kv::{KvEvent, KvEventKind, Revision, WatchMessage, WatchReceiver};
use crate::model::{Kind, Record};

/// One change to a record or to a host's liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
// Events are short-lived and moved, not stored: boxing the record would
// only add an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum ObjectEvent {
    /// A record was created or replaced (its revision is the commit's).
    Put(Record),
    /// A record was deleted.
    Deleted {
        /// Its kind.
        kind: Kind,
        /// Its id.
        id: Uuid,
    },
    /// A host's agent gained or lost its lease.
    HostLiveness {
        /// The host.
        host_id: Uuid,
        /// Whether it is alive now.
        alive: bool,
    },
    /// A record whose stored bytes could not be decoded (reported, not hidden).
    Undecodable {
        /// The key holding the bad value.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
}

/// What a typed watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Every change of one commit, in order.
    Commit {
        /// The commit's revision.
        revision: Revision,
        /// Its changes.
        events: Vec<ObjectEvent>,
    },
    /// History was compacted past the watch's position: take a new
    /// [`crate::Nsdb::snapshot`] and watch again from its revision + 1.
    Compacted {
        /// The oldest revision still available.
        compact_revision: Revision,
    },
    /// The watch failed and ended.
    Failed(String),
}

/// A typed watch over the NSDB's records.
pub struct NsdbWatch {
    rx: WatchReceiver,
    ready: VecDeque<WatchItem>,
}

fn to_object_event(event: KvEvent) -> Option<ObjectEvent> {
    let put = event.kind == KvEventKind::Put;
    match keys::parse_object(&event.key)? {
        ObjectKey::Liveness(host_id) => Some(ObjectEvent::HostLiveness {
            host_id,
            alive: put,
        }),
        ObjectKey::Record(kind, id) if !put => Some(ObjectEvent::Deleted { kind, id }),
        ObjectKey::Record(kind, _) => Some(match Record::decode(kind, &event.value) {
            Ok(mut record) => {
                record.set_revision(event.revision);
                ObjectEvent::Put(record)
            }
            Err(reason) => ObjectEvent::Undecodable {
                key: event.key,
                reason,
            },
        }),
    }
}

impl NsdbWatch {
    pub(crate) fn new(rx: WatchReceiver) -> NsdbWatch {
        NsdbWatch {
            rx,
            ready: VecDeque::new(),
        }
    }

    /// The next commit (or the end of the watch); `None` once it has ended.
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let message = self.rx.recv().await?;
            if let Some(item) = self.absorb(message) {
                return Some(item);
            }
        }
    }

    /// The next commit if it has arrived already (`None` if not, or once
    /// the watch has ended): a follower that fell behind applies what is
    /// waiting at once.
    pub fn try_next(&mut self) -> Option<WatchItem> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let message = self.rx.try_recv().ok()?;
            if let Some(item) = self.absorb(message) {
                return Some(item);
            }
        }
    }

    /// Queues the commits of `message`; returns the end of the watch it
    /// announces, if it does.
    fn absorb(&mut self, message: WatchMessage) -> Option<WatchItem> {
        match message {
            WatchMessage::Events(events) => {
                for event in events {
                    let revision = event.revision;
                    let Some(object_event) = to_object_event(event) else {
                        continue;
                    };
                    match self.ready.back_mut() {
                        Some(WatchItem::Commit {
                            revision: r,
                            events,
                        }) if *r == revision => events.push(object_event),
                        _ => self.ready.push_back(WatchItem::Commit {
                            revision,
                            events: vec![object_event],
                        }),
                    }
                }
                None
            }
            WatchMessage::Compacted { compact_revision } => {
                Some(WatchItem::Compacted { compact_revision })
            }
            WatchMessage::Failed(reason) => Some(WatchItem::Failed(reason)),
        }
    }
}
