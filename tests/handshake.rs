//! The accept path and the session loop over in-memory duplex pipes: no sockets, no runtime.

use wssd_testkit as common;

use std::sync::Mutex;
use std::time::Duration;

use async_tungstenite::tungstenite::{
    client::IntoClientRequest,
    http::{StatusCode, header},
};
use common::{duplex, peer, tls_connector};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use futures_util::StreamExt;
use wssd::rustls;
use wssd::{
    AcceptError, Acceptor, CloseCode, CloseFrame, Config, Connection, Handler, Limits, Message,
};

/// Echoes, closes with 4001 on "close-me", and records what it saw.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Handler for Recorder {
    fn on_open(&self, conn: &Connection) {
        let r = conn.request();
        self.events
            .lock()
            .unwrap()
            .push(format!("open {} {:?}", r.path, r.subprotocol));
    }
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        if msg == wssd::Data::text("close-me") {
            conn.close(CloseCode::Library(4001), "as asked");
        } else {
            conn.try_send(msg).unwrap();
        }
    }
    fn on_close(&self, _conn: &Connection, close: Option<&CloseFrame>) {
        let close = close.map(|f| format!("{} {}", u16::from(f.code), f.reason));
        self.events.lock().unwrap().push(format!("close {close:?}"));
    }
}

/// Accepts one connection on `server_end` and serves it with `handler` until it closes.
async fn serve_one(
    acceptor: &Acceptor,
    server_end: common::Duplex,
    handler: &Recorder,
) -> Result<(wssd::Request, wssd::SessionSummary), AcceptError> {
    let accepted = acceptor.accept(server_end, peer()).await?;
    let request = accepted.request().clone();
    let summary = accepted.serve(handler).await;
    Ok((request, summary))
}

#[test]
fn ws_handshake_and_echo() {
    let acceptor = Acceptor::new(Config::default());
    let handler = Recorder::default();
    let (server_end, client_end) = duplex();
    let client = async {
        let (mut ws, resp) =
            async_tungstenite::client_async("ws://localhost/chat?room=1", client_end)
                .await
                .unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("tom")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("tom"));
        ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 2])
        );
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    };
    let (served, ()) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    let (request, summary) = served.unwrap();
    assert_eq!(request.path, "/chat");
    assert_eq!(request.query.as_deref(), Some("room=1"));
    assert_eq!(request.headers[header::HOST], "localhost");
    assert_eq!(request.peer_addr, peer());
    assert!(request.tls.is_none());
    assert_eq!((summary.messages_in, summary.messages_out), (2, 2));
    assert_eq!(summary.close_code, Some(CloseCode::Status));
}

