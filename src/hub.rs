//! [`Hub`]: the registry of live connections, with users and groups, for sending to one
//! connection, one user, one group, or everyone.
//!
//! This is what Workerman users know from GatewayWorker (`sendToClient`, `bindUid`,
//! `sendToUid`, `joinGroup`, `sendToGroup`, `sendToAll`), in-process and runtime-agnostic.
//! With the `redis` feature, [`crate::redis`] links the hubs of several wssd instances, so
//! that user, group and broadcast sends reach connections on every instance.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_tungstenite::tungstenite::protocol::frame::{
    Frame,
    coding::{Data as DataCode, OpCode},
};

use crate::session::{self, Connection, ConnectionId, SendError};
use crate::{CloseCode, Data, Message};

/// The registry of live connections, by [`Connection::id`], with users and groups.
/// Cheap to clone; every clone is the same registry. Safe to call from any task or thread,
/// under concurrent joins, leaves and disconnects.
///
/// Register a connection in [`Handler::on_open`](crate::Handler::on_open); it leaves, with
/// its user and groups, when its session ends (no `remove` needed, none forgotten).
/// Sends never wait: each goes through the recipient's bounded queue. When a recipient's
/// queue is full, a send made inside [`Handler::on_message`](crate::Handler::on_message)
/// keeps the message and pauses the sending connection's reads until the recipient has
/// room (backpressure: a burst slows its sender, not the room), and closes the recipient
/// with 1013 (try again later) only if it makes no room within
/// [`Limits::backpressure_timeout`](crate::Limits::backpressure_timeout). A send made
/// anywhere else (another task, the Redis link) closes a full recipient with 1013 at once.
/// That is the one rule of every Hub send ([`Hub::send_to`] too); a caller that wants to
/// decide for itself sends on the [`Connection`] with [`Connection::try_send`], which
/// returns [`SendError::Full`] and closes nothing. A message is framed once per send and its
/// bytes shared by every recipient.
///
/// ```
/// use wssd::{Connection, Data, Handler, Hub};
///
/// /// A chat room per URL path: every message goes to the others in the same room.
/// struct Rooms(Hub);
///
/// impl Handler for Rooms {
///     fn on_open(&self, conn: &Connection) {
///         self.0.add(conn);
///         self.0.join(conn.id(), &conn.request().path);
///     }
///     fn on_message(&self, conn: &Connection, msg: wssd::Data) {
///         self.0.send_to_group(&conn.request().path, &msg, &[conn.id()]);
///     }
///     fn on_close(&self, conn: &Connection, _: Option<&wssd::CloseFrame>) {
///         self.0.remove(conn.id());
///     }
/// }
/// # let _ = Rooms(Hub::default());
/// ```
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Sends take it to read (they run in parallel); adds, joins and leaves to write.
    state: RwLock<State>,
    /// Where user, group and broadcast sends also go, for other instances.
    relay: OnceLock<Arc<dyn Relay>>,
}

#[derive(Default)]
struct State {
    connections: HashMap<ConnectionId, Member>,
    users: HashMap<String, HashSet<ConnectionId>>,
    groups: HashMap<String, HashSet<ConnectionId>>,
}

struct Member {
    conn: Connection,
    user: Option<String>,
    groups: HashSet<String>,
}

/// Who a hub-wide send is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    User(&'a str),
    Group(&'a str),
    All,
    Connection(ConnectionId),
}

/// Carries user, group and broadcast sends to other instances.
pub(crate) trait Relay: Send + Sync {
    fn publish(&self, target: Target<'_>, msg: &Message);
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("Hub")
            .field("connections", &state.connections.len())
            .field("users", &state.users.len())
            .field("groups", &state.groups.len())
            .finish()
    }
}

impl Hub {
    /// Registers a live connection. It leaves the hub (and its user and groups) by itself
    /// when its session ends; [`Hub::remove`] takes it out earlier.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// assert_eq!(hub.count(), 1);
    /// ```
    pub fn add(&self, conn: &Connection) {
        let member = Member {
            conn: conn.clone(),
            user: None,
            groups: HashSet::new(),
        };
        self.write().connections.insert(conn.id(), member);
        let registry: Arc<dyn session::Registry> = self.inner.clone();
        conn.joined_hub(Arc::downgrade(&registry));
    }

