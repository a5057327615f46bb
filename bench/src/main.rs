//! `wssd-bench`: measures any ws:// or wss:// echo server from outside.
//!
//! - `echo`: N connections, each with `--depth` messages in flight (1: ping-pong), for D
//!   seconds: msgs/s, MB/s and round-trip latency percentiles.
//! - `handshakes`: C concurrent dialers doing TCP + TLS + upgrade, for D seconds: handshakes/s.
//! - `idle`: K idle connections; the server's RSS before and after, per connection.
//!
//! It speaks WebSocket through a lean codec of its own over rustls (no WebSocket library):
//! each connection writes its pre-masked frames with one write and checks every echoed
//! payload byte for byte against what it sent, so that it spends less CPU per message than
//! the servers it measures. It shows that: with `--pid`, every report has the server's CPU
//! (`utime + stime` from `/proc/PID/stat`) and its own, per message and as a share of one
//! core, and says `load_bound` when its own core was saturated while the server's was not
//! (then msgs/s measures this tool, not the server). Certificates are not verified.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod dial;
mod lean;

use argh::FromArgs;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use smol::net::TcpStream;

#[derive(FromArgs)]
/// Benchmark a ws:// or wss:// echo server.
struct Args {
    #[argh(subcommand)]
    mode: Mode,
    /// print one JSON object instead of a table row
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Mode {
    Echo(Echo),
    Handshakes(Handshakes),
    Idle(Idle),
}

#[derive(FromArgs)]
/// Echo throughput and latency: each connection keeps `depth` messages in flight.
#[argh(subcommand, name = "echo")]
struct Echo {
    /// the server's URL
    #[argh(positional)]
    url: String,
    /// connections (default 100)
    #[argh(option, default = "100")]
    conns: usize,
    /// message size in bytes (default 32)
    #[argh(option, default = "32")]
    size: usize,
    /// messages in flight per connection, written together (default 1: ping-pong)
    #[argh(option, default = "1")]
    depth: usize,
    /// measured seconds (default 10), after 1 s of warm-up
    #[argh(option, default = "10")]
    secs: u64,
    /// the server's process id, for its CPU time
    #[argh(option)]
    pid: Option<u32>,
}

#[derive(FromArgs)]
/// Handshake rate: new TCP + TLS + upgrade per second from concurrent dialers.
#[argh(subcommand, name = "handshakes")]
struct Handshakes {
    /// the server's URL
    #[argh(positional)]
    url: String,
    /// concurrent dialers (default 32)
    #[argh(option, default = "32")]
    concurrency: usize,
    /// measured seconds (default 5)
    #[argh(option, default = "5")]
    secs: u64,
    /// the server's process id, for its CPU time
    #[argh(option)]
    pid: Option<u32>,
}

#[derive(FromArgs)]
/// Memory per idle connection: the server's RSS before and after opening K connections.
#[argh(subcommand, name = "idle")]
struct Idle {
    /// the server's URL
    #[argh(positional)]
    url: String,
    /// connections (default 2000)
    #[argh(option, default = "2000")]
    conns: usize,
    /// the server's process id (required: its RSS is the measure)
    #[argh(option)]
    pid: u32,
    /// then wait up to this many seconds for a server ping on every connection (heartbeat health)
    #[argh(option)]
    ping_wait: Option<u64>,
}

fn main() {
    let args: Args = argh::from_env();
    // The echo and handshake loads run event loops of their own (`lean`, `dial`); idle
    // connections run as tasks on this thread, which also waits on the sockets: no hand-off
    // between a reactor thread and executor threads.
    let ex = smol::LocalExecutor::new();
    let report = match args.mode {
        Mode::Echo(m) => echo(m),
        Mode::Handshakes(m) => handshakes(m),
        Mode::Idle(m) => smol::block_on(ex.run(idle(&ex, m))),
    };
    if args.json {
        println!("{report}");
    } else {
        let fields: Vec<String> = report
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("{}", fields.join("  "));
    }
}

fn echo(m: Echo) -> serde_json::Value {
    assert!(m.depth >= 1, "--depth is at least 1");
    let connector = Connector::new(&m.url);
    let conns: Vec<lean::Conn> = (0..m.conns)
        .map(|_| {
            let config = connector.config.as_ref();
            lean::connect(&connector.addr, &connector.host, &connector.path, config)
        })
        .collect();
    let payload: Vec<u8> = (0..m.size).map(|i| (i % 251) as u8).collect();
    // `depth` masked binary frames, written with one write per round.
    let frames: Vec<u8> = std::iter::repeat_n(masked_frame(0x2, &payload), m.depth)
        .flatten()
        .collect();
    let mut measured = lean::run(
        conns,
        (&frames, &payload, m.depth),
        Duration::from_secs(1), // warm-up, not measured
        Duration::from_secs(m.secs),
        m.pid,
    );
    let cpu = &measured.cpu;
    let rtts = &mut measured.rtts;
    rtts.sort_unstable();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let msgs_per_s = measured.messages as f64 / cpu.elapsed;
    let mut report = serde_json::json!({
        "mode": "echo", "conns": m.conns, "size": m.size, "depth": m.depth,
        "msgs_per_s": msgs_per_s.round(),
        "mb_per_s": (msgs_per_s * m.size as f64 * 2.0 / 1e6 * 100.0).round() / 100.0,
        "p50_us": pct(0.50), "p99_us": pct(0.99), "p999_us": pct(0.999),
    });
    cpu.report(&mut report, "msg");
    report
}

fn handshakes(m: Handshakes) -> serde_json::Value {
    let connector = Connector::new(&m.url);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(connector.addr.as_str())
        .expect("the server's address")
        .next()
        .expect("an address");
    let (done, cpu) = dial::run(
        addr,
        &connector.host,
        &connector.path,
        connector.config.as_ref(),
        m.concurrency,
        Duration::from_secs(m.secs),
        m.pid,
    );
    let mut report = serde_json::json!({
        "mode": "handshakes", "concurrency": m.concurrency,
        "handshakes_per_s": (done as f64 / cpu.elapsed).round(),
    });
    cpu.report(&mut report, "handshake");
    report
}

async fn idle(ex: &smol::LocalExecutor<'_>, m: Idle) -> serde_json::Value {
    let connector = Connector::new(&m.url);
    let before = rss_kib(m.pid);
    let mut conns = Vec::new();
    for _ in 0..m.conns {
        conns.push(connector.connect().await);
    }
    // One round trip on every connection: each is fully set up on the server's side.
    let payload = [1u8; 16];
    let frame = masked_frame(0x2, &payload);
    for ws in &mut conns {
        ws.io.write_all(&frame).await.expect("write");
        ws.io.flush().await.expect("flush");
        ws.read_echo(&payload).await;
    }
    let after = rss_kib(m.pid);
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / m.conns as f64;
    let pinged = match m.ping_wait {
        None => serde_json::Value::Null,
        Some(secs) => {
            // Every connection waits for one ping, concurrently; the count is the heartbeat's health.
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|mut ws| {
                    ex.spawn(async move {
                        let deadline = async {
                            smol::Timer::after(Duration::from_secs(secs)).await;
                            false
                        };
                        futures_lite::future::or(ws.wait_for_ping(), deadline).await
                    })
                })
                .collect();
            let mut pinged = 0u64;
            for task in tasks {
                pinged += u64::from(task.await);
            }
            serde_json::json!(pinged)
        }
    };
    serde_json::json!({
        "mode": "idle", "conns": m.conns,
        "rss_before_kib": before, "rss_after_kib": after,
        "bytes_per_conn": per_conn.round(),
        "pinged": pinged,
    })
}

