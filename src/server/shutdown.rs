//! The graceful shutdown switch.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;

use crate::{CloseCode, Connection, ConnectionId};

/// Stops a running server gracefully; cheap to clone, and every clone is the same switch.
///
/// [`Shutdown::trigger`] makes the accept loop stop accepting and closes every connection with
/// 1001 (going away, RFC 6455 section 7.4.1) after the messages already queued on it are
/// written; [`Server::drain`](crate::Server::drain) then waits for them, up to the shutdown timeout.
/// The `wssd` binary triggers it on SIGINT and SIGTERM.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    event: Event,
    /// The open connections, closed by the trigger: a session is not also polling a
    /// shutdown listener at each of its wake-ups.
    open: Mutex<HashMap<ConnectionId, Connection>>,
}

impl fmt::Debug for ShutdownInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownInner")
            .field("triggered", &self.triggered)
            .finish_non_exhaustive()
    }
}

impl Shutdown {
    /// Starts the graceful shutdown. Calling it again does nothing more.
    ///
    /// ```
    /// let shutdown = wssd::Shutdown::default();
    /// shutdown.trigger(); // from a signal handler, say
    /// assert!(shutdown.is_triggered());
    /// ```
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
        let open = std::mem::take(&mut *self.open());
        for conn in open.values() {
            conn.close(CloseCode::Away, "server shutting down");
        }
    }

    /// Closes `conn` with the others on shutdown (at once if it started already).
    pub(super) fn register(&self, conn: &Connection) {
        self.open().insert(conn.id(), conn.clone());
        // Registered first, then checked: a trigger in between closes it either way.
        if self.is_triggered() {
            self.open().remove(&conn.id());
            conn.close(CloseCode::Away, "server shutting down");
        }
    }

    pub(super) fn forget(&self, id: ConnectionId) {
        self.open().remove(&id);
    }

    fn open(&self) -> MutexGuard<'_, HashMap<ConnectionId, Connection>> {
        self.inner.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether [`Shutdown::trigger`] was called.
    ///
    /// ```
    /// assert!(!wssd::Shutdown::default().is_triggered());
    /// ```
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Resolves once [`Shutdown::trigger`] is called.
    ///
    /// ```
    /// let shutdown = wssd::Shutdown::default();
    /// shutdown.trigger();
    /// futures_lite::future::block_on(shutdown.wait()); // returns at once once triggered
    /// ```
    pub async fn wait(&self) {
        loop {
            let listener = self.inner.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}
