//! Running code inside another network namespace.
//!
//! `setns(2)` changes the namespace of the calling thread only, so the
//! work runs on a thread of its own that ends with it: no thread of the
//! caller ever changes namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Opens a network namespace file (`/var/run/netns/x`, `/proc/<pid>/ns/net`).
pub fn open_netns(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Runs `work` on a new thread inside the network namespace `netns`, and
/// returns its result.
pub fn in_netns<T, F>(netns: &File, work: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> io::Result<T> + Send,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: `netns` is an open namespace file for the call's duration;
            // setns only affects this thread, which ends after `work`.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            work()
        });
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace worker panicked")))
    })
}
