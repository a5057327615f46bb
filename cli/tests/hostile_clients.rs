//! No client, however hostile, slows the others, grows the server's memory past its limits
//! or stops it, against the built binary: floods that would starve the executor, slowloris
//! connections, peers that stop reading or hang up behind their data, oversized and
//! announced-but-unsent messages, bursts into a room, garbage on the TLS port, the
//! connection cap, and idle memory per connection.
//! All on loopback, bounded in count and time; waits are on events (log lines, reads,
//! process exits), never sleeps. `WSSD_BIN=/path/to/old/wssd cargo test --test hostile_clients` runs
//! them against another build.

use wssd_testkit as common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream as StdTcp};
use std::time::{Duration, Instant};

use common::{UPGRADE_REQUEST, Wssd, bounded, connect, echo, raw_handshake, read_messages};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future};
use futures_util::StreamExt;
use smol::net::TcpStream;
use wssd::{CloseCode, Message};

/// A masked client frame (mask key 0, so the payload goes as is) with this first byte.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    common::masked(first, [0; 4], payload)
}

/// `count` copies of `one`, as one buffer.
fn batch(one: &[u8], count: usize) -> Vec<u8> {
    one.repeat(count)
}

/// The blocking version, for clients that must never read past the handshake.
fn std_handshake(addr: SocketAddr) -> StdTcp {
    let mut tcp = StdTcp::connect(addr).unwrap();
    tcp.write_all(UPGRADE_REQUEST).unwrap();
    let head = common::read_head_blocking(&mut tcp).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    tcp
}

