//! `--api ADDR`: the push API, for the app behind `--app` (or any program): send to a
//! connection, a user, a group or everyone; join, leave, bind, close; who is online; and
//! `GET /metrics` in the Prometheus text format. HTTP/1.1 through hyper on smol.
//!
//! Every request needs `Authorization: Bearer TOKEN` when `--api-token-file` is given;
//! without a token the API listens on loopback only. Bodies are JSON, at most
//! [`MAX_BODY`] bytes; every error is a 4xx with `{"error": "..."}` saying why.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use wssd::{CloseCode, ConnectionId};

use crate::bridge::App;

/// The largest request body, in bytes: a message of `--max-message-size` (1 MiB) as
/// base64, with room for the rest of the JSON.
pub const MAX_BODY: usize = (1 << 20) * 4 / 3 + 4096;

/// How long a request body may take to arrive, in seconds (the headers have 10 s too).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API listens, and who may use it.
pub struct Api {
    app: Arc<App>,
    token: Option<String>,
    redis: bool,
}

/// Checks the options, binds `addr` and serves the API on a thread of its own.
pub fn start(
    addr: SocketAddr,
    token_file: Option<&Path>,
    app: Arc<App>,
    redis: bool,
) -> Result<(), String> {
    let token = match token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("--api-token-file {}: {e}", path.display()))?
                .trim()
                .to_string();
            if token.len() < 16 {
                return Err(format!(
                    "--api-token-file {}: the token is {} characters; use 16 or more (openssl rand -hex 32 > {})",
                    path.display(),
                    token.len(),
                    path.display()
                ));
            }
            Some(token)
        }
        None if !addr.ip().is_loopback() => {
            return Err(format!(
                "--api {addr}: without --api-token-file, the push API listens on loopback only (127.0.0.1 or [::1]), where only this machine reaches it: give a token file, or listen on 127.0.0.1"
            ));
        }
        None => None,
    };
    let listener = smol::block_on(smol::net::TcpListener::bind(addr))
        .map_err(|e| format!("--api {addr}: cannot listen there: {e}"))?;
    let api = Arc::new(Api { app, token, redis });
    log::info!(
        "push API on http://{addr}/ ({})",
        if api.token.is_some() {
            "bearer token required"
        } else {
            "loopback only, no token"
        }
    );
    std::thread::Builder::new()
        .name("wssd-api".into())
        .spawn(move || smol::block_on(api.serve(listener)))
        .map_err(|e| format!("cannot start the API thread: {e}"))?;
    Ok(())
}

