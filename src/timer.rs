//! Deadlines of the server's own: the handshake deadline, the heartbeat and the deadlines
//! of writes and waits.
//!
//! async-io's timers wake its reactor at every registration (an `eventfd` write, then the
//! reactor's `epoll_pwait`, `timerfd_settime`, the `eventfd` read and two `epoll_ctl` to
//! re-arm them): two per connection, at the handshake and at the session's start. These
//! timers live in one ordered map, watched by one thread (`wssd-timer`, started by the first
//! timer) that sleeps until the earliest deadline; a new deadline wakes it only when it is
//! earlier than the one it sleeps until, which a deadline some seconds ahead almost never
//! is. The thread wakes a timer's task when its deadline passes; no executor is involved,
//! so the timers work under smol, async-std and tokio alike.
//!
//! Each timer reads a [`Clock`]: the system's (that thread's map), or a manual one whose
//! time moves only when a test calls [`Clock::advance`], which fires its due timers itself;
//! so a test asserts that a timeout does not fire a moment early, as well as that it fires.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A timer: fires once at a deadline, or at every period of an interval, or never.
#[derive(Debug)]
pub(crate) struct Timer {
    /// The clock it reads, and whose map holds its entry.
    clock: Clock,
    /// The next deadline; `None`: never.
    when: Option<Instant>,
    /// The period of an interval; zero for a one-off timer.
    period: Duration,
    /// Its entry in the map, and a copy of the waker the entry holds (so that a poll with
    /// the same waker takes no lock).
    registered: Option<(u64, Waker)>,
}

impl Timer {
    /// A timer on the system's clock that never fires, until set.
    pub(crate) fn never() -> Self {
        Clock::system().never()
    }

    /// A timer on the system's clock that fires once, `after` from now.
    pub(crate) fn after(after: Duration) -> Self {
        Clock::system().after(after)
    }

    /// Fires once, `after` from now (in place of what was set).
    pub(crate) fn set_after(&mut self, after: Duration) {
        // A deadline past what `Instant` holds is never.
        match self.clock.now().checked_add(after) {
            Some(at) => self.set_at(at),
            None => self.clear(),
        }
    }

    /// Fires once, at `at` (in place of what was set).
    pub(crate) fn set_at(&mut self, at: Instant) {
        self.deregister();
        self.when = Some(at);
        self.period = Duration::ZERO;
    }

    /// Never fires, until set again.
    pub(crate) fn clear(&mut self) {
        self.deregister();
        self.when = None;
    }

    /// Whether the deadline has passed: `Ready` with it, once (an interval moves on to its
    /// next deadline, and registers it with this same waker); `Pending` until then, with
    /// the task woken when it passes.
    pub(crate) fn poll_fire(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let Some(when) = self.when else {
            return Poll::Pending;
        };
        if when <= self.clock.now() {
            self.deregister();
            self.when = if self.period.is_zero() {
                None
            } else {
                when.checked_add(self.period)
            };
            if let Some(next) = self.when {
                self.register(next, cx.waker());
            }
            return Poll::Ready(when);
        }
        match &self.registered {
            Some((_, waker)) if waker.will_wake(cx.waker()) => {}
            Some((id, _)) => {
                let id = *id;
                let old = self
                    .clock
                    .0
                    .lock()
                    .timers
                    .insert((when, id), cx.waker().clone());
                self.registered = Some((id, cx.waker().clone()));
                // Dropped with the lock released: a waker's drop may drop a task, and with
                // it another timer.
                drop(old);
            }
            None => self.register(when, cx.waker()),
        }
        Poll::Pending
    }

    fn register(&mut self, when: Instant, waker: &Waker) {
        let id = self.clock.0.insert(when, waker.clone());
        self.registered = Some((id, waker.clone()));
    }