    /// Forgets a connection, and takes it out of its user and groups.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.join(conn.id(), "room");
    /// hub.remove(conn.id());
    /// assert_eq!(hub.count(), 0);
    /// assert!(hub.group_members("room").is_empty());
    /// ```
    pub fn remove(&self, id: ConnectionId) {
        remove(&mut self.write(), id);
    }

    /// Binds a connection to a user id; a user may have several connections (tabs, devices).
    /// Binding again moves the connection to the new user. Unknown ids are ignored.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.bind_user(conn.id(), "ann");
    /// assert_eq!(hub.send_to_user("ann", &Data::text("hi ann")), 1);
    /// ```
    pub fn bind_user(&self, id: ConnectionId, user: &str) {
        let mut state = self.write();
        let Some(member) = state.connections.get_mut(&id) else {
            return;
        };
        let old = member.user.replace(user.to_owned());
        if let Some(old) = old {
            forget(&mut state.users, &old, id);
        }
        state.users.entry(user.to_owned()).or_default().insert(id);
    }

    /// Adds a connection to a group (a chat room, a game table). Unknown ids are ignored.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.join(conn.id(), "room");
    /// assert_eq!(hub.group_members("room"), vec![conn.id()]);
    /// ```
    pub fn join(&self, id: ConnectionId, group: &str) {
        let mut state = self.write();
        let Some(member) = state.connections.get_mut(&id) else {
            return;
        };
        member.groups.insert(group.to_owned());
        state.groups.entry(group.to_owned()).or_default().insert(id);
    }

    /// Takes a connection out of a group.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.join(conn.id(), "room");
    /// hub.leave(conn.id(), "room");
    /// assert!(hub.group_members("room").is_empty());
    /// ```
    pub fn leave(&self, id: ConnectionId, group: &str) {
        let mut state = self.write();
        if let Some(member) = state.connections.get_mut(&id) {
            member.groups.remove(group);
        }
        forget(&mut state.groups, group, id);
    }

    /// The number of live connections registered here (this instance only).
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// assert_eq!(hub.count(), 0);
    /// hub.add(&conn);
    /// assert_eq!(hub.count(), 1);
    /// ```
    pub fn count(&self) -> usize {
        self.read().connections.len()
    }

    /// The ids of a group's members on this instance.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.join(conn.id(), "room");
    /// assert_eq!(hub.group_members("room"), vec![conn.id()]);
    /// assert!(hub.group_members("elsewhere").is_empty());
    /// ```
    pub fn group_members(&self, group: &str) -> Vec<ConnectionId> {
        self.read()
            .groups
            .get(group)
            .map_or_else(Vec::new, |ids| ids.iter().copied().collect())
    }

    /// Queues `msg` for one connection of this instance, without waiting, under the full-queue
    /// rule of every Hub send (see [`Hub`]): inside `on_message` a full recipient holds the
    /// sender's reads, elsewhere it is closed with 1013.
    ///
    /// # Errors
    /// [`SendError::Closed`] when no such connection is registered (or it is closing),
    /// and [`SendError::Full`] when it was closed with 1013 for a full queue.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.send_to(conn.id(), Data::text("just you"))?;
    /// hub.remove(conn.id());
    /// assert_eq!(hub.send_to(conn.id(), Data::text("gone")), Err(SendError::Closed));
    /// # Ok::<(), SendError>(())
    /// ```
    pub fn send_to(&self, id: ConnectionId, msg: impl Into<Data>) -> Result<(), SendError> {
        let msg: Message = msg.into().into();
        let conn = self.read().connections.get(&id).map(|m| m.conn.clone());
        session::send_to_one(conn.ok_or(SendError::Closed)?, frame_once(&msg))
    }

    /// Queues `msg` for every connection of `user`, here and (with Redis) on every other
    /// instance. Returns how many connections on this instance it was queued for.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.bind_user(conn.id(), "ann");
    /// assert_eq!(hub.send_to_user("ann", &Data::text("hi")), 1);
    /// assert_eq!(hub.send_to_user("bob", &Data::text("hi")), 0);
    /// ```
    pub fn send_to_user(&self, user: &str, msg: &Data) -> usize {
        let msg = &Message::from(msg.clone());
        self.relay(Target::User(user), msg);
        self.deliver(Target::User(user), msg, &[])
    }

