//! The handshake load: every dialer on one thread, one epoll (mio, edge-triggered), rustls'
//! unbuffered client driven here. Each dialer connects, runs the TLS handshake (wss), sends
//! the upgrade request, checks the `101`, sends a close frame and closes the socket, then
//! starts over. No executor, no wakers, no re-arming of the socket per wait (async-io
//! registers in one-shot mode): this tool must spend less CPU per handshake than the
//! servers it measures, and a TLS client's handshake costs about what a server's does.
//!
//! Like a browser's, and like the echo load's, a dialer offers session resumption (rustls'
//! default ticket store in the shared `ClientConfig`): after the first handshake, each one
//! is a TLS 1.3 PSK handshake with a key exchange (RFC 8446 section 2.2).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use futures_rustls::rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeTlsData, UnbufferedStatus,
};
use futures_rustls::rustls::{ClientConfig, pki_types::ServerName};
use mio::{Events, Interest, Poll, Token};

use crate::find;

/// One dialer's connection in progress.
struct Dialer {
    sock: mio::net::TcpStream,
    /// Whether the TCP connection is established (its first writable event).
    connected: bool,
    tls: Option<UnbufferedClientConnection>,
    /// Ciphertext read and not yet processed (wss), or the response so far (ws).
    incoming: Vec<u8>,
    /// The response's plaintext so far (wss).
    head: Vec<u8>,
    /// Bytes to write that the socket has not taken yet.
    outgoing: Vec<u8>,
    requested: bool,
    upgraded: bool,
}

/// What a step of a dialer came to.
enum Step {
    /// Waiting for the socket.
    Blocked,
    /// Upgraded, close frame sent: the dialer starts over.
    Done,
}

/// Runs `concurrency` dialers against `addr` for `window`, reading CPU time (this process's,
/// and the server's with `pid`) over it; returns the handshakes completed and the CPU used.
pub fn run(
    addr: SocketAddr,
    host: &str,
    path: &str,
    tls: Option<&Arc<ClientConfig>>,
    concurrency: usize,
    window: Duration,
    pid: Option<u32>,
) -> (u64, crate::CpuUse) {
    let request = crate::upgrade_request(path, host);
    let close = crate::masked_frame(0x8, &1000u16.to_be_bytes());
    let name = ServerName::try_from(host.to_string()).expect("a server name");
    let mut poll = Poll::new().unwrap();
    let start = |poll: &Poll, token: usize| {
        let mut sock = mio::net::TcpStream::connect(addr).expect("connect");
        poll.registry()
            .register(
                &mut sock,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        Dialer {
            sock,
            connected: false,
            tls: tls.map(|config| {
                UnbufferedClientConnection::new(config.clone(), name.clone()).unwrap()
            }),
            incoming: Vec::new(),
            head: Vec::new(),
            outgoing: Vec::new(),
            requested: false,
            upgraded: false,
        }
    };
    let mut dialers: Vec<Dialer> = (0..concurrency).map(|i| start(&poll, i)).collect();
    let mut events = Events::with_capacity(1024);
    let cpu = crate::Cpu::start(pid);
    let end = Instant::now() + window;
    let mut done = 0;
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for event in &events {
            // One event per socket per batch: a dialer replaced here gets none of the old
            // socket's later in this batch.
            let i = event.token().0;
            if let Step::Done = dialers[i].step(request.as_bytes(), &close) {
                done += 1;
                dialers[i] = start(&poll, i);
            }
        }
    }
    (done, cpu.stop(done))
}

