//! `--app URL`: the app bridge. wssd POSTs one JSON document per event (`open`, `message`,
//! `close`) to an app in any language (PHP, Python, Node) and carries out its answers: the
//! messages to send back, and commands (bind a user, join and leave groups, close).
//!
//! - `open` is asked before the `101` ([`Handler::admit`]): a 2xx lets the client in, a
//!   4xx keeps it out with that status, an app that is down or late gets the client a 503.
//! - The events of one connection reach the app in order, one at a time, from a bounded
//!   queue; when it is full, wssd stops reading from that client ([`Connection::hold_reads`]).
//! - A message the app does not take (an error status, or no answer, after the retries) is
//!   named in the log and the client is closed with 1011: nothing is lost silently.
//!
//! HTTP/1.1 through hyper on smol, over kept-alive connections, at most `concurrency` at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde::Deserialize;
use serde_json::{Value, json};
use smol::lock::Semaphore;
use wssd::{
    Admission, AdmitFuture, CloseCode, CloseFrame, Connection, ConnectionId, Data, Handler, Hub,
};

/// Events waiting for the app per connection, beyond the one in flight; past it, wssd
/// stops reading from that client.
const QUEUE: usize = 16;
/// Message bytes waiting for the app per connection (beyond the one in flight): past
/// 1 MiB, wssd stops reading from that client until the app has taken some (one message
/// larger than this waits for an empty queue).
const QUEUE_BYTES: usize = 1 << 20;
/// The largest answer body the app may send, in bytes (4 MiB: room for several messages of
/// the default 1 MiB limit, base64 included). A larger one is refused with one log line, and
/// a message's client is closed with 1011.
pub const ANSWER_LIMIT: usize = 4 << 20;
/// Attempts per event: the first, and two retries after 200 ms and 1 s.
const BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];

/// The app: where events go, and the connections it may address.
pub struct App {
    url: String,
    authority: String,
    path_and_query: String,
    timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    permits: Semaphore,
    hub: Hub,
    conns: Mutex<HashMap<ConnectionId, State>>,
    /// Per event kind (open, message, close): posted, and not taken after the retries.
    events: [AtomicU64; 3],
    failures: [AtomicU64; 3],
    /// Answers received, and the time they took in all, in microseconds.
    answered: AtomicU64,
    micros: AtomicU64,
}

/// The bridge's counters, for `GET /metrics`.
pub struct AppStats {
    pub events: [u64; 3],
    pub failures: [u64; 3],
    pub answered: u64,
    pub micros: u64,
}

/// What the bridge keeps per connection.
#[derive(Default)]
struct State {
    user: Option<String>,
    groups: BTreeSet<String>,
    /// The app's answer to `open`, carried out in `on_open`.
    opened: Option<Answer>,
    /// The connection's event queue to its worker.
    queue: Option<smol::channel::Sender<Event>>,
    /// The same queue's other end (the worker's), to drop what waits in it when the client
    /// has gone.
    pending: Option<smol::channel::Receiver<Event>>,
    /// Message bytes in the queue, and a signal each time the worker takes one out.
    queued: Arc<Queued>,
    /// Messages taken from the client so far.
    seq: u64,
}

/// The bytes of a connection's queued messages, and a signal each time the worker takes one
/// out.
struct Queued {
    bytes: std::sync::atomic::AtomicUsize,
    taken: smol::channel::Receiver<()>,
    signal: smol::channel::Sender<()>,
}

impl Default for Queued {
    fn default() -> Queued {
        let (signal, taken) = smol::channel::bounded(1);
        Queued {
            bytes: Default::default(),
            taken,
            signal,
        }
    }
}

impl Queued {
    /// Whether `len` more bytes fit (one message always fits an empty queue).
    fn fits(&self, len: usize) -> bool {
        let queued = self.bytes.load(Ordering::Acquire);
        queued == 0 || queued + len <= QUEUE_BYTES
    }

    /// The worker took a message of `len` bytes out.
    fn took(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
        let _ = self.signal.try_send(());
    }

    /// Waits until `len` more bytes fit.
    async fn room(&self, len: usize) {
        while !self.fits(len) {
            if self.taken.recv().await.is_err() {
                return;
            }
        }
    }
}

