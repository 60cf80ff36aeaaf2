//! Shared test fixtures: NSDB instances on both backends.
#![allow(dead_code)]

pub mod api;
pub mod cluster;
pub mod cni;
pub mod etcd;
pub mod lb;
pub mod netns;
pub mod plexus;
pub mod runtime;
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
    }
}

/// Connects to `endpoint` under a key prefix no other test uses.
pub async fn etcd_at(endpoint: &str) -> Nsdb {
    let config = EtcdConfig {
        endpoints: vec![endpoint.to_string()],
        prefix: format!("/plexus-test/{}/", uuid::Uuid::new_v4()),
        ..EtcdConfig::default()
    };
    let backend = EtcdBackend::connect(config).await.expect("connect to etcd");
    Nsdb::new(Arc::new(backend))
}

/// A store on this test binary's shared etcd, isolated by key prefix.
pub async fn etcd_shared() -> Fixture {
    Fixture {
        nsdb: etcd_at(etcd::shared()).await,
        dir: None,
        etcd: None,
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
    }
}