impl Dialer {
    /// Takes the dialer as far as the socket lets it.
    fn step(&mut self, request: &[u8], close: &[u8]) -> Step {
        if !self.connected {
            if let Some(e) = self.sock.take_error().unwrap() {
                panic!("connect: {e}");
            }
            match self.sock.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Blocked,
                Err(e) => panic!("connect: {e}"),
            }
            self.sock.set_nodelay(true).unwrap();
        }
        if !flush(&mut self.sock, &mut self.outgoing) {
            return Step::Blocked;
        }
        if self.tls.is_some() {
            self.step_tls(request, close)
        } else {
            self.step_plain(request, close)
        }
    }

    fn step_plain(&mut self, request: &[u8], close: &[u8]) -> Step {
        if !self.requested {
            self.requested = true;
            self.outgoing.extend_from_slice(request);
            flush(&mut self.sock, &mut self.outgoing);
        }
        loop {
            if let Some(i) = find(&self.incoming, b"\r\n\r\n") {
                crate::check_upgrade(&self.incoming[..i + 4]);
                self.outgoing.extend_from_slice(close);
                flush(&mut self.sock, &mut self.outgoing);
                return Step::Done;
            }
            if !read(&mut self.sock, &mut self.incoming) {
                return Step::Blocked;
            }
        }
    }

    fn step_tls(&mut self, request: &[u8], close: &[u8]) -> Step {
        let Dialer {
            sock,
            tls,
            incoming,
            head,
            outgoing,
            requested,
            upgraded,
            ..
        } = self;
        let conn = tls.as_mut().expect("over TLS");
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
            let mut wait = false;
            let mut finished = false;
            match state.expect("TLS") {
                ConnectionState::EncodeTlsData(data) => encode(data, outgoing),
                ConnectionState::TransmitTlsData(data) => {
                    // What the socket does not take now goes at its next writable event,
                    // before anything else.
                    flush(sock, outgoing);
                    data.done();
                }
                ConnectionState::BlockedHandshake => wait = true,
                ConnectionState::ReadTraffic(mut data) => {
                    while let Some(record) = data.next_record() {
                        let AppDataRecord {
                            discard: more,
                            payload,
                        } = record.expect("a record");
                        discard += more;
                        head.extend_from_slice(payload);
                    }
                    if let Some(i) = find(head, b"\r\n\r\n") {
                        crate::check_upgrade(&head[..i + 4]);
                        *upgraded = true;
                    }
                }
                ConnectionState::WriteTraffic(mut data) => {
                    let message = match (*requested, *upgraded) {
                        (false, _) => Some(request),
                        (true, true) => Some(close),
                        (true, false) => None,
                    };
                    match message {
                        Some(message) => {
                            let at = outgoing.len();
                            outgoing.resize(at + message.len() + 64, 0);
                            let n = data
                                .encrypt(message, &mut outgoing[at..])
                                .expect("room for one record");
                            outgoing.truncate(at + n);
                            flush(sock, outgoing);
                            finished = *requested;
                            *requested = true;
                        }
                        None => wait = true,
                    }
                }
                other => panic!("unexpected TLS state: {other:?}"),
            }
            incoming.drain(..discard);
            if finished {
                return Step::Done;
            }
            if wait && !read(sock, incoming) {
                return Step::Blocked;
            }
        }
    }
}

/// Writes what waits in `outgoing`; whether all of it went.
fn flush(sock: &mut mio::net::TcpStream, outgoing: &mut Vec<u8>) -> bool {
    while !outgoing.is_empty() {
        match sock.write(outgoing) {
            Ok(n) => {
                outgoing.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => panic!("write: {e}"),
        }
    }
    true
}

/// Appends a handshake message's record to `outgoing`.
pub fn encode(mut data: EncodeTlsData<'_, ClientConnectionData>, outgoing: &mut Vec<u8>) {
    let at = outgoing.len();
    outgoing.resize(at + 16 * 1024, 0);
    let n = data
        .encode(&mut outgoing[at..])
        .expect("a handshake message in 16 KiB");
    outgoing.truncate(at + n);
}

/// Reads what the socket has into `into`; whether anything came (`false`: it would block,
/// which a blocking socket never does).
pub fn read(sock: &mut impl Read, into: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match sock.read(&mut chunk) {
        Ok(0) => panic!("the server closed the connection"),
        Ok(n) => {
            into.extend_from_slice(&chunk[..n]);
            true
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("read: {e}"),
    }
}
