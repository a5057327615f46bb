//! Cross-instance fan-out for the [`Hub`] through Redis pub/sub (feature `redis`).
//!
//! Several wssd instances behind one load balancer share one Redis server. Each instance
//! publishes its [`Hub::send_to_user`], [`Hub::send_to_group`] and [`Hub::broadcast`] sends
//! on the channel [`CHANNEL`], tagged with its own random instance id, and delivers what
//! the *other* instances publish to its own connections. So:
//! - local delivery stays local: it happens at once, with no Redis round trip, and goes on
//!   while Redis is down;
//! - nothing is delivered twice: an instance ignores its own publications;
//! - when Redis goes away, the outage is logged once, and both directions reconnect with
//!   backoff (100 ms doubling to 5 s). A subscription is checked with PING every 10 s, so
//!   a connection that died silently is replaced too. Sends made meanwhile wait in a queue
//!   bounded in bytes ([`PUBLISH_QUEUE_BYTES`]) and are published on reconnection; past
//!   it they are dropped, counted and logged (one line per outage, not per message).
//!
//! What pub/sub does not guarantee: Redis delivers a publication only to the subscribers
//! connected at that moment, so an instance that is down or reconnecting misses what was
//! published in between, and a message is not stored anywhere. Redis Streams (`XADD` and a
//! consumer reading from its last id) would add that replay, at the cost of memory in Redis
//! and a cursor per instance; pub/sub suits live chat and push, where a missed message is
//! stale anyway.
//!
//! The wire format on [`CHANNEL`] is: version (1 byte, `1`), instance id (8 bytes, big
//! endian), target kind (1 byte: 0 user, 1 group, 2 everyone, 3 one connection), opcode
//! (1 byte: 1 text, 2 binary, 8 close), target length (2 bytes, big endian), the target
//! (a name in UTF-8, or a connection id as 8 bytes big endian), then the payload (for a
//! close, the code as 2 bytes big endian and the reason in UTF-8).
//!
//! Linking also makes this instance's connection ids unique across instances: from then
//! on, bits 33 to 52 of each new [`ConnectionId`](crate::ConnectionId) are a random tag of
//! this instance (ids stay below 2^53, exact as JSON numbers in JavaScript and PHP), so that
//! a send or close addressed to an id reaches the instance that has it.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::timer::Timer;
use event_listener::Event;
use futures_lite::StreamExt;

use crate::Message;
use crate::hub::{Hub, Relay, Target};

/// The Redis pub/sub channel every instance publishes on and subscribes to.
pub const CHANNEL: &str = "wssd";

/// How many bytes of sends (encoded payloads) may wait for Redis, while it is unreachable
/// or slower than the senders: 16 MiB. A send that does not fit is dropped and counted:
/// the first drop of an outage logs one warning, and the count is logged when the queue
/// has room again. Memory is held only while sends wait: each is freed once published.
pub const PUBLISH_QUEUE_BYTES: usize = 16 << 20;

/// How often an idle subscription is checked with PING, and how long the answer may take.
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Links `hub` to every other instance on the Redis server at `url` (such as
/// `redis://127.0.0.1:6379/`). Returns the [`Link`] and the task that runs its publisher
/// and subscriber: spawn it on your executor (nothing is spawned behind your back). The
/// task runs for the life of the process, reconnecting as needed; connecting happens in it, logged at info level
/// (`redis: subscribed to ...`) when done and at warn level while it fails.
///
/// ```no_run
/// let hub = wssd::Hub::default();
/// let (link, task) = wssd::redis::link(&hub, "redis://127.0.0.1:6379/")?;
/// smol::spawn(task).detach();
/// smol::block_on(link.subscribed());
/// # Ok::<(), redis::RedisError>(())
/// ```
///
/// The `redis` crate's own connection driver runs on smol's global executor (its
/// `smol-comp` runtime); the link's tasks run where you spawn this one.
///
/// # Errors
/// A [`redis::RedisError`] when `url` is not a valid Redis URL, or when `hub` is linked already.
pub fn link(hub: &Hub, url: &str) -> Result<(Link, LinkTask), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let instance = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // Unbounded in count, bounded in bytes by `Publisher::publish`.
    let (queue, pending) = async_channel::unbounded();
    let publisher = Arc::new(Publisher {
        instance,
        queue,
        queued_bytes: Arc::new(AtomicUsize::new(0)),
        dropped: AtomicU64::new(0),
    });
    let queued_bytes = publisher.queued_bytes.clone();
    crate::session::set_instance_tag(instance);
    if !hub.set_relay(publisher) {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "this Hub is linked to Redis already",
        )));
    }
    let name = url.to_owned();
    let link = Link {
        subscribed: Arc::new((AtomicBool::new(false), Event::new())),
    };
    let publisher = publish(client.clone(), pending, queued_bytes, name.clone());
    let subscriber = subscribe(client, hub.clone(), instance, name, link.subscribed.clone());
    let task: LinkTask = Box::pin(async move {
        futures_lite::future::zip(publisher, subscriber).await;
    });
    Ok((link, task))
}

