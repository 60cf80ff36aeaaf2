//! Opening many AF_PACKET ports at once (an agent's cold start).
//!
//! `socket(AF_PACKET)` costs more the more packet sockets the network
//! namespace already holds: the kernel appends each new socket at the tail
//! of the namespace's socket list, walking the whole list under a mutex
//! (`packet_create`). Opening n ports is O(n²) in the kernel: here the
//! 1,000th socket took 7 µs and the 10,000th 163 µs, 0.85 s for 10,000
//! sockets and nothing else. The walk can be neither avoided nor split
//! across threads (one mutex per namespace), so [`open_many`] takes
//! everything else off its path: one thread only looks up interface indexes
//! and creates sockets, while the calling thread configures, binds and
//! registers each socket as it comes, and hands the port on.

use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::afpacket::{packet_socket, AfPacket, AfPacketOptions};
use super::error::{ifname_bytes, PortError};
use super::sys::cvt;

/// Below this many ports, [`open_many`] opens them one after the other on
/// the calling thread (a thread costs more than it saves).
const PIPELINE_MIN: usize = 16;

/// Sockets created ahead of the configuring thread, at most.
const QUEUE: usize = 512;

/// Looks up interface indexes by name (`SIOCGIFINDEX`) on one datagram
/// socket kept for the purpose, instead of a socket per lookup as
/// `if_nametoindex(3)` does.
#[derive(Debug)]
pub(crate) struct IndexLookup {
    fd: OwnedFd,
}

impl IndexLookup {
    /// A lookup socket in the calling thread's network namespace.
    pub(crate) fn new() -> io::Result<IndexLookup> {
        // SAFETY: plain socket(2) call with constant arguments; the result is checked.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        Ok(IndexLookup {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// The index of interface `ifname`; [`PortError::NoSuchInterface`] when
    /// the namespace has none of that name.
    pub(crate) fn index(&self, ifname: &str) -> Result<u32, PortError> {
        let name = ifname_bytes(ifname, false)?;
        // SAFETY: all-zero is a valid ifreq (a name array and a plain-data union).
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.iter()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads the NUL-terminated name (ifname_bytes
        // leaves a trailing zero) and writes the index into the live `ifr`.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SIOCGIFINDEX,
                &mut ifr as *mut libc::ifreq,
            )
        };
        match cvt(ret) {
            // SAFETY: SIOCGIFINDEX succeeded, so the union holds the index.
            Ok(_) => Ok(unsafe { ifr.ifr_ifru.ifru_ifindex } as u32),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO)) => {
                Err(PortError::NoSuchInterface {
                    ifname: ifname.to_owned(),
                })
            }
            Err(e) => Err(PortError::from_os(ifname, "ioctl(SIOCGIFINDEX)", e)),
        }
    }
}

/// Where [`open_many`] spent its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenTimes {
    /// Creating sockets (the kernel's socket list walk): on a thread of its
    /// own when pipelined.
    pub sockets: Duration,
    /// Looking up indexes, configuring, binding and registering sockets
    /// (the calling thread).
    pub configure: Duration,
    /// Waiting for the socket thread (the calling thread).
    pub waited: Duration,
    /// In the caller's `each`.
    pub handed_on: Duration,
}

/// Opens `ifname` on a socket from `socket`, which is called only once
/// the interface is known to exist.
fn open_one(
    lookup: &io::Result<IndexLookup>,
    ifname: &str,
    opts: &AfPacketOptions,
    socket: impl FnOnce() -> Result<OwnedFd, PortError>,
) -> Result<AfPacket, PortError> {
    let index = match lookup {
        Ok(lookup) => lookup.index(ifname)?,
        Err(e) => {
            let e = io::Error::new(e.kind(), e.to_string());
            return Err(PortError::from_os(ifname, "socket(AF_INET) for lookups", e));
        }
    };
    AfPacket::configure(socket()?, ifname, index, opts)
}