#[test]
fn wss_handshake_and_echo() {
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let acceptor = Acceptor::new(Config::default().tls(certs.server_config().unwrap()));
    let handler = Recorder::default();
    let (server_end, client_end) = duplex();
    let client = async {
        let tls = tls_connector(&certs.ca_pem)
            .connect(common::localhost(), client_end)
            .await
            .unwrap();
        common::echo_once("wss://localhost/wss", tls).await;
    };
    let (served, ()) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    let (request, summary) = served.unwrap();
    let tls = request.tls.expect("TLS facts");
    assert_eq!(tls.version, wssd::TlsVersion::Tls13);
    assert_eq!(tls.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    assert_eq!(summary.messages_in, 1);
}

/// Each wss connection leaves its client one TLS 1.3 ticket (RFC 8446 section 4.6.1), so a
/// client that reconnects again and again resumes every time.
#[test]
fn a_reconnecting_client_resumes_its_tls_session_each_time() {
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let acceptor = Acceptor::new(Config::default().tls(certs.server_config().unwrap()));
    let handler = Recorder::default();
    let connector = tls_connector(&certs.ca_pem);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let (server_end, client_end) = duplex();
        let client = async {
            let tls = connector
                .connect(common::localhost(), client_end)
                .await
                .unwrap();
            let kind = tls.get_ref().1.handshake_kind();
            common::echo_once("wss://localhost/wss", tls).await;
            kind
        };
        let (served, kind) = future::block_on(future::zip(
            serve_one(&acceptor, server_end, &handler),
            client,
        ));
        served.unwrap();
        kinds.push(kind);
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(kinds, [Some(Full), Some(Resumed), Some(Resumed)]);
}

#[test]
fn wss_messages_of_every_size_cross_records_and_a_narrow_pipe() {
    // Messages from one byte to several TLS records (16 KiB of plaintext each), sent
    // without waiting for their echoes through a pipe that holds 1,500 bytes: records
    // arrive cut anywhere and the server's writes wait for the client's reads. Over TLS 1.3
    // and TLS 1.2 (which WeChat needs); every echo comes back whole and in order.
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let acceptor = Acceptor::new(Config::default().tls(certs.server_config().unwrap()));
    let sizes = [1usize, 300, 16_384, 70_000, 200_000, 5];
    let messages: Vec<Message> = sizes
        .iter()
        .map(|&n| Message::binary((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>()))
        .collect();
    for (version, expected) in [
        (&rustls::version::TLS13, wssd::TlsVersion::Tls13),
        (&rustls::version::TLS12, wssd::TlsVersion::Tls12),
    ] {
        let handler = Recorder::default();
        let (server_end, client_end) = common::duplex_with(1_500);
        let client = async {
            let tls = common::tls_connector_with(&certs.ca_pem, &[version])
                .connect(common::localhost(), client_end)
                .await
                .unwrap();
            let (ws, _) = async_tungstenite::client_async("wss://localhost/", tls)
                .await
                .unwrap();
            let (mut tx, mut rx) = ws.split();
            let send = async {
                for message in &messages {
                    tx.send(message.clone()).await.unwrap();
                }
                tx
            };
            let receive = async {
                let mut got = Vec::new();
                for _ in &messages {
                    got.push(rx.next().await.unwrap().unwrap());
                }
                got
            };
            let (mut tx, got) = future::zip(send, receive).await;
            tx.close(None).await.unwrap();
            while rx.next().await.is_some() {}
            got
        };
        let (served, got) = future::block_on(common::bounded(future::zip(
            serve_one(&acceptor, server_end, &handler),
            client,
        )));
        assert!(got == messages, "echoes differ over {expected:?}");
        let (request, summary) = served.unwrap();
        assert_eq!(request.tls.unwrap().version, expected);
        assert_eq!(summary.messages_in, sizes.len() as u64);
        assert_eq!(summary.close_code, Some(CloseCode::Status)); // a close frame without a code
    }
}

#[test]
fn wrong_path_gets_404_before_the_upgrade() {
    let acceptor = Acceptor::new(Config::default().path("/wss"));
    let handler = Recorder::default();
    let (server_end, client_end) = duplex();
    let client = async {
        let err = async_tungstenite::client_async("ws://localhost/other", client_end)
            .await
            .unwrap_err();
        match err {
            async_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status(), StatusCode::NOT_FOUND);
                let body = String::from_utf8(resp.into_body().unwrap()).unwrap();
                assert!(body.contains("/wss"), "body names the right path: {body}");
            }
            other => panic!("expected an HTTP 404, got {other}"),
        }
    };
    let (served, ()) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    match served {
        Err(AcceptError::WrongPath { path }) => assert_eq!(path, "/other"),
        other => panic!("expected WrongPath, got {other:?}"),
    }
    assert!(
        handler.events.lock().unwrap().is_empty(),
        "the handler never saw it"
    );
}

/// A TLS 1.1 ClientHello: legacy_version 0x0302, no supported_versions extension.
fn tls11_client_hello() -> Vec<u8> {
    old_client_hello(0x02, true)
}

