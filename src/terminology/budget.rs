//! What one operation may spend, and how expensive operations are kept from starving cheap ones.
//!
//! A [`Budget`] is a deadline plus a cancelled flag. The code that runs an operation on the
//! blocking pool makes it the thread's *current* budget ([`Budget::run`]); long loops in the
//! terminology code call [`tick`], which every [`TICK_INTERVAL`] calls checks the current budget
//! and returns `too-costly` once the deadline has passed or the request was cancelled (its client
//! went away). A thread-local keeps the operations' signatures free of a budget argument: the
//! loops that must stop are deep inside compose evaluation, and every one of them runs on a
//! thread that [`Budget::run`] set up. Outside `run` (inline operations, unit tests) [`tick`]
//! always succeeds.
//!
//! [`Lanes`] reserve capacity for cheap requests. Every operation starts in the *fast lane*. One
//! still running after [`LaneSettings::slow_after`] moves itself (at its next check) into the
//! *slow lane*, where only [`LaneSettings::slow_threads`] operations run at once and at most
//! [`LaneSettings::slow_queue`] wait for their turn; one that finds the queue full stops with
//! `throttled` (503). The blocking pool is sized (see [`LaneSettings::blocking_threads`]) so that
//! the slow lane, full and with a full queue, still leaves threads to fast work: a flood of
//! expensive requests queues behind itself while a cheap one finds a thread within one
//! `slow_after` at worst.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::error::FhirError;

/// How many [`tick`]s pass between two checks of the budget (a check reads the clock).
pub const TICK_INTERVAL: u32 = 1024;

/// How often a request waiting for the slow lane looks at its own deadline and cancelled flag.
const WAIT_SLICE: Duration = Duration::from_millis(20);

thread_local! {
    static CURRENT: RefCell<Option<Arc<Budget>>> = const { RefCell::new(None) };
    static TICKS: Cell<u32> = const { Cell::new(0) };
}

/// Counts one iteration of a long loop; every [`TICK_INTERVAL`]th call checks the current
/// budget (see [`check`]).
#[inline]
pub fn tick() -> Result<(), FhirError> {
    let n = TICKS.with(|t| {
        let n = t.get().wrapping_add(1);
        t.set(n);
        n
    });
    if n.is_multiple_of(TICK_INTERVAL) {
        check()
    } else {
        Ok(())
    }
}

/// Checks the thread's current budget now: `too-costly` when its deadline has passed or it was
/// cancelled, `throttled` when it had to move to a full slow lane. Succeeds when no budget is set.
pub fn check() -> Result<(), FhirError> {
    let budget = CURRENT.with(|c| c.borrow().clone());
    match budget {
        Some(b) => b.check(),
        None => Ok(()),
    }
}

/// The thread's current budget (see [`Budget::run`]), for work the operation hands to a thread
/// of its own ([`Budget::run_helper`]).
pub fn current() -> Option<Arc<Budget>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Settings of the [`Lanes`].
#[derive(Debug, Clone, Copy)]
pub struct LaneSettings {
    /// How long an operation runs before it counts as expensive and moves to the slow lane.
    pub slow_after: Duration,
    /// How many expensive operations run at once.
    pub slow_threads: usize,
    /// How many expensive operations may wait for the slow lane (more are refused, 503).
    pub slow_queue: usize,
    /// Threads of the blocking pool kept for fast work beyond what the slow lane can hold.
    pub fast_threads: usize,
}

impl LaneSettings {
    /// Defaults for a machine with `cores` cores: the slow lane runs `cores` operations and
    /// queues twice as many; `2 × cores` threads stay for fast work.
    pub fn for_cores(cores: usize) -> Self {
        let cores = cores.max(1);
        Self {
            slow_after: Duration::from_millis(50),
            slow_threads: cores,
            slow_queue: Self::queue_for(cores),
            fast_threads: (2 * cores).max(4),
        }
    }

    /// The default slow-lane queue for `slow_threads` running: twice as many.
    pub fn queue_for(slow_threads: usize) -> usize {
        2 * slow_threads
    }

    /// The size the blocking pool needs: the slow lane running and queueing, plus the fast
    /// threads.
    pub fn blocking_threads(&self) -> usize {
        self.slow_threads + self.slow_queue + self.fast_threads
    }
}