/// CPU time over the measured window: the server's (with `--pid`) and this process's.
struct Cpu {
    pid: Option<u32>,
    started: Instant,
    server: u64,
    load: u64,
}

/// What [`Cpu`] measured.
struct CpuUse {
    elapsed: f64,
    /// Microseconds of CPU: the server's (if known) and this tool's.
    server_us: Option<f64>,
    load_us: f64,
    per: u64,
}

impl Cpu {
    fn start(pid: Option<u32>) -> Self {
        Cpu {
            pid,
            started: Instant::now(),
            server: pid.map_or(0, cpu_ticks),
            load: cpu_ticks_self(),
        }
    }

    fn stop(self, per: u64) -> CpuUse {
        let elapsed = self.started.elapsed().as_secs_f64();
        let tick_us = 10_000.0; // 100 clock ticks per second on Linux
        CpuUse {
            elapsed,
            server_us: self
                .pid
                .map(|pid| (cpu_ticks(pid) - self.server) as f64 * tick_us),
            load_us: (cpu_ticks_self() - self.load) as f64 * tick_us,
            per,
        }
    }
}

impl CpuUse {
    /// Adds the CPU figures to `report`: per `unit` (message or handshake), the share of one
    /// core each side used, and whether the load generator was the bottleneck.
    fn report(&self, report: &mut serde_json::Value, unit: &str) {
        let per = |us: f64| {
            if self.per == 0 {
                serde_json::Value::Null
            } else {
                serde_json::json!((us / self.per as f64 * 100.0).round() / 100.0)
            }
        };
        let share = |us: f64| (us / (self.elapsed * 1e6) * 1000.0).round() / 10.0;
        let fields = report.as_object_mut().unwrap();
        fields.insert(format!("load_cpu_us_per_{unit}"), per(self.load_us));
        fields.insert("load_cpu_pct".into(), share(self.load_us).into());
        if let Some(server_us) = self.server_us {
            fields.insert(format!("server_cpu_us_per_{unit}"), per(server_us));
            fields.insert("server_cpu_pct".into(), share(server_us).into());
            // This tool's core was (nearly) full while the server's still had room: the
            // rate is this tool's ceiling, not the server's.
            let load_bound = share(self.load_us) >= 90.0 && share(server_us) < 90.0;
            fields.insert("load_bound".into(), load_bound.into());
        }
    }
}

