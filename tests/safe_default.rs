//! Safe by default: an embedder who writes the README's lines, or copies an example, gets
//! the handshake timeout without a timer of their own, on smol and on tokio.

use wssd_testkit as common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream as StdTcp;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wssd::{Connection, Handler, Limits};

struct ReplyOk;

impl Handler for ReplyOk {
    fn on_message(&self, conn: &Connection, _: wssd::Data) {
        let _ = conn.try_send(wssd::Data::text("ok"));
    }
}

/// Connects, says nothing, and waits up to 30 s for the server to close. Returns whether it did.
fn silent_client_is_closed(addr: std::net::SocketAddr) -> bool {
    let mut tcp = StdTcp::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false, // an answer is not a close
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// The README's lines, as written there, on smol with a 200 ms handshake timeout.
#[test]
fn the_readme_lines_close_a_silent_connection_at_the_handshake_timeout() {
    let readme = include_str!("../README.md");
    let lines = [
        "let server = Server::new(acceptor, Arc::new(ReplyOk));",
        "smol::spawn(server.connection(stream, peer)).detach();",
    ];
    for line in lines {
        assert!(readme.contains(line), "README.md no longer says {line:?}");
    }
    let mut limits = Limits::default();
    limits.handshake_timeout = Duration::from_millis(200);
    let acceptor = wssd::Acceptor::new(wssd::Config::default().limits(limits));
    let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let before = wssd::stats::snapshot().handshakes_failed;
    let server = std::thread::spawn(move || {
        smol::block_on(async {
            // The README's lines (the spawned task awaited here):
            let server = wssd::Server::new(acceptor, std::sync::Arc::new(ReplyOk));
            let (stream, peer) = listener.accept().await.unwrap();
            server.connection(stream, peer).await;
        })
    });
    assert!(silent_client_is_closed(addr));
    server.join().unwrap();
    assert!(
        wssd::stats::snapshot().handshakes_failed > before,
        "counted as failed"
    );
}

/// The same under tokio, through `tokio_util::compat`, with nothing but accept and serve.
#[test]
fn under_tokio_a_silent_connection_is_closed_at_the_handshake_timeout() {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let mut limits = Limits::default();
    limits.handshake_timeout = Duration::from_millis(200);
    let acceptor = wssd::Acceptor::new(wssd::Config::default().limits(limits));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rt.spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        match acceptor.accept(stream.compat(), peer).await {
            Ok(accepted) => {
                accepted.serve(&ReplyOk).await;
                None
            }
            Err(e) => Some(e),
        }
    });
    assert!(silent_client_is_closed(addr));
    let err = rt.block_on(server).unwrap();
    assert!(
        matches!(err, Some(wssd::AcceptError::Timeout { .. })),
        "{err:?}"
    );
}

/// An example binary, built by `cargo test` next to this test's own binary.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `examples/NAME.rs` on an ephemeral port with its CA in a temporary directory,
/// and returns it with the address it printed.
fn start_example(name: &str, dir: &std::path::Path) -> (Example, std::net::SocketAddr) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    let mut child = Command::new(&bin)
        .args(["127.0.0.1:0", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo test builds the examples)", bin.display()));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{name} printed {line:?}"));
    (
        Example(child),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    )
}

/// `examples/tokio_echo.rs` and `examples/smol_echo.rs`, unchanged: a silent connection is
/// closed at the default handshake timeout (10 s), both examples in parallel.
#[test]
fn the_tokio_and_smol_examples_close_a_silent_connection() {
    let checks: Vec<_> = ["tokio_echo", "smol_echo"]
        .into_iter()
        .map(|name| {
            std::thread::spawn(move || {
                let dir = common::temp_dir(name);
                let (example, addr) = start_example(name, &dir);
                let closed = silent_client_is_closed(addr);
                drop(example);
                (name, closed)
            })
        })
        .collect();
    for check in checks {
        let (name, closed) = check.join().unwrap();
        assert!(closed, "{name} kept a silent connection open past 30 s");
    }
}
