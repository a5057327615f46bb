//! The TLS stream against rustls clients over in-memory pipes: handshakes, the 12-byte probe
//! and its family, alerts, KeyUpdates, close_notify, and the own record layer.

use super::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use futures_rustls::rustls::crypto::ring::ALL_CIPHER_SUITES;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{CipherSuite, SupportedCipherSuite, sign};

#[test]
fn sni_is_read_from_a_client_hello_and_nothing_else() {
    let name = b"chat.example.com";
    let mut sni = vec![0, 0]; // extension type server_name
    let list_len = 1 + 2 + name.len();
    sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sni.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let other = [0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]; // ec_point_formats
    let mut extensions = other.to_vec();
    extensions.extend_from_slice(&sni);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut hello = vec![0x01, 0, 0, body.len() as u8];
    hello.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1, 0, hello.len() as u8];
    record.extend_from_slice(&hello);

    assert_eq!(
        client_hello_sni(&record).as_deref(),
        Some("chat.example.com")
    );
    // Cut anywhere, or not a handshake: no name, no panic.
    for cut in 0..record.len() {
        assert_eq!(client_hello_sni(&record[..cut]), None);
    }
    let mut alert = record.clone();
    alert[0] = 0x15;
    assert_eq!(client_hello_sni(&alert), None);
}

/// One end of an in-memory connection, which flips the top bit of the byte at `flip`
/// (counted over all it read) as it reads it, and keeps the size of each write.
struct End {
    reader: piper::Reader,
    writer: piper::Writer,
    read: usize,
    flip: Option<usize>,
    writes: Vec<usize>,
}

impl AsyncRead for End {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.reader).poll_read(cx, buf))?;
        if let Some(at) = self
            .flip
            .filter(|at| (self.read..self.read + n).contains(at))
        {
            buf[at - self.read] ^= 0x80;
        }
        self.read += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for End {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.writer).poll_write(cx, buf))?;
        self.writes.push(n);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_close(cx)
    }
}

fn ends() -> (End, End) {
    let (r1, w1) = piper::pipe(64 * 1024);
    let (r2, w2) = piper::pipe(64 * 1024);
    let end = |reader, writer| End {
        reader,
        writer,
        read: 0,
        flip: None,
        writes: Vec::new(),
    };
    (end(r1, w2), end(r2, w1))
}

type Client = futures_rustls::client::TlsStream<End>;

/// A server under wssd's own configuration (ECDSA P-256) and a client offering only
/// `suite`, after their handshake; `extract` as the server configuration's
/// `enable_secret_extraction`.
fn connect(suite: SupportedCipherSuite, extract: bool) -> (TlsStream<End>, Client) {
    let (config, cert) = server_config(extract);
    let connector = connector(suite, cert);
    let (server_end, client_end) = ends();
    let name = ServerName::try_from("localhost").unwrap();
    let (server, client) = future::block_on(future::zip(
        accept(config, server_end, Vec::new()),
        connector.connect(name, client_end),
    ));
    (server.unwrap().0, client.unwrap())
}

/// A client offering only `suite` and trusting `cert`.
fn connector(
    suite: SupportedCipherSuite,
    cert: CertificateDer<'static>,
) -> futures_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::clone(&cert)).unwrap();
    #[allow(deprecated)]
    // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..rustls::crypto::ring::default_provider()
    };
    let version = match suite {
        SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
    };
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A test may take the keys to send records a rustls client never sends.
    client.enable_secret_extraction = true;
    futures_rustls::TlsConnector::from(Arc::new(client))
}

/// [`connect`] with our record layer, after the first exchange that hands it the keys.
fn connect_own(suite: SupportedCipherSuite) -> (TlsStream<End>, Client) {
    let (mut server, mut client) = connect(suite, true);
    exchange(&mut server, &mut client, b"first");
    assert!(
        matches!(server.conn, Engine::Own(_)),
        "rustls kept {suite:?}"
    );
    (server, client)
}

/// The suites a client of an ECDSA server can get: TLS 1.3's three, TLS 1.2's ECDSA ones.
fn suites() -> impl Iterator<Item = SupportedCipherSuite> {
    ALL_CIPHER_SUITES.iter().copied().filter(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    })
}

/// `client` sends `data`, `server` reads it whole; then the other way.
fn exchange(server: &mut TlsStream<End>, client: &mut Client, data: &[u8]) {
    let got = pass(client, server, data);
    assert!(got == data, "the server read what the client sent");
    let got = pass(server, client, data);
    assert!(got == data, "the client read what the server sent");
}

