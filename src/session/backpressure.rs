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

/// Queues `msg` for each of `recipients` (the Hub's sends), and returns for how many.
///
/// Inside a handler's `on_message`, a recipient whose queue is full (or that this sender
/// waits on already, to keep the order) gets the message later: the sending session stops
/// reading until it is queued. Anywhere else a full recipient is closed with 1013.
pub(crate) fn send_all(recipients: Vec<Connection>, msg: &Message) -> usize {
    // Compressed at most once, for all the recipients that agreed on permessage-deflate.
    let mut shared = crate::deflate::OneToMany::new(msg);
    DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let mut queued = 0;
        for conn in recipients {
            let waiting = deferred
                .as_mut()
                .and_then(|d| d.blocked.iter_mut().find(|b| b.conn.id() == conn.id()));
            let msg = shared.get(conn.shared.deflate.as_ref());
            if let Some(b) = waiting {
                b.messages.push_back(msg);
                queued += 1;
                continue;
            }
            match (conn.push(msg), deferred.as_mut()) {
                (Ok(()), _) => queued += 1,
                (Err((SendError::Full, back)), Some(d)) => {
                    let since = conn.queue().writing_since.unwrap_or_else(Instant::now);
                    d.blocked.push(Blocked {
                        deadline: since + d.timeout,
                        conn,
                        messages: VecDeque::from([back]),
                        room: None,
                    });
                    queued += 1;
                }
                (Err((SendError::Full, _)), None) => {
                    conn.close_slow();
                }
                (Err(_), _) => {}
            }
        }
        queued
    })
}