/// A process's CPU time, utime + stime, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    ticks_of(&format!("/proc/{pid}/stat"))
}

fn cpu_ticks_self() -> u64 {
    ticks_of("/proc/self/stat")
}

fn ticks_of(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).expect("a /proc stat entry");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc entry");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A client frame (RFC 6455 section 5.2): FIN, `opcode`, masked `payload`. The masking key
/// is fixed: this tool measures servers, and a server unmasks any key at the same cost.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().zip(KEY.iter().cycle()).map(|(b, k)| b ^ k));
    frame
}

/// What the server sent: one frame's header, parsed (RFC 6455 section 5.2; server frames
/// are not masked).
struct Header {
    fin: bool,
    opcode: u8,
    len: usize,
    header_len: usize,
}

fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    assert!(
        b[1] & 0x80 == 0,
        "the server masked a frame (RFC 6455 section 5.1)"
    );
    let (len, header_len) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    Some(Header {
        fin: b[0] & 0x80 != 0,
        opcode: b[0] & 0x0f,
        len,
        header_len,
    })
}

/// Plaintext the server sent and not yet parsed: `buf[start..end]`.
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    /// A buffer of `capacity` bytes holding `first` (what came with the `101`).
    fn new(capacity: usize, first: &[u8]) -> Self {
        let mut buf = vec![0; capacity.max(first.len())];
        buf[..first.len()].copy_from_slice(first);
        Input {
            buf,
            start: 0,
            end: first.len(),
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn free(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Moves unparsed bytes to the front, or grows the buffer, when it is full.
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
    }

    /// The next frame if all of it is here: its header and its payload's range in `buf`.
    fn next_frame(&mut self) -> Option<(Header, std::ops::Range<usize>)> {
        let h = parse_header(self.unparsed())?;
        let payload = self.start + h.header_len..self.start + h.header_len + h.len;
        if payload.end > self.end {
            return None;
        }
        self.start = payload.end;
        Some((h, payload))
    }

    /// Takes frames until one echoed data message is whole (`true`) or the buffer runs out
    /// (`false`), checking each part against `expected` byte for byte; `got` counts the
    /// bytes of it taken so far. Control frames in between are skipped.
    fn take_echo(&mut self, expected: &[u8], got: &mut usize) -> bool {
        while let Some((h, payload)) = self.next_frame() {
            if h.opcode & 0x8 != 0 {
                assert!(h.opcode != 0x8, "the server sent a close frame");
                continue;
            }
            let part = &self.buf[payload];
            assert!(
                expected.get(*got..*got + part.len()) == Some(part),
                "the echo differs from the message sent"
            );
            *got += part.len();
            if h.fin {
                assert_eq!(*got, expected.len(), "the echo is shorter than the message");
                *got = 0;
                return true;
            }
        }
        false
    }
}

trait Io: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send> Io for T {}

/// One client connection after its opening handshake, with what it read and not yet parsed.
struct Ws {
    io: Box<dyn Io>,
    input: Input,
}

impl Ws {
    /// Reads more of the stream into the buffer.
    async fn fill(&mut self) {
        self.input.make_room();
        let n = self.io.read(self.input.free()).await.expect("read");
        assert!(n > 0, "the server closed the connection");
        self.input.end += n;
    }

    /// Reads one echoed data message and checks it is `expected` byte for byte.
    async fn read_echo(&mut self, expected: &[u8]) {
        let mut got = 0;
        while !self.input.take_echo(expected, &mut got) {
            self.fill().await;
        }
    }

    /// Whether a ping (opcode 0x9) arrives before the connection ends.
    async fn wait_for_ping(&mut self) -> bool {
        loop {
            while let Some((h, _)) = self.input.next_frame() {
                match h.opcode {
                    0x9 => return true,
                    0x8 => return false,
                    _ => {}
                }
            }
            self.fill().await;
        }
    }
}

struct Connector {
    addr: String,
    host: String,
    path: String,
    config: Option<Arc<ClientConfig>>,
    tls: Option<futures_rustls::TlsConnector>,
}

impl Connector {
    fn new(url: &str) -> Self {
        let tls = url.starts_with("wss://");
        let rest = url.split("://").nth(1).unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string();
        let addr = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let tls = tls.then(|| {
            // Browsers' order of preference (Chrome, Firefox and Safari all offer AES-128-GCM
            // first; rustls' default puts AES-256-GCM with SHA-384 first): servers that take
            // the client's order, as the ones measured here do, run what a browser makes them.
            #[allow(deprecated)]
            // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites.sort_by_key(|suite| {
                use rustls::CipherSuite::*;
                match suite.suite() {
                    TLS13_AES_128_GCM_SHA256 => 0,
                    TLS13_AES_256_GCM_SHA384 => 1,
                    _ => 2,
                }
            });
            let provider = Arc::new(provider);
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            // The lean echo load takes the keys after the handshake (`lean::handshake`).
            config.enable_secret_extraction = true;
            Arc::new(config)
        });
        Connector {
            addr: addr.replace("localhost", "127.0.0.1"),
            host,
            path: format!("/{path}"),
            tls: tls.clone().map(futures_rustls::TlsConnector::from),
            config: tls,
        }
    }

    /// TCP, TLS for wss://, and the opening handshake (RFC 6455 section 4.1).
    async fn connect(&self) -> Ws {
        let tcp = TcpStream::connect(self.addr.as_str())
            .await
            .expect("connect");
        tcp.set_nodelay(true).unwrap();
        let io: Box<dyn Io> = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).unwrap();
                Box::new(tls.connect(name, tcp).await.expect("TLS handshake"))
            }
            None => Box::new(tcp),
        };
        let mut ws = Ws {
            io,
            input: Input::new(16 * 1024, &[]),
        };
        let request = upgrade_request(&self.path, &self.host);
        ws.io.write_all(request.as_bytes()).await.expect("write");
        ws.io.flush().await.expect("flush");
        let head_end = loop {
            if let Some(i) = find(ws.input.unparsed(), b"\r\n\r\n") {
                break i + 4;
            }
            ws.fill().await;
        };
        check_upgrade(&ws.input.unparsed()[..head_end]);
        ws.input.start = head_end;
        ws
    }
}

