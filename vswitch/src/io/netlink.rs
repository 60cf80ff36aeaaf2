//! Netlink calls: the shared `rtnl` crate (the CNI plugin uses it too).

pub use rtnl::*;