impl Api {
    async fn serve(self: Arc<Self>, listener: smol::net::TcpListener) {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!("push API: accept failed: {e}");
                    wssd::Clock::system()
                        .sleep(Duration::from_millis(100))
                        .await;
                    continue;
                }
            };
            let api = self.clone();
            smol::spawn(async move {
                let service = hyper::service::service_fn(move |req| api.clone().handle(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(smol_hyper::rt::SmolTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(smol_hyper::rt::FuturesIo::new(tcp), service)
                    .await;
            })
            .detach();
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(match self.route(req).await {
            Ok(response) => response,
            Err((status, why)) => json_response(status, &json!({ "error": why })),
        })
    }

    async fn route(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong bearer token: send Authorization: Bearer <the token in --api-token-file>".into(),
                ));
            }
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| percent_decode(v))
        };
        let app = &self.app;
        let scope = if self.redis {
            "all instances"
        } else {
            "this instance"
        };
        match (&method, path.as_str()) {
            (&Method::GET, "/metrics") => Ok(Response::builder()
                .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(self.metrics())))
                .expect("a valid response")),
            (&Method::GET, "/count") => Ok(json_response(
                StatusCode::OK,
                &json!({ "connections": app.hub().count(), "scope": "this instance" }),
            )),
            // Who is online: a user's connections, or a group's.
            (&Method::GET, "/connections" | "/members") => {
                let key = if path == "/members" { "group" } else { "user" };
                let name = param(key).ok_or_else(|| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("give the {key}: GET {path}?{key}={}", key.to_uppercase()),
                    )
                })?;
                let ids = if key == "user" {
                    app.hub().user_connections(&name)
                } else {
                    app.hub().group_members(&name)
                };
                let ids: Vec<u64> = ids.iter().map(|id| id.get()).collect();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ key: name, "connections": ids, "scope": "this instance" }),
                ))
            }
            (&Method::POST, "/send") => {
                let mut body: SendBody = read_json(req).await?;
                let msg = crate::bridge::message(body.text.take(), body.binary.take())
                    .map_err(|why| (StatusCode::BAD_REQUEST, format!("the message {why}")))?;
                let exclude: Vec<ConnectionId> = body
                    .exclude
                    .iter()
                    .filter_map(|&n| ConnectionId::from_wire(n))
                    .collect();
                let (sent, scope) = match (body.id, &body.user, &body.group, body.all) {
                    (Some(id), None, None, false) => {
                        let wire = id;
                        let id = conn_id(id)?;
                        let Some(conn) = app.hub().get(id) else {
                            if !app.hub().is_linked() {
                                return Err(unknown(wire));
                            }
                            // Not here: the instance that has it (ids are unique) delivers it.
                            app.hub().publish_to(id, &msg);
                            return Ok(json_response(
                                StatusCode::OK,
                                &json!({ "sent": 0, "counted_on": "this instance", "delivered_to": "all instances", "relayed": true }),
                            ));
                        };
                        match conn.try_send(msg) {
                            Ok(()) => (1, "this instance"),
                            Err(wssd::SendError::Full) => {
                                conn.close_slow();
                                return Err((
                                    StatusCode::CONFLICT,
                                    format!(
                                        "connection {id} reads too slowly: its send queue is full, so it was closed with 1013"
                                    ),
                                ));
                            }
                            Err(_) => return Err(unknown(wire)),
                        }
                    }
                    (None, Some(user), None, false) => (app.hub().send_to_user(user, &msg), scope),
                    (None, None, Some(group), false) => {
                        (app.hub().send_to_group(group, &msg, &exclude), scope)
                    }
                    (None, None, None, true) => (app.hub().broadcast(&msg, &exclude), scope),
                    _ => {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            "give exactly one of \"id\", \"user\", \"group\" and \"all\": true"
                                .into(),
                        ));
                    }
                };
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "sent": sent, "counted_on": "this instance", "delivered_to": scope }),
                ))
            }
            (&Method::POST, "/join" | "/leave") => {
                let body: GroupBody = read_json(req).await?;
                let id = conn_id(body.id)?;
                app.hub().get(id).ok_or_else(|| unknown(body.id))?;
                if path == "/join" {
                    app.join(id, &body.group);
                } else {
                    app.leave(id, &body.group);
                }
                Ok(json_response(StatusCode::OK, &json!({ "ok": true })))
            }
            (&Method::POST, "/bind") => {
                let body: BindBody = read_json(req).await?;
                let id = conn_id(body.id)?;
                app.hub().get(id).ok_or_else(|| unknown(body.id))?;
                app.bind(id, &body.user);
                Ok(json_response(StatusCode::OK, &json!({ "ok": true })))
            }
            (&Method::POST, "/close") => {
                let body: CloseBody = read_json(req).await?;
                let code = body.code.unwrap_or(1000);
                if !(code == 1000 || (3000..=4999).contains(&code)) {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        format!(
                            "close code {code}: use 1000, or 3000 to 4999 (RFC 6455 section 7.4.2)"
                        ),
                    ));
                }
                let code = CloseCode::from(code);
                let closed = match (body.id, &body.user) {
                    (Some(wire), None) => match app.hub().get(conn_id(wire)?) {
                        Some(conn) => usize::from(conn.close(code, &body.reason)),
                        None if app.hub().is_linked() => {
                            // Not here: the instance that has it (ids are unique) closes it.
                            app.hub().publish_close(conn_id(wire)?, code, &body.reason);
                            0
                        }
                        None => return Err(unknown(wire)),
                    },
                    (None, Some(user)) => app.hub().close_user(user, code, &body.reason),
                    _ => {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            "give exactly one of \"id\" and \"user\"".into(),
                        ));
                    }
                };
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "closed": closed, "counted_on": "this instance", "delivered_to": scope }),
                ))
            }
            (
                _,
                "/metrics" | "/count" | "/connections" | "/members" | "/send" | "/join" | "/leave"
                | "/bind" | "/close",
            ) => Err((
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{method} is not for {path}: GET /metrics, /count, /connections, /members; POST /send, /join, /leave, /bind, /close"
                ),
            )),
            _ => Err((
                StatusCode::NOT_FOUND,
                format!(
                    "no {}: GET /metrics, /count, /connections, /members; POST /send, /join, /leave, /bind, /close",
                    wssd::text::escape(&path)
                ),
            )),
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    fn metrics(&self) -> String {
        let s = wssd::stats::snapshot();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "wssd_connections_open",
            "gauge",
            "WebSocket connections open now.",
            &[("", s.open)],
        );
        metric(
            "wssd_handshakes_total",
            "counter",
            "Opening handshakes by outcome: ok (101), refused (by the app), failed (TLS, path, timeout, not a WebSocket).",
            &[
                ("{outcome=\"ok\"}", s.handshakes_ok),
                ("{outcome=\"refused\"}", s.handshakes_refused),
                ("{outcome=\"failed\"}", s.handshakes_failed),
            ],
        );
        metric(
            "wssd_connections_refused_total",
            "counter",
            "Connections refused at --max-connections or --max-connections-per-address (503, or closed on a TLS port).",
            &[("", s.refused_at_cap)],
        );
        metric(
            "wssd_messages_total",
            "counter",
            "Text and binary messages received (in) and written (out).",
            &[
                ("{direction=\"in\"}", s.messages_in),
                ("{direction=\"out\"}", s.messages_out),
            ],
        );
        metric(
            "wssd_message_bytes_total",
            "counter",
            "Payload bytes of those messages.",
            &[
                ("{direction=\"in\"}", s.bytes_in),
                ("{direction=\"out\"}", s.bytes_out),
            ],
        );
        let closes: Vec<(String, u64)> = s
            .closes
            .iter()
            .map(|(code, n)| {
                let label = match code {
                    Some(3000) => "{code=\"3000-4999\"}".to_string(),
                    Some(c) => format!("{{code=\"{c}\"}}"),
                    None => "{code=\"none\"}".to_string(),
                };
                (label, *n)
            })
            .collect();
        let closes: Vec<(&str, u64)> = closes.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        metric(
            "wssd_closes_total",
            "counter",
            "Connections ended, by close code (none: dropped without a close frame).",
            &closes,
        );
        let violations: Vec<(String, u64)> = s
            .violations
            .iter()
            .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), *n))
            .collect();
        let violations: Vec<(&str, u64)> =
            violations.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        metric(
            "wssd_violations_total",
            "counter",
            "Connections failed for a protocol violation or a limit, by kind (close code 1002, 1007 or 1009).",
            &violations,
        );
        metric(
            "wssd_slow_consumers_closed_total",
            "counter",
            "Clients closed with 1013 because they read too slowly.",
            &[("", s.slow_consumers_closed)],
        );
        metric(
            "wssd_connection_panics_total",
            "counter",
            "Connections ended by a panic in their handling (a bug; the log names the peer).",
            &[("", s.panics)],
        );
        let app = self.app.stats();
        metric(
            "wssd_app_events_total",
            "counter",
            "Events posted to the app (--app), by event.",
            &[
                ("{event=\"open\"}", app.events[0]),
                ("{event=\"message\"}", app.events[1]),
                ("{event=\"close\"}", app.events[2]),
            ],
        );
        metric(
            "wssd_app_event_failures_total",
            "counter",
            "Events the app did not take after the retries, by event.",
            &[
                ("{event=\"open\"}", app.failures[0]),
                ("{event=\"message\"}", app.failures[1]),
                ("{event=\"close\"}", app.failures[2]),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP wssd_app_event_seconds Time from posting an event to the app's answer.\n# TYPE wssd_app_event_seconds summary\nwssd_app_event_seconds_sum {:.6}\nwssd_app_event_seconds_count {}",
            app.micros as f64 / 1e6,
            app.answered
        );
        out
    }
}

