//! What wssd's tests share: an in-memory duplex (the handshake and session tests run over
//! it, no sockets), client frames as RFC 6455 section 5.3 has them (masked), readers of
//! the server's frames, a TLS client that trusts a generated CA, loopback ports, and a
//! guard that runs the built `wssd` binary.
#![allow(missing_docs)]

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::{self, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// One end of an in-memory, full-duplex byte stream.
pub struct Duplex {
    read: piper::Reader,
    write: piper::Writer,
}

impl std::fmt::Debug for Duplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Duplex")
    }
}

/// Two connected ends: what one writes, the other reads.
pub fn duplex() -> (Duplex, Duplex) {
    duplex_with(64 * 1024)
}

/// Two connected ends whose pipes hold `capacity` bytes each way: a writer blocks when
/// the reader falls that far behind, like a full TCP window.
pub fn duplex_with(capacity: usize) -> (Duplex, Duplex) {
    let (r1, w1) = piper::pipe(capacity);
    let (r2, w2) = piper::pipe(capacity);
    (
        Duplex {
            read: r1,
            write: w2,
        },
        Duplex {
            read: r2,
            write: w1,
        },
    )
}

impl AsyncRead for Duplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Duplex {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A write with room in the pipe succeeds at once, as on a socket with room in its
        // send buffer; piper's poll_write may instead yield at random, which would drop a
        // best-effort write such as rustls' last alert before an error.
        match self.write.try_fill(buf) {
            0 => Pin::new(&mut self.write).poll_write(cx, buf),
            n => Poll::Ready(Ok(n)),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_close(cx)
    }
}

/// A raw client: sends the opening handshake, reads the `101` byte by byte (so no frame
/// behind it is consumed, as a library client might), then reads frames without ever
/// answering, up to the server's close frame. Returns its close code and the first bytes
/// (FIN and opcode) of the frames before it.
pub async fn read_until_close(raw: &mut Duplex) -> (u16, Vec<u8>) {
    read_until_101(raw).await;
    let mut before = Vec::new();
    loop {
        let (first, payload) = read_frame(raw).await;
        if first == 0x88 {
            return (u16::from_be_bytes([payload[0], payload[1]]), before);
        }
        before.push(first);
    }
}

