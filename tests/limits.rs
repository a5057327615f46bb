//! Frames and limits over in-memory pipes: frames however they arrive, the fragment guard,
//! and the byte-bounded send queue.

use wssd_testkit as common;

use common::{duplex, duplex_with, masked, peer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use futures_util::StreamExt;
use wssd::{Acceptor, CloseCode, Config, Connection, Handler, Limits, Message, SendError};

/// Echoes, and hands each new connection to the test.
struct Echo(async_channel::Sender<Connection>);

impl Handler for Echo {
    fn on_open(&self, conn: &Connection) {
        self.0.try_send(conn.clone()).unwrap();
    }
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        conn.try_send(msg).unwrap();
    }
}

/// A masked client frame with this first byte (FIN and opcode) and payload, mask key 0
/// (the payload as is).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    masked(first, [0; 4], payload)
}

/// Handshakes as a client, writes `bytes` raw, and returns the first `count` messages the
/// server sends back; then closes.
async fn raw_then_read(client_end: common::Duplex, bytes: Vec<u8>, count: usize) -> Vec<Message> {
    let (ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
        .await
        .unwrap();
    let mut raw = ws.into_inner();
    raw.write_all(&bytes).await.unwrap();
    let mut ws = async_tungstenite::WebSocketStream::from_raw_socket(
        raw,
        wssd::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let mut got = Vec::new();
    while got.len() < count {
        got.push(ws.next().await.unwrap().unwrap());
    }
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    got
}

async fn serve(
    server_end: common::Duplex,
    limits: Limits,
    conns: async_channel::Sender<Connection>,
) -> wssd::SessionSummary {
    let acceptor = Acceptor::new(Config::default().limits(limits));
    let accepted = acceptor.accept(server_end, peer()).await.unwrap();
    accepted.serve(&Echo(conns)).await
}

#[test]
fn a_flood_of_one_byte_fragments_is_closed_with_1009() {
    let (server_end, client_end) = duplex();
    let (conns, _keep) = async_channel::unbounded();
    let client = async {
        let (ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        let mut raw = ws.into_inner();
        let mut flood = frame(0x01, b"a"); // text, not final
        for _ in 0..2000 {
            flood.extend(frame(0x00, b"a")); // continuation, not final
        }
        // The server may close before reading all of it.
        let _ = raw.write_all(&flood).await;
        let mut head = [0u8; 4];
        raw.read_exact(&mut head).await.unwrap();
        head
    };
    let counted = |stats: wssd::stats::Stats| {
        let kinds = stats.violations.into_iter();
        kinds
            .filter(|(kind, _)| *kind == "too_many_fragments")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let before = counted(wssd::stats::snapshot());
    let (summary, head) = future::block_on(future::zip(
        serve(server_end, Limits::default(), conns),
        client,
    ));
    assert_eq!(head[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), 1009);
    assert_eq!(summary.close_code, Some(CloseCode::Size));
    assert!(summary.error.unwrap().contains("fragments"));
    // The one table: the violation, its close code and its counter.
    let max = Limits::default().max_fragments;
    assert_eq!(
        summary.violation,
        Some(wssd::Violation::TooManyFragments { max })
    );
    assert!(
        counted(wssd::stats::snapshot()) > before,
        "counted as too_many_fragments"
    );
}

#[test]
fn a_message_in_a_few_fragments_arrives_whole() {
    let (server_end, client_end) = duplex();
    let (conns, _keep) = async_channel::unbounded();
    let mut message = frame(0x01, b"to");
    message.extend(frame(0x89, b"")); // a ping between fragments is allowed
    message.extend(frame(0x00, b"m"));
    message.extend(frame(0x80, b"!")); // final continuation
    let client = raw_then_read(client_end, message, 2);
    let (_, got) = future::block_on(future::zip(
        serve(server_end, Limits::default(), conns),
        client,
    ));
    assert_eq!(
        got,
        vec![Message::Pong(Default::default()), Message::text("tom!")]
    );
}

#[test]
fn frames_arrive_whole_however_the_reads_cut_them() {
    // Several frames in one write, one larger than a read (16 KiB) with the 64-bit length
    // form, each masked with a key of its own: echoed in order, byte for byte.
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = masked(0x81, [1, 2, 3, 4], b"one");
    bytes.extend(masked(0x82, [5, 6, 7, 8], &[9; 125]));
    bytes.extend(masked(0x82, [9, 10, 11, 12], &big));
    bytes.extend(masked(0x81, [13, 14, 15, 16], "f\u{fc}nf".as_bytes()));
    let (server_end, client_end) = duplex();
    let (conns, _keep) = async_channel::unbounded();
    let (_, got) = future::block_on(future::zip(
        serve(server_end, Limits::default(), conns),
        raw_then_read(client_end, bytes, 4),
    ));
    assert_eq!(
        got,
        vec![
            Message::text("one"),
            Message::binary(vec![9; 125]),
            Message::binary(big),
            Message::text("f\u{fc}nf"),
        ]
    );

    // And one byte per read: a pipe that holds one byte (a raw client, as a library
    // client's handshake takes one-byte reads for an attack).
    let mut bytes = masked(0x81, [1, 2, 3, 4], b"slow");
    bytes.extend(masked(0x82, [5, 6, 7, 8], &[3; 300]));
    let (server_end, mut client_end) = duplex_with(1);
    let (conns, _keep) = async_channel::unbounded();
    let client = async move {
        common::read_until_101(&mut client_end).await;
        let (mut r, mut w) = futures_lite::io::split(client_end);
        let read = async {
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut head = [0u8; 2];
                r.read_exact(&mut head).await.unwrap();
                let mut len = usize::from(head[1]);
                if len == 126 {
                    let mut ext = [0u8; 2];
                    r.read_exact(&mut ext).await.unwrap();
                    len = usize::from(u16::from_be_bytes(ext));
                }
                let mut payload = vec![0u8; len];
                r.read_exact(&mut payload).await.unwrap();
                got.push((head[0], payload));
            }
            got
        };
        future::zip(w.write_all(&bytes), read).await.1
    };
    let (_, got) = future::block_on(future::zip(
        serve(server_end, Limits::default(), conns),
        client,
    ));
    assert_eq!(got, vec![(0x81, b"slow".to_vec()), (0x82, vec![3; 300])]);
}

/// Writes `parts` in turn, each after the previous was read by the server's guard, and
/// returns the close code the server sends, without ever completing the message.
fn close_code_after(parts: Vec<Vec<u8>>) -> (Option<u16>, wssd::SessionSummary) {
    let (server_end, client_end) = duplex();
    let (conns, _keep) = async_channel::unbounded();
    let client = async {
        let (ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        let mut raw = ws.into_inner();
        for part in parts {
            // The server may close before reading all of it.
            let _ = raw.write_all(&part).await;
        }
        // The message is never finished: only a check of the bytes so far can close it.
        let mut head = [0u8; 4];
        raw.read_exact(&mut head).await.ok()?;
        assert_eq!(head[0], 0x88, "a close frame");
        Some(u16::from_be_bytes([head[2], head[3]]))
    };
    let (summary, code) = future::block_on(common::bounded(future::zip(
        serve(server_end, Limits::default(), conns),
        client,
    )));
    (code, summary)
}

#[test]
fn invalid_utf8_fails_at_the_fragment_that_breaks_it_with_1007() {
    // Autobahn 6.4.3: a valid first fragment, then one with an invalid sequence; no final one.
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let (code, summary) = close_code_after(vec![
        masked(0x01, key, "κόσμε".as_bytes()),
        masked(
            0x00,
            key,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80",
        ),
    ]);
    assert_eq!(code, Some(1007));
    assert_eq!(summary.close_code, Some(CloseCode::Invalid));
    assert_eq!(summary.violation, Some(wssd::Violation::InvalidUtf8));
}

#[test]
fn invalid_utf8_fails_in_the_part_of_a_frame_that_breaks_it_with_1007() {
    // Autobahn 6.4.4: one text frame announced whole, of which only the bad part arrives.
    let key = [1, 2, 3, 4];
    let mut frame = masked(0x81, key, b"abc\xf4\x90\x80\x80 and more that never comes");
    frame.truncate(2 + 4 + 7);
    let (code, _) = close_code_after(vec![frame]);
    assert_eq!(code, Some(1007));
}

#[test]
fn a_character_split_across_fragments_and_masks_arrives_whole() {
    let (server_end, client_end) = duplex();
    let (conns, _keep) = async_channel::unbounded();
    let euro = "€".as_bytes(); // three bytes
    let mut message = masked(0x01, [9, 8, 7, 6], &[b'a', euro[0]]);
    message.extend(masked(0x89, [5, 5, 5, 5], b"\xff")); // a ping's payload is not text
    message.extend(masked(0x00, [1, 0, 1, 0], &euro[1..2]));
    message.extend(masked(0x80, [0xff, 0, 0xff, 0], &[euro[2], b'b']));
    // A binary message may hold anything.
    message.extend(masked(0x82, [3, 3, 3, 3], b"\xff\xfe"));
    let client = raw_then_read(client_end, message, 3);
    let (summary, got) = future::block_on(common::bounded(future::zip(
        serve(server_end, Limits::default(), conns),
        client,
    )));
    assert_eq!(
        got,
        vec![
            Message::Pong(b"\xff".to_vec().into()),
            Message::text("a€b"),
            Message::binary(b"\xff\xfe".to_vec()),
        ]
    );
    assert_eq!(summary.error, None);
}

#[test]
fn a_full_send_queue_says_full_then_send_waits_and_nothing_is_lost() {
    // A 1 KiB pipe: the server's writes stall until the client reads.
    let (server_end, client_end) = duplex_with(1024);
    let mut limits = Limits::default();
    limits.send_queue_bytes = 1024;
    let (conns, opened) = async_channel::unbounded();
    let big = wssd::Data::binary(vec![7u8; 4096]);
    let (reading_tx, reading) = async_channel::bounded::<()>(1);
    let app = async {
        let conn: Connection = opened.recv().await.unwrap();
        // An empty queue takes one message larger than its cap.
        conn.try_send(big.clone()).unwrap();
        assert_eq!(conn.buffered_bytes(), 4096);
        // It is not written yet (the client is not reading): no room for more.
        assert_eq!(
            conn.try_send(wssd::Data::text("small")),
            Err(SendError::Full)
        );
        // `send` waits for room instead; the client starts reading now.
        reading_tx.send(()).await.unwrap();
        conn.send(wssd::Data::text("small")).await.unwrap();
        conn.close(CloseCode::Normal, "done");
    };
    let client = async {
        let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        reading.recv().await.unwrap();
        let mut got = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            got.push(msg);
        }
        got
    };
    let ((summary, ()), got) = future::block_on(common::bounded(future::zip(
        future::zip(serve(server_end, limits, conns), app),
        client,
    )));
    assert_eq!(
        got.len(),
        3,
        "{:?}",
        got.iter().map(|m| m.len()).collect::<Vec<_>>()
    );
    assert_eq!(got[0], Message::from(big));
    assert_eq!(got[1], Message::text("small"));
    assert!(matches!(&got[2], Message::Close(Some(f)) if f.code == CloseCode::Normal));
    assert_eq!(summary.messages_out, 2);
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_idle_timeout() {
    let (server_end, client_end) = duplex_with(1024);
    let mut limits = Limits::default();
    limits.idle_timeout = std::time::Duration::from_millis(50);
    let (conns, opened) = async_channel::unbounded();
    let app = async {
        let conn: Connection = opened.recv().await.unwrap();
        conn.try_send(wssd::Data::binary(vec![0u8; 64 * 1024]))
            .unwrap();
    };
    let client = async {
        // Handshake, then never read again; keep the pipe open until the server gives up.
        let (ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
            .await
            .unwrap();
        ws
    };
    let ((summary, ()), _ws) = future::block_on(future::zip(
        future::zip(serve(server_end, limits, conns), app),
        client,
    ));
    assert!(
        summary.error.unwrap().contains("read nothing"),
        "a stalled consumer is named"
    );
}

/// Hardening round 2, item 3 (c): a client closed by the server that never answers the
/// close frame (and never drops the connection) is let go after `close_timeout`.
#[test]
fn a_client_that_never_answers_the_close_frame_is_let_go_after_the_close_timeout() {
    let (server_end, mut client_end) = duplex();
    let mut limits = Limits::default();
    limits.close_timeout = std::time::Duration::from_millis(100);
    let (conns, opened) = async_channel::unbounded();
    let app = async {
        let conn: Connection = opened.recv().await.unwrap();
        conn.close(CloseCode::Again, "send queue full: reading too slowly");
    };
    let (summary, code) = future::block_on(common::bounded(future::zip(
        future::zip(serve(server_end, limits, conns), app),
        async {
            let code = common::read_until_close(&mut client_end).await.0;
            // Keep the pipe open, and say nothing, until the server has given up.
            (code, client_end)
        },
    )));
    assert_eq!(code.0, 1013);
    assert_eq!(summary.0.close_code, Some(CloseCode::Again));
}

/// Hardening round 2, item 3 (d): with pings off, a silent client is still closed after
/// the idle timeout.
#[test]
fn the_idle_timeout_holds_with_pings_off() {
    let (server_end, mut client_end) = duplex();
    let mut limits = Limits::default();
    limits.ping_interval = std::time::Duration::ZERO;
    limits.idle_timeout = std::time::Duration::from_millis(100);
    limits.close_timeout = std::time::Duration::from_millis(100);
    let (conns, _opened) = async_channel::unbounded();
    let (summary, code) = future::block_on(common::bounded(future::zip(
        serve(server_end, limits, conns),
        async {
            let code = common::read_until_close(&mut client_end).await.0;
            (code, client_end)
        },
    )));
    assert_eq!(code.0, 1001);
    assert_eq!(summary.close_code, Some(CloseCode::Away));
}

/// Relays each message to the group "readers" with the Hub (whose sends, from a handler,
/// wait for a full recipient), and tells the test when a relay finds the recipient's queue
/// holding a message: with every message 1,000 bytes and the queue's cap 1,024, that relay
/// does not fit, and the sender's reading pauses until the recipient makes room.
struct Relay {
    hub: wssd::Hub,
    opened: async_channel::Sender<Connection>,
    full: async_channel::Sender<()>,
}

impl Handler for Relay {
    fn on_open(&self, conn: &Connection) {
        self.hub.add(conn);
        self.opened.try_send(conn.clone()).unwrap();
    }
    fn on_message(&self, _: &Connection, msg: wssd::Data) {
        let members = self.hub.group_members("readers");
        if members
            .iter()
            .any(|id| self.hub.get(*id).is_some_and(|c| c.buffered_bytes() > 0))
        {
            let _ = self.full.try_send(());
        }
        self.hub.send_to_group("readers", &msg, &[]);
    }
}

/// A sender held up by a full recipient resumes when the recipient's client reads (the
/// recipient's writes make room and wake it), well inside the backpressure timeout, and
/// every message arrives in order.
#[test]
fn a_sender_held_by_a_full_recipient_resumes_when_it_reads_and_nothing_is_lost() {
    const COUNT: u8 = 20;
    // A 1 KiB pipe: the recipient's writes stall until its client reads.
    let (a_server, a_client) = duplex_with(1024);
    let (b_server, b_client) = duplex();
    let mut limits = Limits::default();
    limits.send_queue_bytes = 1024;
    let acceptor = std::sync::Arc::new(Acceptor::new(Config::default().limits(limits)));
    let (opened_tx, opened) = async_channel::unbounded();
    let (full_tx, full) = async_channel::bounded(1);
    let relay = std::sync::Arc::new(Relay {
        hub: wssd::Hub::default(),
        opened: opened_tx,
        full: full_tx,
    });
    let (joined_tx, joined) = async_channel::bounded::<()>(1);
    // Each session is a task of its own, woken only by what it waits on: a missed wake-up
    // shows as a sender that never resumes (in one task, any wake-up polls both).
    let serve_one = |end: common::Duplex| {
        let (acceptor, relay) = (acceptor.clone(), relay.clone());
        smol::spawn(async move {
            let accepted = acceptor.accept(end, peer()).await.unwrap();
            accepted.serve(&*relay).await
        })
    };
    let app = async {
        let a = opened.recv().await.unwrap();
        relay.hub.join(a.id(), "readers");
        joined_tx.send(()).await.unwrap();
    };
    let reader = async {
        let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", a_client)
            .await
            .unwrap();
        // Read nothing until a relay has found this connection's queue full.
        full.recv().await.unwrap();
        let mut got = Vec::new();
        while got.len() < usize::from(COUNT) {
            got.push(ws.next().await.unwrap().unwrap());
        }
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
        got
    };
    let sender = async {
        joined.recv().await.unwrap();
        let (ws, _) = async_tungstenite::client_async("ws://localhost/", b_client)
            .await
            .unwrap();
        let mut raw = ws.into_inner();
        let mut burst = Vec::new();
        for i in 0..COUNT {
            burst.extend(frame(0x82, &[i; 1000]));
        }
        burst.extend(frame(0x88, &1000u16.to_be_bytes()));
        raw.write_all(&burst).await.unwrap();
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest).await;
    };
    let ((a_summary, b_summary), (got, ((), ()))) = future::block_on(common::bounded(future::zip(
        future::zip(serve_one(a_server), serve_one(b_server)),
        future::zip(reader, future::zip(app, sender)),
    )));
    let expected: Vec<Message> = (0..COUNT).map(|i| Message::binary(vec![i; 1000])).collect();
    assert_eq!(got, expected);
    assert_eq!(a_summary.error, None);
    assert_eq!(b_summary.messages_in, u64::from(COUNT));
}

/// Answers each message with what the test asks of `on_message`: sends to its own
/// connection (directly, through a Hub, and from another thread), and what it saw of the
/// queue's cap and its byte count.
struct Replies {
    hub: wssd::Hub,
    seen: async_channel::Sender<String>,
}

impl Handler for Replies {
    fn on_open(&self, conn: &Connection) {
        self.hub.add(conn);
    }
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        match msg.as_text().unwrap() {
            "order" => {
                conn.try_send(wssd::Data::text("a")).unwrap();
                self.hub.broadcast(&wssd::Data::text("b"), &[]);
                // Queued by another thread before "c" is sent: it goes out before "c".
                let other = conn.clone();
                std::thread::spawn(move || other.try_send(wssd::Data::text("x")).unwrap())
                    .join()
                    .unwrap();
                conn.try_send(wssd::Data::text("c")).unwrap();
            }
            "cap" => {
                // The queue's cap is 1,024 bytes: a fourth message of 300 does not fit.
                let results: Vec<bool> = (0..4)
                    .map(|_| conn.try_send(wssd::Data::binary(vec![1; 300])).is_ok())
                    .collect();
                let line = format!("{results:?} {}", conn.buffered_bytes());
                self.seen.try_send(line).unwrap();
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn what_on_message_sends_its_own_connection_is_written_in_order_and_counted_against_the_cap() {
    let (server_end, client_end) = duplex();
    let mut limits = Limits::default();
    limits.send_queue_bytes = 1024;
    let (seen, saw) = async_channel::unbounded();
    let handler = Replies {
        hub: wssd::Hub::default(),
        seen,
    };
    let server = async {
        let acceptor = Acceptor::new(Config::default().limits(limits));
        let accepted = acceptor.accept(server_end, peer()).await.unwrap();
        accepted.serve(&handler).await
    };
    let mut bytes = masked(0x81, [1, 2, 3, 4], b"order");
    bytes.extend(masked(0x81, [5, 6, 7, 8], b"cap"));
    let client = raw_then_read(client_end, bytes, 7);
    let (summary, got) = future::block_on(common::bounded(future::zip(server, client)));
    let texts: Vec<&str> = got[..4].iter().map(|m| m.to_text().unwrap()).collect();
    assert_eq!(texts, ["a", "b", "x", "c"]);
    assert_eq!(got[4..], vec![Message::binary(vec![1; 300]); 3]);
    // Three taken, the fourth refused, and all three counted until written.
    assert_eq!(saw.try_recv().unwrap(), "[true, true, true, false] 900");
    assert_eq!(summary.error, None);
}