/// The connection an app named by its id's number: any but 0, which no connection has.
fn conn_id(id: u64) -> Result<ConnectionId, (StatusCode, String)> {
    ConnectionId::from_wire(id).ok_or_else(|| unknown(id))
}

fn unknown(id: u64) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("no connection {id} on this instance (it closed, or it is on another one)"),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, (StatusCode, String)> {
    // A Content-Length over the limit is refused before reading any of it.
    if hyper::body::Body::size_hint(req.body()).lower() > MAX_BODY as u64 {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes"),
        ));
    }
    // A body that trickles in is cut off: the API's tasks never wait on a client forever.
    let collect = async {
        Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map(Some)
    };
    let body = smol::future::or(collect, async {
        wssd::Clock::system().sleep(BODY_TIMEOUT).await;
        Ok(None)
    })
    .await
    .map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes"),
            )
        } else {
            (StatusCode::BAD_REQUEST, format!("the body broke off: {e}"))
        }
    })?
    .ok_or_else(|| {
        (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )
    })?
    .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON this endpoint takes: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    id: Option<u64>,
    user: Option<String>,
    group: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    exclude: Vec<u64>,
    text: Option<String>,
    /// Base64 (RFC 4648 section 4).
    binary: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    id: u64,
    group: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindBody {
    id: u64,
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    id: Option<u64>,
    user: Option<String>,
    code: Option<u16>,
    #[serde(default)]
    reason: String,
}

/// Decodes `%XX` and `+` in a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            // `i + 2 < len` leaves room for both hex digits.
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((hi, lo))) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token of an `Authorization: Bearer TOKEN` value (RFC 6750 section 2.1); the scheme
/// is matched without regard to case (RFC 9110 section 11.1), `bearer` as well as `Bearer`.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k"] {
            assert_eq!(bearer(value), Some("t0k"), "{value}");
        }
        for value in ["Basic t0k", "Bearert0k", "t0k", "Bearer"] {
            assert_eq!(bearer(value), None, "{value}");
        }
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