/// Reads one server frame (unmasked, RFC 6455 section 5.2): its first byte (FIN, RSV and
/// opcode) and its payload.
pub async fn read_frame<S: AsyncRead + Unpin>(raw: &mut S) -> (u8, Vec<u8>) {
    use futures_lite::AsyncReadExt;
    let mut head = [0u8; 2];
    raw.read_exact(&mut head).await.unwrap();
    let len = match head[1] & 0x7F {
        126 => {
            let mut l = [0u8; 2];
            raw.read_exact(&mut l).await.unwrap();
            usize::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            raw.read_exact(&mut l).await.unwrap();
            usize::try_from(u64::from_be_bytes(l)).unwrap()
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    raw.read_exact(&mut payload).await.unwrap();
    (head[0], payload)
}

/// An opening handshake request for `/`, with the RFC 6455 sample key.
pub const UPGRADE_REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Reads an HTTP head (up to and with the blank line) byte by byte, so that nothing after
/// it is consumed.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<String> {
    use futures_lite::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// [`read_head`] on a blocking stream.
pub fn read_head_blocking(stream: &mut impl io::Read) -> io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Sends `request` and reads the answer's head; returns it.
pub async fn raw_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> String {
    use futures_lite::AsyncWriteExt;
    stream.write_all(request).await.unwrap();
    read_head(stream).await.unwrap()
}

/// A raw client's opening handshake, [`UPGRADE_REQUEST`], expecting `101`.
pub async fn read_until_101<S: AsyncRead + AsyncWrite + Unpin>(raw: &mut S) {
    let head = raw_handshake(raw, UPGRADE_REQUEST).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
}

/// A WebSocket client on `stream`: the opening handshake to `url`, one text message sent
/// and its echo checked, then the closing handshake to its end.
pub async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(url: &str, stream: S) {
    use async_tungstenite::tungstenite::Message;
    use futures_util::StreamExt;
    let (mut ws, _) = async_tungstenite::client_async(url, stream).await.unwrap();
    ws.send(Message::text("tom")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("tom"));
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

/// A peer address for in-memory connections.
pub fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// A TLS connector that trusts exactly the CA in `ca_pem`, offering ALPN `http/1.1`.
pub fn tls_connector(ca_pem: &str) -> futures_rustls::TlsConnector {
    tls_connector_with(ca_pem, rustls::DEFAULT_VERSIONS)
}

/// [`tls_connector`], offering only the TLS `versions` given.
pub fn tls_connector_with(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> futures_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    futures_rustls::TlsConnector::from(Arc::new(config))
}

/// The server name `localhost`, for SNI.
pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A loopback port that was free a moment ago, for a program that cannot report its own.
///
/// It is taken below the kernel's ephemeral range (`ip_local_port_range`), where no other
/// test's `bind` to port 0 or outgoing connection can be given it between this check and
/// the program's own `bind`, and never twice in one test process.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000, ephemeral.saturating_sub(10_000));
    if span < 1_000 {
        // An unusual range: any free port, as the kernel picks it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        return listener.local_addr().unwrap().port();
    }
    let start = std::process::id() as usize * 97;
    for _ in 0..span {
        let port = (first + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {first} and {ephemeral}");
}

/// A fresh, empty directory under the system temp directory, removed with what it holds
/// when dropped.
pub fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wssd-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A directory removed on drop; derefs to its path.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails the test if `fut` has not finished in 30 s, so that a hung server cannot hang the suite.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    smol::future::or(fut, async {
        smol::Timer::after(Duration::from_secs(30)).await;
        panic!("test step did not finish within 30 s");
    })
    .await
}

/// The `wssd` binary under test: `WSSD_BIN` if set (such as an older build, to show that
/// a test fails on it), else the one cargo built beside the running test (its executable
/// is in `target/<profile>/deps/`, the binary in `target/<profile>/`), as cargo does for
/// the tests of cli/.
pub fn wssd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WSSD_BIN") {
        return PathBuf::from(bin);
    }
    let test = std::env::current_exe().expect("the test's own path");
    let bin = test
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("wssd{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test runs from target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is not built: the tests of the wssd binary live in cli/tests, which cargo builds it for",
        bin.display()
    );
    bin
}

/// The built `wssd` binary, running on an ephemeral loopback port; killed on drop.
pub struct Wssd {
    child: Child,
    /// The URL it printed, such as `wss://localhost:41234`.
    pub url: String,
    /// Its stderr log lines, collected by a thread; the condvar is notified per line.
    pub log: Arc<(std::sync::Mutex<Vec<String>>, std::sync::Condvar)>,
}

impl Wssd {
    /// Starts `wssd --listen 127.0.0.1:0 --threads 1` plus `args` (`--threads` in `args`
    /// wins), and waits for its URL line. `WSSD_BIN` names another binary to run, such as
    /// an older build, to show that a test fails on it.
    pub fn start(args: &[&str]) -> Wssd {
        let bin = wssd_bin();
        let threads: &[&str] = if args.contains(&"--threads") {
            &[]
        } else {
            &["--threads", "1"]
        };
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(threads)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the wssd binary runs");
        let log = Arc::new((std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
            // EOF: wake waiters so they can see the process is gone.
            sink.1.notify_all();
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // Blocks until wssd prints its URL, or exits (EOF).
        while stdout.read_line(&mut line).unwrap() > 0 {
            if let Some(url) = line.trim().strip_prefix("serving ") {
                let url = url.to_string();
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
                return Wssd { child, url, log };
            }
            line.clear();
        }
        let status = child.wait().unwrap();
        panic!(
            "wssd exited ({status}) before serving: {:?}",
            log.0.lock().unwrap()
        );
    }

    /// Blocks until `count` log lines contain `needle` (event-driven: the log thread
    /// notifies per line), and fails after 30 s. Returns those lines.
    pub fn wait_for_log(&self, needle: &str, count: usize) -> Vec<String> {
        let (lines, arrived) = &*self.log;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut lines = lines.lock().unwrap();
        loop {
            let found: Vec<String> = lines
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "{count} lines with {needle:?} not logged within 30 s: {lines:#?}"
            );
            lines = arrived.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// All log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (after a signal). A watchdog kills it after 30 s,
    /// which then shows as death by SIGKILL in the returned status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let watchdog = Watchdog::arm(self.pid());
        let status = self.child.wait().unwrap();
        watchdog.disarm();
        status
    }

    /// A field of /proc/PID/status in KiB, such as `VmRSS` or `VmHWM` (the peak RSS).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The number of open file descriptors of the process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        let port = self.url.rsplit(':').next().unwrap();
        let port: u16 = port.split('/').next().unwrap().parse().unwrap();
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

impl Drop for Wssd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a process with SIGKILL if it has not exited 30 s after [`Watchdog::arm`], so that
/// a hung process cannot hang the suite.
pub struct Watchdog {
    cancel: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    /// Starts watching process `pid`.
    pub fn arm(pid: u32) -> Watchdog {
        let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Disconnected means it exited in time; only a timeout kills.
            let late = matches!(
                cancelled.recv_timeout(Duration::from_secs(30)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            if late {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            late
        });
        Watchdog { cancel, thread }
    }

    /// Stops watching, once the process has exited; returns whether the watchdog killed it.
    pub fn disarm(self) -> bool {
        drop(self.cancel);
        self.thread.join().unwrap()
    }
}

/// Reads a whole text file.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A client frame with this first byte, masked with `key` (RFC 6455 section 5.3).
pub fn masked(first: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A plain WebSocket client of the binary under test.
pub type Plain = async_tungstenite::WebSocketStream<smol::net::TcpStream>;

/// Connects a plain WebSocket client to `server` (its opening handshake done).
pub async fn connect(server: &Wssd) -> Plain {
    let tcp = smol::net::TcpStream::connect(server.addr()).await.unwrap();
    async_tungstenite::client_async(server.url.as_str(), tcp)
        .await
        .unwrap()
        .0
}

/// Sends `text` and checks that it comes back (the binary echoes).
pub async fn echo(
    ws: &mut async_tungstenite::WebSocketStream<impl AsyncRead + AsyncWrite + Unpin>,
    text: &str,
) {
    use async_tungstenite::tungstenite::Message;
    use futures_util::StreamExt;
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
}

/// Reads `count` messages that are `expected`, skipping pings and pongs; anything else
/// (a close, an error, another message) fails the test. Returns `count`.
pub async fn read_messages<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut async_tungstenite::WebSocketStream<S>,
    count: usize,
    expected: impl Fn(&async_tungstenite::tungstenite::Message) -> bool,
) -> usize {
    use futures_util::StreamExt;
    let mut got = 0;
    while got < count {
        match ws.next().await {
            Some(Ok(
                async_tungstenite::tungstenite::Message::Ping(_)
                | async_tungstenite::tungstenite::Message::Pong(_),
            )) => {}
            Some(Ok(msg)) if expected(&msg) => got += 1,
            other => panic!("after {got} messages: {other:?}"),
        }
    }
    got
}
