//! `wssd-bench`: measures any ws:// or wss:// echo server from outside.
//!
//! - `echo`: N connections, each with one message in flight, for D seconds: msgs/s, MB/s
//!   and round-trip latency percentiles.
//! - `handshakes`: C concurrent dialers doing TCP + TLS + upgrade, for D seconds: handshakes/s.
//! - `idle`: K idle connections; the server's RSS before and after, per connection.
//!
//! With `--pid`, the server's CPU time (`utime + stime` from `/proc/PID/stat`) over the
//! measured window gives its CPU per message, a figure that stays fair when this load
//! generator saturates its own core. Certificates are not verified (a benchmark tool).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argh::FromArgs;
use async_tungstenite::WebSocketStream;
use futures_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use futures_util::StreamExt;
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
/// Echo throughput and latency: each connection keeps one message in flight.
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

type Ws = WebSocketStream<Box<dyn Io>>;
trait Io: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send> Io for T {}

fn main() {
    let args: Args = argh::from_env();
    let report = match args.mode {
        Mode::Echo(m) => smol::block_on(echo(m)),
        Mode::Handshakes(m) => smol::block_on(handshakes(m)),
        Mode::Idle(m) => smol::block_on(idle(m)),
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

async fn echo(m: Echo) -> serde_json::Value {
    let connector = Connector::new(&m.url);
    let mut conns = Vec::new();
    for _ in 0..m.conns {
        conns.push(connector.connect().await);
    }
    let payload = vec![b'x'; m.size];
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut ws in conns {
        let (payload, measuring, stop, count) = (
            payload.clone(),
            measuring.clone(),
            stop.clone(),
            count.clone(),
        );
        tasks.push(smol::spawn(async move {
            let mut rtts = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                ws.send(async_tungstenite::tungstenite::Message::binary(
                    payload.clone(),
                ))
                .await
                .unwrap();
                loop {
                    match ws.next().await.unwrap().unwrap() {
                        async_tungstenite::tungstenite::Message::Binary(_) => break,
                        _ => continue,
                    }
                }
                if measuring.load(Ordering::Relaxed) {
                    rtts.push(sent.elapsed().as_micros() as u32);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = ws.close(None).await;
            rtts
        }));
    }
    smol::Timer::after(Duration::from_secs(1)).await; // warm-up, not measured
    let cpu_before = m.pid.map(cpu_ticks);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    smol::Timer::after(Duration::from_secs(m.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = m.pid.map(cpu_ticks);
    let messages = count.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut rtts: Vec<u32> = Vec::new();
    for task in tasks {
        rtts.extend(task.await);
    }
    rtts.sort_unstable();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let msgs_per_s = messages as f64 / elapsed;
    serde_json::json!({
        "mode": "echo", "conns": m.conns, "size": m.size,
        "msgs_per_s": msgs_per_s.round(),
        "mb_per_s": (msgs_per_s * m.size as f64 * 2.0 / 1e6 * 100.0).round() / 100.0,
        "p50_us": pct(0.50), "p99_us": pct(0.99), "p999_us": pct(0.999),
        "server_cpu_us_per_msg": cpu_per(cpu_before, cpu_after, messages),
    })
}

async fn handshakes(m: Handshakes) -> serde_json::Value {
    let connector = Arc::new(Connector::new(&m.url));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu_before = m.pid.map(cpu_ticks);
    let started = Instant::now();
    let tasks: Vec<_> = (0..m.concurrency)
        .map(|_| {
            let (connector, stop, count) = (connector.clone(), stop.clone(), count.clone());
            smol::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut ws = connector.connect().await;
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = ws.close(None).await;
                }
            })
        })
        .collect();
    smol::Timer::after(Duration::from_secs(m.secs)).await;
    let done = count.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = m.pid.map(cpu_ticks);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await;
    }
    serde_json::json!({
        "mode": "handshakes", "concurrency": m.concurrency,
        "handshakes_per_s": (done as f64 / elapsed).round(),
        "server_cpu_us_per_handshake": cpu_per(cpu_before, cpu_after, done),
    })
}

async fn idle(m: Idle) -> serde_json::Value {
    let connector = Connector::new(&m.url);
    let before = rss_kib(m.pid);
    let mut conns = Vec::new();
    for _ in 0..m.conns {
        conns.push(connector.connect().await);
    }
    // One round trip on every connection: each is fully set up on the server's side.
    for ws in &mut conns {
        ws.send(async_tungstenite::tungstenite::Message::binary(vec![
            1u8;
            16
        ]))
        .await
        .unwrap();
        ws.next().await.unwrap().unwrap();
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
                    smol::spawn(async move {
                        let ping = async {
                            loop {
                                match ws.next().await {
                                    Some(Ok(async_tungstenite::tungstenite::Message::Ping(_))) => {
                                        return true;
                                    }
                                    Some(Ok(_)) => continue,
                                    _ => return false,
                                }
                            }
                        };
                        let deadline = async {
                            smol::Timer::after(Duration::from_secs(secs)).await;
                            false
                        };
                        futures_lite::future::or(ping, deadline).await
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

/// The server's CPU time, utime + stime, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc entry");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn cpu_per(before: Option<u64>, after: Option<u64>, n: u64) -> serde_json::Value {
    match (before, after) {
        (Some(b), Some(a)) if n > 0 => {
            let micros = (a - b) as f64 * 10_000.0; // 100 ticks per second
            serde_json::json!((micros / n as f64 * 100.0).round() / 100.0)
        }
        _ => serde_json::Value::Null,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc entry");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Connector {
    url: String,
    addr: String,
    host: String,
    tls: Option<futures_rustls::TlsConnector>,
}

impl Connector {
    fn new(url: &str) -> Self {
        let tls = url.starts_with("wss://");
        let rest = url.split("://").nth(1).unwrap();
        let authority = rest.split('/').next().unwrap();
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
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            futures_rustls::TlsConnector::from(Arc::new(config))
        });
        Connector {
            url: url.to_string(),
            addr: addr.replace("localhost", "127.0.0.1"),
            host,
            tls,
        }
    }

    async fn connect(&self) -> Ws {
        let tcp = TcpStream::connect(self.addr.as_str())
            .await
            .expect("connect");
        tcp.set_nodelay(true).unwrap();
        let stream: Box<dyn Io> = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).unwrap();
                Box::new(tls.connect(name, tcp).await.expect("TLS handshake"))
            }
            None => Box::new(tcp),
        };
        async_tungstenite::client_async(self.url.as_str(), stream)
            .await
            .expect("upgrade")
            .0
    }
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
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
