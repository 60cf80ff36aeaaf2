//! When the controller reconciles: a pure state machine over instants, so
//! debounce, resync and retry are tested without a clock.
//!
//! - A change is reconciled `debounce` after the first change of a burst
//!   (later changes join it, they do not postpone it).
//! - A relist or a resync reconciles even when nothing seems to have
//!   changed: the watch may have missed something, or the Plexus side may
//!   have drifted.
//! - A failed reconcile is retried with exponential backoff, whatever
//!   changes meanwhile (the retry reads the newest state).
//! - Nothing is reconciled before every kind has been listed.

use std::time::{Duration, Instant};

/// The controller's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long after a change the reconcile runs, gathering a burst of
    /// changes into one.
    pub debounce: Duration,
    /// How often the full state is reconciled without any change.
    pub resync: Duration,
    /// The first retry's delay after a failed reconcile; doubled each
    /// failure.
    pub retry_min: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            debounce: Duration::from_millis(150),
            resync: Duration::from_secs(300),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// What the controller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Reconcile now; `forced` when it must run even if the state equals
    /// the last one reconciled (relist, resync, retry).
    Reconcile {
        /// Run even if nothing changed.
        forced: bool,
    },
    /// Wait for an update, or until this instant.
    WaitUntil(Instant),
}

/// The reconcile schedule.
#[derive(Debug)]
pub struct Schedule {
    timing: Timing,
    /// When the pending reconcile is due.
    due: Option<Instant>,
    /// Whether the pending reconcile must run even if nothing changed.
    forced: bool,
    /// When the next resync is due.
    resync_at: Instant,
    /// Consecutive failures.
    failures: u32,
}

impl Schedule {
    /// A schedule starting at `now`, nothing pending.
    pub fn new(timing: Timing, now: Instant) -> Self {
        Schedule {
            timing,
            due: None,
            forced: false,
            resync_at: now + timing.resync,
            failures: 0,
        }
    }

    /// An object changed.
    pub fn changed(&mut self, now: Instant) {
        self.due_by(now + self.timing.debounce);
    }

    /// A kind was listed afresh.
    pub fn relisted(&mut self, now: Instant) {
        self.forced = true;
        self.due_by(now + self.timing.debounce);
    }

    fn due_by(&mut self, at: Instant) {
        // During a retry's backoff the retry stays where it is.
        if self.failures > 0 && self.due.is_some() {
            return;
        }
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    /// What to do at `now`; `ready` tells whether every kind has been
    /// listed.
    pub fn next(&mut self, now: Instant, ready: bool) -> Next {
        if !ready {
            // The last initial list is a relist: it schedules the first one.
            self.due = None;
            self.resync_at = now + self.timing.resync;
            return Next::WaitUntil(self.resync_at);
        }
        if now >= self.resync_at {
            self.forced = true;
            // A retry in backoff stays where it is; it is forced anyway.
            self.due = Some(match self.due {
                Some(due) if self.failures > 0 => due,
                _ => now,
            });
        }
        match self.due {
            Some(due) if due <= now => Next::Reconcile {
                forced: self.forced,
            },
            Some(due) if self.resync_at > now => Next::WaitUntil(due.min(self.resync_at)),
            Some(due) => Next::WaitUntil(due),
            None => Next::WaitUntil(self.resync_at),
        }
    }

    /// The reconcile succeeded (or had nothing to do) at `now`.
    pub fn succeeded(&mut self, now: Instant) {
        self.due = None;
        self.forced = false;
        self.failures = 0;
        self.resync_at = now + self.timing.resync;
    }

    /// The reconcile failed at `now`: retry after the backoff, which it
    /// returns.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let delay = self
            .timing
            .retry_min
            .saturating_mul(1 << self.failures.min(16))
            .min(self.timing.retry_max);
        self.failures = self.failures.saturating_add(1);
        self.forced = true;
        self.due = Some(now + delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing() -> Timing {
        Timing {
            debounce: 100 * MS,
            resync: 10_000 * MS,
            retry_min: 500 * MS,
            retry_max: 2_000 * MS,
        }
    }

    #[test]
    fn waits_for_every_kind() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(timing(), t0);
        schedule.relisted(t0);
        schedule.changed(t0);
        // Not ready: nothing is reconciled, not even at resync time.
        assert!(matches!(
            schedule.next(t0 + 20_000 * MS, false),
            Next::WaitUntil(_)
        ));
        // The last kind's list arrives.
        let t1 = t0 + 20_000 * MS;
        schedule.relisted(t1);
        assert_eq!(schedule.next(t1, true), Next::WaitUntil(t1 + 100 * MS));
        assert_eq!(
            schedule.next(t1 + 100 * MS, true),
            Next::Reconcile { forced: true }
        );
    }

    #[test]
    fn a_burst_of_changes_is_one_reconcile_debounce_after_its_first() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(timing(), t0);
        schedule.changed(t0);
        schedule.changed(t0 + 60 * MS);
        assert_eq!(
            schedule.next(t0 + 60 * MS, true),
            Next::WaitUntil(t0 + 100 * MS)
        );
        assert_eq!(
            schedule.next(t0 + 100 * MS, true),
            Next::Reconcile { forced: false }
        );
        schedule.succeeded(t0 + 100 * MS);
        assert_eq!(
            schedule.next(t0 + 200 * MS, true),
            Next::WaitUntil(t0 + 10_100 * MS)
        );
    }

    #[test]
    fn resyncs_when_quiet() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(timing(), t0);
        assert_eq!(schedule.next(t0, true), Next::WaitUntil(t0 + 10_000 * MS));
        assert_eq!(
            schedule.next(t0 + 10_000 * MS, true),
            Next::Reconcile { forced: true }
        );
        schedule.succeeded(t0 + 10_000 * MS);
        assert_eq!(
            schedule.next(t0 + 10_001 * MS, true),
            Next::WaitUntil(t0 + 20_000 * MS)
        );
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(timing(), t0);
        schedule.changed(t0);
        let delays: Vec<_> = (0..4).map(|_| schedule.failed(t0)).collect();
        assert_eq!(delays, [500 * MS, 1_000 * MS, 2_000 * MS, 2_000 * MS]);
        // A change during the backoff does not bring the retry forward.
        schedule.changed(t0 + 10 * MS);
        assert_eq!(
            schedule.next(t0 + 10 * MS, true),
            Next::WaitUntil(t0 + 2_000 * MS)
        );
        // The retry runs even if the state equals the last reconciled.
        assert_eq!(
            schedule.next(t0 + 2_000 * MS, true),
            Next::Reconcile { forced: true }
        );
        schedule.succeeded(t0 + 2_000 * MS);
        // A resync falling in a retry's backoff waits for the retry.
        schedule.changed(t0 + 11_900 * MS);
        assert_eq!(
            schedule.failed(t0 + 11_950 * MS),
            500 * MS,
            "reset by the success"
        );
        assert_eq!(
            schedule.next(t0 + 12_000 * MS, true),
            Next::WaitUntil(t0 + 12_450 * MS)
        );
        assert_eq!(
            schedule.next(t0 + 12_450 * MS, true),
            Next::Reconcile { forced: true }
        );
    }
}