/// A ClientHello with client_version 3.`minor`, no supported_versions extension, and
/// signature_algorithms only if `sig_algs` (TLS 1.0 clients such as `openssl s_client
/// -tls1` send none).
fn old_client_hello(minor: u8, sig_algs: bool) -> Vec<u8> {
    let mut body = vec![0x03, minor];
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x06, 0xc0, 0x13, 0xc0, 0x09, 0x00, 0x2f]); // three CBC suites
    body.extend([0x01, 0x00]); // null compression
    let sig_algs: &[u8] = if sig_algs {
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
        &[
            0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
        ]
    } else {
        &[]
    };
    let extensions = [
        sig_algs,
        // supported_groups: secp256r1, x25519
        &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d],
        // ec_point_formats: uncompressed
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00],
    ]
    .concat();
    body.extend([0, extensions.len() as u8]);
    body.extend(extensions);
    let mut handshake = vec![0x01, 0, 0, body.len() as u8];
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend(handshake);
    record
}

/// Sends `hello` to a TLS acceptor; returns the accept error and the first 7 bytes answered.
fn refuse_hello(hello: Vec<u8>) -> (AcceptError, Vec<u8>) {
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let acceptor = Acceptor::new(Config::default().tls(certs.server_config().unwrap()));
    let handler = Recorder::default();
    let (server_end, mut client_end) = duplex();
    let client = async {
        client_end.write_all(&hello).await.unwrap();
        let mut answer = vec![0u8; 7];
        client_end.read_exact(&mut answer).await.unwrap();
        answer
    };
    let (served, answer) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    (served.expect_err("an old client is refused"), answer)
}

#[test]
fn tls_1_1_only_client_is_refused() {
    let (e, answer) = refuse_hello(tls11_client_hello());
    assert!(
        matches!(
            e,
            AcceptError::OldTls {
                offered: "TLS 1.1",
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("requires TLS 1.2 or 1.3"), "says why: {text}");
    // A TLS alert record (content type 21), fatal (2), protocol_version (70).
    assert_eq!(answer[0], 0x15, "an alert record: {answer:?}");
    assert_eq!(
        &answer[5..7],
        &[2, 70],
        "fatal protocol_version: {answer:?}"
    );
}

/// Every way an old client shows itself gets the hint: TLS 1.0 and 1.1 hellos with and
/// without signature_algorithms (rustls then fails with `SignatureAlgorithmsExtensionRequired`).
#[test]
fn every_old_client_hello_gets_the_old_tls_hint() {
    for (minor, sig_algs, offered) in [
        (0x01, false, "TLS 1.0"),
        (0x01, true, "TLS 1.0"),
        (0x02, false, "TLS 1.1"),
        (0x00, false, "SSL 3.0"),
    ] {
        let (e, answer) = refuse_hello(old_client_hello(minor, sig_algs));
        let text = e.to_string();
        assert!(
            text.contains(&format!("the client offers only {offered}; wssd requires TLS 1.2 or 1.3"))
                // Said once, in plain words: no rustls enum, no "TLS 1.1, TLS 1.1 or older".
                && !text.contains("PeerIncompatible")
                && text.matches("TLS 1.1").count() <= 1,
            "3.{minor} sig_algs={sig_algs}: {text}"
        );
        assert_eq!(answer[0], 0x15, "an alert record: {answer:?}");
    }
}

#[test]
fn close_handshake_carries_code_and_reason_both_ways() {
    let acceptor = Acceptor::new(Config::default());
    // The client closes with 4000 "bye".
    let handler = Recorder::default();
    let (server_end, client_end) = duplex();
    let client = async {
        let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        let frame = CloseFrame {
            code: CloseCode::Library(4000),
            reason: "bye".into(),
        };
        ws.close(Some(frame)).await.unwrap();
        while ws.next().await.is_some() {}
    };
    let (served, ()) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    assert_eq!(served.unwrap().1.close_code, Some(CloseCode::Library(4000)));
    assert_eq!(
        handler.events.lock().unwrap().last().unwrap(),
        "close Some(\"4000 bye\")"
    );

    // The server closes with 4001 "as asked", after delivering what was queued before.
    let handler = Recorder::default();
    let (server_end, client_end) = duplex();
    let client = async {
        let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        ws.send(Message::text("first")).await.unwrap();
        ws.send(Message::text("close-me")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("first"));
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Library(4001));
                assert_eq!(frame.reason, "as asked");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        while ws.next().await.is_some() {}
    };
    let (served, ()) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    assert_eq!(served.unwrap().1.close_code, Some(CloseCode::Library(4001)));
}

#[test]
fn subprotocol_is_chosen_from_the_offer_and_echoed() {
    // The client's order of preference decides among the ones the server speaks.
    let acceptor = Acceptor::new(Config::default().subprotocols(["chat.v1", "chat.v2"]));
    let handler = Recorder::default();
    let (server_end, client_end) = duplex();
    let client = async {
        let mut req = "ws://localhost/".into_client_request().unwrap();
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "other, chat.v2, chat.v1".parse().unwrap(),
        );
        let (mut ws, resp) = async_tungstenite::client_async(req, client_end)
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_PROTOCOL], "chat.v2");
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    };
    let (served, ()) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    assert_eq!(served.unwrap().0.subprotocol.as_deref(), Some("chat.v2"));

    // A client that offers none gets none back.
    let (server_end, client_end) = duplex();
    let client = async {
        let (mut ws, resp) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        assert!(resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    };
    let (served, ()) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    assert_eq!(served.unwrap().0.subprotocol, None);
}

