//! The Plexus REST API: the axum server over the NSDB, and the typed client
//! that the CLI and the CNI plugin use.
//!
//! Every resource is JSON under `/v1`, authenticated with a bearer token
//! (the admin token, or a tenant token that only sees its own tenant), and
//! every error is an `application/problem+json` body naming the field at
//! fault. The OpenAPI document at `/openapi.json` is generated from the same
//! route table that builds the router, so it lists exactly what is served.
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod extract;
pub mod livetrace;
pub mod openapi;
pub mod positions;
pub mod problem;
pub mod provision;
pub mod resource;
pub mod routes;
pub mod server;
pub mod ui;

pub use client::{ApiError, Client};
pub use problem::Problem;
pub use provision::TenantNetwork;
pub use resource::Page;
pub use server::{api_routes, app, app_with_datapath, app_with_metrics, DatapathHooks};
