//! Plexus virtual switch: the userspace datapath of the Plexus SDN.
//!
//! `wire` holds the zero-copy, allocation-free packet formats.

pub mod agent;
pub mod conntrack;
pub mod core;
pub mod datapath;
pub mod engine;
pub mod feed;
pub mod flows;
pub mod health;
pub mod io;
pub mod learned;
mod markers;
pub mod probe;
pub mod snapshot;
pub mod tracing_live;
pub mod tunnel;
pub mod uplink;
pub mod wire;

/// A hash map for lookups on the packet path: foldhash, seeded per
/// process, instead of SipHash (keys there are ids, addresses and tunnel
/// keys, looked up for every packet).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
