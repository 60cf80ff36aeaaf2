//! One agent per tunnel address. A tunnel with several sockets binds its
//! port alone first (so that nothing else holds it), then lets it go for
//! its `SO_REUSEPORT` group to take over; two agents started at the same
//! instant could both find the port free in between and end up in one
//! group. So an agent also holds a lock named after its network
//! namespace, the address and the port (`flock` on a file in
//! `/run/plexus`) for as long as its tunnel lives: the second agent fails
//! as it would on a port in use. The kernel lets the lock go when the
//! process ends, however it ends; a tunnel dropped removes its file first
//! (so files do not pile up), which is why a lock is only taken once the
//! file it locked is still the one at its path.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Where the lock files are.
const LOCK_DIR: &str = "/run/plexus";

/// A held tunnel address (let go when dropped).
#[derive(Debug)]
pub struct PortLock {
    file: Option<File>,
    path: PathBuf,
}

impl Drop for PortLock {
    /// Removes the file while still holding it, then lets go.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// Takes the lock of `local` in the calling thread's network namespace.
/// `Ok(None)` when no lock can be made here (no writable `/run`): the
/// tunnel goes on without one, as before. `AddrInUse` if another agent
/// (or tunnel) holds it.
pub fn hold(local: SocketAddr) -> io::Result<Option<PortLock>> {
    // The thread's namespace: a process may open tunnels in several.
    let Ok(netns) = std::fs::metadata("/proc/thread-self/ns/net") else {
        return Ok(None);
    };
    let name = format!(
        "tunnel-{}-{}-{}.lock",
        netns.ino(),
        local.ip(),
        local.port()
    );
    let path = std::path::Path::new(LOCK_DIR).join(name);
    // A file removed by its last holder between our open and our lock is
    // no longer the address's: open the one at the path again.
    for _ in 0..8 {
        let file = std::fs::create_dir_all(LOCK_DIR).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        });
        let file = match file {
            Ok(file) => file,
            Err(error) => {
                tracing::debug!(%error, "no lock on the tunnel address; going on without");
                return Ok(None);
            }
        };
        // SAFETY: flock(2) on a descriptor `file` owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Err(io::Error::from_raw_os_error(libc::EADDRINUSE)),
                _ => Err(error),
            };
        }
        let locked = file.metadata()?.ino();
        if std::fs::metadata(&path).is_ok_and(|m| m.ino() == locked) {
            return Ok(Some(PortLock {
                file: Some(file),
                path,
            }));
        }
    }
    Err(io::Error::other(
        "the tunnel address's lock file keeps changing",
    ))
}
