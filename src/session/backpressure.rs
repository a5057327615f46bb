//! Backpressure for Hub sends made inside a handler's `on_message`: a recipient whose queue
//! is full holds the sending session's reads, not the message.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use event_listener::EventListener;

use super::{Connection, ConnectionId, Held, SendError};
use crate::Message;

/// A recipient's full queue that the sending session waits on.
pub(super) struct Blocked {
    pub(super) conn: Connection,
    /// When the recipient is closed if it has made no room: the backpressure timeout after
    /// it started the write it is stuck in (or after the send, if it is not writing).
    pub(super) deadline: Instant,
    pub(super) messages: VecDeque<Message>,
    pub(super) room: Option<EventListener>,
}

/// The sends a handler's `on_message` made to full queues, while it runs on this thread.
pub(super) struct Deferred {
    /// The connection whose `on_message` runs.
    pub(super) id: ConnectionId,
    pub(super) blocked: Vec<Blocked>,
    pub(super) held: Option<Held>,
    /// The sending session's [`Limits::backpressure_timeout`].
    pub(super) timeout: Duration,
}

thread_local! {
    /// The sends a handler's `on_message` made to full queues while it runs on this thread
    /// (the per-thread buffers: [`crate::per_thread`]).
    pub(super) static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Clears [`DEFERRED`] when dropped, also when a handler's `on_message` panics: an executor
/// that catches the panic (tokio does) goes on running other tasks on this thread, and their
/// Hub sends must close a full recipient with 1013, not defer it to a session that is gone.
pub(super) struct ClearDeferred;

impl ClearDeferred {
    /// Takes what `on_message` deferred, which leaves [`DEFERRED`] clear.
    pub(super) fn take(self) -> Option<Deferred> {
        std::mem::forget(self); // nothing left to clear
        DEFERRED.with(|d| d.borrow_mut().take())
    }
}

impl Drop for ClearDeferred {
    fn drop(&mut self) {
        let _ = DEFERRED.try_with(|d| d.borrow_mut().take());
    }
}

/// Queues `msg` for each of `recipients` (the Hub's sends), and returns for how many, each
/// under the one rule of [`send_one`].
pub(crate) fn send_all(recipients: Vec<Connection>, msg: &Message) -> usize {
    // Compressed at most once, for all the recipients that agreed on permessage-deflate.
    let mut shared = crate::deflate::OneToMany::new(msg);
    DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let mut queued = 0;
        for conn in recipients {
            let msg = shared.get(conn.shared.deflate.as_ref());
            queued += usize::from(send_one(conn, msg, deferred.as_mut()).is_ok());
        }
        queued
    })
}

/// Queues `msg` for `conn`: every Hub send's one rule for a full queue. Inside a handler's
/// `on_message` (`deferred` is its record), a recipient whose queue is full (or that this
/// sender waits on already, to keep the order) gets the message later: the sending session
/// stops reading until it is queued, and closes the recipient with 1013 if it makes no room
/// within the backpressure timeout. Anywhere else a full recipient is closed with 1013 at
/// once.
///
/// # Errors
/// [`SendError::Full`] when the recipient was closed for a full queue, [`SendError::Closed`]
/// when it is closing or gone.
pub(crate) fn send_one(
    conn: Connection,
    msg: Message,
    deferred: Option<&mut Deferred>,
) -> Result<(), SendError> {
    let Some(d) = deferred else {
        return match conn.push(msg) {
            Ok(()) => Ok(()),
            Err((SendError::Full, _)) => {
                conn.close_slow();
                Err(SendError::Full)
            }
            Err((e, _)) => Err(e),
        };
    };
    if let Some(b) = d.blocked.iter_mut().find(|b| b.conn.id() == conn.id()) {
        b.messages.push_back(msg);
        return Ok(());
    }
    match conn.push(msg) {
        Ok(()) => Ok(()),
        Err((SendError::Full, back)) => {
            let since = conn.queue().writing_since.unwrap_or_else(Instant::now);
            d.blocked.push(Blocked {
                deadline: since + d.timeout,
                conn,
                messages: VecDeque::from([back]),
                room: None,
            });
            Ok(())
        }
        Err((e, _)) => Err(e),
    }
}

/// [`send_one`] for a Hub send to one connection.
///
/// # Errors
/// As [`send_one`].
pub(crate) fn send_to_one(conn: Connection, msg: Message) -> Result<(), SendError> {
    let mut shared = crate::deflate::OneToMany::new(&msg);
    let msg = shared.get(conn.shared.deflate.as_ref());
    DEFERRED.with(|deferred| send_one(conn, msg, deferred.borrow_mut().as_mut()))
}
