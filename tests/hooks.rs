//! The hooks an app bridge needs, over in-memory pipes: refusing a connection with an HTTP
//! status after `accept` (before the `101`), and holding reads while a message is on its
//! way somewhere slow (backpressure, nothing dropped, order kept).

use wssd_testkit as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{duplex, duplex_with, peer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use futures_util::StreamExt;
use wssd::{Acceptor, Config, Connection, Handler, Message};

/// Accepts the client on `server` with the default configuration.
async fn accept(server: common::Duplex) -> wssd::Accepted<common::Duplex> {
    Acceptor::new(Config::default())
        .accept(server, peer())
        .await
        .unwrap()
}

#[test]
fn refuse_answers_the_status_instead_of_the_101_and_the_browser_never_opens() {
    let (mut client, server) = duplex();
    future::block_on(common::bounded(async {
        let serve = async {
            let accepted = accept(server).await;
            assert_eq!(accepted.request().path, "/");
            accepted.refuse(401, "bad token").await.unwrap();
        };
        let talk = async {
            client.write_all(common::UPGRADE_REQUEST).await.unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let ((), answer) = future::zip(serve, talk).await;
        assert!(
            answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\nbad token\n"), "{answer}");
        assert!(!answer.contains("101"), "{answer}");
    }));
}

#[test]
fn refuse_takes_only_error_statuses() {
    let (mut client, server) = duplex();
    future::block_on(common::bounded(async {
        let serve = async {
            let accepted = accept(server).await;
            accepted.refuse(200, "fine").await.unwrap_err().kind()
        };
        let talk = async {
            client.write_all(common::UPGRADE_REQUEST).await.unwrap();
        };
        let (kind, ()) = future::zip(serve, talk).await;
        assert_eq!(kind, std::io::ErrorKind::InvalidInput);
    }));
}

/// Hands each message to a bounded queue of one, holding reads while it is full, and counts
/// the messages taken from the client that the consumer has not had yet.
struct Bridge {
    queue: async_channel::Sender<Message>,
    taken: Arc<AtomicUsize>,
    consumed: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl Handler for Bridge {
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        let taken = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
        let in_flight = taken - self.consumed.load(Ordering::SeqCst);
        self.most_in_flight.fetch_max(in_flight, Ordering::SeqCst);
        if let Err(full) = self.queue.try_send(msg.into()) {
            let queue = self.queue.clone();
            let msg = full.into_inner();
            assert!(conn.hold_reads(async move {
                let _ = queue.send(msg).await;
            }));
        }
    }
}

#[test]
fn hold_reads_slows_the_client_to_the_consumer_and_loses_nothing() {
    const COUNT: usize = 2_000;
    // Small pipes, so that the client's writes stall once the server stops reading.
    let (client, server) = duplex_with(4096);
    let (tx, rx) = async_channel::bounded(1);
    let taken = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicUsize::new(0));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    let bridge = Bridge {
        queue: tx,
        taken: taken.clone(),
        consumed: consumed.clone(),
        most_in_flight: most_in_flight.clone(),
    };
    let got = future::block_on(common::bounded(async {
        let serve = async {
            let accepted = accept(server).await;
            accepted.serve(&bridge).await;
        };
        let send = async {
            let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", client)
                .await
                .unwrap();
            for i in 0..COUNT {
                ws.send(Message::text(format!("m{i}"))).await.unwrap();
            }
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        };
        // A slow consumer: it yields between messages, as an app's round trip would.
        let consume = async {
            let mut got = Vec::new();
            while got.len() < COUNT {
                let msg = rx.recv().await.unwrap();
                consumed.fetch_add(1, Ordering::SeqCst);
                got.push(msg.into_text().unwrap().to_string());
                future::yield_now().await;
                future::yield_now().await;
            }
            got
        };
        let (((), ()), got) = future::zip(future::zip(serve, send), consume).await;
        got
    }));
    let expected: Vec<String> = (0..COUNT).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "every message, in order");
    // One in the queue, one held, and the one just taken: never more.
    let most = most_in_flight.load(Ordering::SeqCst);
    assert!(
        most <= 3,
        "{most} messages were taken ahead of the consumer"
    );
}

#[test]
fn hold_reads_outside_on_message_does_nothing() {
    struct Keep(async_channel::Sender<Connection>);
    impl Handler for Keep {
        fn on_open(&self, conn: &Connection) {
            self.0.try_send(conn.clone()).unwrap();
        }
        fn on_message(&self, _: &Connection, _: wssd::Data) {}
    }
    let (client, server) = duplex();
    let (tx, rx) = async_channel::bounded(1);
    future::block_on(common::bounded(async {
        let serve = async {
            let accepted = accept(server).await;
            accepted.serve(&Keep(tx)).await;
        };
        let talk = async {
            let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", client)
                .await
                .unwrap();
            let conn = rx.recv().await.unwrap();
            assert!(!conn.hold_reads(async {}));
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        };
        future::zip(serve, talk).await;
    }));
}

/// Lets in the clients whose query is `token=good`, after an await (as an app's answer).
struct Gate;

impl Handler for Gate {
    fn admit(&self, _: wssd::ConnectionId, request: &wssd::Request) -> Option<wssd::AdmitFuture> {
        let good = request.query.as_deref() == Some("token=good");
        Some(Box::pin(async move {
            future::yield_now().await;
            if good {
                wssd::Admission::Accept
            } else {
                wssd::Admission::Refuse {
                    status: 401,
                    reason: "bad token".into(),
                }
            }
        }))
    }
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        let _ = conn.try_send(msg);
    }
}

