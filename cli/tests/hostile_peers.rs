//! What is not a client cannot hurt the server either, against the built binary: a dead
//! Redis, control characters meant for the log, hostile servers for `wssd probe`, and
//! injected `proxy-config` arguments.
//! All on loopback, bounded in count and time; waits are on events (log lines, reads,
//! process exits), never sleeps. `WSSD_BIN=/path/to/old/wssd cargo test --test hostile_peers` runs
//! them against another build.

use wssd_testkit as common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{UPGRADE_REQUEST, Wssd, bounded, raw_handshake, read_messages};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use wssd::Message;

/// Item 6: with Redis unreachable, 300 messages of 1 MB do not pile up in memory: the
/// publish queue is bounded in bytes, the drops are counted and logged once, and local
/// delivery goes on.
#[test]
fn an_unreachable_redis_does_not_grow_memory_past_the_publish_queue() {
    // Port 1 on loopback: nothing listens there.
    let server = Wssd::start(&["--plain", "--broadcast", "--redis", "redis://127.0.0.1:1/"]);
    let before = server.status_kib("VmHWM");
    const COUNT: usize = 300;
    smol::block_on(bounded(async {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let (mut reader, _) = async_tungstenite::client_async(server.url.as_str(), tcp)
            .await
            .unwrap();
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let (mut sender, _) = async_tungstenite::client_async(server.url.as_str(), tcp)
            .await
            .unwrap();
        let read = smol::spawn(async move {
            read_messages(
                &mut reader,
                COUNT,
                |m| matches!(m, Message::Binary(b) if b.len() == 1_000_000),
            )
            .await
        });
        let payload = vec![7u8; 1_000_000];
        for _ in 0..COUNT {
            sender.send(Message::binary(payload.clone())).await.unwrap();
        }
        assert_eq!(read.await, COUNT);
    }));
    let grew = server.status_kib("VmHWM").saturating_sub(before);
    eprintln!("figure: 300 MB broadcast with Redis down: peak RSS grew {grew} KiB");
    assert!(grew < 64 << 10, "peak RSS grew {grew} KiB");
    let dropping = server.wait_for_log("dropping cross-instance sends", 1);
    assert_eq!(dropping.len(), 1, "one line per outage");
}

/// Item 10: a request path with C1 controls, a next-line, a line separator and a
/// right-to-left override reaches the log escaped.
#[test]
fn control_characters_in_the_path_are_escaped_in_the_log() {
    let server = Wssd::start(&["--plain"]);
    let path = "/a\u{9b}31mb\u{85}c\u{2028}d\u{202e}e";
    let request = String::from_utf8(UPGRADE_REQUEST.to_vec())
        .unwrap()
        .replacen("GET / ", &format!("GET {path} "), 1);
    smol::block_on(bounded(async {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        raw_handshake(&mut tcp, request.as_bytes()).await;
    }));
    let open = server.wait_for_log("] open ", 1).remove(0);
    for raw in ['\u{9b}', '\u{85}', '\u{2028}', '\u{202e}'] {
        assert!(!open.contains(raw), "{raw:?} raw in {open:?}");
    }
    assert!(
        open.contains("/a\\u{9b}31mb\\u{85}c\\u{2028}d\\u{202e}e"),
        "{open}"
    );
}

/// Runs `wssd probe` with `args`; returns its exit success and stdout. A watchdog kills it
/// after 30 s, which the caller sees as a failure with `killed` in the output.
fn probe(args: &[&str]) -> (bool, String) {
    let bin = common::wssd_bin();
    let child = Command::new(bin)
        .arg("probe")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watchdog = common::Watchdog::arm(child.id());
    let out = child.wait_with_output().unwrap();
    let killed = watchdog.disarm();
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if killed {
        stdout.push_str("\nkilled by the watchdog after 30 s");
    }
    (out.status.success(), stdout)
}

/// A hostile server: answers `101` (over TLS when `tls` is given) and then streams empty
/// pings until the client goes or 60 s pass.
fn ping_streaming_server(tls: Option<std::sync::Arc<wssd::rustls::ServerConfig>>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let listener = smol::net::TcpListener::try_from(listener).unwrap();
        smol::block_on(async {
            let (tcp, _) = listener.accept().await.unwrap();
            match tls {
                None => stream_pings(tcp).await,
                Some(tls) => {
                    let acceptor = futures_rustls::TlsAcceptor::from(tls);
                    stream_pings(acceptor.accept(tcp).await.unwrap()).await
                }
            }
        })
    });
    addr
}