    /// Queues `msg` for every member of `group` except the ids in `exclude` (ids of this
    /// instance), here and (with Redis) on every other instance. Returns how many
    /// connections on this instance it was queued for.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.join(conn.id(), "room");
    /// assert_eq!(hub.send_to_group("room", &Data::text("all"), &[]), 1);
    /// // A sender excludes itself:
    /// assert_eq!(hub.send_to_group("room", &Data::text("others"), &[conn.id()]), 0);
    /// ```
    pub fn send_to_group(&self, group: &str, msg: &Data, exclude: &[ConnectionId]) -> usize {
        let msg = &Message::from(msg.clone());
        self.relay(Target::Group(group), msg);
        self.deliver(Target::Group(group), msg, exclude)
    }

    /// Queues `msg` for every connection except the ids in `exclude`, here and (with
    /// Redis) on every other instance. Returns how many on this instance it was queued for
    /// (a message is framed once, its bytes shared by them all).
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// assert_eq!(hub.broadcast(&Data::text("everyone"), &[]), 1);
    /// ```
    pub fn broadcast(&self, msg: &Data, exclude: &[ConnectionId]) -> usize {
        let msg = &Message::from(msg.clone());
        self.relay(Target::All, msg);
        self.deliver(Target::All, msg, exclude)
    }

    /// Starts the closing handshake on every registered connection, with this close code
    /// and reason; each one writes what is already queued first.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("doc_connection.rs");
    /// let hub = Hub::default();
    /// hub.add(&conn);
    /// hub.close_all(CloseCode::Away, "server shutting down");
    /// assert!(conn.is_closed());
    /// ```
    pub fn close_all(&self, code: CloseCode, reason: &str) {
        let all: Vec<Connection> = self
            .read()
            .connections
            .values()
            .map(|m| m.conn.clone())
            .collect();
        for conn in all {
            conn.close(code, reason);
        }
    }

    /// Whether this hub is linked to other instances ([`crate::redis::link`]).
    ///
    /// ```
    /// assert!(!wssd::Hub::default().is_linked()); // no Redis link: this instance alone
    /// ```
    pub fn is_linked(&self) -> bool {
        self.inner.relay.get().is_some()
    }

    /// Sends `msg` to connection `id` on the other linked instances (for an id that is
    /// not on this one, [`Hub::get`] is `None`); does nothing when not linked. Whether it
    /// exists there is not known here.
    ///
    /// ```
    /// # let conn = include!("doc_connection.rs");
    /// let hub = wssd::Hub::default();
    /// // Not linked: nothing to do (an id of another instance would get it through Redis).
    /// hub.publish_to(conn.id(), &wssd::Data::text("for you"));
    /// ```
    pub fn publish_to(&self, id: ConnectionId, msg: &Data) {
        self.relay(Target::Connection(id), &Message::from(msg.clone()));
    }

    /// Closes connection `id` on the other linked instances with `code` and `reason`
    /// (RFC 6455 section 7.4); does nothing when not linked.
    ///
    /// ```
    /// # let conn = include!("doc_connection.rs");
    /// let hub = wssd::Hub::default();
    /// hub.publish_close(conn.id(), wssd::CloseCode::Normal, "bye"); // not linked: nothing to do
    /// ```
    pub fn publish_close(&self, id: ConnectionId, code: CloseCode, reason: &str) {
        self.relay(Target::Connection(id), &close_message(code, reason));
    }

    /// Closes every connection of `user`, here and (with Redis) on every other instance.
    /// Returns how many were closed on this instance.
    ///
    /// ```
    /// # let conn = include!("doc_connection.rs");
    /// let hub = wssd::Hub::default();
    /// hub.add(&conn);
    /// hub.bind_user(conn.id(), "ann");
    /// assert_eq!(hub.close_user("ann", wssd::CloseCode::Normal, "logged out elsewhere"), 1);
    /// assert!(conn.is_closed());
    /// ```
    pub fn close_user(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        let msg = close_message(code, reason);
        self.relay(Target::User(user), &msg);
        self.deliver(Target::User(user), &msg, &[])
    }

    /// The connection with this id, if it is in this hub (on this instance).
    ///
    /// ```
    /// # let conn = include!("doc_connection.rs");
    /// let hub = wssd::Hub::default();
    /// hub.add(&conn);
    /// assert_eq!(hub.get(conn.id()).map(|c| c.id()), Some(conn.id()));
    /// ```
    pub fn get(&self, id: ConnectionId) -> Option<Connection> {
        self.read().connections.get(&id).map(|m| m.conn.clone())
    }