#[test]
fn the_smol_server_asks_admit_before_the_101() {
    let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = wssd::smol::Shutdown::default();
    let server = wssd::smol::Server::new(Acceptor::new(Config::default()), Arc::new(Gate))
        .threads(1)
        .shutdown(shutdown.clone());
    let before = wssd::stats::snapshot();
    let running = std::thread::spawn(move || server.run(listener));
    smol::block_on(common::bounded(async {
        let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
        let refused = async_tungstenite::client_async(format!("ws://{addr}/?token=bad"), tcp).await;
        match refused {
            Err(wssd::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
        let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
        common::echo_once(&format!("ws://{addr}/?token=good"), tcp).await;
    }));
    shutdown.trigger();
    running.join().unwrap().unwrap();
    // The counters saw it (other tests of this binary may add to them too).
    let after = wssd::stats::snapshot();
    assert!(after.handshakes_refused > before.handshakes_refused);
    assert!(after.handshakes_ok > before.handshakes_ok);
    assert!(after.messages_in > before.messages_in && after.bytes_in >= before.bytes_in + 3);
    assert!(after.messages_out > before.messages_out);
    // The client's close frame had no code: 1005 (RFC 6455 section 7.4.1).
    let no_code = |s: &wssd::stats::Stats| {
        s.closes
            .iter()
            .find(|(code, _)| *code == Some(1005))
            .map_or(0, |(_, n)| *n)
    };
    assert!(no_code(&after) > no_code(&before), "{:?}", after.closes);
}

#[test]
fn choose_subprotocol_puts_an_offered_one_in_the_101() {
    struct Quiet;
    impl Handler for Quiet {
        fn on_message(&self, _: &Connection, _: wssd::Data) {}
    }
    let (mut client, server) = duplex();
    future::block_on(common::bounded(async {
        let serve = async {
            let mut accepted = Acceptor::new(Config::default().subprotocols(["a"]))
                .accept(server, peer())
                .await
                .unwrap();
            assert_eq!(accepted.request().subprotocol.as_deref(), Some("a"));
            let refused = accepted.choose_subprotocol("c").unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
            accepted.choose_subprotocol("b").unwrap();
            assert_eq!(accepted.request().subprotocol.as_deref(), Some("b"));
            accepted.serve(&Quiet).await;
        };
        let talk = async {
            let request = String::from_utf8(common::UPGRADE_REQUEST.to_vec())
                .unwrap()
                .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: a, b\r\n\r\n");
            client.write_all(request.as_bytes()).await.unwrap();
            let head = common::read_head(&mut client).await.unwrap();
            // Closing frame with no payload, masked: the session ends.
            client.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await.unwrap();
            let mut rest = Vec::new();
            let _ = client.read_to_end(&mut rest).await;
            head
        };
        let ((), head) = future::zip(serve, talk).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains("\r\nSec-WebSocket-Protocol: b\r\n"), "{head}");
        assert!(!head.contains("Protocol: a"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }));
}

/// Echoes, but panics on the text `panic`: a bug that one client's input reaches.
struct Fragile;

impl Handler for Fragile {
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        if matches!(&msg, wssd::Data::Text(text) if text.as_str() == "panic") {
            panic!("injected: a handler bug reached by one client's message");
        }
        let _ = conn.try_send(msg);
    }
}

#[test]
fn a_panic_in_one_connection_closes_it_alone_and_the_server_serves_on() {
    use async_tungstenite::tungstenite::Message as Ws;
    let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = wssd::smol::Shutdown::default();
    // One thread: the panicking connection and the echoing one share it.
    let server = wssd::smol::Server::new(Acceptor::new(Config::default()), Arc::new(Fragile))
        .threads(1)
        .shutdown(shutdown.clone());
    let before = wssd::stats::snapshot();
    let running = std::thread::spawn(move || server.run(listener));
    smol::block_on(common::bounded(async {
        let url = format!("ws://{addr}/");
        let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
        let (mut echoing, _) = async_tungstenite::client_async(&url, tcp).await.unwrap();
        echoing.send(Ws::text("before")).await.unwrap();
        assert_eq!(echoing.next().await.unwrap().unwrap(), Ws::text("before"));

        let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
        let (mut fragile, _) = async_tungstenite::client_async(&url, tcp).await.unwrap();
        fragile.send(Ws::text("panic")).await.unwrap();
        // Its connection ends (no close frame: the session did not get that far).
        loop {
            match fragile.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(Ws::Close(_))) => {}
                Some(Ok(other)) => panic!("the panicking connection answered {other:?}"),
            }
        }
        // The other connection, on the same thread, echoes on; new clients are served.
        echoing.send(Ws::text("after")).await.unwrap();
        assert_eq!(echoing.next().await.unwrap().unwrap(), Ws::text("after"));
        echoing.close(None).await.unwrap();
        while echoing.next().await.is_some() {}
        let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
        common::echo_once(&url, tcp).await;
    }));
    shutdown.trigger();
    running.join().unwrap().unwrap();
    assert_eq!(wssd::stats::snapshot().panics, before.panics + 1);
}
