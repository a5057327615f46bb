//! The panic boundary of one connection: a panic in its handling ends it alone.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Runs `work`, one connection's, catching a panic in it: the panic ends that connection
/// alone (its state is dropped, which closes its socket), with one error line naming the
/// peer and the panic's message, escaped. `None` after a panic.
///
/// The release profile unwinds (`panic = "unwind"`), so that a bug reached by one client's
/// input never takes down the others. A struct, not an `async fn`: the connection's task holds
/// `work` once (an `async fn` keeps its argument and the future made of it, a session's state
/// twice).
pub(crate) fn contained<F: Future>(peer: SocketAddr, work: F) -> Contained<F> {
    use futures_lite::FutureExt;
    Contained {
        work: std::panic::AssertUnwindSafe(work).catch_unwind(),
        peer,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`contained`].
    pub(crate) struct Contained<F> {
        #[pin]
        work: futures_lite::future::CatchUnwind<std::panic::AssertUnwindSafe<F>>,
        peer: SocketAddr,
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let panic = match std::task::ready!(this.work.poll(cx)) {
            Ok(done) => return std::task::Poll::Ready(Some(done)),
            Err(panic) => panic,
        };
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        log::error!(
            "{}: a panic in this connection's handling closed it (a bug: please report it): {}",
            this.peer,
            crate::text::escape(message)
        );
        crate::stats::PANICS.fetch_add(1, Ordering::Relaxed);
        std::task::Poll::Ready(None)
    }
}
