//! The Plexus network state database (NSDB).
//!
//! The NSDB is the single source of truth of a Plexus deployment: tenants,
//! routers, bridges, ports, links, routes, chains, rules, groups, hosts,
//! bindings and IP pools. It is a typed layer ([`Nsdb`]) over one backend
//! trait ([`kv::KvBackend`]) with two implementations, [`EmbeddedBackend`]
//! (one local file, the single-node default) and [`EtcdBackend`]
//! (multi-host). Every integrity rule is enforced above the trait, inside
//! one serializable transaction, so both backends behave identically and a
//! rejected write never leaves anything behind.

#![warn(missing_docs)]

mod attachment;
pub mod embedded;
pub mod error;
pub mod etcd;
mod integrity;
mod ipam;
pub mod keys;
pub mod kv;
mod liveness;
pub mod livetrace;
pub mod mac;
pub mod model;
mod store;
mod txn;
pub mod watch;

pub use attachment::PORT_MARKERS_PER_COMMIT;
pub use embedded::EmbeddedBackend;
pub use error::{NsdbError, Referrer, StoreError};
pub use etcd::{EtcdBackend, EtcdConfig};
pub use integrity::{Mutation, Scope};
pub use kv::Revision;
pub use liveness::HostLiveness;
pub use livetrace::{LiveTraceRequest, TraceMatch, TraceRequestEvent};
pub use mac::MacAddr;
pub use model::*;
pub use store::{Applied, Nsdb, Snapshot, StoreConfig};
pub use watch::{NsdbWatch, ObjectEvent, WatchItem};
