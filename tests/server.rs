//! The server's policy (`wssd::Server`) is the same under every runtime: each test runs once
//! on `wssd::smol::Server` and once on `wssd::tokio::serve`, over loopback, with blocking
//! clients that give up after 10 s.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use wssd::tungstenite::client::IntoClientRequest;
use wssd::tungstenite::{self, WebSocket};
use wssd::{Acceptor, Admission, AdmitFuture, CloseCode, Config, Connection, ConnectionId};
use wssd::{Handler, Message, Request, Shutdown};

/// Echoes; `/members` is for clients with `?token=ok` only (403 otherwise).
struct Members;

impl Handler for Members {
    fn admit(&self, _id: ConnectionId, request: &Request) -> Option<AdmitFuture> {
        if request.path != "/members" {
            return None;
        }
        let ok = request.query.as_deref() == Some("token=ok");
        Some(Box::pin(async move {
            if ok {
                Admission::Accept
            } else {
                Admission::Refuse {
                    status: 403,
                    reason: "members only".into(),
                }
            }
        }))
    }
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        let _ = conn.try_send(msg);
    }
}

#[derive(Debug, Clone, Copy)]
enum Runtime {
    Smol,
    Tokio,
}

/// A server on a thread of its own, until [`Running::stop`].
struct Running {
    addr: SocketAddr,
    shutdown: Shutdown,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl Running {
    fn start(runtime: Runtime, config: Config, per_address: usize) -> Running {
        let shutdown = Shutdown::default();
        let acceptor = Acceptor::new(config);
        let (addr, thread) = match runtime {
            Runtime::Smol => {
                let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
                let server = wssd::smol::Server::new(acceptor, Arc::new(Members))
                    .threads(1)
                    .max_connections_per_address(per_address)
                    .shutdown(shutdown.clone());
                let addr = listener.local_addr().unwrap();
                (addr, std::thread::spawn(move || server.run(listener)))
            }
            Runtime::Tokio => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_io()
                    .build()
                    .unwrap();
                let listener = rt
                    .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                    .unwrap();
                let server = wssd::Server::new(acceptor, Arc::new(Members))
                    .max_connections_per_address(per_address)
                    .with_shutdown(shutdown.clone());
                let addr = listener.local_addr().unwrap();
                let serve = wssd::tokio::serve(server, listener);
                (addr, std::thread::spawn(move || rt.block_on(serve)))
            }
        };
        Running {
            addr,
            shutdown,
            thread,
        }
    }

    /// Triggers the shutdown and waits for the server to return (drop the clients first:
    /// a client that does not answer the 1001 is waited for until the close timeout).
    fn stop(self) {
        self.shutdown.trigger();
        self.thread.join().unwrap().unwrap();
    }
}

type Client = WebSocket<TcpStream>;

/// Opens a WebSocket to `path` from `from` (a loopback address) with `headers`; on a
/// refusal, its status and body.
fn open(
    addr: SocketAddr,
    from: IpAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<Client, (u16, String)> {
    let tcp = connect_from(from, addr);
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tungstenite::client(request, tcp) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        Err(e) => panic!("handshake from {from}: {e}"),
    }
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all loopback
/// on Linux), through tokio's socket, which binds before it connects.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        socket.connect(to).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

fn echo(client: &mut Client, text: &str) {
    client.send(Message::text(text)).unwrap();
    assert_eq!(client.read().unwrap(), Message::text(text));
}

const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const NEIGHBOUR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

fn handler_admission_refuses_with_its_status_and_reason(runtime: Runtime) {
    let before = wssd::stats::snapshot();
    let server = Running::start(runtime, Config::default(), 0);
    let refused = open(server.addr, HOME, "/members?token=no", &[]).err();
    assert_eq!(refused, Some((403, "members only\n".to_string())));
    let mut member = open(server.addr, HOME, "/members?token=ok", &[]).unwrap();
    echo(&mut member, "in");
    // Not asked about: admit answers None.
    let mut visitor = open(server.addr, HOME, "/", &[]).unwrap();
    echo(&mut visitor, "hello");
    let after = wssd::stats::snapshot();
    assert!(after.handshakes_refused > before.handshakes_refused);
    assert!(after.handshakes_ok >= before.handshakes_ok + 2);
    drop((member, visitor));
    server.stop();
}

fn one_address_gets_its_cap_and_no_more_and_others_still_get_in(runtime: Runtime) {
    let before = wssd::stats::snapshot();
    // No trusted proxy: loopback clients connect directly, counted by their own address.
    let config = Config::default().trusted_proxies([]);
    let server = Running::start(runtime, config, 2);
    let mut first = open(server.addr, HOME, "/", &[]).unwrap();
    let mut second = open(server.addr, HOME, "/", &[]).unwrap();
    let (status, body) = open(server.addr, HOME, "/", &[]).err().unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("Too many connections from your address (2 at most)"),
        "{body}"
    );
    // Another address is counted apart; the two open ones carry on.
    let mut neighbour = open(server.addr, NEIGHBOUR, "/", &[]).unwrap();
    echo(&mut neighbour, "n");
    echo(&mut first, "1");
    echo(&mut second, "2");
    assert!(wssd::stats::snapshot().refused_at_cap > before.refused_at_cap);
    drop((first, second, neighbour));
    server.stop();
}

fn behind_a_proxy_the_cap_counts_the_client_it_names(runtime: Runtime) {
    // Loopback is the trusted proxy (the default): X-Real-IP names the client.
    let server = Running::start(runtime, Config::default(), 2);
    let a = [("X-Real-IP", "203.0.113.5")];
    let mut first = open(server.addr, HOME, "/", &a).unwrap();
    let mut second = open(server.addr, HOME, "/", &a).unwrap();
    let (status, body) = open(server.addr, HOME, "/", &a).err().unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("from your address (2 at most)"), "{body}");
    // The proxy's own address is not the client's: another client behind it gets in.
    let mut other = open(server.addr, HOME, "/", &[("X-Real-IP", "203.0.113.6")]).unwrap();
    echo(&mut other, "o");
    echo(&mut first, "1");
    echo(&mut second, "2");
    drop((first, second, other));
    server.stop();
}

fn shutdown_closes_every_client_with_1001_and_the_server_returns(runtime: Runtime) {
    let server = Running::start(runtime, Config::default(), 0);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| open(server.addr, HOME, "/", &[]).unwrap())
        .collect();
    for client in &mut clients {
        echo(client, "before");
    }
    // Each client saw its 101, so each is registered: on_open runs before the 101.
    server.shutdown.trigger();
    for client in &mut clients {
        match client.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close frame with 1001, got {other:?}"),
        }
        // The client answers the close; the server then ends the connection.
        loop {
            match client.read() {
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    server.stop();
}

macro_rules! under_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod smol_server {
            $(#[test] fn $name() { super::$name(super::Runtime::Smol) })*
        }
        mod tokio_server {
            $(#[test] fn $name() { super::$name(super::Runtime::Tokio) })*
        }
    };
}

under_both_runtimes!(
    handler_admission_refuses_with_its_status_and_reason,
    one_address_gets_its_cap_and_no_more_and_others_still_get_in,
    behind_a_proxy_the_cap_counts_the_client_it_names,
    shutdown_closes_every_client_with_1001_and_the_server_returns,
);