/// The publisher and subscriber of a [`link`], as one future to spawn on any executor.
pub type LinkTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// A hub's link to Redis, as returned by [`link`].
#[derive(Debug, Clone)]
pub struct Link {
    /// Whether the subscriber is subscribed now, and who to tell when it first is.
    subscribed: Arc<(AtomicBool, Event)>,
}

impl Link {
    /// Resolves once this instance is subscribed, so that what other instances publish
    /// from then on reaches it. Pub/sub keeps nothing for a subscriber that is not there yet.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), redis::RedisError> {
    /// let hub = wssd::Hub::default();
    /// let (link, task) = wssd::redis::link(&hub, "redis://127.0.0.1/")?;
    /// smol::spawn(task).detach(); // the link runs as a task of its own
    /// smol::block_on(link.subscribed()); // what others publish from now on reaches this hub
    /// # Ok(()) }
    /// ```
    pub async fn subscribed(&self) {
        loop {
            let listener = self.subscribed.1.listen();
            if self.subscribed.0.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

struct Publisher {
    instance: u64,
    queue: async_channel::Sender<Vec<u8>>,
    /// Bytes of encoded sends waiting; the publisher task subtracts what it published.
    queued_bytes: Arc<AtomicUsize>,
    /// Sends dropped since the queue was last below its cap.
    dropped: AtomicU64,
}

impl Relay for Publisher {
    fn publish(&self, target: Target<'_>, msg: &Message) {
        let Some(bytes) = encode(self.instance, target, msg) else {
            return;
        };
        let size = bytes.len();
        let before = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before + size > PUBLISH_QUEUE_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                log::warn!(
                    "redis: {before} bytes of sends wait for Redis already (PUBLISH_QUEUE_BYTES): dropping cross-instance sends until there is room; local delivery goes on"
                );
            }
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            log::warn!(
                "redis: the publish queue has room again; {dropped} cross-instance sends were dropped"
            );
        }
        if self.queue.try_send(bytes).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        }
    }
}

/// Publishes queued sends, reconnecting with backoff; a send that failed is retried.
async fn publish(
    client: redis::Client,
    pending: async_channel::Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    url: String,
) {
    let mut retry: Option<Vec<u8>> = None;
    let mut backoff = Backoff::new("publisher", &url);
    loop {
        let mut conn = match client.get_multiplexed_async_connection().await {
            Ok(conn) => conn,
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        backoff.connected();
        loop {
            let bytes = match retry.take() {
                Some(bytes) => bytes,
                None => match pending.recv().await {
                    Ok(bytes) => bytes,
                    Err(_) => return, // the hub is gone
                },
            };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&bytes[..])
                .query_async(&mut conn)
                .await;
            if let Err(e) = sent {
                retry = Some(bytes);
                backoff.failed(&e).await;
                break;
            }
            queued_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
        }
    }
}

/// Delivers other instances' sends to local connections, resubscribing with backoff.
async fn subscribe(
    client: redis::Client,
    hub: Hub,
    instance: u64,
    url: String,
    ready: Arc<(AtomicBool, Event)>,
) {
    let mut backoff = Backoff::new("subscriber", &url);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match subscribed.await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        backoff.connected();
        log::info!("redis: subscribed to {CHANNEL} at {url}");
        ready.0.store(true, Ordering::Release);
        ready.1.notify(usize::MAX);
        // The sink stays to PING the connection: a subscription whose connection died
        // silently (a NAT or a proxy dropped it) would otherwise wait forever.
        let (mut sink, mut messages) = pubsub.split();
        enum Step {
            Message(Option<redis::Msg>),
            Check,
        }
        loop {
            let message = async { Step::Message(messages.next().await) };
            let check = async {
                Timer::after(HEALTH_INTERVAL).await;
                Step::Check
            };
            match futures_lite::future::or(message, check).await {
                Step::Message(Some(msg)) => match decode(msg.get_payload_bytes()) {
                    Some((origin, _, _)) if origin == instance => {} // delivered locally already
                    Some((_, target, msg)) => {
                        hub.deliver(target.as_target(), &msg, &[]);
                    }
                    None => log::debug!("redis: ignored a malformed message on {CHANNEL}"),
                },
                Step::Message(None) => break,
                Step::Check => {
                    let ping = async { sink.ping::<redis::Value>().await.is_ok() };
                    let deadline = async {
                        Timer::after(HEALTH_TIMEOUT).await;
                        false
                    };
                    if !futures_lite::future::or(ping, deadline).await {
                        log::warn!("redis: the subscription at {url} does not answer PING");
                        break;
                    }
                }
            }
        }
        ready.0.store(false, Ordering::Release);
        log::warn!("redis: lost the subscription at {url}; reconnecting");
    }
}

