//! permessage-deflate (RFC 7692) over in-memory pipes: the negotiation, compressed messages
//! both ways, and the hostile cases (a decompression bomb, a corrupt payload, a compressed
//! control frame).

use wssd_testkit as common;

use common::{Duplex, bounded, duplex, peer, raw_handshake};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_lite::{AsyncWriteExt, future};
use wssd::{Acceptor, CloseCode, Config, Connection, Handler, Limits, Message};

struct Echo;

impl Handler for Echo {
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        conn.try_send(msg).unwrap();
    }
}

const OFFER: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn config(limits: Limits) -> Config {
    Config::default().permessage_deflate(true).limits(limits)
}

async fn serve(server_end: Duplex, config: Config) -> wssd::SessionSummary {
    let accepted = Acceptor::new(config)
        .accept(server_end, peer())
        .await
        .unwrap();
    assert!(accepted.request().permessage_deflate());
    accepted.serve(&Echo).await
}

/// `payload` deflated as one message (RFC 7692 section 7.2.1), without the final `00 00 ff ff`.
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    c.compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// A masked client frame with this first byte and payload, any length.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    common::masked(first, [0x12, 0x34, 0x56, 0x78], payload)
}

#[test]
fn the_offer_is_answered_and_messages_are_compressed_both_ways() {
    let (server_end, mut client) = duplex();
    let json = "{\"user\":\"tom\",\"room\":\"lobby\",\"text\":\"hello, hello\"}".repeat(20);
    let talk = async {
        let head = raw_handshake(&mut client, OFFER.as_bytes()).await;
        assert!(
            head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
            "{head}"
        );
        // A compressed text message (RSV1 on its first frame), in two fragments.
        let compressed = deflate(json.as_bytes());
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut out = frame(0x41, a);
        out.extend(frame(0x80, b));
        // And a short uncompressed one: each message chooses (RFC 7692 section 6).
        out.extend(frame(0x81, b"tom"));
        client.write_all(&out).await.unwrap();
        let (first, payload) = common::read_frame(&mut client).await;
        assert_eq!(
            first, 0xC1,
            "FIN, RSV1, text: the echo comes back compressed"
        );
        assert!(payload.len() < json.len() / 4, "{}", payload.len());
        assert_eq!(inflate(&payload), json.as_bytes());
        // Under Deflate::min_size (128 bytes): sent as it is.
        assert_eq!(
            common::read_frame(&mut client).await,
            (0x81, b"tom".to_vec())
        );
        client
            .write_all(&frame(0x88, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(common::read_frame(&mut client).await.0, 0x88);
    };
    let (summary, ()) = future::block_on(bounded(future::zip(
        serve(server_end, config(Limits::default())),
        talk,
    )));
    assert_eq!((summary.messages_in, summary.error), (2, None));
}

#[test]
fn without_permessage_deflate_on_the_offer_is_declined() {
    let (server_end, mut client) = duplex();
    let talk = async {
        let head = raw_handshake(&mut client, OFFER.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
        client
            .write_all(&frame(0x88, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        common::read_frame(&mut client).await
    };
    let accept = async {
        let accepted = Acceptor::new(Config::default())
            .accept(server_end, peer())
            .await
            .unwrap();
        assert!(!accepted.request().permessage_deflate());
        accepted.serve(&Echo).await
    };
    future::block_on(bounded(future::zip(accept, talk)));
}

/// Sends `frames` after the handshake and returns the close code the server answers with.
fn close_code_for(frames: Vec<u8>, limits: Limits) -> (u16, wssd::SessionSummary) {
    let (server_end, mut client) = duplex();
    let talk = async {
        raw_handshake(&mut client, OFFER.as_bytes()).await;
        // The server may close before reading all of it.
        let _ = client.write_all(&frames).await;
        loop {
            let (first, payload) = common::read_frame(&mut client).await;
            if first == 0x88 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    let (summary, code) = future::block_on(bounded(future::zip(
        serve(server_end, config(limits)),
        talk,
    )));
    (code, summary)
}

#[test]
fn a_decompression_bomb_is_closed_with_1009_before_it_is_inflated_past_the_limit() {
    // 64 MiB of zeros deflate to about 64 KiB; the limit is 1 MiB.
    let bomb = deflate(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    let (code, summary) = close_code_for(frame(0xC2, &bomb), Limits::default());
    assert_eq!(code, 1009);
    assert_eq!(summary.close_code, Some(CloseCode::Size));
    assert!(
        summary
            .error
            .as_deref()
            .unwrap_or("")
            .contains("inflates past"),
        "{:?}",
        summary.error
    );
}

#[test]
fn a_corrupt_compressed_payload_is_closed_with_1007() {
    // Block type 3 is reserved (RFC 1951 section 3.2.3): not DEFLATE.
    let (code, _) = close_code_for(frame(0xC1, &[0xff, 0xff, 0xff, 0xff]), Limits::default());
    assert_eq!(code, 1007);
}

#[test]
fn a_compressed_control_frame_is_refused_with_1002() {
    // RSV1 on a ping: control frames are never compressed (RFC 7692 section 6.1).
    let (code, _) = close_code_for(frame(0xC9, &deflate(b"ping")), Limits::default());
    assert_eq!(code, 1002);
    // RSV1 on a continuation frame: only a message's first frame carries it.
    let mut frames = frame(0x41, &deflate(b"hello")[..2]);
    frames.extend(frame(0xC0, b"x"));
    let (code, _) = close_code_for(frames, Limits::default());
    assert_eq!(code, 1002);
}

/// `Accepted::into_parts` runs the same codec as `serve`: compressed messages in, compressed
/// messages out, the same limits, and a ping answered while reading.
#[test]
fn into_parts_speaks_permessage_deflate_and_keeps_the_limits() {
    use futures_util::{SinkExt, StreamExt};
    let (server_end, mut client) = duplex();
    let mut limits = Limits::default();
    limits.max_message_size = 64 << 10;
    let text = "hello, compressed world ".repeat(40);
    let talk = async {
        raw_handshake(&mut client, OFFER.as_bytes()).await;
        client
            .write_all(&frame(0xC1, &deflate(text.as_bytes())))
            .await
            .unwrap();
        // The echo comes back compressed (RSV1), then the pong, then the 1009.
        let (first, payload) = common::read_frame(&mut client).await;
        assert_eq!(first, 0xC1, "a final text frame with RSV1");
        assert_eq!(inflate(&payload), text.as_bytes());
        client.write_all(&frame(0x89, b"hi")).await.unwrap();
        assert_eq!(
            common::read_frame(&mut client).await,
            (0x8A, b"hi".to_vec())
        );
        let bomb = deflate(&vec![0u8; 1 << 20]);
        client.write_all(&frame(0xC2, &bomb)).await.unwrap();
        let (first, payload) = common::read_frame(&mut client).await;
        assert_eq!(first, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    };
    let drive = async {
        let accepted = Acceptor::new(config(limits))
            .accept(server_end, peer())
            .await
            .unwrap();
        let (mut ws, request) = accepted.into_parts();
        assert!(request.permessage_deflate());
        let msg = ws.next().await.unwrap().unwrap();
        assert_eq!(msg, Message::text(text.clone()));
        ws.send(msg).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Ping("hi".into())
        );
        // Past the message limit: the error the caller answers with 1009.
        let error = ws.next().await.unwrap().unwrap_err();
        assert!(
            error.to_string().contains("inflates past 65536 bytes"),
            "{error}"
        );
        let frame = wssd::CloseFrame {
            code: CloseCode::Size,
            reason: "too big".into(),
        };
        ws.close(Some(frame)).await.unwrap();
    };
    future::block_on(bounded(future::zip(drive, talk)));
}
