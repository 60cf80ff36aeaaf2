//! Plexus for Kubernetes: the translation of `networking.k8s.io/v1`
//! NetworkPolicy into Plexus chains, rules and selector groups (see
//! `docs/kubernetes.md`), pure: Kubernetes objects in, NSDB records out;
//! and the controller that follows a cluster's objects ([`controller`]).
#![warn(missing_docs)]

pub mod controller;
#[cfg(feature = "fake-apiserver")]
pub mod fake_apiserver;
pub mod objects;
pub mod pods;
pub mod policy;
pub mod reconcile;
pub mod services;
pub mod types;
