//! Process-wide counters of what the sessions and the [`Server`](crate::Server)s did, for a metrics endpoint (the `wssd` binary's `GET /metrics`, in the Prometheus text
//! format). Handshakes and closes are counted as they happen; a connection's messages and
//! bytes are added at each of its heartbeat ticks ([`Limits::ping_interval`](crate::Limits::ping_interval),
//! or the idle timeout with pings off) and when it ends, not per message. [`snapshot`]
//! reads them all.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub(crate) static MESSAGES_IN: AtomicU64 = AtomicU64::new(0);
pub(crate) static MESSAGES_OUT: AtomicU64 = AtomicU64::new(0);
pub(crate) static BYTES_IN: AtomicU64 = AtomicU64::new(0);
pub(crate) static BYTES_OUT: AtomicU64 = AtomicU64::new(0);
pub(crate) static HANDSHAKES_OK: AtomicU64 = AtomicU64::new(0);
pub(crate) static HANDSHAKES_REFUSED: AtomicU64 = AtomicU64::new(0);
pub(crate) static HANDSHAKES_FAILED: AtomicU64 = AtomicU64::new(0);
pub(crate) static OPEN: AtomicU64 = AtomicU64::new(0);
/// Connections closed with 1013 by [`Connection::close_slow`](crate::Connection::close_slow).
pub(crate) static SLOW_CONSUMERS: AtomicU64 = AtomicU64::new(0);
/// Connections refused at a [`Server`](crate::Server)'s connection caps.
pub(crate) static REFUSED_AT_CAP: AtomicU64 = AtomicU64::new(0);
/// Connections ended by a panic in their handling (caught at the connection boundary).
pub(crate) static PANICS: AtomicU64 = AtomicU64::new(0);
/// Closes by code: 1000 to 1015 at their offset, 3000 to 4999 (apps') in the next slot,
/// anything else and no close frame (a dropped connection) in the last.
pub(crate) static CLOSES: [AtomicU64; 18] = [const { AtomicU64::new(0) }; 18];
/// Connections failed for a [`Violation`](crate::Violation), by its row in the table of
/// violations.
static VIOLATIONS: [AtomicU64; crate::violation::TABLE.len()] =
    [const { AtomicU64::new(0) }; crate::violation::TABLE.len()];

/// The counters at one moment. Counts are since the process started.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now (served by a [`Server`](crate::Server), past the opening
    /// handshake).
    pub open: u64,
    /// Opening handshakes answered with `101`.
    pub handshakes_ok: u64,
    /// Clients refused by [`Handler::admit`](crate::Handler::admit).
    pub handshakes_refused: u64,
    /// Connections refused with 503 (or closed, on a TLS port before its handshake) at
    /// [`Server::max_connections`](crate::Server::max_connections) or
    /// [`Server::max_connections_per_address`](crate::Server::max_connections_per_address).
    pub refused_at_cap: u64,
    /// Connections that did not become WebSockets: a failed TLS handshake, a wrong path, a
    /// plain HTTP request, a timeout (each [`AcceptError`](crate::AcceptError)).
    pub handshakes_failed: u64,
    /// Text and binary messages received, and their payload bytes (after inflating).
    pub messages_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Messages written, and their payload bytes (before compressing).
    pub messages_out: u64,
    /// Payload bytes written.
    pub bytes_out: u64,
    /// Closes by code (RFC 6455 section 7.4): `(Some(code), count)`, with `Some(3000)` for
    /// every application code (3000 to 4999) and `None` for connections that dropped without
    /// a close frame or with another code. Codes never seen are left out.
    pub closes: Vec<(Option<u16>, u64)>,
    /// Clients closed with 1013 because their send queue stayed full.
    pub slow_consumers_closed: u64,
    /// Connections ended by a panic in their handling, caught at the connection boundary
    /// ([`Server::connection`](crate::Server::connection)): each is a bug, logged with the peer.
    pub panics: u64,
    /// Connections failed for a protocol violation or a limit, by
    /// [`Violation::kind`](crate::Violation::kind): every kind, in a fixed order, counted or not.
    pub violations: Vec<(&'static str, u64)>,
}

/// Reads every counter.
///
/// ```
/// let stats = wssd::stats::snapshot();
/// println!("{} open, {} messages in", stats.open, stats.messages_in);
/// ```
pub fn snapshot() -> Stats {
    let closes = CLOSES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let code = match i {
                0..=15 => Some(1000 + i as u16),
                16 => Some(3000),
                _ => None,
            };
            (code, n.load(Relaxed))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Stats {
        open: OPEN.load(Relaxed),
        handshakes_ok: HANDSHAKES_OK.load(Relaxed),
        handshakes_refused: HANDSHAKES_REFUSED.load(Relaxed),
        handshakes_failed: HANDSHAKES_FAILED.load(Relaxed),
        refused_at_cap: REFUSED_AT_CAP.load(Relaxed),
        messages_in: MESSAGES_IN.load(Relaxed),
        bytes_in: BYTES_IN.load(Relaxed),
        messages_out: MESSAGES_OUT.load(Relaxed),
        bytes_out: BYTES_OUT.load(Relaxed),
        closes,
        slow_consumers_closed: SLOW_CONSUMERS.load(Relaxed),
        panics: PANICS.load(Relaxed),
        violations: crate::violation::TABLE
            .iter()
            .zip(&VIOLATIONS)
            .map(|((kind, _), n)| (*kind, n.load(Relaxed)))
            .collect(),
    }
}

/// Counts a connection failed for `v`.
pub(crate) fn violated(v: &crate::Violation) {
    VIOLATIONS[v.row()].fetch_add(1, Relaxed);
}

/// Counts a session's end by its close code.
pub(crate) fn closed(code: Option<u16>) {
    let slot = match code {
        Some(c @ 1000..=1015) => usize::from(c - 1000),
        Some(3000..=4999) => 16,
        _ => 17,
    };
    CLOSES[slot].fetch_add(1, Relaxed);
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}
