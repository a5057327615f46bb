//! The echo load: every connection on one thread, one epoll (mio, edge-triggered), frames
//! pre-masked once: per round trip a connection makes one write and one read, with no
//! executor, no wakers and no WebSocket library in the way. Over TLS, rustls runs the
//! handshake and hands over its keys; records are then sealed and opened in place here
//! (TLS 1.3, RFC 8446 section 5), with no copy or allocation of rustls' own per record.
//!
//! Plaintext is never copied after it is opened: each record's plaintext is shifted down onto
//! the end of what came before it in the same buffer as it is decrypted (ring's `open_within`).
//! Records are sealed in one buffer for all connections, which stays in the cache.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::rustls::client::UnbufferedClientConnection;
use futures_rustls::rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use futures_rustls::rustls::{
    ClientConfig, ConnectionTrafficSecrets, ProtocolVersion, pki_types::ServerName,
};
use mio::{Events, Interest, Poll, Token};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::{Input, find};

/// One connection, set up (TCP, TLS, opening handshake) and then driven by [`run`].
pub struct Conn {
    sock: mio::net::TcpStream,
    tls: Option<Records>,
    /// Plaintext read and not yet parsed: `input.start..input.end`. Over TLS, ciphertext
    /// read and not yet opened (the start of a record) is in the same buffer behind it,
    /// `cipher_start..cipher_end`.
    input: Input,
    cipher_start: usize,
    cipher_end: usize,
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
    let (tls, leftover) = match tls {
        Some(config) => {
            let (records, leftover) = handshake(config, host, &mut sock);
            (Some(records), leftover)
        }
        None => (None, Vec::new()),
    };
    let request = crate::upgrade_request(path, host);
    let mut conn = Conn {
        sock: mio::net::TcpStream::from_std(sock.try_clone().unwrap()),
        tls,
        input: Input::new(64 * 1024, &leftover),
        cipher_start: 0,
        cipher_end: leftover.len(),
        out: Vec::new(),
        awaited: 0,
        got: 0,
        sent: Instant::now(),
    };
    conn.input.end = 0; // `leftover` is ciphertext
    // The upgrade, blocking: the socket is still in blocking mode.
    conn.queue(request.as_bytes());
    assert!(conn.out.is_empty(), "the request was written whole");
    conn.open_records(); // what came behind the TLS handshake
    while find(conn.input.unparsed(), b"\r\n\r\n").is_none() {
        conn.read_in();
    }
    let head_end = find(conn.input.unparsed(), b"\r\n\r\n").unwrap() + 4;
    crate::check_upgrade(&conn.input.unparsed()[..head_end]);
    conn.input.start += head_end;
    sock.set_nonblocking(true).unwrap();
    conn
}

/// Runs the TLS handshake on `sock` (blocking) with rustls' unbuffered client and takes its
/// keys; returns them and the ciphertext read past the handshake.
fn handshake(config: &Arc<ClientConfig>, host: &str, sock: &mut TcpStream) -> (Records, Vec<u8>) {
    let name = ServerName::try_from(host.to_string()).unwrap();
    let mut conn = UnbufferedClientConnection::new(config.clone(), name).unwrap();
    let (mut incoming, mut outgoing) = (Vec::new(), Vec::new());
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut incoming);
        let done = match state.expect("TLS handshake") {
            ConnectionState::EncodeTlsData(data) => {
                crate::dial::encode(data, &mut outgoing);
                false
            }
            ConnectionState::TransmitTlsData(data) => {
                sock.write_all(&outgoing).expect("write");
                outgoing.clear();
                data.done();
                false
            }
            ConnectionState::BlockedHandshake => {
                crate::dial::read(sock, &mut incoming);
                false
            }
            ConnectionState::WriteTraffic(_) => true,
            other => panic!("unexpected TLS state in the handshake: {other:?}"),
        };
        incoming.drain(..discard);
        if done {
            break;
        }
    }
    assert_eq!(
        conn.protocol_version(),
        Some(ProtocolVersion::TLSv1_3),
        "the lean load speaks TLS 1.3"
    );
    let (secrets, _) = conn
        .dangerous_into_kernel_connection()
        .expect("rustls hands over the keys");
    let records = Records {
        tx: Keys::new(secrets.tx),
        rx: Keys::new(secrets.rx),
    };
    (records, incoming)
}

/// A TLS 1.3 connection's record protection: key, IV and sequence number each way.
struct Records {
    tx: Keys,
    rx: Keys,
}

struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Keys {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => panic!("a cipher suite the lean load does not speak"),
        };
        Keys {
            key: LessSafeKey::new(UnboundKey::new(algorithm, key.as_ref()).unwrap()),
            iv: iv.as_ref().try_into().unwrap(),
            seq,
        }
    }

    /// The next record's nonce (the IV XOR the sequence number), and the step to the next.
    fn nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }
}