    fn deregister(&mut self) {
        if let (Some((id, _)), Some(when)) = (self.registered.take(), self.when) {
            let removed = self.clock.0.lock().timers.remove(&(when, id));
            drop(removed); // with the lock released, as above
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl Future for Timer {
    type Output = Instant;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        self.get_mut().poll_fire(cx)
    }
}

/// The clock that wssd's timeouts are measured by ([`Limits::clock`](crate::Limits::clock)):
/// the system's monotonic clock, or a clock that stands still until a test moves it.
///
/// With [`Clock::manual`], a test asserts that a timeout does not fire a moment before its
/// time as well as that it fires at it, with no sleep and no wait on the wall clock:
///
/// ```
/// use std::time::Duration;
/// let clock = wssd::Clock::manual();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(25)); // the default ping interval
/// assert_eq!(clock.now() - start, Duration::from_secs(25));
/// let mut limits = wssd::Limits::default();
/// limits.clock = clock; // the heartbeat, idle and handshake timeouts now read it
/// ```
#[derive(Clone, Copy)]
pub struct Clock(&'static Service);

/// The system clock's map, watched by the `wssd-timer` thread (started by its first timer).
static SYSTEM: Service = Service {
    state: Mutex::new(State {
        timers: BTreeMap::new(),
        next_id: 0,
        sleeping_until: None,
    }),
    earlier: Condvar::new(),
    manual: None,
    thread: std::sync::Once::new(),
};

impl Clock {
    /// The system's monotonic clock (`Instant::now`): the default.
    ///
    /// ```
    /// let limits = wssd::Limits::default();
    /// assert_eq!(limits.clock, wssd::Clock::system()); // the default
    /// ```
    pub fn system() -> Clock {
        Clock(&SYSTEM)
    }

    /// A clock that reads the moment it was made until [`Clock::advance`] moves it; its
    /// timers fire inside `advance`, on the caller's thread. For tests: each one keeps
    /// about 150 bytes for the life of the process.
    ///
    /// ```
    /// let clock = wssd::Clock::manual();
    /// let before = clock.now();
    /// assert_eq!(clock.now(), before); // it stands still until moved
    /// ```
    pub fn manual() -> Clock {
        Clock(Box::leak(Box::new(Service {
            state: Mutex::new(State {
                timers: BTreeMap::new(),
                next_id: 0,
                sleeping_until: None,
            }),
            earlier: Condvar::new(),
            manual: Some(Mutex::new(Instant::now())),
            thread: std::sync::Once::new(),
        })))
    }

    /// The time now, by this clock.
    ///
    /// ```
    /// let clock = wssd::Clock::system();
    /// let (a, b) = (clock.now(), clock.now());
    /// assert!(b >= a); // monotonic
    /// ```
    pub fn now(self) -> Instant {
        match &self.0.manual {
            None => Instant::now(),
            Some(now) => *now.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Moves a manual clock `by` forward, and wakes the tasks whose timers are due by then
    /// (they run when their executor next polls them).
    ///
    /// # Panics
    /// On [`Clock::system`], which only time moves.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = wssd::Clock::manual();
    /// let mut sleep = std::pin::pin!(clock.sleep(Duration::from_secs(10)));
    /// let poll = |s: &mut std::pin::Pin<&mut _>| futures_lite::future::block_on(futures_lite::future::poll_once(s));
    /// assert!(poll(&mut sleep).is_none()); // not yet
    /// clock.advance(Duration::from_secs(10));
    /// assert!(poll(&mut sleep).is_some()); // fired inside advance, on this thread
    /// ```
    pub fn advance(self, by: Duration) {
        let Some(now) = &self.0.manual else {
            panic!(
                "wssd::Clock::advance: the system clock is moved by time alone; use Clock::manual()"
            )
        };
        let now = {
            let mut now = now.lock().unwrap_or_else(|e| e.into_inner());
            *now += by;
            *now
        };
        let mut due = Vec::new();
        Service::take_due(&mut self.0.lock(), now, &mut due);
        due.into_iter().for_each(Waker::wake); // with the lock released
    }

    /// A future that is ready once `duration` has passed by this clock, from now; it yields
    /// the deadline. A manual clock's is ready once [`Clock::advance`] has moved it that far.
    /// Needs no runtime: it works under smol, async-std and tokio alike.
    ///
    /// ```
    /// use std::time::Duration;
    /// # futures_lite::future::block_on(async {
    /// let clock = wssd::Clock::system();
    /// let start = clock.now();
    /// clock.sleep(Duration::from_millis(5)).await;
    /// assert!(clock.now() >= start + Duration::from_millis(5));
    /// # });
    /// ```
    pub fn sleep(self, duration: Duration) -> impl Future<Output = Instant> + Send + Unpin + use<> {
        self.after(duration)
    }

    /// A timer on this clock that never fires, until set.
    pub(crate) fn never(self) -> Timer {
        Timer {
            clock: self,
            when: None,
            period: Duration::ZERO,
            registered: None,
        }
    }

    /// A timer on this clock that fires once, `after` from now.
    pub(crate) fn after(self, after: Duration) -> Timer {
        let mut timer = self.never();
        timer.set_after(after);
        timer
    }

    /// A timer on this clock that fires every `period`, the first time `period` from now.
    pub(crate) fn interval(self, period: Duration) -> Timer {
        let mut timer = self.after(period);
        timer.period = period;
        timer
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.manual {
            None => f.write_str("Clock::system()"),
            Some(_) => write!(f, "Clock::manual() at {:?}", self.now()),
        }
    }
}

/// Two clocks are equal when they are the same clock.
impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Clock {}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// A clock's map of deadlines, and for the system's, the thread that watches it.
struct Service {
    state: Mutex<State>,
    /// Wakes the thread for a deadline earlier than the one it sleeps until.
    earlier: Condvar,
    /// A manual clock's time; `None`: the system's clock.
    manual: Option<Mutex<Instant>>,
    /// Starts the system clock's thread once.
    thread: std::sync::Once,
}

struct State {
    /// Deadline and id of each registered timer, and the waker it wakes.
    timers: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// What the thread sleeps until while it waits (`Some(None)`: no deadline at all);
    /// `None` while it is awake, when it looks at the map again before it waits.
    sleeping_until: Option<Option<Instant>>,
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&'static self, when: Instant, waker: Waker) -> u64 {
        if self.manual.is_none() {
            self.thread.call_once(|| {
                std::thread::Builder::new()
                    .name("wssd-timer".into())
                    .spawn(move || self.run())
                    .expect("wssd: cannot start the timer thread (wssd-timer)");
            });
        }
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.timers.insert((when, id), waker);
        if let Some(until) = state.sleeping_until
            && until.is_none_or(|until| when < until)
        {
            state.sleeping_until = None;
            self.earlier.notify_one();
        }
        id
    }

    /// Moves the wakers of the timers due by `now` to `due`.
    fn take_due(state: &mut State, now: Instant, due: &mut Vec<Waker>) {
        while let Some(entry) = state.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
    }

    /// The system clock's thread: wakes the timers whose deadline passed, then sleeps until
    /// the next.
    fn run(&self) {
        let mut state = self.lock();
        let mut due = Vec::new();
        loop {
            let now = Instant::now();
            Service::take_due(&mut state, now, &mut due);
            if !due.is_empty() {
                drop(state);
                for waker in due.drain(..) {
                    waker.wake();
                }
                state = self.lock();
                continue;
            }
            let next = state.timers.first_key_value().map(|(key, _)| key.0);
            state.sleeping_until = Some(next);
            state = match next {
                Some(next) => {
                    let wait = next.saturating_duration_since(now);
                    self.earlier
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.earlier.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
            state.sleeping_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Runs `fut`, failing if it has not finished within 30 s (by smol's timer: a
    /// wake-up these timers miss would otherwise hold the test for as long as the latest
    /// deadline of the tests that run beside it).
    fn bounded(fut: impl Future<Output = ()>) {
        let bound = async {
            smol::Timer::after(Duration::from_secs(30)).await;
            panic!("not finished within 30 s");
        };
        futures_lite::future::block_on(futures_lite::future::or(bound, fut));
    }

    #[test]
    fn a_timer_fires_once_after_its_deadline_and_an_interval_again() {
        bounded(async {
            let started = Instant::now();
            let fired = Timer::after(Duration::from_millis(20)).await;
            assert!(fired >= started + Duration::from_millis(20));
            assert!(Instant::now() >= fired);
            let mut ticks = Clock::system().interval(Duration::from_millis(10));
            let first = std::future::poll_fn(|cx| ticks.poll_fire(cx)).await;
            let second = std::future::poll_fn(|cx| ticks.poll_fire(cx)).await;
            assert_eq!(second, first + Duration::from_millis(10));
        });
    }

    #[test]
    fn an_earlier_deadline_wakes_the_thread_sleeping_for_a_later_one() {
        // Without the wake-up, this would wait an hour.
        bounded(async {
            // The thread sleeps for this one (an hour) ...
            let mut late = Timer::after(Duration::from_secs(3600));
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            assert!(
                late.poll_fire(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            // ... and this one must not wait for it.
            Timer::after(Duration::from_millis(10)).await;
            assert_eq!(count.0.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn a_cleared_or_dropped_timer_leaves_the_map() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut timer = Timer::after(Duration::from_secs(3600));
        assert!(timer.poll_fire(&mut cx).is_pending());
        let (id, _) = timer.registered.clone().unwrap();
        let when = timer.when.unwrap();
        assert!(SYSTEM.lock().timers.contains_key(&(when, id)));
        timer.clear();
        assert!(!SYSTEM.lock().timers.contains_key(&(when, id)));
        assert!(timer.poll_fire(&mut cx).is_pending());
        timer.set_after(Duration::from_secs(3600));
        assert!(timer.poll_fire(&mut cx).is_pending());
        let (id, _) = timer.registered.clone().unwrap();
        let when = timer.when.unwrap();
        drop(timer);
        assert!(!SYSTEM.lock().timers.contains_key(&(when, id)));
    }
}