/// Opens an AF_PACKET port on each of `ifnames` (in the calling thread's
/// network namespace) and calls `each` with its position in `ifnames` and
/// the outcome, in order: [`PortError::NoSuchInterface`] for a name no
/// interface has; `each` returning [`ControlFlow::Break`] stops there. As
/// [`AfPacket::open_with`] for each name, but (from
/// [`PIPELINE_MIN`] names on) the sockets are created on a second thread
/// while this one configures them (see the module's documentation).
///
/// Must run inside a Tokio runtime with IO enabled (a blocking-pool thread
/// will do).
pub fn open_many<S: AsRef<str> + Sync>(
    ifnames: &[S],
    opts: &AfPacketOptions,
    mut each: impl FnMut(usize, Result<AfPacket, PortError>) -> ControlFlow<()>,
) -> OpenTimes {
    let lookup = IndexLookup::new();
    let mut times = OpenTimes::default();
    if ifnames.len() < PIPELINE_MIN {
        open_sequentially(ifnames, &lookup, opts, &mut times, &mut each);
        return times;
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let done = AtomicBool::new(false);
    let pipelined = std::thread::scope(|scope| {
        let done = &done;
        // At most a socket a name; ahead of need by QUEUE at most (names
        // without an interface take none).
        let producer = std::thread::Builder::new()
            .name("plexus-open".into())
            .spawn_scoped(scope, move || {
                let mut busy = Duration::ZERO;
                for ifname in ifnames {
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    let started = Instant::now();
                    let socket = packet_socket(ifname.as_ref());
                    busy += started.elapsed();
                    if tx.send(socket).is_err() {
                        break;
                    }
                }
                busy
            });
        let Ok(producer) = producer else {
            return false;
        };
        for (i, ifname) in ifnames.iter().enumerate() {
            let (ifname, started) = (ifname.as_ref(), Instant::now());
            let mut waited = Duration::ZERO;
            let port = open_one(&lookup, ifname, opts, || {
                let started = Instant::now();
                let stopped = || {
                    let why = io::Error::other("the socket thread stopped");
                    PortError::from_os(ifname, "socket(AF_PACKET)", why)
                };
                let socket = rx.recv().unwrap_or_else(|_| Err(stopped()));
                waited = started.elapsed();
                socket
            });
            times.waited += waited;
            times.configure += started.elapsed() - waited;
            let handing = Instant::now();
            let flow = each(i, port);
            times.handed_on += handing.elapsed();
            if flow.is_break() {
                break;
            }
        }
        done.store(true, Ordering::Release);
        // The sockets made for names without an interface: closing one
        // waits for an RCU grace period, so not here.
        let spare: Vec<OwnedFd> = rx.iter().filter_map(Result::ok).collect();
        times.sockets = producer.join().unwrap_or_default();
        if !spare.is_empty() {
            let closer = std::thread::Builder::new().name("plexus-close".into());
            let _ = closer.spawn(move || super::close_all(spare));
        }
        true
    });
    if !pipelined {
        // No thread to be had: everything here, one after the other.
        open_sequentially(ifnames, &lookup, opts, &mut times, &mut each);
    }
    times
}

/// [`open_many`] on the calling thread alone.
fn open_sequentially<S: AsRef<str>>(
    ifnames: &[S],
    lookup: &io::Result<IndexLookup>,
    opts: &AfPacketOptions,
    times: &mut OpenTimes,
    each: &mut impl FnMut(usize, Result<AfPacket, PortError>) -> ControlFlow<()>,
) {
    for (i, ifname) in ifnames.iter().enumerate() {
        let (ifname, started) = (ifname.as_ref(), Instant::now());
        let mut creating = Duration::ZERO;
        let port = open_one(lookup, ifname, opts, || {
            let started = Instant::now();
            let socket = packet_socket(ifname);
            creating = started.elapsed();
            socket
        });
        times.sockets += creating;
        times.configure += started.elapsed() - creating;
        let handing = Instant::now();
        let flow = each(i, port);
        times.handed_on += handing.elapsed();
        if flow.is_break() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lookup_finds_loopback_and_reports_missing_interfaces() {
        let lookup = IndexLookup::new().expect("a datagram socket");
        let lo = lookup.index("lo").expect("lo exists in every namespace");
        assert_eq!(lo, rtnl::link_index("lo").expect("if_nametoindex(lo)"));
        assert!(matches!(
            lookup.index("plexus-none0"),
            Err(PortError::NoSuchInterface { .. })
        ));
        assert!(matches!(
            lookup.index("a/b"),
            Err(PortError::InvalidName { .. })
        ));
    }

    #[tokio::test]
    async fn open_many_reports_every_name_in_order() {
        // Missing interfaces need no privilege: every name gets its answer,
        // through the pipelined path (more than PIPELINE_MIN names) and the
        // direct one.
        for count in [3, PIPELINE_MIN * 3] {
            let names: Vec<String> = (0..count).map(|i| format!("plexus-no{i}")).collect();
            let mut seen = Vec::new();
            tokio::task::spawn_blocking(move || {
                open_many(&names, &AfPacketOptions::default(), |i, result| {
                    assert!(matches!(result, Err(PortError::NoSuchInterface { .. })));
                    seen.push(i);
                    ControlFlow::Continue(())
                });
                assert_eq!(seen, (0..count).collect::<Vec<_>>());
            })
            .await
            .expect("the opener ran");
        }
    }
}