enum Event {
    Message { seq: u64, msg: Data },
    Close { code: Option<u16>, reason: String },
}

/// What the app may answer to any event (every field optional; an empty body is fine).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Answer {
    /// To `open` only: the subprotocol to speak, one of the client's offers.
    subprotocol: Option<String>,
    /// Bind the connection to this user id.
    user: Option<String>,
    /// Groups to join.
    join: Vec<String>,
    /// Groups to leave.
    leave: Vec<String>,
    /// Messages to send to this connection.
    send: Vec<Outgoing>,
    /// Close the connection.
    close: Option<CloseCommand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Outgoing {
    text: Option<String>,
    /// Base64 (RFC 4648 section 4).
    binary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseCommand {
    code: u16,
    #[serde(default)]
    reason: String,
}

impl App {
    /// The app at `url` (`http://HOST:PORT/PATH`), `timeout` per event, at most
    /// `concurrency` requests at once.
    pub fn new(url: &str, timeout: Duration, concurrency: usize) -> Result<Arc<App>, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| {
            format!("--app {url:?}: not a URL ({e}): give one such as http://127.0.0.1:8000/wssd")
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "--app {url}: wssd talks plain HTTP to the app (it runs on this machine or a private network): use http://"
                ));
            }
            _ => {
                return Err(format!(
                    "--app {url:?}: give an http:// URL, such as http://127.0.0.1:8000/wssd"
                ));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--app {url}: no host"))?
            .to_string();
        if concurrency == 0 {
            return Err("--app-concurrency must be 1 or more".into());
        }
        Ok(Arc::new(App {
            url: url.to_string(),
            authority,
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(concurrency),
            hub: Hub::default(),
            conns: Mutex::new(HashMap::new()),
            events: Default::default(),
            failures: Default::default(),
            answered: AtomicU64::new(0),
            micros: AtomicU64::new(0),
        }))
    }

    /// The registry of this instance's connections, their users and groups.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The counters so far.
    pub fn stats(&self) -> AppStats {
        let load = |a: &[AtomicU64; 3]| a.each_ref().map(|n| n.load(Ordering::Relaxed));
        AppStats {
            events: load(&self.events),
            failures: load(&self.failures),
            answered: self.answered.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
        }
    }

    /// Binds connection `id` to `user` (the push API's `/bind`).
    pub fn bind(&self, id: ConnectionId, user: &str) {
        self.hub.bind_user(id, user);
        if let Some(state) = self.conns().get_mut(&id) {
            state.user = Some(user.to_string());
        }
    }

    /// Puts connection `id` in `group` (the push API's `/join`).
    pub fn join(&self, id: ConnectionId, group: &str) {
        self.hub.join(id, group);
        if let Some(state) = self.conns().get_mut(&id) {
            state.groups.insert(group.to_string());
        }
    }

    /// Takes connection `id` out of `group` (the push API's `/leave`).
    pub fn leave(&self, id: ConnectionId, group: &str) {
        self.hub.leave(id, group);
        if let Some(state) = self.conns().get_mut(&id) {
            state.groups.remove(group);
        }
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, State>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// POSTs `event`; the status and body, or why there is none (and whether trying again
    /// may help).
    async fn post(&self, event: &Value) -> Result<(u16, Bytes), Failure> {
        let _permit = self.permits.acquire().await;
        let body = Bytes::from(serde_json::to_vec(event).expect("JSON values serialize"));
        let request = hyper::Request::post(self.path_and_query.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "wssd")
            .body(Full::new(body))
            .map_err(|e| Failure::retry(e.to_string()))?;
        let exchange = async {
            let mut sender = self.sender().await.map_err(Failure::retry)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Failure::retry(format!("the request failed: {e}")))?;
            let status = response.status().as_u16();
            // Read up to the limit, not whatever the app sends (an endless chunked answer).
            let body = http_body_util::Limited::new(response.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Failure::last(format!(
                            "its answer was over {} MiB (the limit of an answer's body)",
                            ANSWER_LIMIT >> 20
                        ))
                    } else {
                        Failure::retry(format!("the answer broke off: {e}"))
                    }
                })?
                .to_bytes();
            // Kept alive for the next event.
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sender);
            Ok((status, body))
        };
        smol::future::or(exchange, async {
            wssd::Clock::system().sleep(self.timeout).await;
            Err(Failure::retry(format!(
                "no answer within {} s",
                self.timeout.as_secs_f32()
            )))
        })
        .await
    }

    /// A kept-alive connection to the app that is ready, or a new one.
    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                None => break,
            }
        }
        let tcp = smol::net::TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(tcp))
                .await
                .map_err(|e| format!("cannot talk HTTP/1.1 to {}: {e}", self.authority))?;
        smol::spawn(async move {
            let _ = connection.await;
        })
        .detach();
        Ok(sender)
    }

    /// POSTs `event` up to three times; the app's answer, or why it gave none.
    async fn deliver(&self, event: &Value) -> Result<(u16, Bytes), String> {
        let kind = match event["event"].as_str() {
            Some("open") => 0,
            Some("message") => 1,
            _ => 2,
        };
        self.events[kind].fetch_add(1, Ordering::Relaxed);
        let result = self.attempts(event).await;
        if result.is_err() {
            self.failures[kind].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn attempts(&self, event: &Value) -> Result<(u16, Bytes), String> {
        let mut last = String::new();
        for attempt in 0..=BACKOFF.len() {
            if attempt > 0 {
                wssd::Clock::system().sleep(BACKOFF[attempt - 1]).await;
            }
            let started = std::time::Instant::now();
            let posted = self.post(event).await;
            if posted.is_ok() {
                self.answered.fetch_add(1, Ordering::Relaxed);
                let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.micros.fetch_add(took, Ordering::Relaxed);
            }
            match posted {
                Ok((status, body)) if status < 500 => return Ok((status, body)),
                Ok((status, body)) => {
                    last = format!("it answered {status}: {}", excerpt(&body));
                }
                Err(Failure { why, retry: false }) => return Err(why),
                Err(Failure { why, .. }) => last = why,
            }
        }
        Err(last)
    }

    /// The `open` event, asked before the `101`.
    fn admit(self: &Arc<Self>, id: ConnectionId, request: &wssd::Request) -> AdmitFuture {
        let headers: serde_json::Map<String, Value> = request
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
                )
            })
            .collect();
        let offered: Vec<&str> = request.offered_subprotocols().collect();
        let event = json!({
            "event": "open",
            "id": id.get(),
            "ip": request.client_ip.to_string(),
            "path": request.path,
            "query": request.query,
            "headers": headers,
            "subprotocols": offered,
            "subprotocol": request.subprotocol,
            "tls": request.tls.as_ref().map(|t| json!({
                "version": t.version.as_str(),
                "sni": t.sni,
                "alpn": t.alpn,
            })),
        });
        let app = self.clone();
        Box::pin(async move {
            match app.deliver(&event).await {
                Ok((status, body)) if (200..300).contains(&status) => {
                    let mut answer = app.answer(&body, "open", id);
                    let subprotocol = answer.subprotocol.take();
                    app.conns().insert(
                        id,
                        State {
                            opened: Some(answer),
                            ..State::default()
                        },
                    );
                    match subprotocol {
                        Some(name) => Admission::AcceptSubprotocol(name),
                        None => Admission::Accept,
                    }
                }
                Ok((status, body)) if (400..500).contains(&status) => Admission::Refuse {
                    status,
                    reason: format!("the app refused it: {}", excerpt(&body)),
                },
                Ok((status, body)) => Admission::Refuse {
                    status: 503,
                    reason: format!(
                        "the app at {} answered {status} to open: {}",
                        app.url,
                        excerpt(&body)
                    ),
                },
                Err(why) => Admission::Refuse {
                    status: 503,
                    reason: format!("the app at {} is unavailable: {why}", app.url),
                },
            }
        })
    }

    /// Reads the app's answer to `event` of `id`; a body that is not an answer is logged
    /// and carries nothing out.
    fn answer(&self, body: &[u8], event: &str, id: ConnectionId) -> Answer {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Answer::default();
        }
        serde_json::from_slice(body).unwrap_or_else(|e| {
            // serde_json's error quotes what the app sent (an unknown field's name): escaped.
            log::warn!(
                "the app's answer to {event} of connection {id} is not an answer ({}): ignored; expected JSON such as {{\"send\": [{{\"text\": \"ok\"}}]}}: {}",
                wssd::text::escape(&e.to_string()),
                excerpt(body)
            );
            Answer::default()
        })
    }

    /// Carries out an answer on `conn`.
    fn apply(&self, conn: &Connection, answer: Answer) {
        let id = conn.id();
        if answer.subprotocol.is_some() {
            log::warn!(
                "the app answered a message of connection {id} with a subprotocol: only the answer to open can choose one; ignored"
            );
        }
        if let Some(user) = &answer.user {
            self.bind(id, user);
        }
        for group in &answer.join {
            self.join(id, group);
        }
        for group in &answer.leave {
            self.leave(id, group);
        }
        for out in answer.send {
            match message(out.text, out.binary) {
                Ok(msg) => {
                    if let Err(wssd::SendError::Full) = conn.try_send(msg) {
                        conn.close_slow();
                    }
                }
                Err(why) => {
                    log::warn!("the app sent connection {id} a message that {why}: not sent")
                }
            }
        }
        if let Some(close) = answer.close {
            let code = close.code;
            if code == 1000 || (3000..=4999).contains(&code) {
                conn.close(CloseCode::from(code), &close.reason);
            } else {
                log::warn!(
                    "the app asked to close connection {id} with code {code}: apps may use 1000 or 3000 to 4999 (RFC 6455 section 7.4.2); closed with 1000"
                );
                conn.close(CloseCode::Normal, &close.reason);
            }
        }
    }

    /// The JSON of a message or close event of `id`.
    fn event(&self, id: ConnectionId, event: &Event) -> Value {
        let (user, groups) = self.conns().get(&id).map_or((None, Vec::new()), |s| {
            (s.user.clone(), s.groups.iter().cloned().collect())
        });
        match event {
            Event::Message { seq, msg } => {
                let mut doc = json!({
                    "event": "message", "id": id.get(), "seq": seq, "user": user, "groups": groups,
                });
                match msg {
                    Data::Text(text) => doc["text"] = Value::String(text.to_string()),
                    Data::Binary(bytes) => {
                        doc["binary"] =
                            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                }
                doc
            }
            Event::Close { code, reason } => json!({
                "event": "close", "id": id.get(), "user": user, "groups": groups,
                "code": code, "reason": reason,
            }),
        }
    }

    /// Posts one connection's events in order until its close event.
    async fn worker(
        self: Arc<Self>,
        conn: Connection,
        events: smol::channel::Receiver<Event>,
        queued: Arc<Queued>,
    ) {
        let id = conn.id();
        while let Ok(event) = events.recv().await {
            if let Event::Message { msg, .. } = &event {
                queued.took(msg.len());
            }
            let doc = self.event(id, &event);
            let result = self.deliver(&doc).await;
            match (&event, result) {
                (Event::Message { .. }, Ok((status, body))) if (200..300).contains(&status) => {
                    let answer = self.answer(&body, "message", id);
                    self.apply(&conn, answer);
                }
                (Event::Message { seq, msg }, outcome) => {
                    let why = match outcome {
                        Ok((status, body)) => format!("it answered {status}: {}", excerpt(&body)),
                        Err(why) => why,
                    };
                    log::error!(
                        "the app at {} did not take message {seq} of connection {id} ({} bytes): {why}; closing the connection with 1011",
                        self.url,
                        msg.len()
                    );
                    conn.close(CloseCode::Error, "the app is unavailable");
                }
                (Event::Close { .. }, Ok(_)) => break,
                (Event::Close { .. }, Err(why)) => {
                    log::warn!(
                        "the app at {} did not take the close event of connection {id}: {why}",
                        self.url
                    );
                    break;
                }
            }
        }
        self.conns().remove(&id);
    }
}