/// The opening handshake's request (RFC 6455 section 4.1), always with the same key: the
/// answer [`check_upgrade`] expects.
fn upgrade_request(path: &str, host: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Checks the server's answer to the upgrade request: a `101` with the accept value for
/// the key sent (RFC 6455 section 4.2.2).
fn check_upgrade(head: &[u8]) {
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(head).escape_debug()
    );
    // The answer for this key (RFC 6455 section 1.3).
    assert!(
        find(head, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=").is_some(),
        "wrong Sec-WebSocket-Accept"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Accepts any certificate: the benchmark measures servers, not trust.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    #[allow(deprecated)] // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_frame_unmasks_to_its_payload_and_headers_parse_at_each_length_form() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = masked_frame(0x2, &payload);
            let h = parse_header(&[&[frame[0], frame[1] & 0x7f], &frame[2..]].concat()).unwrap();
            assert_eq!((h.fin, h.opcode, h.len), (true, 0x2, len));
            let key = &frame[h.header_len..h.header_len + 4];
            let unmasked: Vec<u8> = frame[h.header_len + 4..]
                .iter()
                .zip(key.iter().cycle())
                .map(|(b, k)| b ^ k)
                .collect();
            assert_eq!(unmasked, payload);
        }
        assert!(
            parse_header(&[0x82, 126, 0]).is_none(),
            "a partial header waits for more"
        );
    }
}
