//! The built binary under hostile, slow and broken clients, shutdown and certificate reload.
//! All on loopback, bounded in count; waits are on events (log lines, reads), never sleeps.

#[path = "../../tests/common/mod.rs"]
mod common;

use async_tungstenite::WebSocketStream;
use common::{Wssd, bounded};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_util::{SinkExt, StreamExt};
use smol::net::TcpStream;
use wssd::{CloseCode, Message};

type Plain = WebSocketStream<TcpStream>;

async fn connect(server: &Wssd) -> Plain {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    async_tungstenite::client_async(server.url.as_str(), tcp)
        .await
        .unwrap()
        .0
}

async fn echo(
    ws: &mut WebSocketStream<impl futures_io::AsyncRead + futures_io::AsyncWrite + Unpin>,
    text: &str,
) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
}

#[test]
fn sigterm_delivers_every_accepted_message_then_1001_and_exits_0() {
    let mut server = Wssd::start(&["--plain", "--shutdown-timeout", "5"]);
    let received = smol::block_on(bounded(async {
        let mut ws = connect(&server).await;
        for i in 0..200 {
            ws.feed(Message::text(format!("m{i}"))).await.unwrap();
        }
        ws.flush().await.unwrap();
        // Replies are flowing: now stop the server with messages in flight.
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("m0"));
        server.signal("TERM");
        let mut received = vec!["m0".to_string()];
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => received.push(t.to_string()),
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(frame.code, CloseCode::Away);
                    break;
                }
                other => panic!("expected echoes then a 1001 close, got {other:?}"),
            }
        }
        while ws.next().await.is_some() {}
        received
    }));
    // In order, with no gaps: nothing the server queued was dropped.
    let expected: Vec<String> = (0..received.len()).map(|i| format!("m{i}")).collect();
    assert_eq!(received, expected);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    // The server's own count of messages written matches what arrived.
    let close = server.wait_for_log("] close ", 1).remove(0);
    assert!(
        close.contains(&format!(" out={} ", received.len())),
        "{close} vs {} received",
        received.len()
    );
    assert!(close.contains("code=1001"), "{close}");
}

#[test]
fn sighup_reload_serves_the_new_certificate_and_drops_none_of_50_live_connections() {
    let (a, b, live) = (
        common::temp_dir("reload-a"),
        common::temp_dir("reload-b"),
        common::temp_dir("reload-live"),
    );
    let cert_a = wssd::tls::SelfSigned::load_or_create(&a).unwrap();
    let cert_b = wssd::tls::SelfSigned::load_or_create(&b).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(a.join(f), live.join(f)).unwrap();
    }
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    let server = Wssd::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let both_cas = format!("{}{}", cert_a.ca_pem, cert_b.ca_pem);
    let connector = common::tls_connector(&both_cas);
    let fingerprint_of = |tls: &futures_rustls::client::TlsStream<TcpStream>| {
        wssd::tls::fingerprint(&tls.get_ref().1.peer_certificates().unwrap()[0])
    };
    smol::block_on(bounded(async {
        let mut old = Vec::new();
        for i in 0..50 {
            let tcp = TcpStream::connect(server.addr()).await.unwrap();
            let tls = connector.connect(common::localhost(), tcp).await.unwrap();
            assert_eq!(
                fingerprint_of(&tls),
                wssd::tls::fingerprint(&cert_a.leaf().unwrap())
            );
            let (mut ws, _) = async_tungstenite::client_async(server.url.as_str(), tls)
                .await
                .unwrap();
            echo(&mut ws, &format!("before {i}")).await;
            old.push(ws);
        }

        // Half a renewal (the new certificate, the old key): the reload fails, says why,
        // and the old certificate stays.
        std::fs::copy(b.join("cert.pem"), live.join("cert.pem")).unwrap();
        server.signal("HUP");
        let failed = server.wait_for_log("reload failed, keeping the current certificate", 1);
        assert!(
            failed[0].contains("does not belong to the certificate"),
            "{failed:?}"
        );
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let tls = common::tls_connector(&both_cas)
            .connect(common::localhost(), tcp)
            .await
            .unwrap();
        assert_eq!(
            fingerprint_of(&tls),
            wssd::tls::fingerprint(&cert_a.leaf().unwrap())
        );

        // The whole renewal.
        std::fs::copy(b.join("key.pem"), live.join("key.pem")).unwrap();
        server.signal("HUP");
        server.wait_for_log("reloaded", 1);

        // A fresh client: one with a cached session would resume it, and TLS 1.3
        // resumption sends no certificate at all.
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let fresh = common::tls_connector(&both_cas);
        let tls = fresh.connect(common::localhost(), tcp).await.unwrap();
        assert_eq!(
            fingerprint_of(&tls),
            wssd::tls::fingerprint(&cert_b.leaf().unwrap())
        );
        let (mut new, _) = async_tungstenite::client_async(server.url.as_str(), tls)
            .await
            .unwrap();
        echo(&mut new, "after").await;

        for (i, ws) in old.iter_mut().enumerate() {
            echo(ws, &format!("still here {i}")).await;
        }
    }));
}

