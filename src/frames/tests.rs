//! The codec over a scripted client: messages whole for every read size, limits, UTF-8,
//! permessage-deflate, and memory that follows what came.

use super::rx::MIN_ROOM;
use super::wire::unmasked;
use super::*;

#[test]
fn unmasking_matches_the_bytewise_rule_at_every_length() {
    let key = [0x12, 0x34, 0x56, 0x78];
    for len in 0..100 {
        let payload: Vec<u8> = (0..len as u8).collect();
        let expected: Vec<u8> = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked(&payload, key), expected, "length {len}");
    }
}

/// A client's bytes, handed out `chunk` bytes at most per read (however large the
/// reader's buffer), then the end of stream (or, `waits`, nothing more: pending);
/// writes are taken and dropped.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
    waits: bool,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
        if n == 0 && self.waits && !buf.is_empty() {
            return Poll::Pending;
        }
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Chunked {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The codec over `io`, as a server runs it.
fn over(io: Chunked, limits: &Limits, deflate: bool) -> Frames<Chunked> {
    let transport = Transport::new(crate::transport::MaybeTls::Plain(io));
    Frames::new(transport, Vec::new(), limits, deflate)
}

/// What the codec makes of `wire` handed over `chunk` bytes at most per read: the
/// messages up to the close frame, or the first error's text.
fn read_all(
    wire: &[u8],
    chunk: usize,
    limits: &Limits,
    deflate: bool,
) -> Result<Vec<Message>, String> {
    let io = Chunked {
        data: wire.to_vec(),
        at: 0,
        chunk,
        waits: false,
    };
    let mut frames = over(io, limits, deflate);
    futures_lite::future::block_on(async {
        let mut got = Vec::new();
        while let Some(msg) = frames.next().await {
            match msg {
                Ok(msg) if msg.is_close() => break,
                Ok(msg) => got.push(msg),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(got)
    })
}

use wssd_testkit::masked;

/// A client's frame (RFC 6455 section 5.2): masked, with a key that changes per frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], seed: u8) -> Vec<u8> {
    let key = [seed, seed ^ 0x5A, seed.wrapping_add(77), 0xC3];
    masked(u8::from(fin) << 7 | opcode, key, payload)
}

#[test]
fn messages_come_out_whole_however_their_frames_are_split_across_reads() {
    // Sizes around the read size (16 KiB and a header) and the header's length forms,
    // single frames and a fragmented message with a ping between its frames.
    let sizes = [0, 1, 125, 126, 1000, 16_370, 16_384, 16_385, 16_400, 70_000];
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
        wire.extend(client_frame(true, 2, &payload, i as u8));
        expected.push(Message::Binary(payload.into()));
    }
    let text = "é".repeat(9_000);
    let (a, b) = text.as_bytes().split_at(10_001); // inside a character
    wire.extend(client_frame(false, 1, a, 90));
    wire.extend(client_frame(true, 9, b"ping", 91));
    wire.extend(client_frame(true, 0, b, 92));
    expected.push(Message::Ping(Bytes::from_static(b"ping")));
    expected.push(Message::Text(text.clone().into()));
    wire.extend(client_frame(true, 1, text.as_bytes(), 93));
    expected.push(Message::Text(text.into()));
    wire.extend(client_frame(true, 8, &1000u16.to_be_bytes(), 94));

    for chunk in [1, 3, 14, 1000, 16_384, 16_398, 16_399, 40_000, usize::MAX] {
        let io = Chunked {
            data: wire.clone(),
            at: 0,
            chunk,
            waits: false,
        };
        let mut frames = over(io, &Limits::default(), false);
        let got: Vec<Message> = futures_lite::future::block_on(async {
            let mut got = Vec::new();
            while let Some(msg) = frames.next().await {
                let msg = msg.expect("valid frames");
                if msg.is_close() {
                    break;
                }
                got.push(msg);
            }
            got
        });
        assert_eq!(got.len(), expected.len(), "reads of {chunk} bytes");
        for (n, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert!(got == want, "message {n}, reads of {chunk} bytes");
        }
    }
}

#[test]
fn a_frame_header_that_announces_a_mebibyte_costs_what_came_not_what_it_announced() {
    let limits = Limits::default();
    let payload = vec![0x41; limits.max_frame_size];
    let wire = client_frame(true, 2, &payload, 1);
    // The 14-byte header and one byte; then 100 KB of it; then all of it.
    for (sent, bound) in [(15, MIN_ROOM), (100_000, 200_000)] {
        for chunk in [15, 4096, usize::MAX] {
            let io = Chunked {
                data: wire[..sent].to_vec(),
                at: 0,
                chunk,
                waits: true,
            };
            let mut frames = over(io, &limits, false);
            let waker = std::task::Waker::noop();
            let pending = frames.poll_next(&mut Context::from_waker(waker));
            assert!(pending.is_pending());
            let held = frames.buf.capacity();
            assert!(
                held <= bound,
                "{sent} bytes in reads of {chunk}: {held} held"
            );
        }
    }
}

#[test]
fn fragments_and_utf8_are_judged_the_same_however_their_bytes_arrive() {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let long_text = "κόσμε €".repeat(40); // 16-bit length, characters across masks
    let mut good = masked(0x01, key, long_text.as_bytes());
    good.extend(masked(0x89, [1, 2, 3, 4], b"\xff")); // a ping between fragments
    good.extend(masked(0x80, [9, 9, 9, 9], "ό".as_bytes()));
    good.extend(masked(0x82, key, &[0xff; 70_000])); // 64-bit length, not text
    good.extend(masked(0x88, key, &1000u16.to_be_bytes()));
    // Invalid in the second fragment, and inside a frame that never completes (its last
    // bytes never come): each fails at the bytes that break it (RFC 6455 section 8.1).
    let mut bad_fragment = masked(0x01, key, "κόσμε".as_bytes());
    bad_fragment.extend(masked(0x00, key, b"\xce\xba\xf4\x90\x80\x80"));
    let mut bad_in_frame = masked(0x81, key, b"hello \xf4\x90\x80\x80 world");
    bad_in_frame.truncate(bad_in_frame.len() - 4);
    let mut too_many = masked(0x02, key, b"a");
    for _ in 0..4 {
        too_many.extend(masked(0x00, key, b"b"));
    }
    too_many.extend(masked(0x88, key, &1000u16.to_be_bytes()));
    let limits = Limits {
        max_fragments: 4,
        ..Limits::default()
    };
    let utf8 = "invalid UTF-8 in a text message";
    let fragments = "a message in more than 4 fragments (Limits::max_fragments)";
    let cases: [(&[u8], Result<usize, &str>); 4] = [
        (&good, Ok(3)),
        (&bad_fragment, Err(utf8)),
        (&bad_in_frame, Err(utf8)),
        (&too_many, Err(fragments)),
    ];
    for (wire, expected) in cases {
        for chunk in [1, 2, 3, 5, 7, 13, 14, 100, 4096, usize::MAX] {
            let got = read_all(wire, chunk, &limits, false);
            let got = got.as_ref().map(Vec::len).map_err(String::as_str);
            assert_eq!(got, expected, "reads of {chunk}");
        }
    }
}

/// "Hello" compressed (RFC 7692 section 7.2.3.1).
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

#[test]
fn compressed_messages_inflate_whole_or_in_fragments_when_deflate_was_agreed() {
    let close = masked(0x88, [1, 2, 3, 4], &1000u16.to_be_bytes());
    let limits = Limits::default();
    let hello = [masked(0xc1, [0; 4], &HELLO), close.clone()].concat();
    for chunk in [1, 5, usize::MAX] {
        let got = read_all(&hello, chunk, &limits, true);
        assert_eq!(got, Ok(vec![Message::text("Hello")]), "reads of {chunk}");
    }
    // Not agreed: RSV1 is a protocol error (RFC 6455 section 5.2).
    let refused = read_all(&hello, usize::MAX, &limits, false).unwrap_err();
    assert!(refused.contains("Reserved bits are non-zero"), "{refused}");
    // RSV2 or RSV3 beside RSV1, RSV1 on a continuation or a control frame: refused.
    let mut on_continuation = masked(0x41, [5; 4], &HELLO[..3]);
    on_continuation.extend(masked(0xc0, [6; 4], &HELLO[3..]));
    for wire in [
        masked(0xe1, [0; 4], &HELLO),
        masked(0xd1, [0; 4], &HELLO),
        masked(0xc9, [0; 4], b""),
        on_continuation,
    ] {
        let refused = read_all(&wire, usize::MAX, &limits, true).unwrap_err();
        assert!(refused.contains("Reserved bits are non-zero"), "{refused}");
    }
    // A compressed text message, as a client sends it in two fragments.
    let agreed = crate::deflate::Agreed {
        window_bits: 15,
        min_size: 0,
        level: 1,
    };
    let text = "{\"user\":\"tom\",\"text\":\"hello hello hello hello\"}".repeat(20);
    let Some(Message::Frame(frame)) =
        crate::deflate::compress(&Message::text(text.clone()), &agreed)
    else {
        panic!("compressed")
    };
    assert!(frame.header().rsv1 && frame.payload().len() < text.len() / 4);
    let (a, b) = frame.payload().split_at(frame.payload().len() / 2);
    let wire = [
        masked(0x41, [7, 1, 2, 3], a),
        masked(0x80, [3, 2, 1, 7], b),
        close,
    ]
    .concat();
    for chunk in [1, 7, usize::MAX] {
        let got = read_all(&wire, chunk, &limits, true);
        assert_eq!(
            got,
            Ok(vec![Message::text(text.clone())]),
            "reads of {chunk}"
        );
    }
}

#[test]
fn a_compressed_bomb_stops_at_the_message_limit_and_garbage_is_invalid() {
    let agreed = crate::deflate::Agreed {
        window_bits: 15,
        min_size: 0,
        level: 9,
    };
    let Some(Message::Frame(frame)) =
        crate::deflate::compress(&Message::binary(vec![0u8; 1 << 20]), &agreed)
    else {
        panic!("compressed")
    };
    assert!(frame.payload().len() < 2048, "{}", frame.payload().len());
    let bomb = masked(0xc2, [0; 4], frame.payload());
    let limits = Limits {
        max_message_size: 64 << 10,
        ..Limits::default()
    };
    let too_big = read_all(&bomb, usize::MAX, &limits, true).unwrap_err();
    assert!(too_big.contains("inflates past 65536 bytes"), "{too_big}");
    let garbage = masked(0xc1, [0; 4], &[0xff; 4]);
    let corrupt = read_all(&garbage, usize::MAX, &Limits::default(), true).unwrap_err();
    assert!(corrupt.contains("not valid DEFLATE"), "{corrupt}");
}

#[test]
fn a_compressed_frame_header_that_announces_a_mebibyte_costs_what_came() {
    let mut wire = masked(0xc2, [1, 2, 3, 4], &vec![0x55; 1 << 20]);
    wire.truncate(14 + 1024);
    let io = Chunked {
        data: wire,
        at: 0,
        chunk: usize::MAX,
        waits: true,
    };
    let mut frames = over(io, &Limits::default(), true);
    let waker = std::task::Waker::noop();
    assert!(
        frames
            .poll_next(&mut Context::from_waker(waker))
            .is_pending()
    );
    let held = frames.buf.capacity();
    assert!(held <= MIN_ROOM, "{held} bytes held for 1 KiB sent");
}