/// Writes `batch` over and over and reads whatever comes back, until `stop` closes.
async fn flood<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    batch: Vec<u8>,
    stop: async_channel::Receiver<()>,
) {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let write = async {
        while writer.write_all(&batch).await.is_ok() {
            // Let the reader and the stop signal be polled between batches.
            future::yield_now().await;
        }
    };
    let read = async {
        let mut buf = vec![0u8; 64 << 10];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let stopped = async {
        let _ = stop.recv().await;
    };
    future::or(stopped, future::or(write, read)).await;
}

/// Flooding clients, each on a thread of its own; they stop when this is dropped.
struct Flooders {
    _stop: async_channel::Sender<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Flooders {
    fn drop(&mut self) {
        let (stop, _) = async_channel::bounded(1);
        self._stop = stop; // the old sender drops: every flooder stops
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts `n` flooders against `server`, one after the other, each once its handshake is done.
fn start_flooders(server: &Wssd, n: usize, tls_ca: Option<&str>, batch: &[u8]) -> Flooders {
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let mut flooders = Flooders {
        _stop: stop_tx,
        threads: Vec::new(),
    };
    for _ in 0..n {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (addr, stop, batch) = (server.addr(), stop_rx.clone(), batch.to_vec());
        let connector = tls_ca.map(common::tls_connector);
        flooders.threads.push(std::thread::spawn(move || {
            smol::block_on(async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                match connector {
                    None => {
                        let mut tcp = tcp;
                        raw_handshake(&mut tcp, UPGRADE_REQUEST).await;
                        ready_tx.send(()).unwrap();
                        flood(tcp, batch, stop).await;
                    }
                    Some(connector) => {
                        let mut tls = connector.connect(common::localhost(), tcp).await.unwrap();
                        raw_handshake(&mut tls, UPGRADE_REQUEST).await;
                        ready_tx.send(()).unwrap();
                        flood(tls, batch, stop).await;
                    }
                }
            })
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a flooder finished its handshake within 30 s");
    }
    flooders
}

/// The longest a new client may wait for its handshake and first echo while flooders
/// outnumber the threads: 5 s. Generous on purpose: a debug build on this 2-core machine
/// answers in 0.05 to 0.25 s (the `figure:` lines), a loaded CI machine in a few times that;
/// a server whose sessions do not yield makes it wait until the flood ends, which it never
/// does here (the 30 s watchdog of `bounded` used to be the only bound).
const FRESH_CLIENT_BOUND: Duration = Duration::from_secs(5);

/// A fresh client's handshake plus one echo, while the flood goes on; returns how long it
/// took, after checking it against [`FRESH_CLIENT_BOUND`].
fn fresh_client_echo(server: &Wssd, tls_ca: Option<&str>) -> Duration {
    let took = smol::block_on(bounded(async {
        let started = Instant::now();
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let mut ws = match tls_ca {
            None => {
                let (ws, _) = async_tungstenite::client_async(server.url.as_str(), tcp)
                    .await
                    .unwrap();
                futures_util::future::Either::Left(ws)
            }
            Some(ca) => {
                let tls = common::tls_connector(ca)
                    .connect(common::localhost(), tcp)
                    .await
                    .unwrap();
                let (ws, _) = async_tungstenite::client_async(server.url.as_str(), tls)
                    .await
                    .unwrap();
                futures_util::future::Either::Right(ws)
            }
        };
        let text = Message::text("are you there?");
        match &mut ws {
            futures_util::future::Either::Left(ws) => {
                ws.send(text.clone()).await.unwrap();
                assert_eq!(ws.next().await.unwrap().unwrap(), text);
            }
            futures_util::future::Either::Right(ws) => {
                ws.send(text.clone()).await.unwrap();
                assert_eq!(ws.next().await.unwrap().unwrap(), text);
            }
        }
        started.elapsed()
    }));
    assert!(
        took < FRESH_CLIENT_BOUND,
        "a new client waited {took:?} for its handshake and echo (bound {FRESH_CLIENT_BOUND:?})"
    );
    took
}

/// Item 1: more flooders than threads (empty pings, reading the pongs) cannot keep a new
/// client from its handshake and echo; `bounded` fails the test after 30 s.
#[test]
fn a_new_client_is_served_while_ping_flooders_outnumber_the_threads() {
    let server = Wssd::start(&["--plain", "--threads", "2"]);
    let pings = batch(&frame(0x89, b""), 8000); // 48 KB of empty pings
    let flooders = start_flooders(&server, 3, None, &pings);
    let took = fresh_client_echo(&server, None);
    drop(flooders);
    eprintln!("figure: plain, 3 ping flooders, 2 threads: new client echoed in {took:?}");
}

/// Item 1 over TLS.
#[test]
fn a_new_tls_client_is_served_while_ping_flooders_outnumber_the_threads() {
    let dir = common::temp_dir("starve-tls");
    let server = Wssd::start(&["--self-signed-dir", dir.to_str().unwrap(), "--threads", "2"]);
    let ca = common::read(&dir.join("ca.pem"));
    let pings = batch(&frame(0x89, b""), 8000);
    let flooders = start_flooders(&server, 3, Some(&ca), &pings);
    let took = fresh_client_echo(&server, Some(&ca));
    drop(flooders);
    eprintln!("figure: TLS, 3 ping flooders, 2 threads: new client echoed in {took:?}");
}

/// Item 1 with echo floods of 100-byte messages, one flooder more than threads.
#[test]
fn a_new_client_is_served_while_echo_flooders_outnumber_the_threads() {
    let server = Wssd::start(&["--plain", "--threads", "2"]);
    let echoes = batch(&frame(0x81, &[b'x'; 100]), 480); // 48 KB of 100-byte texts
    let flooders = start_flooders(&server, 3, None, &echoes);
    let took = fresh_client_echo(&server, None);
    drop(flooders);
    eprintln!("figure: plain, 3 echo flooders, 2 threads: new client echoed in {took:?}");
}

/// Writes up to `limit` bytes of `batch` copies, stopping when the socket stays full for
/// 3 s or fails; returns the bytes written. Never reads.
fn write_until_blocked(tcp: &mut StdTcp, batch: &[u8], limit: usize) -> usize {
    tcp.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut sent = 0;
    while sent < limit {
        match tcp.write(batch) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
        // A partial write leaves a frame cut: finish it, or stop.
        let cut = sent % batch.len();
        if cut != 0 && tcp.write_all(&batch[cut..]).is_err() {
            break;
        }
        sent += (batch.len() - cut) % batch.len();
    }
    sent
}

/// Items 2 and 3 (a, b): clients that flood pings and read none of the pongs, then go
/// silent (one of them after sending invalid UTF-8), are dropped within the idle timeout,
/// each with one log line saying why, and the server's peak memory stays bounded.
#[test]
fn ping_flooders_that_read_no_pongs_are_dropped_and_memory_stays_bounded() {
    let server = Wssd::start(&["--plain", "--ping-interval", "1", "--idle-timeout", "3"]);
    let before = server.status_kib("VmHWM");
    let pings = batch(&frame(0x89, &[b'p'; 125]), 400); // 52 KB of 125-byte pings
    let mut clients = Vec::new();
    let mut sent = 0;
    for i in 0..2 {
        let mut tcp = std_handshake(server.addr());
        sent += write_until_blocked(&mut tcp, &pings, 300 << 20);
        if i == 1 {
            // Invalid UTF-8 in a text message: the 1007 close must not wait forever either.
            let _ = tcp.write_all(&frame(0x81, &[0xff, 0xfe]));
        }
        clients.push(tcp);
    }
    let lines = server.wait_for_log("] close ", 2);
    let peak = server.status_kib("VmHWM");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "figure: 2 clients sent {} MiB of pings and read no pongs: peak RSS grew {} KiB",
        sent >> 20,
        grew
    );
    assert!(grew < 32 << 10, "peak RSS grew {grew} KiB: {lines:?}");
    let log = server.log_lines();
    let why: Vec<_> = log
        .iter()
        .filter(|l| l.contains("read none of the pongs") || l.contains("read nothing for"))
        .collect();
    assert_eq!(why.len(), 2, "one line each saying why: {log:#?}");
    drop(clients);
}

/// Hardening round 3: 300 clients each send the 14-byte header of a frame announcing 1 MiB
/// (the default frame limit) and one byte of it, then nothing. The server holds what came
/// (a 4 KiB buffer each, README "Memory per connection"), not what was announced: peak RSS
/// grows by less than 16 MiB (before the fix, about 300 MiB).
#[test]
fn three_hundred_headers_announcing_a_mebibyte_cost_what_was_sent() {
    let server = Wssd::start(&["--plain"]);
    let before = server.status_kib("VmHWM");
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0, b'x']);
    // A ping in the same write: its pong says the server has read the header behind it.
    let mut write = frame(0x89, b"p");
    write.extend_from_slice(&header);
    let mut clients = Vec::new();
    for _ in 0..300 {
        let mut tcp = std_handshake(server.addr());
        tcp.write_all(&write).unwrap();
        clients.push(tcp);
    }
    for tcp in &mut clients {
        let mut pong = [0u8; 3];
        std::io::Read::read_exact(tcp, &mut pong).unwrap();
        assert_eq!(pong, [0x8a, 1, b'p']);
    }
    let grew = server.status_kib("VmHWM").saturating_sub(before);
    eprintln!(
        "figure: 300 clients announced 1 MiB frames and sent 15 bytes: peak RSS grew {grew} KiB"
    );
    assert!(grew < 16 << 10, "peak RSS grew {grew} KiB");
    drop(clients);
}

/// Hardening round 3: 100 clients send part of a frame and hang up at once, half with FIN,
/// half with RST, at a connection cap of 100 and pings a minute apart. Every connection is
/// freed when its hang-up arrives (100 close lines, well before any ping), and a new
/// client is served, not refused with 503 (before the fix, a FIN or RST that came with the
/// last data was missed and the slot held until the next ping).
#[test]
fn clients_that_hang_up_right_behind_their_data_free_their_slots_at_once() {
    let server = Wssd::start(&[
        "--plain",
        "--max-connections",
        "100",
        "--ping-interval",
        "60",
        "--idle-timeout",
        "120",
    ]);
    let partial = &frame(0x82, &[7; 300])[..100];
    for i in 0..100 {
        let mut tcp = std_handshake(server.addr());
        if i % 2 == 0 {
            rustix::net::sockopt::set_socket_linger(&tcp, Some(Duration::ZERO)).unwrap();
            tcp.write_all(partial).unwrap();
            drop(tcp); // RST
        } else {
            tcp.write_all(partial).unwrap();
            tcp.shutdown(std::net::Shutdown::Both).unwrap(); // FIN
        }
    }
    server.wait_for_log("] close ", 100);
    let tcp = future::block_on(TcpStream::connect(server.addr())).unwrap();
    future::block_on(bounded(common::echo_once(&server.url, tcp)));
}

/// Item 5: one client bursts 1,000 messages of 1 KiB in one write into a room of 20 fast
/// readers; every reader gets all of them and none is closed.
#[test]
fn a_burst_into_a_room_slows_the_sender_and_disconnects_no_fast_reader() {
    let server = Wssd::start(&["--plain", "--broadcast", "--threads", "2"]);
    smol::block_on(bounded(async {
        let mut readers = Vec::new();
        for _ in 0..20 {
            let tcp = TcpStream::connect(server.addr()).await.unwrap();
            let (ws, _) = async_tungstenite::client_async(server.url.as_str(), tcp)
                .await
                .unwrap();
            readers.push(ws);
        }
        let mut sender = TcpStream::connect(server.addr()).await.unwrap();
        raw_handshake(&mut sender, UPGRADE_REQUEST).await;
        let tasks: Vec<_> = readers
            .into_iter()
            .map(|mut ws| {
                smol::spawn(async move {
                    read_messages(
                        &mut ws,
                        1000,
                        |m| matches!(m, Message::Text(t) if t.len() == 1024),
                    )
                    .await
                })
            })
            .collect();
        let burst = batch(&frame(0x81, &[b'b'; 1024]), 1000);
        sender.write_all(&burst).await.unwrap();
        for task in tasks {
            assert_eq!(task.await, 1000);
        }
    }));
    let log = server.log_lines();
    assert!(
        !log.iter().any(|l| l.contains("send queue full")),
        "{log:#?}"
    );
}

/// Item 7: a broadcaster sending 30,000 messages to 5 clients that never read gives one
/// warning per slow client, not one per message, and a fast reader gets every message.
#[test]
fn slow_clients_give_one_log_line_each_and_a_fast_reader_gets_everything() {
    let server = Wssd::start(&["--plain", "--broadcast", "--threads", "2"]);
    let stalled: Vec<StdTcp> = (0..5).map(|_| std_handshake(server.addr())).collect();
    const COUNT: usize = 30_000;
    smol::block_on(bounded(async {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let (mut reader, _) = async_tungstenite::client_async(server.url.as_str(), tcp)
            .await
            .unwrap();
        let mut sender = TcpStream::connect(server.addr()).await.unwrap();
        raw_handshake(&mut sender, UPGRADE_REQUEST).await;
        let read = smol::spawn(async move {
            read_messages(&mut reader, COUNT, |m| matches!(m, Message::Text(_))).await
        });
        let chunk = batch(&frame(0x81, &[b's'; 1024]), 1000);
        for _ in 0..COUNT / 1000 {
            sender.write_all(&chunk).await.unwrap();
        }
        assert_eq!(read.await, COUNT);
    }));
    let lines = server.wait_for_log("send queue full", 5);
    let all = server.log_lines();
    let warnings = all.iter().filter(|l| l.contains("send queue full")).count();
    assert_eq!(warnings, 5, "one line per slow client: {lines:#?}");
    assert!(
        lines[4].contains("5 slow clients closed so far"),
        "{lines:#?}"
    );
    drop(stalled);
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