#[test]
fn past_max_connections_a_new_one_gets_503_and_the_others_carry_on() {
    let server = Wssd::start(&["--plain", "--max-connections", "2"]);
    smol::block_on(bounded(async {
        let mut a = connect(&server).await;
        let mut b = connect(&server).await;
        let mut third = TcpStream::connect(server.addr()).await.unwrap();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        echo(&mut a, "a").await;
        echo(&mut b, "b").await;
    }));
    server.wait_for_log("refused 1 new ones", 1);
}

#[test]
fn three_hundred_slowloris_connections_do_not_stop_a_fresh_client() {
    let server = Wssd::start(&["--plain"]);
    smol::block_on(bounded(async {
        let mut slow = Vec::new();
        for _ in 0..300 {
            let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
            // A request head that never ends.
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .await
                .unwrap();
            slow.push(tcp);
        }
        let mut fresh = connect(&server).await;
        echo(&mut fresh, "still served").await;
        // One more byte from each: they are still open, and still not served.
        for tcp in &mut slow {
            tcp.write_all(b"a").await.unwrap();
        }
        echo(&mut fresh, "still served after the trickle").await;
    }));
}

#[test]
fn an_oversized_message_gets_1009_and_memory_stays_bounded() {
    let server = Wssd::start(&["--plain"]);
    // The peak (VmHWM), not the RSS after the connections closed: what was held at worst.
    let before = server.status_kib("VmHWM");
    smol::block_on(bounded(async {
        for _ in 0..5 {
            let mut ws = connect(&server).await;
            // 16 MiB against the 1 MiB default: the server stops reading at the header.
            let _ = ws.send(Message::binary(vec![0u8; 16 << 20])).await;
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
                other => panic!("expected a 1009 close, got {other:?}"),
            }
        }
    }));
    let after = server.status_kib("VmHWM");
    // Five 16 MiB messages were refused without being buffered.
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn random_bytes_and_a_truncated_client_hello_on_the_tls_port_are_harmless() {
    let dir = common::temp_dir("garbage");
    let server = Wssd::start(&["--self-signed-dir", dir.to_str().unwrap()]);
    let ca = common::read(&dir.join("ca.pem"));
    smol::block_on(bounded(async {
        // Random bytes (a fixed-seed generator), starting with a TLS record type.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut garbage = vec![0x16u8];
        for _ in 0..4096 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            garbage.push(seed as u8);
        }
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        let _ = tcp.write_all(&garbage).await;
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await; // the server closes it

        // A ClientHello cut short, then the client hangs up.
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        tcp.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
        drop(tcp);

        // Everyone else is served as before.
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let tls = common::tls_connector(&ca)
            .connect(common::localhost(), tcp)
            .await
            .unwrap();
        let (mut ws, _) = async_tungstenite::client_async(server.url.as_str(), tls)
            .await
            .unwrap();
        echo(&mut ws, "fine").await;
    }));
}