/// `from` writes and flushes `data` while `to` reads as many bytes; returns them.
fn pass(
    from: &mut (impl AsyncWrite + Unpin),
    to: &mut (impl AsyncRead + Unpin),
    data: &[u8],
) -> Vec<u8> {
    let mut got = vec![0; data.len()];
    let (sent, read) = future::block_on(future::zip(
        async { from.write_all(data).await.and(from.flush().await) },
        to.read_exact(&mut got),
    ));
    sent.and(read).unwrap();
    got
}

fn message(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A server under wssd's configuration, with `extract` as its
/// `enable_secret_extraction`.
fn server_config(extract: bool) -> (Arc<ServerConfig>, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let key = futures_rustls::rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let mut config = crate::tls::server_config(sign::CertifiedKey::new(vec![cert.clone()], key));
    Arc::make_mut(&mut config).enable_secret_extraction = extract;
    (config, cert)
}

/// `bytes` from a client, then its end of stream; what the server's accept returned.
fn accept_bytes(bytes: &[u8]) -> io::Result<()> {
    let (server_end, mut client_end) = ends();
    let (config, _) = server_config(false);
    let (accepted, ()) =
        future::block_on(future::zip(accept(config, server_end, Vec::new()), async {
            client_end.write_all(bytes).await.unwrap();
            client_end.close().await.unwrap();
            // Whatever the server answers (an alert) is read and dropped.
            let _ = client_end.read_to_end(&mut Vec::new()).await;
        }));
    accepted.map(drop)
}

#[test]
fn the_start_of_a_client_hello_then_another_record_type_is_refused_not_a_panic() {
    // The 12-byte probe: a handshake record with 2 bytes of a ClientHello, then in the
    // same write a record of another type. rustls holds the 2 bytes as part of a
    // message; the error path must hand it back the buffer they are in.
    let start = [0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00];
    let behind: [&[u8]; 5] = [
        &[0x17, 0x03, 0x03, 0x00, 0x00],             // empty application_data
        &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], // plaintext alert
        &[0x14, 0x03, 0x03, 0x00, 0x01, 0x01],       // ChangeCipherSpec
        &[0x18, 0x03, 0x03, 0x00, 0x01, 0x00],       // heartbeat
        &[0x16, 0x03, 0x03, 0x00, 0x01],             // a cut handshake record
    ];
    for record in behind {
        let bytes = [&start[..], record].concat();
        let result = std::panic::catch_unwind(|| accept_bytes(&bytes));
        let accepted = result.unwrap_or_else(|_| panic!("panicked on {bytes:02x?}"));
        assert!(accepted.is_err(), "{bytes:02x?}");
    }
}

#[test]
fn a_client_hello_of_16_kib_or_more_or_a_huge_claim_is_refused_not_a_panic() {
    // A ClientHello message of 20,000 bytes over two records, then nonsense; and a
    // handshake message that claims 16 MiB.
    let mut hello = vec![0x01, 0x00, 0x4e, 0x20];
    hello.extend(std::iter::repeat_n(0x41, 20_000));
    let mut bytes = Vec::new();
    for chunk in hello.chunks(16_384) {
        bytes.extend_from_slice(&[0x16, 0x03, 0x01]);
        bytes.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        bytes.extend_from_slice(chunk);
    }
    bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x00]);
    let claim = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff];
    for bytes in [&bytes[..], &claim] {
        let result = std::panic::catch_unwind(|| accept_bytes(bytes));
        assert!(matches!(result, Ok(Err(_))), "{:02x?}", &bytes[..9]);
    }
}

#[test]
fn our_records_serve_every_suite_both_ways_and_rustls_serves_without_the_flag() {
    for suite in suites() {
        for extract in [true, false] {
            let (mut server, mut client) = connect(suite, extract);
            // rustls' records until its first write, after which it holds nothing.
            assert!(matches!(server.conn, Engine::Rustls(_)), "{suite:?}");
            // One byte, several records (one cut short), an empty write.
            for n in [1, 40_000, 0, 300] {
                exchange(&mut server, &mut client, &message(n));
                let ours = matches!(server.conn, Engine::Own(_));
                assert_eq!(ours, extract, "{suite:?}");
            }
            // close_notify each way: the other side reads the end.
            future::block_on(async {
                server.close().await.unwrap();
                assert_eq!(client.read(&mut [0; 8]).await.unwrap(), 0, "{suite:?}");
                client.close().await.unwrap();
                assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 0, "{suite:?}");
            });
        }
    }
}