/// Why a POST to the app gave no answer, and whether trying again may help.
struct Failure {
    why: String,
    retry: bool,
}

impl Failure {
    fn retry(why: String) -> Failure {
        Failure { why, retry: true }
    }

    /// A failure that the same event would meet again (an answer over the limit).
    fn last(why: String) -> Failure {
        Failure { why, retry: false }
    }
}

/// A message given as JSON `"text"` or `"binary"` (base64, RFC 4648 section 4), by the
/// app's answers and the push API; `Err` says what is wrong with it.
pub fn message(text: Option<String>, binary: Option<String>) -> Result<Data, String> {
    match (text, binary) {
        (Some(text), None) => Ok(Data::text(text)),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Data::binary)
            .map_err(|e| format!("has a \"binary\" that is not base64 ({e})")),
        _ => Err("has neither or both of \"text\" and \"binary\"".into()),
    }
}

/// The start of a body, escaped, for a log line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = wssd::text::escape(text.trim());
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text.into_owned()
    }
}

/// The binary's handler with `--app`.
pub struct Bridge(pub Arc<App>);

impl Handler for Bridge {
    fn admit(&self, id: ConnectionId, request: &wssd::Request) -> Option<AdmitFuture> {
        Some(self.0.admit(id, request))
    }

    fn on_open(&self, conn: &Connection) {
        let app = &self.0;
        app.hub.add(conn);
        let (tx, rx) = smol::channel::bounded(QUEUE);
        let queued = Arc::<Queued>::default();
        let opened = {
            let mut conns = app.conns();
            let state = conns.entry(conn.id()).or_default();
            state.queue = Some(tx);
            state.pending = Some(rx.clone());
            state.queued = queued.clone();
            state.opened.take()
        };
        if let Some(answer) = opened {
            app.apply(conn, answer);
        }
        smol::spawn(app.clone().worker(conn.clone(), rx, queued)).detach();
    }

    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        let (queue, queued, seq) = {
            let mut conns = self.0.conns();
            let Some(state) = conns.get_mut(&conn.id()) else {
                return;
            };
            state.seq += 1;
            (state.queue.clone(), state.queued.clone(), state.seq)
        };
        let Some(queue) = queue else { return };
        let len = msg.len();
        let event = Event::Message { seq, msg };
        if queued.fits(len) {
            queued.bytes.fetch_add(len, Ordering::AcqRel);
            match queue.try_send(event) {
                Ok(()) => return,
                Err(smol::channel::TrySendError::Full(event)) => {
                    // The app is behind: read no more from this client until there is room.
                    conn.hold_reads(async move {
                        let _ = queue.send(event).await;
                    });
                }
                Err(smol::channel::TrySendError::Closed(_)) => {
                    queued.bytes.fetch_sub(len, Ordering::AcqRel);
                }
            }
            return;
        }
        // Over the queue's bytes: read no more from this client until they fit.
        conn.hold_reads(async move {
            queued.room(len).await;
            queued.bytes.fetch_add(len, Ordering::AcqRel);
            let _ = queue.send(event).await;
        });
    }

    fn on_close(&self, conn: &Connection, close: Option<&CloseFrame>) {
        self.0.hub.remove(conn.id());
        let (queue, pending, queued) = match self.0.conns().get_mut(&conn.id()) {
            Some(s) => (s.queue.take(), s.pending.take(), s.queued.clone()),
            None => (None, None, Arc::default()),
        };
        // The client has gone: its messages the app has not taken yet are dropped now, not
        // posted to a slow app while they hold memory.
        if let Some(pending) = pending {
            let mut dropped = 0;
            while let Ok(event) = pending.try_recv() {
                if let Event::Message { msg, .. } = event {
                    queued.took(msg.len());
                    dropped += 1;
                }
            }
            if dropped > 0 {
                log::warn!(
                    "connection {} closed with {dropped} messages the app had not taken yet: dropped",
                    conn.id()
                );
            }
        }
        if let Some(queue) = queue {
            let event = Event::Close {
                code: close.map(|f| u16::from(f.code)),
                reason: close.map_or(String::new(), |f| f.reason.to_string()),
            };
            if let Err(smol::channel::TrySendError::Full(event)) = queue.try_send(event) {
                smol::spawn(async move {
                    let _ = queue.send(event).await;
                })
                .detach();
            }
        }
    }
}
