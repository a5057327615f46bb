//! A deadline on one write or wait of the session, on the session's own timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Connection, Timeouts};
use crate::timer::Timer;

/// `fut` with `limit` as its deadline on `timer`: `None` when the deadline passed first.
/// The timer is set only if `fut` does not finish at once.
pub(super) fn within<F: Future>(timer: &mut Timer, limit: Duration, fut: F) -> Within<'_, F, fn()> {
    within_noting(timer, limit, fut, || {})
}

/// [`within`], calling `waits` once if `fut` does not finish at once.
pub(super) fn within_noting<F: Future, W: FnOnce()>(
    timer: &mut Timer,
    limit: Duration,
    fut: F,
    waits: W,
) -> Within<'_, F, W> {
    Within {
        fut,
        timer,
        limit,
        waits: Some(waits),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`]: a struct, not an `async fn`, so that the connection's
    /// future holds `fut` once (an `async fn` keeps its argument and its pinned copy).
    pub(super) struct Within<'t, F, W> {
        #[pin]
        fut: F,
        timer: &'t mut Timer,
        limit: Duration,
        waits: Option<W>,
    }
}

impl<F: Future, W: FnOnce()> Future for Within<'_, F, W> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            if this.waits.is_none() {
                // It was set: take it out of the map, not to wake this task for nothing.
                this.timer.clear();
            }
            return Poll::Ready(Some(out));
        }
        if let Some(waits) = this.waits.take() {
            this.timer.set_after(*this.limit);
            waits();
        }
        match Pin::new(&mut **this.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A write under the idle timeout as its deadline; one that cannot finish at once shows,
/// from then until it ends, to senders that block on this connection (`writing_since`,
/// cleared by [`Session::write_done`] when `stuck` is set).
pub(super) fn write_within<'t, F: Future>(
    conn: &'t Connection,
    stuck: &'t mut bool,
    deadline: &'t mut Timer,
    limits: &Timeouts,
    write: F,
) -> Within<'t, F, impl FnOnce() + 't> {
    let noting = move || {
        *stuck = true;
        conn.queue().writing_since = Some(Instant::now());
    };
    within_noting(deadline, limits.idle_timeout, write, noting)
}
