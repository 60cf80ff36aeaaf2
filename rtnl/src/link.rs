//! Links: finding them, bringing them up, configuring them, creating veth
//! pairs (the far end straight into another network namespace) and
//! deleting them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::message::{attributes, exchange, string_value, transact, u32_value, Attrs, Request};

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

/// What the kernel reports about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The hardware address (empty when the link has none).
    pub mac: Vec<u8>,
    /// The MTU.
    pub mtu: u32,
    /// Whether the link is administratively up.
    pub up: bool,
    /// The interface alias (`ip link set … alias …`), if set.
    pub alias: Option<String>,
    /// The link kind (`veth`, `tun`, …), if it has one.
    pub kind: Option<String>,
}

/// A `struct ifinfomsg` for link `index` setting `flags` within `change`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    // family, pad, type, index, flags, change.
    let mut body = [0u8; 16];
    body[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    body[8..12].copy_from_slice(&flags.to_ne_bytes());
    body[12..16].copy_from_slice(&change.to_ne_bytes());
    body
}

fn parse_link(message: &[u8]) -> Option<Link> {
    let header = message.get(..16)?;
    let index = i32::from_ne_bytes(header[4..8].try_into().ok()?) as u32;
    let flags = u32::from_ne_bytes(header[8..12].try_into().ok()?);
    let mut link = Link {
        index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        up: flags & libc::IFF_UP as u32 != 0,
        alias: None,
        kind: None,
    };
    for (kind, value) in attributes(&message[16..]) {
        match kind {
            IFLA_IFNAME => link.name = string_value(value),
            IFLA_ADDRESS => link.mac = value.to_vec(),
            IFLA_MTU => link.mtu = u32_value(value).unwrap_or(0),
            IFLA_IFALIAS => link.alias = Some(string_value(value)),
            IFLA_LINKINFO => {
                link.kind = attributes(value)
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, v)| string_value(v));
            }
            _ => {}
        }
    }
    Some(link)
}

/// The index of interface `name`.
pub fn link_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// The link called `name`, or `None` when there is none.
pub fn link_by_name(name: &str) -> io::Result<Option<Link>> {
    let body = Attrs::default()
        .raw(&ifinfomsg(0, 0, 0))
        .string(IFLA_IFNAME, name);
    match exchange(Request::new(libc::RTM_GETLINK, 0, body), &[]) {
        Ok(answers) => Ok(answers.iter().find_map(|m| parse_link(m))),
        Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Every link of the calling thread's network namespace.
pub fn links() -> io::Result<Vec<Link>> {
    let body = Attrs::default().raw(&ifinfomsg(0, 0, 0));
    let answers = exchange(
        Request::new(libc::RTM_GETLINK, libc::NLM_F_DUMP as u16, body),
        &[],
    )?;
    Ok(answers.iter().filter_map(|m| parse_link(m)).collect())
}

/// Brings link `index` administratively up.
pub fn set_link_up(index: u32) -> io::Result<()> {
    configure_link(index, &LinkSettings::default())
}

/// What [`configure_link`] sets on a link besides bringing it up.
#[derive(Debug, Clone, Default)]
pub struct LinkSettings {
    /// The MTU, if it should change.
    pub mtu: Option<u32>,
    /// The interface alias, if it should change.
    pub alias: Option<String>,
}

/// Brings link `index` up and applies `settings`, in one request.
pub fn configure_link(index: u32, settings: &LinkSettings) -> io::Result<()> {
    let up = libc::IFF_UP as u32;
    let mut body = Attrs::default().raw(&ifinfomsg(index, up, up));
    if let Some(mtu) = settings.mtu {
        body = body.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    if let Some(alias) = &settings.alias {
        body = body.attr(IFLA_IFALIAS, alias.as_bytes());
    }
    transact(Request::new(libc::RTM_NEWLINK, 0, body), &[])
}

/// A veth pair to create: `name` stays in the calling thread's namespace,
/// `peer_name` is created directly in the namespace `peer_netns` refers to.
#[derive(Debug, Clone)]
pub struct VethPair<'a> {
    /// The near end's name.
    pub name: &'a str,
    /// The far end's name (in `peer_netns`).
    pub peer_name: &'a str,
    /// The far end's MAC.
    pub peer_mac: [u8; 6],
    /// The MTU of both ends.
    pub mtu: Option<u32>,
    /// The network namespace of the far end.
    pub peer_netns: BorrowedFd<'a>,
}

/// Creates a veth pair; fails with `EEXIST` if either name is taken.
pub fn create_veth(pair: &VethPair<'_>) -> io::Result<()> {
    let mut peer = Attrs::default()
        .raw(&ifinfomsg(0, 0, 0))
        .string(IFLA_IFNAME, pair.peer_name)
        .attr(IFLA_ADDRESS, &pair.peer_mac)
        .attr(
            IFLA_NET_NS_FD,
            &(pair.peer_netns.as_raw_fd() as u32).to_ne_bytes(),
        );
    let mut body = Attrs::default()
        .raw(&ifinfomsg(0, 0, 0))
        .string(IFLA_IFNAME, pair.name);
    if let Some(mtu) = pair.mtu {
        peer = peer.attr(IFLA_MTU, &mtu.to_ne_bytes());
        body = body.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    let info = Attrs::default().string(IFLA_INFO_KIND, "veth").nested(
        IFLA_INFO_DATA,
        Attrs::default().nested(VETH_INFO_PEER, peer),
    );
    let body = body.nested(IFLA_LINKINFO, info);
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    transact(Request::new(libc::RTM_NEWLINK, flags, body), &[])
}

/// Deletes the link called `name` (with a veth, its peer goes too).
/// Returns whether it existed.
pub fn delete_link(name: &str) -> io::Result<bool> {
    let body = Attrs::default()
        .raw(&ifinfomsg(0, 0, 0))
        .string(IFLA_IFNAME, name);
    match transact(Request::new(libc::RTM_DELLINK, 0, body), &[]) {
        Ok(()) => Ok(true),
        Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_is_an_error_or_none() {
        assert!(link_index("plexus-none0").is_err());
        assert_eq!(link_by_name("plexus-none0").unwrap(), None);
    }

    #[test]
    fn loopback_is_listed() {
        let lo = link_by_name("lo").unwrap().expect("lo exists");
        assert_eq!(lo.index, link_index("lo").unwrap());
        assert!(links().unwrap().iter().any(|l| l.name == "lo"));
    }
}