    /// The ids of `user`'s connections on this instance (each tab or device is one), in
    /// no particular order; empty for a user with none.
    ///
    /// ```
    /// # let conn = include!("doc_connection.rs");
    /// let hub = wssd::Hub::default();
    /// hub.add(&conn);
    /// hub.bind_user(conn.id(), "ann");
    /// assert_eq!(hub.user_connections("ann"), [conn.id()]);
    /// assert!(hub.user_connections("bob").is_empty());
    /// ```
    pub fn user_connections(&self, user: &str) -> Vec<ConnectionId> {
        self.read()
            .users
            .get(user)
            .map_or_else(Vec::new, |ids| ids.iter().copied().collect())
    }

    /// Sets where user, group and broadcast sends also go. Only the first call counts.
    #[cfg(feature = "redis")]
    pub(crate) fn set_relay(&self, relay: Arc<dyn Relay>) -> bool {
        self.inner.relay.set(relay).is_ok()
    }

    fn relay(&self, target: Target<'_>, msg: &Message) {
        if let Some(relay) = self.inner.relay.get() {
            relay.publish(target, msg);
        }
    }

    /// Queues `msg` for the local connections `target` names, framed once.
    pub(crate) fn deliver(
        &self,
        target: Target<'_>,
        msg: &Message,
        exclude: &[ConnectionId],
    ) -> usize {
        let recipients: Vec<Connection> = {
            let state = self.read();
            let pick = |id: &ConnectionId| {
                (!exclude.contains(id))
                    .then(|| state.connections.get(id).map(|m| m.conn.clone()))
                    .flatten()
            };
            match target {
                Target::User(user) => state
                    .users
                    .get(user)
                    .map_or_else(Vec::new, |ids| ids.iter().filter_map(pick).collect()),
                Target::Group(group) => state
                    .groups
                    .get(group)
                    .map_or_else(Vec::new, |ids| ids.iter().filter_map(pick).collect()),
                Target::All => state.connections.keys().filter_map(pick).collect(),
                Target::Connection(id) => pick(&id).into_iter().collect(),
            }
        };
        if let Message::Close(frame) = msg {
            // A close relayed from another instance (Hub::close_user, Hub::publish_close).
            let (code, reason) = frame
                .as_ref()
                .map_or((CloseCode::Normal, ""), |f| (f.code, f.reason.as_str()));
            let closed = recipients.len();
            for conn in recipients {
                conn.close(code, reason);
            }
            return closed;
        }
        session::send_all(recipients, &frame_once(msg))
    }

    /// For a send: many at once.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// For a change of who is where.
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn close_message(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(crate::CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Removes `id` from the set under `key`, and the set when it empties.
fn forget(map: &mut HashMap<String, HashSet<ConnectionId>>, key: &str, id: ConnectionId) {
    if let Some(ids) = map.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// A text or binary message as one ready frame (RFC 6455 section 5.2): server frames are
/// unmasked, so the same header and payload serve every recipient, and cloning it shares
/// the payload instead of copying it.
fn frame_once(msg: &Message) -> Message {
    match msg {
        Message::Text(text) => Message::Frame(Frame::message(
            text.clone(),
            OpCode::Data(DataCode::Text),
            true,
        )),
        Message::Binary(bytes) => Message::Frame(Frame::message(
            bytes.clone(),
            OpCode::Data(DataCode::Binary),
            true,
        )),
        other => other.clone(),
    }
}

/// How many connections this process closed with 1013 (try again later) because their send
/// queue stayed full: each is counted once, with one warning line.
///
/// ```
/// let before = wssd::hub::slow_consumers_closed(); // a count for the process, for a metric
/// assert!(wssd::hub::slow_consumers_closed() >= before);
/// ```
pub fn slow_consumers_closed() -> u64 {
    crate::stats::SLOW_CONSUMERS.load(std::sync::atomic::Ordering::Relaxed)
}

impl session::Registry for Inner {
    fn forget(&self, id: ConnectionId) {
        remove(
            &mut self.state.write().unwrap_or_else(|e| e.into_inner()),
            id,
        );
    }
}

/// Takes connection `id` out of `state`, with its user and groups.
fn remove(state: &mut State, id: ConnectionId) {
    let Some(member) = state.connections.remove(&id) else {
        return;
    };
    if let Some(user) = member.user {
        forget(&mut state.users, &user, id);
    }
    for group in member.groups {
        forget(&mut state.groups, &group, id);
    }
}
