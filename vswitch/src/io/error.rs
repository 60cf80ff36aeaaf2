//! Errors raised while opening and configuring a port.
//!
//! Only setup returns [`PortError`]; the per-packet calls return plain
//! [`std::io::Error`] (the caller knows which port it called, and the hot
//! path must be able to match on `WouldBlock` cheaply).

use std::io;

/// Why a port could not be opened or configured; every message names the interface.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The interface name is empty, too long (15 bytes max) or has forbidden characters.
    #[error("interface {ifname:?}: invalid interface name: {reason}")]
    InvalidName {
        /// The name as given.
        ifname: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No interface with that name exists in the caller's network namespace.
    #[error("interface {ifname}: no such interface in this network namespace")]
    NoSuchInterface {
        /// The interface name.
        ifname: String,
    },
    /// The kernel refused for lack of privilege (CAP_NET_RAW / CAP_NET_ADMIN).
    #[error("interface {ifname}: permission denied during {op} (needs CAP_NET_RAW and CAP_NET_ADMIN): {source}")]
    PermissionDenied {
        /// The interface name.
        ifname: String,
        /// The operation that failed.
        op: &'static str,
        /// The underlying OS error.
        source: io::Error,
    },
    /// The kernel lacks a feature we need (e.g. PACKET_VNET_HDR, IFF_VNET_HDR).
    #[error("interface {ifname}: {op} is not supported by this kernel: {source}")]
    Unsupported {
        /// The interface name.
        ifname: String,
        /// The operation that failed.
        op: &'static str,
        /// The underlying OS error.
        source: io::Error,
    },
    /// The device is in use or exists with incompatible settings (e.g. a TUN, not a TAP).
    #[error("interface {ifname}: busy or incompatible during {op} (already attached, or not a TAP with the same flags): {source}")]
    Busy {
        /// The interface name.
        ifname: String,
        /// The operation that failed.
        op: &'static str,
        /// The underlying OS error.
        source: io::Error,
    },
    /// `/dev/net/tun` could not be opened (missing device node or no tun support).
    #[error("interface {ifname}: cannot open /dev/net/tun: {source}")]
    TunUnavailable {
        /// The interface name.
        ifname: String,
        /// The underlying OS error.
        source: io::Error,
    },
    /// The port was opened outside a Tokio runtime, so it cannot be registered with a reactor.
    #[error(
        "interface {ifname}: ports must be opened from within a Tokio runtime with IO enabled"
    )]
    NoRuntime {
        /// The interface name.
        ifname: String,
    },
    /// Any other system call failure.
    #[error("interface {ifname}: {op} failed: {source}")]
    Os {
        /// The interface name.
        ifname: String,
        /// The operation that failed.
        op: &'static str,
        /// The underlying OS error.
        source: io::Error,
    },
}

impl PortError {
    /// Classifies an OS error raised by `op` on `ifname` into the matching variant.
    pub fn from_os(ifname: &str, op: &'static str, source: io::Error) -> PortError {
        let ifname = ifname.to_owned();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                PortError::PermissionDenied { ifname, op, source }
            }
            Some(libc::ENODEV) | Some(libc::ENXIO) => PortError::NoSuchInterface { ifname },
            Some(libc::ENOPROTOOPT)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::ENOTTY)
            | Some(libc::EAFNOSUPPORT)
            | Some(libc::EPROTONOSUPPORT) => PortError::Unsupported { ifname, op, source },
            Some(libc::EBUSY) => PortError::Busy { ifname, op, source },
            _ => PortError::Os { ifname, op, source },
        }
    }

    /// The interface this error is about.
    pub fn ifname(&self) -> &str {
        match self {
            PortError::InvalidName { ifname, .. }
            | PortError::NoSuchInterface { ifname }
            | PortError::PermissionDenied { ifname, .. }
            | PortError::Unsupported { ifname, .. }
            | PortError::Busy { ifname, .. }
            | PortError::TunUnavailable { ifname, .. }
            | PortError::NoRuntime { ifname }
            | PortError::Os { ifname, .. } => ifname,
        }
    }
}

/// Checks an interface name the way the kernel will, returning it NUL-padded for `ifreq`.
pub(crate) fn ifname_bytes(
    ifname: &str,
    allow_empty: bool,
) -> Result<[u8; libc::IFNAMSIZ], PortError> {
    let invalid = |reason| PortError::InvalidName {
        ifname: ifname.to_owned(),
        reason,
    };
    let b = ifname.as_bytes();
    if b.is_empty() && !allow_empty {
        return Err(invalid("empty"));
    }
    if b.len() >= libc::IFNAMSIZ {
        return Err(invalid("longer than 15 bytes"));
    }
    if b.iter()
        .any(|&c| c == 0 || c == b'/' || c == b':' || c.is_ascii_whitespace())
    {
        return Err(invalid("contains NUL, '/', ':' or whitespace"));
    }
    let mut out = [0u8; libc::IFNAMSIZ];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classification() {
        assert!(ifname_bytes("eth0", false).is_ok());
        assert!(ifname_bytes("", true).is_ok());
        assert!(matches!(
            ifname_bytes("", false),
            Err(PortError::InvalidName { .. })
        ));
        assert!(ifname_bytes("a123456789abcde", false).is_ok());
        assert!(ifname_bytes("a123456789abcdef", false).is_err());
        assert!(ifname_bytes("a b", false).is_err());
        let e = PortError::from_os("vh0", "bind", io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(e, PortError::PermissionDenied { .. }));
        assert!(e.to_string().contains("vh0"));
        let e = PortError::from_os("vh0", "bind", io::Error::from_raw_os_error(libc::ENODEV));
        assert!(matches!(e, PortError::NoSuchInterface { .. }));
        assert_eq!(e.ifname(), "vh0");
    }
}
