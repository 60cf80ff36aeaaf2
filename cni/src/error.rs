//! CNI errors: a well-known (or plugin-specific) code, a short message and
//! details, printed as the spec's error JSON.

use serde_json::{json, Value};

/// Well-known and plugin-specific CNI error codes.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// The plugin is not available (cannot serve ADDs).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The Plexus API refused a request.
    pub const API_REFUSED: u32 = 100;
    /// A kernel (netlink) operation failed.
    pub const KERNEL: u32 = 101;
    /// The agent did not start serving the port in time.
    pub const NOT_ACTIVE: u32 = 102;
    /// CHECK found the attachment different from what ADD set up.
    pub const CHECK_FAILED: u32 = 103;
}

/// A CNI error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The error code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// More detail (may be empty).
    pub details: String,
}

impl CniError {
    /// An error with a code, message and details.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error JSON for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut out = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            out["details"] = json!(self.details);
        }
        out
    }

    /// A failed kernel operation.
    pub fn kernel(what: impl std::fmt::Display, error: std::io::Error) -> CniError {
        CniError::new(code::KERNEL, format!("cannot {what}"), error.to_string())
    }
}

impl From<api::ApiError> for CniError {
    fn from(error: api::ApiError) -> CniError {
        match &error {
            api::ApiError::Unreachable { .. } => CniError::new(
                code::TRY_AGAIN,
                "the Plexus API is unreachable",
                error.to_string(),
            ),
            api::ApiError::Problem(p) if p.status >= 500 => {
                CniError::new(code::TRY_AGAIN, "the Plexus API is busy", error.to_string())
            }
            _ => CniError::new(
                code::API_REFUSED,
                "the Plexus API refused the request",
                error.to_string(),
            ),
        }
    }
}
