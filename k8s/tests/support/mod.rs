//! Test support shared by the k8s crate's integration tests.

pub mod apiserver;
