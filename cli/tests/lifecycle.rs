//! A server's life beside its clients, against the built binary: a shutdown that delivers
//! every accepted message then closes with 1001, a certificate reload that drops no live
//! connection, and SNI choosing the certificate.
//! All on loopback, bounded in count and time; waits are on events (log lines, reads,
//! process exits), never sleeps. `WSSD_BIN=/path/to/old/wssd cargo test --test lifecycle` runs
//! them against another build.

use wssd_testkit as common;

use common::{Wssd, bounded, connect, echo};
use futures_util::{SinkExt, StreamExt};
use smol::net::TcpStream;
use wssd::{CloseCode, Message};

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
    let served_leaf = |tls: &futures_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    smol::block_on(bounded(async {
        let mut old = Vec::new();
        for i in 0..50 {
            let tcp = TcpStream::connect(server.addr()).await.unwrap();
            let tls = connector.connect(common::localhost(), tcp).await.unwrap();
            assert_eq!(served_leaf(&tls), cert_a.leaf().unwrap().to_vec());
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
        assert_eq!(served_leaf(&tls), cert_a.leaf().unwrap().to_vec());

        // The whole renewal.
        std::fs::copy(b.join("key.pem"), live.join("key.pem")).unwrap();
        server.signal("HUP");
        server.wait_for_log("reloaded", 1);

        // A fresh client: one with a cached session would resume it, and TLS 1.3
        // resumption sends no certificate at all.
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let fresh = common::tls_connector(&both_cas);
        let tls = fresh.connect(common::localhost(), tcp).await.unwrap();
        assert_eq!(served_leaf(&tls), cert_b.leaf().unwrap().to_vec());
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
