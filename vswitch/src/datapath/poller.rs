//! Busy polling: one thread that receives from busy ports without waiting
//! for the kernel to wake anyone, so a reply is forwarded microseconds
//! after it arrives instead of after a wakeup.
//!
//! Each port's task waits for its socket in the tokio reactor. With the
//! poller on, a port the datapath just received from or sent to becomes
//! *hot*: its task steps aside and the poller thread polls it (a
//! non-blocking `recvmmsg`) in a loop with every other hot port. A port
//! idle for the poller's hold time goes *cold* again and back to its task.
//! A per-port `serving` flag lets only one of them receive from a port at
//! a time, so frames of one port stay in order.
//!
//! - [`PollMode::Adaptive`]: ports are hot for a short hold
//!   after traffic, the thread sleeps when none is; a burst pays one wakeup,
//!   the packets after it (a ping's reply, the next segments) none.
//! - [`PollMode::Always`]: every bound port, and every receiving socket of
//!   the tunnel, is polled all the time and the thread never sleeps: the
//!   lowest latency, for a host that gives the agent a core of its own (it
//!   keeps one busy even when idle).
//! - [`PollMode::Off`] (the default): every port is served by its task
//!   alone.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{Datapath, PortHandle, TunnelReceiver, Workspace};

/// How long a port stays hot after its last frame, by default.
pub const DEFAULT_HOLD: Duration = Duration::from_micros(200);

/// How ports are received from. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Every port waits in the reactor.
    Off,
    /// Ports with recent traffic are polled for `hold` after their last
    /// frame.
    Adaptive {
        /// How long a port stays hot.
        hold: Duration,
    },
    /// Every port is polled, all the time.
    Always,
}

impl Default for PollMode {
    /// `off`: on the 2-core machine the adaptive mode measured worse than
    /// no poller (see docs/datapath-core.md), so it is opt-in.
    fn default() -> Self {
        PollMode::Off
    }
}

impl FromStr for PollMode {
    type Err = String;

    /// `off`, `adaptive` (hold 200 µs), `adaptive:<µs>`, or `always`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "off" => Ok(PollMode::Off),
            None if s == "adaptive" => Ok(PollMode::Adaptive { hold: DEFAULT_HOLD }),
            None if s == "always" => Ok(PollMode::Always),
            Some(("adaptive", micros)) => match micros.parse::<u64>() {
                Ok(us) if (1..=1_000_000).contains(&us) => Ok(PollMode::Adaptive {
                    hold: Duration::from_micros(us),
                }),
                _ => Err(format!(
                    "bad hold {micros:?}: microseconds from 1 to 1000000"
                )),
            },
            _ => Err(format!(
                "unknown poll mode {s:?}: off, adaptive, adaptive:<µs> or always"
            )),
        }
    }
}

/// A port's polling state.
#[derive(Debug, Default)]
pub struct PortPoll {
    /// Someone is receiving from the port now.
    serving: AtomicBool,
    /// The poller polls the port; its task steps aside.
    hot: AtomicBool,
    /// The port was detached: the poller lets go of it.
    detached: AtomicBool,
    /// Tells the port's task that the poller let go of the port.
    cold: tokio::sync::Notify,
}

impl PortPoll {
    /// Takes the right to receive from the port; false if someone has it.
    pub(super) fn try_serve(&self) -> bool {
        !self.serving.swap(true, Ordering::Acquire)
    }

    /// Gives the right to receive back.
    pub(super) fn served(&self) {
        self.serving.store(false, Ordering::Release);
    }

    /// Whether the poller has the port.
    pub(super) fn is_hot(&self) -> bool {
        self.hot.load(Ordering::Acquire)
    }

    /// Waits until the poller lets go of the port.
    pub(super) async fn wait_cold(&self) {
        while self.is_hot() {
            self.cold.notified().await;
        }
    }

    /// Marks the port detached (the poller lets go of it).
    pub(super) fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    fn cool(&self) {
        self.hot.store(false, Ordering::Release);
        self.cold.notify_one();
    }
}