/// A handshake whose client sends `then` (a request, a KeyUpdate first) right behind its
/// Finished, as browsers send their request; the server has read that request.
fn connect_with(
    suite: SupportedCipherSuite,
    key_update: bool,
    request: &[u8],
) -> (TlsStream<End>, Client) {
    let (config, cert) = server_config(true);
    let (server_end, client_end) = ends();
    let connector = connector(suite, cert);
    let name = ServerName::try_from("localhost").unwrap();
    let (server, client) =
        future::block_on(future::zip(accept(config, server_end, Vec::new()), async {
            let mut client = connector.connect(name, client_end).await?;
            if key_update {
                client.get_mut().1.refresh_traffic_keys().unwrap();
            }
            client.write_all(request).await?;
            client.flush().await?;
            Ok::<_, io::Error>(client)
        }));
    let (mut server, client) = (server.unwrap().0, client.unwrap());
    let mut got = vec![0; request.len()];
    future::block_on(server.read_exact(&mut got)).unwrap();
    assert_eq!(got, request);
    (server, client)
}

#[test]
fn a_key_update_that_came_with_the_finished_is_answered_before_our_data() {
    // rustls answers it and holds its answer for its next write: our records must not
    // take over before that write, or the client reads our data under a key it lacks.
    for suite in suites().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))) {
        let (mut server, mut client) = connect_with(suite, true, b"request");
        for n in [10, 20_000, 5] {
            let got = pass(&mut server, &mut client, &message(n));
            assert!(got == message(n), "{suite:?}");
            exchange(&mut server, &mut client, &message(n));
        }
        assert!(matches!(server.conn, Engine::Own(_)), "{suite:?}");
    }
}

#[test]
fn what_answers_the_finished_goes_out_before_the_handshake_ends() {
    // A client may wait for its session ticket (tlsfuzzer's conversations do), and one
    // with Nagle's algorithm on holds a small request until its Finished is acknowledged:
    // the ticket answers the Finished at once, whether or not a request came with it.
    for suite in suites() {
        let tls13 = matches!(suite, SupportedCipherSuite::Tls13(_));
        for request in [false, true] {
            let (mut server, mut client) = if request {
                connect_with(suite, false, b"request")
            } else {
                connect(suite, true)
            };
            // TLS 1.3: ServerHello's flight, then the ticket. TLS 1.2: ServerHello's
            // flight, then the one ending with our Finished.
            assert_eq!(server.io.writes.len(), 2, "{suite:?}");
            if tls13 {
                let ticket = server.io.writes[1];
                assert!((60..160).contains(&ticket), "{suite:?}: {ticket}");
            }
            exchange(&mut server, &mut client, &message(10));
            assert_eq!(server.io.writes.len(), 3, "{suite:?}");
        }
    }
}

#[test]
fn a_client_key_update_gets_ours_and_both_sides_read_on() {
    for suite in suites().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))) {
        let (mut server, mut client) = connect_own(suite);
        for round in 0..3 {
            // update_requested: the server must answer with its own before its data.
            client.get_mut().1.refresh_traffic_keys().unwrap();
            exchange(&mut server, &mut client, &message(100 + round));
            // The server's data went out as the first record under its new key.
            let Engine::Own(records) = &server.conn else {
                panic!("rustls kept {suite:?}")
            };
            assert_eq!(records.tx_seq(), 1, "{suite:?}");
        }
        // 32 KeyUpdates with no data between them are taken; the 33rd ends the connection.
        for _ in 0..32 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
        }
        exchange(&mut server, &mut client, &message(10));
        for _ in 0..33 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
        }
        future::block_on(async {
            client.write_all(b"late").await.unwrap();
            client.flush().await.unwrap();
            let error = server.read(&mut [0; 64]).await.unwrap_err();
            assert!(
                error.to_string().contains("KeyUpdates"),
                "{suite:?}: {error}"
            );
        });
    }
}

#[test]
fn at_a_keys_record_limit_tls_1_3_updates_it_and_tls_1_2_ends() {
    for suite in suites() {
        let (mut server, mut client) = connect_own(suite);
        let Engine::Own(records) = &mut server.conn else {
            panic!("rustls kept {suite:?}")
        };
        records.limit_after(2);
        let written = future::block_on(async {
            let mut written = 0;
            for i in 0..7 {
                if server.write_all(&message(10 + i)).await.is_err() {
                    break;
                }
                server.flush().await.unwrap();
                let mut got = vec![0; 10 + i];
                client.read_exact(&mut got).await.unwrap();
                assert_eq!(got, message(10 + i), "{suite:?}");
                written += 1;
            }
            written
        });
        let expected = match suite {
            SupportedCipherSuite::Tls13(_) => 7,
            SupportedCipherSuite::Tls12(_) => 2,
        };
        assert_eq!(written, expected, "{suite:?}");
    }
}