#[test]
fn invalid_utf8_and_oversized_messages_fail_with_their_close_codes() {
    let mut config = Config::default();
    config.limits.max_message_size = 1024;
    config.limits.max_frame_size = 1024;
    let acceptor = Acceptor::new(config);
    for (frame, code) in [
        // FIN + text, masked, 2 bytes: 0xC3 0x28 is not UTF-8.
        (vec![0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28], 1007u16),
        // FIN + binary, masked, 2000 bytes (16-bit length) over the 1 KiB limit.
        (
            [vec![0x82, 0xFE, 0x07, 0xD0, 0, 0, 0, 0], vec![0u8; 2000]].concat(),
            1009,
        ),
        // An unmasked client frame (RFC 6455 section 5.1).
        (vec![0x81, 0x02, b'h', b'i'], 1002),
    ] {
        let handler = Recorder::default();
        let (server_end, client_end) = duplex();
        let client = async {
            let (ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
                .await
                .unwrap();
            let mut raw = ws.into_inner();
            raw.write_all(&frame).await.unwrap();
            let mut head = [0u8; 4];
            raw.read_exact(&mut head).await.unwrap();
            head
        };
        let (served, head) = future::block_on(future::zip(
            serve_one(&acceptor, server_end, &handler),
            client,
        ));
        assert_eq!(head[0], 0x88, "a close frame");
        assert_eq!(u16::from_be_bytes([head[2], head[3]]), code);
        assert_eq!(served.unwrap().1.close_code, Some(CloseCode::from(code)));
    }
}

/// Accepts one connection from `peer_addr` and returns its request facts.
async fn accept_from(
    acceptor: &Acceptor,
    server_end: common::Duplex,
    peer_addr: std::net::SocketAddr,
) -> Result<wssd::Request, AcceptError> {
    let accepted = acceptor.accept(server_end, peer_addr).await?;
    let request = accepted.request().clone();
    accepted.serve(&Recorder::default()).await;
    Ok(request)
}

/// Opens a ws connection with extra request headers, then closes it.
async fn ws_client_with(stream: common::Duplex, headers: &[(&'static str, &str)]) {
    let mut req = "ws://localhost/wss".into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (mut ws, _) = async_tungstenite::client_async(req, stream).await.unwrap();
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

#[test]
fn client_ip_comes_from_trusted_proxies_only() {
    let acceptor =
        Acceptor::new(Config::default().trusted_proxies(["127.0.0.1/32".parse().unwrap()]));
    let via_proxy = |peer_addr: &str, header: (&'static str, &'static str)| {
        let (server_end, client_end) = duplex();
        let peer_addr = peer_addr.parse().unwrap();
        let (request, ()) = future::block_on(future::zip(
            accept_from(&acceptor, server_end, peer_addr),
            ws_client_with(client_end, &[header]),
        ));
        request.unwrap()
    };
    // Through the trusted proxy: the header names the client.
    let request = via_proxy("127.0.0.1:5000", ("x-real-ip", "127.0.0.9"));
    assert_eq!(request.client_ip.to_string(), "127.0.0.9");
    assert_eq!(request.peer_addr.to_string(), "127.0.0.1:5000");
    // Directly from 127.0.0.9, a spoofed X-Forwarded-For changes nothing.
    let request = via_proxy("127.0.0.9:5000", ("x-forwarded-for", "203.0.113.7"));
    assert_eq!(request.client_ip.to_string(), "127.0.0.9");
}

#[test]
fn proxy_protocol_header_before_the_tls_client_hello() {
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let acceptor = Acceptor::new(
        Config::default()
            .tls(certs.server_config().unwrap())
            .proxy_protocol(true),
    );
    let (server_end, mut client_end) = duplex();
    let client = async {
        client_end
            .write_all(b"PROXY TCP4 127.0.0.9 127.0.0.1 40001 8282\r\n")
            .await
            .unwrap();
        let tls = tls_connector(&certs.ca_pem)
            .connect(common::localhost(), client_end)
            .await
            .unwrap();
        let (mut ws, _) = async_tungstenite::client_async("wss://localhost/", tls)
            .await
            .unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    };
    let (request, ()) = future::block_on(future::zip(
        accept_from(&acceptor, server_end, peer()),
        client,
    ));
    let request = request.unwrap();
    assert_eq!(request.client_ip.to_string(), "127.0.0.9");
    assert_eq!(request.tls.unwrap().version, wssd::TlsVersion::Tls13);
}

#[test]
fn proxy_protocol_missing_from_a_trusted_peer_closes_only_that_connection() {
    let acceptor = Acceptor::new(Config::default().proxy_protocol(true));
    let (server_end, mut client_end) = duplex();
    let client = async {
        client_end
            .write_all(b"GET /wss HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
    };
    let (result, ()) = future::block_on(future::zip(
        accept_from(&acceptor, server_end, peer()),
        client,
    ));
    assert!(
        matches!(result, Err(AcceptError::ProxyHeader(_))),
        "{result:?}"
    );
    // An untrusted peer is not asked for one: it is a direct client.
    let (server_end, client_end) = duplex();
    let direct = "192.0.2.1:1234".parse().unwrap();
    let (result, ()) = future::block_on(future::zip(
        accept_from(&acceptor, server_end, direct),
        ws_client_with(client_end, &[]),
    ));
    assert_eq!(result.unwrap().client_ip.to_string(), "192.0.2.1");
}

#[test]
fn plain_http_on_the_tls_port_gets_400_naming_wss() {
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let acceptor = Acceptor::new(
        Config::default()
            .tls(certs.server_config().unwrap())
            .path("/wss"),
    );
    let (server_end, mut client_end) = duplex();
    let client = async {
        client_end
            .write_all(b"GET /wss HTTP/1.1\r\nHost: localhost:8282\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client_end.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let (result, answer) = future::block_on(future::zip(
        accept_from(&acceptor, server_end, peer()),
        client,
    ));
    assert!(
        matches!(result, Err(AcceptError::PlainHttpOnTlsPort)),
        "{result:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with("This port speaks TLS: connect with wss://localhost:8282/wss\n"),
        "{answer}"
    );
}

#[test]
fn tls_on_the_plain_port_is_named() {
    let acceptor = Acceptor::new(Config::default());
    let (server_end, mut client_end) = duplex();
    let client = async { client_end.write_all(&tls11_client_hello()).await.unwrap() };
    let (result, ()) = future::block_on(future::zip(
        accept_from(&acceptor, server_end, peer()),
        client,
    ));
    let err = result.unwrap_err();
    assert!(matches!(err, AcceptError::TlsOnPlainPort), "{err:?}");
    assert!(
        err.to_string()
            .contains("use ws://, or serve TLS on this port (Config::tls)"),
        "{err}"
    );
}

/// Accepts one connection and serves it under `limits` until it ends.
async fn serve_with(server_end: common::Duplex, limits: &Limits) -> wssd::SessionSummary {
    let acceptor = Acceptor::new(Config::default().limits(*limits));
    let accepted = acceptor.accept(server_end, peer()).await.unwrap();
    accepted.serve(&Recorder::default()).await
}

fn heartbeat_limits(idle_ms: u64) -> Limits {
    let mut limits = Limits::default();
    limits.ping_interval = std::time::Duration::from_millis(10);
    limits.idle_timeout = std::time::Duration::from_millis(idle_ms);
    limits
}

#[test]
fn server_pings_and_a_ponging_client_stays_open() {
    let limits = heartbeat_limits(60_000);
    let (server_end, client_end) = duplex();
    let server = serve_with(server_end, &limits);
    let client = async {
        let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        // Reading answers pings with pongs (tungstenite does it); three pings in a row.
        for _ in 0..3 {
            assert!(matches!(
                ws.next().await.unwrap().unwrap(),
                Message::Ping(_)
            ));
        }
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    };
    let (summary, ()) = future::block_on(future::zip(server, client));
    // The client closed without a code: 1005, not the 1001 of an idle timeout.
    assert_eq!(summary.close_code, Some(CloseCode::Status), "{summary:?}");
}

#[test]
fn a_silent_client_is_closed_with_1001_after_the_idle_timeout() {
    let limits = heartbeat_limits(50);
    let (server_end, client_end) = duplex();
    let server = serve_with(server_end, &limits);
    let client = async {
        // A raw client that never answers: only pings before the close frame.
        let mut raw = client_end;
        let (code, opcodes) = common::read_until_close(&mut raw).await;
        assert!(opcodes.iter().all(|&op| op == 0x89), "{opcodes:?}");
        code
    };
    let (summary, code) = future::block_on(future::zip(server, client));
    assert_eq!(code, 1001);
    assert_eq!(summary.close_code, Some(CloseCode::Away));
    assert!(summary.error.unwrap().contains("not even a pong"));
}

/// The heartbeat on a manual clock: the server's ping comes at the ping interval, not a
/// millisecond before (RFC 6455 section 5.5.2).
#[test]
fn the_servers_ping_is_due_at_the_ping_interval_and_not_a_moment_before() {
    let clock = wssd::Clock::manual();
    let mut limits = Limits::default(); // a ping every 25 s, idle after 60 s
    limits.clock = clock;
    let (server_end, mut raw) = duplex();
    let server = serve_with(server_end, &limits);
    let client = async {
        common::read_until_101(&mut raw).await;
        clock.advance(limits.ping_interval - Duration::from_millis(1));
        // A ping of the client's: its pong is the next frame, no ping of the server's before it.
        let ping = common::masked(0x89, [1, 2, 3, 4], b"early?");
        raw.write_all(&ping).await.unwrap();
        assert_eq!(
            common::read_frame(&mut raw).await,
            (0x8A, b"early?".to_vec())
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            common::read_frame(&mut raw).await.0,
            0x89,
            "the server's ping, due now"
        );
        let close = common::masked(0x88, [1, 2, 3, 4], &1000u16.to_be_bytes());
        raw.write_all(&close).await.unwrap();
        assert_eq!(common::read_frame(&mut raw).await.0, 0x88);
    };
    let (summary, ()) = future::block_on(common::bounded(future::zip(server, client)));
    assert_eq!(summary.close_code, Some(CloseCode::Normal), "{summary:?}");
}

/// The idle timeout on a manual clock: a client heard from a millisecond before it is kept,
/// and one silent for the whole timeout since is closed with 1001 (RFC 6455 section 7.4.1).
#[test]
fn a_client_is_closed_when_silent_for_the_idle_timeout_and_not_a_moment_before() {
    let clock = wssd::Clock::manual();
    let mut limits = Limits::default();
    limits.ping_interval = Duration::ZERO; // no pings: only the client's frames count
    limits.clock = clock;
    let idle = limits.idle_timeout;
    let (server_end, mut raw) = duplex();
    let server = serve_with(server_end, &limits);
    let client = async {
        common::read_until_101(&mut raw).await;
        clock.advance(idle - Duration::from_millis(1));
        let ping = common::masked(0x89, [1, 2, 3, 4], b"still here");
        raw.write_all(&ping).await.unwrap();
        assert_eq!(
            common::read_frame(&mut raw).await.0,
            0x8A,
            "closed too early"
        );
        // Heard just before the first check: silent from then on, for the whole timeout.
        clock.advance(Duration::from_millis(1));
        // One turn for the server, as the one thread here runs both: its check at the
        // timeout takes the ping heard, before the clock moves on.
        future::yield_now().await;
        clock.advance(idle);
        let (first, payload) = common::read_frame(&mut raw).await;
        assert_eq!((first, &payload[..2]), (0x88, &1001u16.to_be_bytes()[..]));
        let close = common::masked(0x88, [1, 2, 3, 4], &1001u16.to_be_bytes());
        raw.write_all(&close).await.unwrap(); // the closing handshake's answer
    };
    let (summary, ()) = future::block_on(common::bounded(future::zip(server, client)));
    assert_eq!(summary.close_code, Some(CloseCode::Away), "{summary:?}");
}

/// The handshake timeout on a manual clock: a request finished a millisecond before it is
/// accepted; one not finished by then is refused with `Timeout`.
#[test]
fn the_handshake_timeout_refuses_at_its_limit_and_not_a_moment_before() {
    for (wait, accepted) in [
        (Duration::from_millis(9_999), true),
        (Duration::from_secs(10), false),
    ] {
        let clock = wssd::Clock::manual();
        let mut limits = Limits::default(); // handshake_timeout: 10 s
        limits.clock = clock;
        let acceptor = Acceptor::new(Config::default().limits(limits));
        let (server_end, mut raw) = duplex();
        let (half, rest) = common::UPGRADE_REQUEST.split_at(20);
        let client = async {
            raw.write_all(half).await.unwrap();
            clock.advance(wait);
            // One turn for the server, as the one thread here runs both: a deadline due
            // now is seen before the rest of the request arrives.
            future::yield_now().await;
            let _ = raw.write_all(rest).await; // the server may be gone
            raw
        };
        let (result, _raw) = future::block_on(common::bounded(future::zip(
            acceptor.accept(server_end, peer()),
            client,
        )));
        match result {
            Ok(_) => assert!(accepted, "accepted after {wait:?}"),
            Err(AcceptError::Timeout { after }) => {
                assert!(!accepted, "refused after {wait:?}");
                assert_eq!(after, limits.handshake_timeout);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// RFC 9110 section 9.3.2: the answer to a HEAD request has headers and no content.
#[test]
fn a_head_request_gets_426_headers_and_no_body() {
    let acceptor = Acceptor::new(Config::default());
    let handler = Recorder::default();
    let (server_end, mut client_end) = duplex();
    let client = async {
        client_end
            .write_all(b"HEAD /wss HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client_end.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    };
    let (served, answer) = future::block_on(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    ));
    assert!(matches!(served, Err(AcceptError::NotWebSocket { .. })));
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "a body followed: {answer:?}");
}

/// RFC 8446 section 6.1: a wss session that ends (here after the closing handshake) ends its
/// TLS side with close_notify, so that the client reads a clean end of stream rather than a
/// truncation (rustls' clients report `UnexpectedEof` without it).
#[test]
fn a_wss_session_ends_with_close_notify() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let acceptor = Acceptor::new(Config::default().tls(certs.server_config().unwrap()));
    let handler = Recorder::default();
    let (server_end, client_end) = duplex();
    let client = async {
        let mut tls = tls_connector(&certs.ca_pem)
            .connect(common::localhost(), client_end)
            .await
            .unwrap();
        common::read_until_101(&mut tls).await;
        tls.write_all(&common::masked(0x88, [1, 2, 3, 4], &1000u16.to_be_bytes()))
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let mut rest = Vec::new();
        let end = tls.read_to_end(&mut rest).await;
        assert_eq!(&rest[..2], &[0x88, 2], "the close reply");
        assert!(end.is_ok(), "no close_notify: {end:?}");
    };
    let (served, ()) = future::block_on(common::bounded(future::zip(
        serve_one(&acceptor, server_end, &handler),
        client,
    )));
    assert_eq!(served.unwrap().1.close_code, Some(CloseCode::Normal));
}