#[test]
fn a_thousand_connect_disconnect_cycles_leave_no_connection_or_descriptor_behind() {
    let server = Wssd::start(&["--plain"]);
    // One cycle first, so that anything made lazily on the first connection is in the baseline.
    smol::block_on(bounded(async {
        let mut ws = connect(&server).await;
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }));
    server.wait_for_log("] close ", 1);
    let fds_before = server.open_fds();
    smol::block_on(bounded(async {
        for _ in 0..1000 {
            let mut ws = connect(&server).await;
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        }
    }));
    // Every session ended (one close line each) before descriptors are counted.
    server.wait_for_log("] close ", 1001);
    let opens = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("] open "))
        .count();
    assert_eq!(opens, 1001);
    assert_eq!(server.open_fds(), fds_before, "file descriptors leaked");
}

#[test]
fn sni_picks_the_certificate_for_the_name_asked_for() {
    let (main_dir, other_dir) = (common::temp_dir("sni-main"), common::temp_dir("sni-other"));
    let main = wssd::tls::SelfSigned::load_or_create(&main_dir).unwrap();
    // A certificate for another name, signed by its own CA.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["chat.example.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(other_dir.join("cert.pem"), other.pem()).unwrap();
    std::fs::write(other_dir.join("key.pem"), key.serialize_pem()).unwrap();

    let arg = |d: &std::path::Path, f: &str| d.join(f).to_str().unwrap().to_string();
    let sni = format!(
        "chat.example.test={},{}",
        arg(&other_dir, "cert.pem"),
        arg(&other_dir, "key.pem")
    );
    let server = Wssd::start(&[
        "--cert",
        &arg(&main_dir, "cert.pem"),
        "--key",
        &arg(&main_dir, "key.pem"),
        "--sni",
        &sni,
    ]);
    let cas = format!("{}{}", main.ca_pem, ca_cert.pem());
    smol::block_on(bounded(async {
        for (name, expected) in [
            ("chat.example.test", other.der().clone()),
            ("localhost", main.leaf().unwrap()),
        ] {
            let tcp = TcpStream::connect(server.addr()).await.unwrap();
            let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
            let tls = common::tls_connector(&cas)
                .connect(server_name, tcp)
                .await
                .unwrap();
            let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            assert_eq!(served, expected, "for SNI {name}");
            let url = format!("wss://{name}:{}/", server.addr().port());
            let (mut ws, _) = async_tungstenite::client_async(url, tls).await.unwrap();
            echo(&mut ws, name).await;
        }
    }));
}

/// Idle memory, sampled while the connections are open: 500 idle wss connections, each
/// past its handshake and one echo, cost the server less than 64 KiB each (the benchmark's
/// figure is about 21 KB; this bound catches a buffer that grew by an order of magnitude).
#[test]
fn idle_connections_cost_bounded_memory_while_open() {
    let dir = common::temp_dir("idle-memory");
    let server = Wssd::start(&["--self-signed-dir", dir.to_str().unwrap()]);
    let connector = common::tls_connector(&common::read(&dir.join("ca.pem")));
    let before = server.status_kib("VmRSS");
    let conns = smol::block_on(bounded(async {
        let mut conns = Vec::new();
        for i in 0..500 {
            let tcp = TcpStream::connect(server.addr()).await.unwrap();
            let tls = connector.connect(common::localhost(), tcp).await.unwrap();
            let (mut ws, _) = async_tungstenite::client_async(server.url.as_str(), tls)
                .await
                .unwrap();
            echo(&mut ws, &format!("idle {i}")).await;
            conns.push(ws);
        }
        conns
    }));
    let during = server.status_kib("VmRSS");
    let per_conn = (during.saturating_sub(before) * 1024) / 500;
    eprintln!("figure: {per_conn} bytes of RSS per idle wss connection (debug build)");
    assert!(per_conn < 64 << 10, "{per_conn} bytes per idle connection");
    drop(conns);
}