async fn stream_pings<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let Ok(head) = common::read_head(&mut stream).await else {
        return;
    };
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap_or("")
        .trim();
    let accept = wssd::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let pings = [0x89u8, 0x00].repeat(8 << 10);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if stream.write_all(&pings).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// Item 8: against a server that answers `101` and then streams pings, `probe --timeout 2`
/// ends by itself (over ws and wss) instead of running until the server quits.
#[test]
fn probe_ends_within_its_timeout_against_a_ping_streaming_server() {
    let addr = ping_streaming_server(None);
    let (ok, out) = probe(&[&format!("ws://{addr}/"), "--timeout", "2"]);
    assert!(!out.contains("killed"), "{out}");
    assert!(out.contains("no reply within 2 s"), "{out}");
    assert!(ok, "a push-only server is a warning, not a failure: {out}");

    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let dir = common::temp_dir("probe-pings");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let addr = ping_streaming_server(Some(certs.server_config().unwrap()));
    let url = format!("wss://localhost:{}/", addr.port());
    let (_, out) = probe(&[&url, "--timeout", "2", "--ca", ca.to_str().unwrap()]);
    assert!(!out.contains("killed"), "{out}");
    assert!(out.contains("no reply within 2 s"), "{out}");
}

/// A one-shot HTTP server: reads a request head, answers what `answer` makes of it, closes.
fn one_answer_server(answer: impl FnOnce(&str) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        if let Ok(head) = common::read_head_blocking(&mut tcp) {
            let _ = tcp.write_all(&answer(&head));
        }
    });
    addr
}

/// Item 10: `wssd probe` prints a hostile server's escape sequences escaped: an OSC title
/// and a screen clear in a 400 body, and a C1 CSI in the `Server` header of a 101.
#[test]
fn probe_escapes_what_a_hostile_server_sends() {
    let addr = one_answer_server(|_| {
        let body = "\u{1b}]0;owned\u{7}\u{1b}[2Jgo away\n";
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let (_, out) = probe(&[&format!("ws://{addr}/"), "--timeout", "2"]);
    assert!(out.contains("go away"), "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");

    let addr = one_answer_server(|head| {
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim();
        let accept = wssd::tungstenite::handshake::derive_accept_key(key.as_bytes());
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nServer: evil\u{9b}31m\u{202e}\r\n\r\n"
        )
        .into_bytes()
    });
    let (_, out) = probe(&[&format!("ws://{addr}/"), "--timeout", "2"]);
    assert!(out.contains("server: evil"), "{out}");
    assert!(
        !out.contains('\u{9b}') && !out.contains('\u{202e}'),
        "{out:?}"
    );
}

/// Item 9: `proxy-config` refuses arguments that would inject directives or break the config.
#[test]
fn proxy_config_refuses_arguments_that_are_not_what_they_name() {
    let bin = common::wssd_bin();
    let cases: &[(&str, &[&str])] = &[
        (
            "nginx",
            &[
                "--server-name",
                "localhost; location /leak/ { alias /etc/; autoindex on; } #",
            ],
        ),
        ("nginx", &["--path", "/wss { }"]),
        ("nginx", &["--path", "/w ss"]),
        ("nginx", &["--cert", "/etc/ssl/a.pem; include /etc/passwd"]),
        ("nginx", &["--key", "/etc/ssl/a key.pem"]),
        ("nginx", &["--upstream", "127.0.0.1:8282; return 200"]),
        ("nginx", &["--listen", "443 ssl; #"]),
        (
            "apache",
            &["--server-name", "localhost\nProxyPass / http://evil/"],
        ),
        ("apache", &["--path", "/wss\"\n<Location />"]),
    ];
    for (server, args) in cases {
        let out = Command::new(&bin)
            .args(["proxy-config", server])
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{server} {args:?} was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains(args[0]), "names the flag: {stderr}");
    }
    // Plain values still work, wildcard names and IPv6 upstreams included.
    let out = Command::new(&bin)
        .args(["proxy-config", "nginx", "--server-name", "*.example.com"])
        .args(["--upstream", "[::1]:8282", "--upstream", "127.0.0.1:8283"])
        .args(["--path", "/chat/v1.wss", "--listen", "127.0.0.1:8443"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
