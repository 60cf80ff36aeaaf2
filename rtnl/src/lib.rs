//! A minimal rtnetlink client for the host and pod set-up Plexus does
//! itself: links (veth pairs, MTU, alias, up), IPv4 and IPv6 addresses and
//! routes, and running such calls inside a network namespace.
//!
//! Each call opens one socket in the calling thread's network namespace,
//! sends one request and reads the kernel's answer up to its ack (or the
//! end of a dump). Adding is idempotent where the kernel allows it (an
//! existing address or route is not an error); deleting what is gone is
//! not an error either.
#![warn(missing_docs)]

mod addr;
mod link;
mod message;
mod netns;
mod route;

pub use addr::{add_address, add_ip_address, addresses, ip_addresses, Address};
pub use link::{
    configure_link, create_veth, delete_link, link_by_name, link_index, links, set_link_up, Link,
    LinkSettings, VethPair,
};
pub use netns::{in_netns, open_netns};
pub use route::{
    delete_ip_route, delete_route, ip_routes, replace_ip_route, replace_route, routes, IpRoute,
    Route,
};