/// Reconnection backoff, 100 ms doubling to 5 s, logging an outage once.
struct Backoff<'a> {
    what: &'static str,
    url: &'a str,
    delay: Duration,
    down: bool,
}

impl<'a> Backoff<'a> {
    fn new(what: &'static str, url: &'a str) -> Self {
        Backoff {
            what,
            url,
            delay: Duration::from_millis(100),
            down: false,
        }
    }

    async fn failed(&mut self, e: &redis::RedisError) {
        if !self.down {
            log::warn!(
                "redis {}: {} unreachable ({e}); local delivery goes on, retrying with backoff",
                self.what,
                self.url
            );
            self.down = true;
        }
        Timer::after(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
    }

    fn connected(&mut self) {
        if self.down {
            log::info!("redis {}: {} reachable again", self.what, self.url);
        }
        self.down = false;
        self.delay = Duration::from_millis(100);
    }
}

/// An owned [`Target`], as decoded.
enum OwnedTarget {
    User(String),
    Group(String),
    All,
    Connection(crate::ConnectionId),
}

impl OwnedTarget {
    fn as_target(&self) -> Target<'_> {
        match self {
            OwnedTarget::User(u) => Target::User(u),
            OwnedTarget::Group(g) => Target::Group(g),
            OwnedTarget::All => Target::All,
            OwnedTarget::Connection(id) => Target::Connection(*id),
        }
    }
}

fn encode(instance: u64, target: Target<'_>, msg: &Message) -> Option<Vec<u8>> {
    let close;
    let (opcode, payload): (u8, &[u8]) = match msg {
        Message::Text(t) => (1, t.as_bytes()),
        Message::Binary(b) => (2, b),
        Message::Close(frame) => {
            let (code, reason) = frame
                .as_ref()
                .map_or((1000, ""), |f| (u16::from(f.code), f.reason.as_str()));
            close = [&code.to_be_bytes()[..], reason.as_bytes()].concat();
            (8, &close)
        }
        _ => return None, // pings and pongs are per connection
    };
    let id_bytes;
    let (kind, name): (u8, &[u8]) = match target {
        Target::User(u) => (0u8, u.as_bytes()),
        Target::Group(g) => (1, g.as_bytes()),
        Target::All => (2, b""),
        Target::Connection(id) => {
            id_bytes = id.get().to_be_bytes();
            (3, &id_bytes)
        }
    };
    let name_len = u16::try_from(name.len()).ok()?;
    let mut out = Vec::with_capacity(13 + name.len() + payload.len());
    out.push(1);
    out.extend(instance.to_be_bytes());
    out.extend([kind, opcode]);
    out.extend(name_len.to_be_bytes());
    out.extend(name);
    out.extend(payload);
    Some(out)
}

fn decode(bytes: &[u8]) -> Option<(u64, OwnedTarget, Message)> {
    if bytes.len() < 13 || bytes[0] != 1 {
        return None;
    }
    let instance = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let (kind, opcode) = (bytes[9], bytes[10]);
    let name_len = usize::from(u16::from_be_bytes([bytes[11], bytes[12]]));
    let name = bytes.get(13..13 + name_len)?;
    let payload = bytes.get(13 + name_len..)?;
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    let target = match kind {
        0 => OwnedTarget::User(text(name)?),
        1 => OwnedTarget::Group(text(name)?),
        2 => OwnedTarget::All,
        3 => OwnedTarget::Connection(crate::ConnectionId::from_wire(u64::from_be_bytes(
            name.try_into().ok()?,
        ))?),
        _ => return None,
    };
    let msg = match opcode {
        1 => Message::text(text(payload)?),
        2 => Message::binary(payload.to_vec()),
        8 if payload.len() >= 2 => Message::Close(Some(crate::CloseFrame {
            code: u16::from_be_bytes([payload[0], payload[1]]).into(),
            reason: text(&payload[2..])?.into(),
        })),
        _ => return None,
    };
    Some((instance, target, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_malformed_input() {
        for (target, msg) in [
            (Target::User("alice"), Message::text("hi")),
            (Target::Group("room/1"), Message::binary(vec![0u8, 255])),
            (Target::All, Message::text("")),
            (
                Target::Connection(crate::ConnectionId::from_wire(7).unwrap()),
                Message::text("one"),
            ),
            (
                Target::User("bob"),
                Message::Close(Some(crate::CloseFrame {
                    code: 4000.into(),
                    reason: "bye".into(),
                })),
            ),
        ] {
            let bytes = encode(42, target, &msg).unwrap();
            let (instance, decoded, back) = decode(&bytes).unwrap();
            assert_eq!((instance, decoded.as_target(), back), (42, target, msg));
        }
        assert!(encode(1, Target::All, &Message::Ping(Default::default())).is_none());
        for bad in [
            &b""[..],
            b"\x02xxxxxxxxxxxxxx",
            b"\x01\0\0\0\0\0\0\0\x01\x00\x01\x00\x09ab",
        ] {
            assert!(decode(bad).is_none());
        }
    }
}