impl Default for LaneSettings {
    fn default() -> Self {
        Self::for_cores(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

#[derive(Debug, Default)]
struct SlowState {
    running: usize,
    waiting: usize,
}

#[derive(Debug)]
struct LaneShared {
    settings: LaneSettings,
    slow: Mutex<SlowState>,
    freed: Condvar,
    /// Operations running under a budget (in either lane).
    active: AtomicUsize,
}

/// The fast and slow lanes operations run in (see the module docs). Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Lanes {
    shared: Arc<LaneShared>,
}

impl Default for Lanes {
    fn default() -> Self {
        Self::new(LaneSettings::default())
    }
}

impl Lanes {
    /// Lanes with these settings.
    pub fn new(settings: LaneSettings) -> Self {
        Self {
            shared: Arc::new(LaneShared {
                settings,
                slow: Mutex::new(SlowState::default()),
                freed: Condvar::new(),
                active: AtomicUsize::new(0),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> LaneSettings {
        self.shared.settings
    }

    /// A budget of `time` from now for one operation in these lanes.
    pub fn budget(&self, time: Duration) -> Arc<Budget> {
        Arc::new(Budget {
            deadline: Instant::now() + time,
            time,
            cancelled: AtomicBool::new(false),
            lanes: Some(self.shared.clone()),
            slow: Mutex::new(None),
            moved: AtomicBool::new(false),
            running_since: OnceLock::new(),
            stopped: Mutex::new(None),
        })
    }

    /// Operations running under a budget of these lanes right now (fast and slow lane, waiting
    /// or not).
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Operations running in the slow lane, and waiting for it.
    pub fn slow_lane(&self) -> (usize, usize) {
        let s = self
            .shared
            .slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (s.running, s.waiting)
    }
}

/// A place in the slow lane, given back when dropped.
#[derive(Debug)]
struct SlowPermit {
    lanes: Arc<LaneShared>,
}

impl Drop for SlowPermit {
    fn drop(&mut self) {
        let mut s = self
            .lanes
            .slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.running = s.running.saturating_sub(1);
        drop(s);
        self.lanes.freed.notify_one();
    }
}

/// What one operation may spend: a deadline and a cancelled flag (see the module docs).
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    time: Duration,
    cancelled: AtomicBool,
    lanes: Option<Arc<LaneShared>>,
    /// The slow-lane place, once the operation moved there.
    slow: Mutex<Option<SlowPermit>>,
    moved: AtomicBool,
    /// When the operation got its thread ([`Budget::run`]): time spent waiting for one counts
    /// against the deadline, not towards the slow lane.
    running_since: OnceLock<Instant>,
    /// Why the operation was stopped, once it was: every later check gives the same error.
    stopped: Mutex<Option<FhirError>>,
}

/// Cancels a budget when dropped: held by the future that waits for the operation, so that a
/// request whose client went away (axum drops its handler future) stops its blocking work too.
#[derive(Debug)]
pub struct CancelOnDrop(pub Arc<Budget>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Budget {
    /// A budget of `time` from now outside any lanes (it never moves to a slow lane).
    pub fn standalone(time: Duration) -> Arc<Self> {
        Arc::new(Self {
            deadline: Instant::now() + time,
            time,
            cancelled: AtomicBool::new(false),
            lanes: None,
            slow: Mutex::new(None),
            moved: AtomicBool::new(false),
            running_since: OnceLock::new(),
            stopped: Mutex::new(None),
        })
    }

    /// Marks the operation cancelled: its next check fails and it stops.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(l) = &self.lanes {
            // Wake waiters so a cancelled one leaves the queue now.
            l.freed.notify_all();
        }
    }

    /// Whether the operation was cancelled (or ran out of time at a check).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The error for an operation that ran out of time.
    pub fn timeout_error(&self) -> FhirError {
        FhirError::TooCostly(format!(
            "The operation did not finish within its time budget of {} ms (the server's request timeout)",
            self.time.as_millis()
        ))
    }

    fn cancelled_error() -> FhirError {
        FhirError::TooCostly(
            "The operation was cancelled (the client went away or the time budget ran out)".into(),
        )
    }

    /// Runs `f` with this budget as the thread's current one, counting it as active in its
    /// lanes; a slow-lane place taken meanwhile is given back when `f` returns.
    pub fn run<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Restore {
            previous: Option<Arc<Budget>>,
            budget: Arc<Budget>,
        }
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = self.previous.take());
                self.budget
                    .slow
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(l) = &self.budget.lanes {
                    l.active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        if let Some(l) = &self.lanes {
            l.active.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.running_since.set(Instant::now());
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let _restore = Restore {
            previous,
            budget: self.clone(),
        };
        f()
    }

    /// Runs `f` on a thread an operation running under this budget started to share its work
    /// (a `$diff` walks two halves of a register at once): `f`'s checks see this budget, so
    /// the helper stops at the same deadline, on the same cancel, with the same error as the
    /// operation. The helper is part of the operation: it is not counted as another active
    /// operation, and the slow-lane place the operation holds stays the operation's.
    pub fn run_helper<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<Budget>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(self.clone())));
        f()
    }

    /// Checks the budget now (see [`check`]); moves the operation to the slow lane once it has
    /// run longer than the lanes' `slow_after`, waiting there for a place.
    pub fn check(&self) -> Result<(), FhirError> {
        self.check_now().map_err(|e| {
            self.cancelled.store(true, Ordering::SeqCst);
            self.stopped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(e)
                .clone()
        })
    }

    fn check_now(&self) -> Result<(), FhirError> {
        if self.is_cancelled() {
            return Err(Self::cancelled_error());
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(self.timeout_error());
        }
        // Once, whichever thread of the operation gets here first (see `run_helper`).
        if let Some(lanes) = &self.lanes
            && !self.moved.load(Ordering::Relaxed)
            && self
                .running_since
                .get()
                .is_some_and(|since| now.duration_since(*since) >= lanes.settings.slow_after)
            && !self.moved.swap(true, Ordering::AcqRel)
        {
            let permit = self.enter_slow_lane(lanes)?;
            *self.slow.lock().unwrap_or_else(PoisonError::into_inner) = Some(permit);
        }
        Ok(())
    }

    fn enter_slow_lane(&self, lanes: &Arc<LaneShared>) -> Result<SlowPermit, FhirError> {
        let settings = lanes.settings;
        let mut s = lanes.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if s.running < settings.slow_threads {
            s.running += 1;
            return Ok(SlowPermit {
                lanes: lanes.clone(),
            });
        }
        if s.waiting >= settings.slow_queue {
            return Err(FhirError::Busy(format!(
                "The server is busy with other expensive requests ({} running, {} waiting); try again later",
                s.running, s.waiting
            )));
        }
        s.waiting += 1;
        loop {
            let (guard, _) = lanes
                .freed
                .wait_timeout(s, WAIT_SLICE)
                .unwrap_or_else(PoisonError::into_inner);
            s = guard;
            let failed = if self.is_cancelled() {
                Some(Self::cancelled_error())
            } else if Instant::now() >= self.deadline {
                Some(self.timeout_error())
            } else {
                None
            };
            if let Some(e) = failed {
                s.waiting -= 1;
                return Err(e);
            }
            if s.running < settings.slow_threads {
                s.waiting -= 1;
                s.running += 1;
                return Ok(SlowPermit {
                    lanes: lanes.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stop_at_the_deadline_and_on_cancel() {
        let b = Budget::standalone(Duration::from_millis(30));
        let r = b.run(|| {
            loop {
                tick()?;
            }
            #[expect(unreachable_code, reason = "the loop ends by an error")]
            Ok::<(), FhirError>(())
        });
        assert!(matches!(r, Err(FhirError::TooCostly(_))));
        let b = Budget::standalone(Duration::from_secs(60));
        b.cancel();
        assert!(b.run(check).is_err());
        assert!(check().is_ok(), "no budget outside run");
    }

    /// A thread helping an operation stops when the operation's budget runs out or is
    /// cancelled, and the operation sees why the helper stopped.
    #[test]
    fn a_helper_thread_runs_under_the_operations_budget() {
        let b = Budget::standalone(Duration::from_millis(30));
        let r = b.run(|| {
            let budget = current().expect("the operation's budget");
            let helper = std::thread::spawn(move || {
                budget.run_helper(|| {
                    loop {
                        tick()?;
                    }
                    #[expect(unreachable_code, reason = "the loop ends by an error")]
                    Ok::<(), FhirError>(())
                })
            });
            let stopped = helper.join().expect("joins");
            assert!(matches!(stopped, Err(FhirError::TooCostly(_))));
            check()
        });
        assert!(matches!(r, Err(FhirError::TooCostly(_))), "{r:?}");
        let b = Budget::standalone(Duration::from_secs(60));
        b.run(|| {
            let budget = current().expect("the operation's budget");
            budget.cancel();
            let helper = std::thread::spawn(move || budget.run_helper(check));
            assert!(helper.join().expect("joins").is_err());
        });
        // Outside the operation the helper's thread has no budget again.
        assert!(current().is_none());
    }

    #[test]
    fn the_slow_lane_admits_its_threads_queues_and_refuses_beyond() {
        let lanes = Lanes::new(LaneSettings {
            slow_after: Duration::ZERO,
            slow_threads: 1,
            slow_queue: 1,
            fast_threads: 1,
        });
        let on_thread = |b: &Arc<Budget>| {
            let _ = b.running_since.set(Instant::now());
        };
        let first = lanes.budget(Duration::from_secs(5));
        on_thread(&first);
        first.check().expect("a free place");
        assert_eq!(lanes.slow_lane(), (1, 0));
        let second = lanes.budget(Duration::from_secs(5));
        on_thread(&second);
        let waiter = {
            let second = second.clone();
            std::thread::spawn(move || second.check())
        };
        while lanes.slow_lane().1 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let third = lanes.budget(Duration::from_secs(5));
        on_thread(&third);
        assert!(matches!(third.check(), Err(FhirError::Busy(_))));
        // The first gives its place back: the waiting one gets it.
        first.slow.lock().expect("lock").take();
        waiter.join().expect("joins").expect("admitted");
        assert_eq!(lanes.slow_lane(), (1, 0));
    }
}
