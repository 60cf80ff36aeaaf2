//! Shared test fixtures: NSDB instances on both backends.
#![allow(dead_code)]

pub mod api;
pub mod cluster;
pub mod cni;
pub mod etcd;
pub mod ipv6;
pub mod k8s_pods;
pub mod lb;
pub mod live_trace;
pub mod netns;
pub mod openapi_check;
pub mod plexus;
pub mod racing;
pub mod runtime;
pub mod udp;
pub mod world;

use nsdb::{EmbeddedBackend, EtcdBackend, EtcdConfig, Nsdb};
use std::sync::Arc;

/// An NSDB for one test, with whatever keeps its backend alive.
pub struct Fixture {
    /// The store under test.
    pub nsdb: Nsdb,
    /// The embedded file's directory (embedded backend only).
    pub dir: Option<tempfile::TempDir>,
    /// A private etcd server (tests that compact or restart it).
    pub etcd: Option<etcd::EtcdServer>,
    /// The shared etcd's key prefix of this store (etcd backend only), so
    /// that a second client can open the same keyspace.
    pub etcd_prefix: Option<String>,
}

/// A fresh embedded store in a temporary directory.
pub fn embedded() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend =
        EmbeddedBackend::open(&dir.path().join("nsdb.redb")).expect("open embedded store");
    Fixture {
        nsdb: Nsdb::new(Arc::new(backend)),
        dir: Some(dir),
        etcd: None,
        etcd_prefix: None,
    }
}

/// Connects to `endpoint` under a key prefix no other test uses.
pub async fn etcd_at(endpoint: &str) -> Nsdb {
    etcd_at_prefix(endpoint, &fresh_prefix()).await
}

fn fresh_prefix() -> String {
    format!("/plexus-test/{}/", uuid::Uuid::new_v4())
}

/// Connects to `endpoint` under `prefix`.
pub async fn etcd_at_prefix(endpoint: &str, prefix: &str) -> Nsdb {
    let config = EtcdConfig {
        endpoints: vec![endpoint.to_string()],
        prefix: prefix.to_string(),
        ..EtcdConfig::default()
    };
    let backend = EtcdBackend::connect(config).await.expect("connect to etcd");
    Nsdb::new(Arc::new(backend))
}

/// A store on this test binary's shared etcd, isolated by key prefix.
pub async fn etcd_shared() -> Fixture {
    let prefix = fresh_prefix();
    Fixture {
        nsdb: etcd_at_prefix(etcd::shared(), &prefix).await,
        dir: None,
        etcd: None,
        etcd_prefix: Some(prefix),
    }
}

/// A store on a private etcd server owned by the fixture.
pub async fn etcd_private() -> Fixture {
    let server = etcd::EtcdServer::start();
    let nsdb = etcd_at(&server.endpoint).await;
    Fixture {
        nsdb,
        dir: None,
        etcd: Some(server),
        etcd_prefix: None,
    }
}
