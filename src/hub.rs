//! [`Hub`]: the registry of live connections, for sending to one connection or to all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::session::{Connection, SendError};
use crate::{CloseCode, Message};

/// The registry of live connections, by [`Connection::id`]. Cheap to clone; every clone is the same registry.
///
/// Add a connection in [`Handler::on_open`](crate::Handler::on_open) and remove it
/// in [`Handler::on_close`](crate::Handler::on_close). Sends never wait: each one
/// goes through the recipient's bounded queue ([`Connection::try_send`]), so a
/// slow recipient never holds up the others.
///
/// ```
/// let hub = wssd::Hub::default();
/// assert_eq!(hub.count(), 0);
/// assert_eq!(hub.broadcast(&wssd::Message::text("hi"), None), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Hub {
    connections: Arc<Mutex<HashMap<u64, Connection>>>,
}

impl Hub {
    /// Registers a live connection.
    pub fn add(&self, conn: &Connection) {
        self.lock().insert(conn.id(), conn.clone());
    }

    /// Forgets a connection; sends to its id then fail with [`SendError::Closed`].
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The number of live connections registered.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Queues `msg` for the connection with this id, without waiting.
    ///
    /// # Errors
    /// [`SendError::Closed`] when no such connection is registered, and
    /// [`SendError::Full`] when its queue is full.
    pub fn send_to(&self, id: u64, msg: Message) -> Result<(), SendError> {
        let conn = self.lock().get(&id).cloned().ok_or(SendError::Closed)?;
        conn.try_send(msg)
    }

    /// Queues `msg` for every registered connection except `except`, and returns how many it was queued for.
    ///
    /// The payload is shared, not copied, between recipients. A recipient whose queue
    /// is full is a slow consumer: it is closed with 1013 (try again later) and a
    /// warning, and the others are not held up.
    pub fn broadcast(&self, msg: &Message, except: Option<u64>) -> usize {
        // Snapshot under the lock, send outside it.
        let recipients: Vec<Connection> = self
            .lock()
            .values()
            .filter(|c| Some(c.id()) != except)
            .cloned()
            .collect();
        let mut queued = 0;
        for conn in recipients {
            match conn.try_send(msg.clone()) {
                Ok(()) => queued += 1,
                Err(SendError::Full) => close_slow_consumer(&conn),
                Err(SendError::Closed) => {}
            }
        }
        queued
    }

    /// Starts the closing handshake on every registered connection, with this close code
    /// and reason; each one writes what is already queued first.
    pub fn close_all(&self, code: CloseCode, reason: &str) {
        let all: Vec<Connection> = self.lock().values().cloned().collect();
        for conn in all {
            conn.close(code, reason);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Connection>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes a connection whose send queue is full with 1013 (try again later), with a warning.
pub fn close_slow_consumer(conn: &Connection) {
    log::warn!(
        "{}: send queue full ({} bytes): the client reads too slowly; closing with 1013",
        conn.request().client_ip,
        conn.buffered_bytes()
    );
    conn.close(CloseCode::Again, "send queue full: reading too slowly");
}
