//! The echo load: every connection on one thread, one epoll (mio, edge-triggered), rustls
//! driven by hand, frames pre-masked once: per round trip a connection makes one write and
//! one read, with no executor, no wakers and no WebSocket library in the way.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::rustls::{ClientConfig, ClientConnection, pki_types::ServerName};
use mio::{Events, Interest, Poll, Token};

use crate::{Input, find};

/// One connection, set up (TCP, TLS, opening handshake) and then driven by [`run`].
pub struct Conn {
    sock: mio::net::TcpStream,
    tls: Option<ClientConnection>,
    /// Plaintext read and not yet parsed.
    input: Input,
    /// Encrypted or plain bytes not yet taken by the socket (only when it was full).
    out: Vec<u8>,
    /// Echoes still awaited in this round, and the bytes of the current one seen so far.
    awaited: usize,
    got: usize,
    sent: Instant,
}

/// Opens one connection, blocking: TCP, TLS when `tls` is set, the upgrade request, and the `101`.
pub fn connect(addr: &str, host: &str, path: &str, tls: Option<&Arc<ClientConfig>>) -> Conn {
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_nodelay(true).unwrap();
    let mut tls = tls.map(|config| {
        let name = ServerName::try_from(host.to_string()).unwrap();
        let mut tls = ClientConnection::new(config.clone(), name).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut sock).expect("TLS handshake");
        }
        // A round (depth x size) may exceed rustls' default 64 KiB of buffered records:
        // `queue` takes any round whole and keeps what the socket refuses in `out`.
        tls.set_buffer_limit(None);
        tls
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    {
        let mut stream: Box<dyn ReadWrite> = match &mut tls {
            Some(tls) => Box::new(futures_rustls::rustls::Stream::new(tls, &mut sock)),
            None => Box::new(&mut sock),
        };
        stream.write_all(request.as_bytes()).expect("write");
        stream.flush().expect("flush");
        while find(&head, b"\r\n\r\n").is_none() {
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "the server closed the connection during the upgrade");
            head.extend_from_slice(&chunk[..n]);
        }
    }
    let head_end = find(&head, b"\r\n\r\n").unwrap() + 4;
    crate::check_upgrade(&head[..head_end]);
    sock.set_nonblocking(true).unwrap();
    Conn {
        sock: mio::net::TcpStream::from_std(sock),
        tls,
        input: Input::new(64 * 1024, &head[head_end..]),
        out: Vec::new(),
        awaited: 0,
        got: 0,
        sent: Instant::now(),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// What [`run`] measured in its window.
pub struct Measured {
    pub messages: u64,
    pub rtts: Vec<u32>,
    pub cpu: crate::CpuUse,
}

/// Runs the echo load on `conns` for `warmup` then `window`, reading CPU time (this
/// process's, and the server's with `pid`) over the window. Each connection writes `frames`
/// (`depth` messages) at once and waits for all of their echoes, checked against `payload`.
pub fn run(
    mut conns: Vec<Conn>,
    (frames, payload, depth): (&[u8], &[u8], usize),
    warmup: Duration,
    window: Duration,
    pid: Option<u32>,
) -> Measured {
    let mut poll = Poll::new().unwrap();
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(
                &mut c.sock,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
    }
    let mut events = Events::with_capacity(1024);
    let started = Instant::now();
    let (measure_from, measure_to) = (started + warmup, started + warmup + window);
    let mut cpu = None;
    let (mut messages, mut rtts) = (0, Vec::new());
    for c in &mut conns {
        c.send_round(frames, depth);
        // What was read with the 101 may hold no frames yet; edge-triggered reads start
        // with the readiness that registration reports.
    }
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        let now = Instant::now();
        if now >= measure_to {
            break;
        }
        let measuring = now >= measure_from;
        if measuring && cpu.is_none() {
            cpu = Some(crate::Cpu::start(pid));
        }
        for event in &events {
            let c = &mut conns[event.token().0];
            if event.is_writable() {
                c.write_out();
            }
            if event.is_readable() {
                c.read_in();
                while c.awaited > 0 && c.input.take_echo(payload, &mut c.got) {
                    c.awaited -= 1;
                    if c.awaited == 0 {
                        if measuring {
                            messages += depth as u64;
                            rtts.push(c.sent.elapsed().as_micros() as u32);
                        }
                        c.send_round(frames, depth);
                    }
                }
            }
        }
    }
    let cpu = cpu.expect("a window after the warm-up").stop(messages);
    for c in &mut conns {
        c.out.clear();
        c.queue(&crate::masked_frame(0x8, &1000u16.to_be_bytes()));
    }
    Measured {
        messages,
        rtts,
        cpu,
    }
}

impl Conn {
    fn send_round(&mut self, frames: &[u8], depth: usize) {
        self.sent = Instant::now();
        self.awaited = depth;
        self.queue(frames);
    }

    /// Encrypts (for wss) and writes `bytes`, keeping what the socket does not take.
    fn queue(&mut self, bytes: &[u8]) {
        match &mut self.tls {
            Some(tls) => {
                tls.writer().write_all(bytes).unwrap();
                // The records go to `out` only if the socket refuses them.
                while tls.wants_write() && self.out.is_empty() {
                    match tls.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            tls.write_tls(&mut self.out).unwrap();
                        }
                        Err(e) => panic!("write: {e}"),
                    }
                }
                if !self.out.is_empty() {
                    while tls.wants_write() {
                        tls.write_tls(&mut self.out).unwrap();
                    }
                }
            }
            None if self.out.is_empty() => match self.sock.write(bytes) {
                Ok(n) => self.out.extend_from_slice(&bytes[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.out.extend_from_slice(bytes)
                }
                Err(e) => panic!("write: {e}"),
            },
            None => self.out.extend_from_slice(bytes),
        }
        self.write_out();
    }

    fn write_out(&mut self) {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("write: {e}"),
            }
        }
    }

    /// Reads everything the socket has. Edge-triggered, but a read that leaves room in its
    /// buffer has emptied the socket's receive queue (TCP hands over all it holds, up to the
    /// room): what comes after it raises a new edge, so no read that would block follows it.
    fn read_in(&mut self) {
        let input = &mut self.input;
        loop {
            input.make_room();
            let mut sock = ShortRead {
                sock: &mut self.sock,
                short: false,
            };
            let read = match &mut self.tls {
                Some(tls) => tls.read_tls(&mut sock),
                None => sock.read(input.free()),
            };
            let short = sock.short;
            match read {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => match &mut self.tls {
                    None => input.end += n,
                    Some(tls) => {
                        tls.process_new_packets().expect("TLS");
                        loop {
                            input.make_room();
                            match tls.reader().read(input.free()) {
                                Ok(0) => panic!("the server closed TLS"),
                                Ok(n) => input.end += n,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => panic!("read: {e}"),
                            }
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
            if short {
                return;
            }
        }
    }
}

/// The socket, noting whether its last read returned less than the room it was given.
struct ShortRead<'a> {
    sock: &'a mut mio::net::TcpStream,
    short: bool,
}

impl Read for ShortRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}