impl Records {
    /// Appends `plain` to `out` as application-data records.
    fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        for chunk in plain.chunks(16_384) {
            let start = out.len();
            let len = chunk.len() + 1 + 16; // content type, tag
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            out.extend_from_slice(&header);
            out.extend_from_slice(chunk);
            out.push(23);
            let nonce = self.tx.nonce();
            let tag = self
                .tx
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + 5..])
                .unwrap();
            out.extend_from_slice(tag.as_ref());
        }
    }

    /// Opens the record at `in_out[from..]`, its header first, writing its plaintext at
    /// the start of `in_out`: the length of its application data there, or `None` for a
    /// handshake message (a session ticket).
    fn open(&mut self, in_out: &mut [u8], from: usize) -> Option<usize> {
        let header: [u8; 5] = in_out[from..from + 5].try_into().unwrap();
        let nonce = self.rx.nonce();
        let plain = self
            .rx
            .key
            .open_within(nonce, Aad::from(header), in_out, from + 5..)
            .expect("a record that authenticates");
        let end = plain.iter().rposition(|&b| b != 0).expect("a content type");
        match plain[end] {
            23 => Some(end),
            22 => None,
            21 => panic!("the server sent an alert: {:?}", &plain[..end]),
            other => panic!("a record of content type {other}"),
        }
    }
}

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

    /// Seals (for wss) and writes `bytes`, keeping what the socket does not take.
    fn queue(&mut self, bytes: &[u8]) {
        thread_local! {
            static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        if self.tls.is_none() {
            return self.write(bytes);
        }
        SEALED.with_borrow_mut(|sealed| {
            // The records start where the copy of `bytes` into them (at 5 bytes in) keeps
            // their address modulo 64: a `rep movsb` whose destination is a few bytes past
            // its source modulo 4096 runs some 25 times slower on AMD's cores.
            sealed.clear();
            sealed.reserve(64 + bytes.len() + (bytes.len() / 16_384 + 1) * (5 + 1 + 16));
            let base = sealed.as_ptr() as usize + 5;
            let pad = (bytes.as_ptr() as usize).wrapping_sub(base) % 64;
            sealed.resize(pad, 0);
            let tls = self.tls.as_mut().expect("over TLS");
            tls.seal(bytes, sealed);
            self.write(&sealed[pad..]);
        })
    }

    /// Writes `bytes`, keeping what the socket does not take.
    fn write(&mut self, bytes: &[u8]) {
        match () {
            () if self.out.is_empty() => match self.sock.write(bytes) {
                Ok(n) => self.out.extend_from_slice(&bytes[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.out.extend_from_slice(bytes)
                }
                Err(e) => panic!("write: {e}"),
            },
            () => self.out.extend_from_slice(bytes),
        }
        self.write_out();
    }

    /// Opens the whole records of the ciphertext, their plaintext joining `input`'s.
    fn open_records(&mut self) {
        let Some(tls) = &mut self.tls else { return };
        let (input, start) = (&mut self.input, &mut self.cipher_start);
        while let [_, _, _, hi, lo, ..] = input.buf[*start..self.cipher_end] {
            let len = 5 + usize::from(u16::from_be_bytes([hi, lo]));
            if self.cipher_end - *start < len {
                break;
            }
            let in_out = &mut input.buf[input.end..*start + len];
            if let Some(n) = tls.open(in_out, *start - input.end) {
                input.end += n;
            }
            *start += len;
        }
    }

    /// Makes room behind the ciphertext when the buffer is full: moves what is unparsed and
    /// unopened to the front, and grows the buffer if that frees nothing.
    fn make_room_tls(&mut self) {
        let input = &mut self.input;
        if input.start == input.end && self.cipher_start == self.cipher_end {
            (input.start, input.end, self.cipher_start, self.cipher_end) = (0, 0, 0, 0);
        }
        if self.cipher_end < input.buf.len() {
            return;
        }
        if input.start > 0 || self.cipher_start > input.end {
            input.buf.copy_within(input.start..input.end, 0);
            input.end -= input.start;
            input.start = 0;
            input
                .buf
                .copy_within(self.cipher_start..self.cipher_end, input.end);
            self.cipher_end -= self.cipher_start - input.end;
            self.cipher_start = input.end;
        }
        if self.cipher_end == input.buf.len() {
            input.buf.resize(input.buf.len() * 2, 0);
        }
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
        loop {
            let tls = self.tls.is_some();
            let free = if tls {
                self.make_room_tls();
                &mut self.input.buf[self.cipher_end..]
            } else {
                self.input.make_room();
                self.input.free()
            };
            let room = free.len();
            match self.sock.read(free) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => {
                    if tls {
                        self.cipher_end += n;
                        self.open_records();
                    } else {
                        self.input.end += n;
                    }
                    if n < room {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}