#[test]
fn a_tampered_record_ends_the_connection_with_bad_record_mac() {
    for suite in suites() {
        let (mut server, mut client) = connect_own(suite);
        server.io.flip = Some(server.io.read + 20); // in the next record's body
        future::block_on(async {
            client.write_all(&message(50)).await.unwrap();
            client.flush().await.unwrap();
            let error = server.read(&mut [0; 64]).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{suite:?}");
            assert!(error.to_string().contains("decrypt"), "{suite:?}: {error}");
            let alert = client.read(&mut [0; 64]).await.unwrap_err();
            assert!(
                alert.to_string().contains("BadRecordMac"),
                "{suite:?}: {alert}"
            );
        });
    }
}

/// A TLS 1.3 connection served by our records, its client's keys in a raw peer that
/// seals what a rustls client never sends, and the client's end of the pipe.
fn raw_peer() -> (TlsStream<End>, crate::records::Peer, End) {
    let suite = suites()
        .find(|s| s.suite() == CipherSuite::TLS13_AES_128_GCM_SHA256)
        .unwrap();
    let (server, client) = connect_own(suite);
    let (end, conn) = client.into_inner();
    let peer = crate::records::Peer::new(conn.dangerous_extract_secrets().unwrap());
    (server, peer, end)
}

/// What `records` makes (sealed by a raw client) go to the server; returns its read's
/// error and the alert it sent.
fn refused(records: impl FnOnce(&mut crate::records::Peer) -> Vec<Vec<u8>>) -> (io::Error, u8) {
    let (mut server, mut peer, mut end) = raw_peer();
    let records = records(&mut peer).concat();
    future::block_on(async {
        end.write_all(&records).await.unwrap();
        // Then the end of stream: a server that takes the records reads it, not an error.
        end.close().await.unwrap();
        let error = loop {
            match server.read(&mut [0; 64]).await {
                Ok(n) => assert!(n > 0, "the stream ended without an error"),
                Err(e) => break e,
            }
        };
        // The server's side ends too: what it sent is all there is to read.
        let _ = server.close().await;
        let mut record = vec![0; 5];
        end.read_exact(&mut record).await.unwrap();
        record.resize(record_len(&record), 0);
        end.read_exact(&mut record[5..]).await.unwrap();
        let alert = peer.open(&mut record);
        assert_eq!(
            (alert.len(), alert[0], alert[2]),
            (3, 2, 21),
            "a fatal alert: {alert:?}"
        );
        (error, alert[1])
    })
}

/// `records` go to the server, which reads `expected` from them.
fn taken(records: impl FnOnce(&mut crate::records::Peer) -> Vec<Vec<u8>>, expected: &[u8]) {
    let (mut server, mut peer, mut end) = raw_peer();
    let records = records(&mut peer).concat();
    future::block_on(async {
        end.write_all(&records).await.unwrap();
        end.flush().await.unwrap();
        let mut got = vec![0; expected.len()];
        server.read_exact(&mut got).await.unwrap();
        assert!(got == expected);
    });
}

#[test]
fn our_records_refuse_inner_plaintext_over_its_limit_with_record_overflow() {
    // 2^14 bytes of content and its type: the most a TLSInnerPlaintext holds (RFC 8446
    // section 5.4). One byte of padding more is too much.
    let mut inner = vec![b'a'; 16_384];
    inner.push(23);
    taken(|peer| vec![peer.seal(&inner)], &inner[..16_384]);
    inner.push(0);
    let (_, alert) = refused(|peer| vec![peer.seal(&inner)]);
    assert_eq!(alert, 22, "record_overflow");
}

#[test]
fn our_records_take_32_empty_records_in_a_row_not_33() {
    taken(
        |peer| {
            let mut records: Vec<_> = (0..32).map(|_| peer.seal(&[23])).collect();
            records.push(peer.seal(b"ok\x17"));
            records
        },
        b"ok",
    );
    let (error, alert) = refused(|peer| (0..33).map(|_| peer.seal(&[23])).collect());
    assert_eq!(alert, 10, "unexpected_message: {error}");
}

#[test]
fn a_malformed_key_update_gets_illegal_parameter_or_decode_error() {
    // request_update 2 (RFC 8446 section 4.6.3): illegal_parameter.
    let (_, alert) = refused(|peer| vec![peer.seal(&[24, 0, 0, 1, 2, 22])]);
    assert_eq!(alert, 47, "illegal_parameter");
    // A KeyUpdate of two bytes: decode_error.
    let (_, alert) = refused(|peer| vec![peer.seal(&[24, 0, 0, 2, 0, 0, 22])]);
    assert_eq!(alert, 50, "decode_error");
}
