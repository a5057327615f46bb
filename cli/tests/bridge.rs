//! The app bridge against hostile or slow apps (hardening, round 3): an answer over the body
//! limit, an answer whose error would carry control characters to the log, and a slow app
//! whose client leaves. The app is a small HTTP/1.1 server in this test, on loopback.

use wssd_testkit as common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

use common::Wssd;
use futures_util::StreamExt;
use wssd::tungstenite::Message;

/// An app on loopback: each POSTed event goes to `answer`, whose body is sent back (200).
/// Returns its URL; every event's JSON also goes to the returned receiver.
fn app(
    answer: impl Fn(&serde_json::Value) -> Vec<u8> + Send + Sync + 'static,
) -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (seen, events) = mpsc::channel();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let (answer, seen) = (answer.clone(), seen.clone());
            std::thread::spawn(move || serve_app(tcp.unwrap(), &*answer, &seen));
        }
    });
    (url, events)
}

/// One keep-alive connection of the app: request after request.
fn serve_app(
    tcp: TcpStream,
    answer: &dyn Fn(&serde_json::Value) -> Vec<u8>,
    seen: &mpsc::Sender<serde_json::Value>,
) {
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    let mut writer = tcp;
    loop {
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let _ = seen.send(event.clone());
        let out = answer(&event);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", out.len());
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&out).is_err() {
            return;
        }
    }
}

/// A WebSocket client of `server`, after the opening handshake.
async fn client(server: &Wssd) -> async_tungstenite::WebSocketStream<smol::net::TcpStream> {
    let tcp = smol::net::TcpStream::connect(server.addr()).await.unwrap();
    let (ws, _) = async_tungstenite::client_async(&server.url, tcp)
        .await
        .unwrap();
    ws
}

/// The text of a message event, if it is one.
fn text(event: &serde_json::Value) -> Option<&str> {
    (event["event"] == "message")
        .then(|| event["text"].as_str())
        .flatten()
}

#[test]
fn an_answer_over_the_limit_closes_the_client_with_1011_in_one_line() {
    let (url, _) = app(|event| match text(event) {
        // 5 MiB of JSON whitespace: over the 4 MiB limit, however it is read.
        Some("big") => vec![b' '; 5 << 20],
        _ => b"{}".to_vec(),
    });
    let server = Wssd::start(&["--plain", "--app", &url]);
    smol::block_on(common::bounded(async {
        let mut ws = client(&server).await;
        ws.send(Message::text("big")).await.unwrap();
        let close = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        };
        assert_eq!(close.map(|f| u16::from(f.code)), Some(1011));
    }));
    let lines = server.wait_for_log("over 4 MiB", 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
}

#[test]
fn what_the_app_sent_is_escaped_in_the_log() {
    // An unknown field whose name holds an escape sequence: serde_json quotes it.
    let (url, _) = app(|event| match text(event) {
        Some("bad") => b"{\"\\u001b[31mred\": 1}".to_vec(),
        _ => b"{}".to_vec(),
    });
    let server = Wssd::start(&["--plain", "--app", &url]);
    smol::block_on(common::bounded(async {
        let mut ws = client(&server).await;
        ws.send(Message::text("bad")).await.unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }));
    let lines = server.wait_for_log("is not an answer", 1);
    assert!(!lines[0].contains('\u{1b}'), "{lines:?}");
}

#[test]
fn a_slow_apps_queue_is_dropped_when_its_client_leaves() {
    // The app holds the first message until released; four more wait in the queue.
    let (release, held) = mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let (url, events) = app(move |event| {
        if text(event) == Some("m1") {
            let _ = held.lock().unwrap().recv();
        }
        b"{}".to_vec()
    });
    let server = Wssd::start(&["--plain", "--app", &url]);
    let next = || {
        let event = events
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        event["event"].as_str().unwrap_or("?").to_string() + text(&event).unwrap_or("")
    };
    smol::block_on(common::bounded(async {
        let mut ws = client(&server).await;
        ws.send(Message::text("m1")).await.unwrap();
        // The app has m1 and holds it: the next four wait in wssd's queue.
        assert_eq!([next(), next()], ["open", "messagem1"]);
        for m in ["m2", "m3", "m4", "m5"] {
            ws.send(Message::text(m)).await.unwrap();
        }
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }));
    server.wait_for_log(
        "closed with 4 messages the app had not taken yet: dropped",
        1,
    );
    release.send(()).unwrap();
    // After m1, the app gets the close event, none of the messages that were dropped.
    assert_eq!(next(), "close");
}