/// The poller's shared state inside the datapath.
#[derive(Debug, Default)]
pub(super) struct Poller {
    /// The mode and the thread to wake, once started.
    running: OnceLock<(PollMode, std::thread::Thread)>,
    /// Ports that turned hot, for the thread to take.
    warmed: Mutex<Vec<Arc<PortHandle>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stopping: AtomicBool,
    /// Batches the poller received (written by its thread only).
    batches: AtomicU64,
    /// Of those, batches from the tunnel's sockets.
    tunnel_batches: AtomicU64,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Datapath {
    /// Starts the poller thread in `mode` (nothing for [`PollMode::Off`];
    /// once only).
    pub fn start_poller(self: &Arc<Self>, mode: PollMode) {
        let mut slot = locked(&self.poller.thread);
        if mode == PollMode::Off || self.poller.running.get().is_some() {
            return;
        }
        let datapath = self.clone();
        let spawned = std::thread::Builder::new()
            .name("plexus-poll".into())
            .spawn(move || datapath.poll_loop(mode));
        match spawned {
            Ok(thread) => {
                let _ = self.poller.running.set((mode, thread.thread().clone()));
                *slot = Some(thread);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start the poller; ports wait in the reactor")
            }
        }
    }

    /// Whether a poller thread was started.
    pub(super) fn polls(&self) -> bool {
        self.poller.running.get().is_some()
    }

    /// Stops the poller thread and waits for it (it lets go of every port).
    pub fn stop_poller(&self) {
        self.poller.stopping.store(true, Ordering::Release);
        let thread = locked(&self.poller.thread).take();
        if let Some(thread) = thread {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }

    /// Batches the poller thread received and handled.
    pub fn polled_batches(&self) -> u64 {
        self.poller.batches.load(Ordering::Relaxed)
    }

    /// Of those, the batches from the tunnel's sockets.
    pub fn polled_tunnel_batches(&self) -> u64 {
        self.poller.tunnel_batches.load(Ordering::Relaxed)
    }

    /// The port just had traffic: in adaptive mode the poller takes it.
    pub(super) fn warm(&self, port: &Arc<PortHandle>) {
        let Some((PollMode::Adaptive { .. }, thread)) = self.poller.running.get() else {
            return;
        };
        // A shared socket's port receives nothing itself (its receiver
        // does), nor does a VTEP port (the tunnel's receivers do).
        if !port.io.receives() {
            return;
        }
        if port.poll.is_hot() || port.poll.hot.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.poller.stopping.load(Ordering::Acquire) {
            port.poll.cool();
            return;
        }
        locked(&self.poller.warmed).push(port.clone());
        thread.unpark();
    }

    fn poll_loop(&self, mode: PollMode) {
        let mut workspace = self.workspaces.take();
        let mut ports: Vec<(Arc<PortHandle>, Instant)> = Vec::new();
        // In always mode, the tunnel's receiving sockets too.
        let mut tunnels: Vec<Arc<TunnelReceiver>> = Vec::new();
        let mut refreshed = Instant::now() - Duration::from_secs(1);
        while !self.poller.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            match mode {
                PollMode::Always if now - refreshed >= Duration::from_millis(10) => {
                    self.take_all(&mut ports, now);
                    for receiver in self.tunnel_receivers() {
                        if !receiver.poll.hot.swap(true, Ordering::AcqRel) {
                            tunnels.push(receiver);
                        }
                    }
                    refreshed = now;
                }
                _ => ports.extend(
                    locked(&self.poller.warmed)
                        .drain(..)
                        .map(|port| (port, now)),
                ),
            }
            let mut received = false;
            ports.retain_mut(|(port, last)| {
                let keep = self.poll_one(port, last, now, mode, &mut workspace, &mut received);
                if !keep {
                    port.poll.cool();
                }
                keep
            });
            tunnels.retain(|receiver| match self.serve_tunnel_ready(receiver) {
                Ok(n) => {
                    if n > 0 {
                        received = true;
                        self.poller.batches.fetch_add(1, Ordering::Relaxed);
                        self.poller.tunnel_batches.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                }
                // A failing socket goes back to its task, which reports it.
                Err(_) => {
                    receiver.poll.cool();
                    false
                }
            });
            if ports.is_empty() && matches!(mode, PollMode::Adaptive { .. }) {
                std::thread::park();
            } else if !received {
                std::hint::spin_loop();
            }
        }
        let warmed: Vec<_> = locked(&self.poller.warmed).drain(..).collect();
        for port in ports.drain(..).map(|(port, _)| port).chain(warmed) {
            port.poll.cool();
        }
        for receiver in tunnels {
            receiver.poll.cool();
        }
        self.workspaces.put(workspace);
    }

    /// Receives one batch from a hot port; false once the poller should
    /// let go of it (detached, failed, or idle past the hold).
    fn poll_one(
        &self,
        port: &PortHandle,
        last: &mut Instant,
        now: Instant,
        mode: PollMode,
        workspace: &mut Workspace,
        received: &mut bool,
    ) -> bool {
        if port.poll.detached.load(Ordering::Acquire) {
            return false;
        }
        match self.serve_with(port, workspace) {
            Ok(n) if n > 0 => {
                *last = now;
                *received = true;
                self.poller.batches.fetch_add(1, Ordering::Relaxed);
                true
            }
            // A failing port goes back to its task, which reports it.
            Err(_) => false,
            Ok(_) => match mode {
                PollMode::Adaptive { hold } => now.duration_since(*last) < hold,
                _ => true,
            },
        }
    }

    /// In always mode: every attached port that receives (not those of
    /// the shared sockets, whose receivers are taken instead, nor VTEP
    /// ports), hot.
    fn take_all(&self, ports: &mut Vec<(Arc<PortHandle>, Instant)>, now: Instant) {
        let attached: Vec<Arc<PortHandle>> = self
            .ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|port| port.io.receives())
            .cloned()
            .chain(self.receivers())
            .collect();
        for port in attached {
            if !port.poll.hot.swap(true, Ordering::AcqRel) {
                ports.push((port, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("off".parse(), Ok(PollMode::Off));
        assert_eq!("always".parse(), Ok(PollMode::Always));
        assert_eq!(
            "adaptive".parse(),
            Ok(PollMode::Adaptive { hold: DEFAULT_HOLD })
        );
        assert_eq!(PollMode::default(), PollMode::Off);
        assert_eq!(
            "adaptive:50".parse(),
            Ok(PollMode::Adaptive {
                hold: Duration::from_micros(50)
            })
        );
        assert!("adaptive:0".parse::<PollMode>().is_err());
        assert!("fast".parse::<PollMode>().is_err());
    }
}
