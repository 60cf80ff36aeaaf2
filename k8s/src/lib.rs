//! Plexus for Kubernetes: the translation of `networking.k8s.io/v1`
//! NetworkPolicy into Plexus chains, rules and selector groups (see
//! `docs/kubernetes.md`). Pure: Kubernetes objects in, NSDB records out.
#![warn(missing_docs)]

pub mod objects;
pub mod pods;
pub mod policy;
pub mod types;
