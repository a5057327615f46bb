//! TLS over `S`, server side, on rustls' unbuffered API (RFC 8446, RFC 5246).
//!
//! rustls' buffered connection keeps a record buffer of at least 4 KiB for the life of the
//! connection, empty or not. Here ciphertext is read into one buffer per thread and
//! records are processed where they land, as the frame codec does with frames
//! (`crate::frames`): a connection keeps bytes of its own only while a record is partly
//! received, plaintext is waiting for a reader with a smaller buffer, or ciphertext is
//! waiting for the socket. Outgoing records are sealed into a second buffer per thread and
//! written at once. The handshake ends with what answers the client's Finished written
//! (TLS 1.3's session tickets, TLS 1.2's Finished); records behind the Finished are left to
//! the reader.
//!
//! rustls protects the records. Where the configuration opts in (`enable_secret_extraction`,
//! [`Config::own_records`](crate::Config::own_records)), [`Records`] takes over from rustls
//! at the first moment rustls holds nothing of the peer's: records are then opened and sealed
//! in those buffers, with no copy of their own.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use futures_rustls::rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};
use futures_rustls::rustls::{self, AlertDescription, ServerConfig};

use crate::records::{Opened, Records};
use crate::request::{TlsInfo, tls_info};

/// The largest TLS record on the wire: a 5-byte header, 2^14 bytes of plaintext and at most
/// 2048 bytes of expansion (RFC 5246 section 6.2.3; TLS 1.3 allows less).
const MAX_RECORD: usize = 5 + 16_384 + 2_048;

/// The most a record adds to its plaintext: its header, TLS 1.3's content type, the AEAD tag, or
/// TLS 1.2's explicit nonce and tag (RFC 8446 section 5.2, RFC 5288 section 3), with room to spare.
const RECORD_OVERHEAD: usize = 64;

/// The most plaintext sealed per write: four full records.
const MAX_WRITE: usize = 4 * 16_384;

thread_local! {
    /// Where ciphertext lands first, shared by the connections served on this thread.
    static INCOMING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where records are sealed before they are written.
    static OUTGOING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where the slices of a vectored write are joined, to seal them as whole records.
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A TLS connection over `S` after [`accept`], server side.
#[repr(C)] // in this order: the fields each read and write touches first, rustls' state last
pub(crate) struct TlsStream<S> {
    io: S,
    /// Ciphertext received and not processed: the start of a record. Empty (no
    /// allocation) between records.
    incoming: Vec<u8>,
    /// Plaintext decrypted and not read yet: `plain[plain_pos..]`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Records sealed and not written yet: `outgoing[out_pos..]`.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// The peer's close_notify (or its end of stream) was read.
    read_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls holds no decrypted records that were not taken yet (known once a read has
    /// asked it): a read with no ciphertext need not ask it again.
    drained: bool,
    /// An error found behind plaintext already read, for the next read.
    failed: Option<io::Error>,
    /// Our record layer takes over from rustls at the first moment rustls holds nothing of
    /// the peer's ([`Records::serves`]: the opt-in, `enable_secret_extraction`).
    own_wanted: bool,
    /// The host name of the ClientHello's SNI extension (RFC 6066 section 3), until the
    /// handshake ends.
    sni: Option<String>,
    /// Who protects the records: keys, sequence numbers, what it has to send.
    conn: Engine,
}

/// Who protects a connection's records. rustls' connection, which most connections hold
/// only through their handshake, is on the heap; our record layer, which they hold for
/// their life, is in place (the stream itself is boxed once).
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// rustls: the handshake, and what follows where [`Records`] does not serve.
    Rustls(Box<UnbufferedServerConnection>),
    /// Our record layer, after the handshake.
    Own(Records),
    /// Neither: a fatal error (or a failed handover) ended the connection.
    Gone,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = match self.conn {
            Engine::Rustls(_) => "rustls",
            Engine::Own(_) => "own",
            Engine::Gone => "none",
        };
        f.debug_struct("TlsStream")
            .field("records", &engine)
            .finish_non_exhaustive()
    }
}

/// Runs the TLS handshake on `io` as a server under `config`, `prefix` being bytes already
/// read from `io` (the start of the ClientHello). Returns the connection and what it
/// negotiated.
///
/// Errors: rustls' errors as `io::ErrorKind::InvalidData` wrapping the [`rustls::Error`]
/// (the alert it calls for is sent first, as far as the socket takes it without waiting);
/// `UnexpectedEof` when the client leaves during the handshake; `io`'s own errors.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<ServerConfig>,
    io: S,
    prefix: Vec<u8>,
) -> io::Result<(TlsStream<S>, TlsInfo)> {
    let conn = UnbufferedServerConnection::new(config.clone()).map_err(tls_error)?;
    let mut tls = TlsStream {
        io,
        conn: Engine::Rustls(Box::new(conn)),
        incoming: prefix,
        plain: Vec::new(),
        plain_pos: 0,
        outgoing: Vec::new(),
        out_pos: 0,
        read_closed: false,
        close_queued: false,
        failed: None,
        drained: false,
        own_wanted: false,
        sni: None,
    };
    std::future::poll_fn(|cx| tls.poll_handshake(cx)).await?;
    tls.incoming.shrink_to_fit();
    let Engine::Rustls(conn) = &tls.conn else {
        return Err(unexpected_state());
    };
    let info = tls_info(conn, tls.sni.take().as_deref());
    // Our record layer takes over at the first moment rustls holds nothing of the peer's
    // (`take_over_if_idle`), not here: bytes behind the client's Finished (a KeyUpdate, the
    // start of a record) may be in rustls' hands now.
    tls.own_wanted = Records::serves(conn, &config);
    // What answers the client's Finished goes now, as rustls' own connections send it: TLS
    // 1.3's session tickets (RFC 8446 section 4.6.1), TLS 1.2's Finished. Holding the tickets
    // for our first write saved a write per handshake, but a client that waits for them
    // (tlsfuzzer's conversations) then waited for ever, and one with Nagle's algorithm on
    // held its request for our delayed ACK.
    std::future::poll_fn(|cx| tls.poll_send(cx)).await?;
    Ok((tls, info))
}

impl<S> TlsStream<S> {
    /// Moves the alert rustls queued for the error it just returned into `outgoing`. `data`
    /// is the ciphertext rustls has not let go of (what follows its last `discard`): rustls
    /// may hold ranges of it (a handshake message split over records), so it is handed back,
    /// never an empty buffer in its place.
    ///
    /// rustls is asked once: it hands out what it queued before it looks at `data` again,
    /// and a second look would read the record that failed a second time (and, for a record
    /// that does not decrypt, queue a second alert, which rustls asserts never happens). An
    /// error that queued no alert (a handshake message interleaved with another record
    /// type) gets none, as with rustls' own connections. A KeyUpdate answer rustls still held
    /// goes out ahead of the alert, and the alert is then not sent.
    fn queue_alert(&mut self, data: &mut [u8]) -> Result<(), rustls::Error> {
        let Engine::Rustls(conn) = &mut self.conn else {
            return Ok(());
        };
        match conn.process_tls_records(data).state? {
            ConnectionState::EncodeTlsData(mut data) => {
                encode(&mut self.outgoing, |out| data.encode(out))
            }
            _ => Ok(()),
        }
    }

    /// Queues the alert that `error` calls for, and returns `error` as an `io::Error`. `data`
    /// as for [`TlsStream::queue_alert`].
    fn fail(&mut self, error: rustls::Error, data: &mut [u8]) -> io::Error {
        match &mut self.conn {
            Engine::Rustls(_) => {
                let _ = self.queue_alert(data);
            }
            Engine::Own(records) => {
                if let Some(alert) = Records::alert_for(&error) {
                    let _ = records.seal_alert(&mut self.outgoing, alert);
                }
            }
            Engine::Gone => {}
        }
        // The alert was the last word: nothing more is asked of rustls (whose state after an
        // error is not to be driven further) or of our records.
        self.conn = Engine::Gone;
        tls_error(error)
    }

    /// Whether rustls is still in the handshake.
    fn handshaking(&self) -> bool {
        match &self.conn {
            Engine::Rustls(conn) => conn.is_handshaking(),
            _ => false,
        }
    }

    /// Hands the keys to our record layer ([`Records`]) if that was asked for and rustls
    /// holds nothing of the peer's: no ciphertext it has not let go of (so no part of a
    /// handshake message), no plaintext, nothing to send (a KeyUpdate's answer goes out with
    /// rustls' last write, which this follows).
    fn take_over_if_idle(&mut self) -> io::Result<()> {
        if !self.own_wanted || !self.incoming.is_empty() || self.read_closed || self.close_queued {
            return Ok(());
        }
        self.own_wanted = false;
        let Engine::Rustls(conn) = std::mem::replace(&mut self.conn, Engine::Gone) else {
            return Ok(());
        };
        self.conn = Engine::Own(take_over(*conn, &mut self.plain, &mut self.outgoing)?);
        self.drained = true; // rustls held nothing more
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Writes what is left of `outgoing`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.outgoing = Vec::new(); // sent: free it
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Tries to write what is left of `outgoing` without waiting for it (an alert before
    /// an error is returned).
    fn try_send(&mut self, cx: &mut Context<'_>) {
        let _ = self.poll_send(cx);
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.sni.is_none() {
                self.sni = client_hello_sni(&self.incoming);
            }
            let Engine::Rustls(conn) = &mut self.conn else {
                return Poll::Ready(Err(unexpected_state()));
            };
            let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(error) => {
                    self.incoming.drain(..discard);
                    let mut rest = std::mem::take(&mut self.incoming);
                    let error = self.fail(error, &mut rest);
                    self.try_send(cx);
                    return Poll::Ready(Err(error));
                }
            };
            let done = match state {
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(&mut self.outgoing, |out| data.encode(out)).map_err(tls_error)?;
                    false
                }
                ConnectionState::TransmitTlsData(data) => {
                    data.done(); // `outgoing` is written before the next read
                    // The handshake is over once what answers the client's Finished is
                    // queued (session tickets; TLS 1.2's Finished): records behind it are
                    // left to the reader, as a connection that had read no further would
                    // find them, so that what goes wrong with them comes after our flight.
                    !self.handshaking()
                }
                ConnectionState::BlockedHandshake => {
                    self.incoming.drain(..discard);
                    ready!(self.poll_send(cx))?; // the flight, in one write
                    let have = self.incoming.len();
                    let want = have + record_len(&self.incoming).max(4096);
                    self.incoming.resize(want, 0);
                    let read = Pin::new(&mut self.io).poll_read(cx, &mut self.incoming[have..]);
                    let n = match read {
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) => {
                            self.incoming.truncate(have);
                            return Poll::Ready(Err(e));
                        }
                        Poll::Pending => {
                            self.incoming.truncate(have);
                            return Poll::Pending;
                        }
                    };
                    self.incoming.truncate(have + n);
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tls handshake eof",
                        )));
                    }
                    continue;
                }
                // Finished: what follows (the request, app data that came early) is
                // read through `poll_read`.
                ConnectionState::WriteTraffic(_) | ConnectionState::ReadTraffic(_) => true,
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    if conn.is_handshaking() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tls handshake eof",
                        )));
                    }
                    // A client that closes right behind its Finished (an ACME validation).
                    self.read_closed = true;
                    true
                }
                _ => return Poll::Ready(Err(unexpected_state())),
            };
            self.incoming.drain(..discard);
            if done {
                return Poll::Ready(Ok(())); // what rustls queued last: `accept` sends or holds it
            }
        }
    }

    /// Processes the whole records of `data`, copying their plaintext into `buf[*filled..]`
    /// (what does not fit goes to `plain`). Returns how many bytes of `data` are done with.
    ///
    /// Errors: the TLS error, with where the ciphertext rustls has not let go of starts.
    fn decrypt(
        &mut self,
        data: &mut [u8],
        buf: &mut [u8],
        filled: &mut usize,
    ) -> Result<usize, (rustls::Error, usize)> {
        let conn = match &mut self.conn {
            Engine::Rustls(conn) => conn,
            Engine::Own(records) => {
                return open(
                    records,
                    data,
                    buf,
                    filled,
                    &mut self.plain,
                    &mut self.outgoing,
                    &mut self.read_closed,
                )
                .map_err(|e| (e, data.len()));
            }
            Engine::Gone => return Err((rustls::Error::General(GONE.into()), data.len())),
        };
        let mut used = 0;
        loop {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut data[used..]);
            let state = state.map_err(|e| (e, used + discard))?;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(|e| (e, used))?;
                        let n = record.payload.len().min(buf.len() - *filled);
                        buf[*filled..*filled + n].copy_from_slice(&record.payload[..n]);
                        *filled += n;
                        self.plain.extend_from_slice(&record.payload[n..]);
                    }
                    self.drained = true;
                    if used + discard == data.len() {
                        // All of `data` is done with. What rustls may have left to say
                        // (a KeyUpdate's answer, say) waits for the next call, the next
                        // read's or the next write's, which both handle it first.
                        return Ok(used + discard);
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(&mut self.outgoing, |out| data.encode(out))
                        .map_err(|e| (e, used + discard))?
                }
                ConnectionState::TransmitTlsData(data) => data.done(),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.read_closed = true;
                    return Ok(used + discard);
                }
                // Nothing more to decrypt until more ciphertext comes.
                ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake => {
                    self.drained = true;
                    return Ok(used + discard);
                }
                _ => return Err((rustls::Error::General(UNEXPECTED.into()), used + discard)),
            }
            used += discard;
        }
    }

    /// Seals `bufs` (up to [`MAX_WRITE`] bytes) and writes the records, keeping in
    /// `outgoing` what the socket does not take now. Returns the plaintext bytes taken.
    fn poll_seal(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        ready!(self.poll_send(cx))?;
        if self.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let single = bufs
            .iter()
            .find(|b| !b.is_empty())
            .filter(|b| b.len() >= total);
        OUTGOING.with_borrow_mut(|out| {
            out.clear();
            match (&mut self.conn, single) {
                (Engine::Own(records), _) => records.seal(out, bufs, total).map_err(tls_error)?,
                (Engine::Gone, _) => return Err(io::ErrorKind::BrokenPipe.into()),
                (Engine::Rustls(_), Some(buf)) => self.seal(&buf[..total], out)?,
                (Engine::Rustls(_), None) => JOINED.with_borrow_mut(|joined| {
                    joined.clear();
                    for buf in bufs {
                        let n = buf.len().min(total - joined.len());
                        joined.extend_from_slice(&buf[..n]);
                    }
                    self.seal(joined, out)
                })?,
            }
            // Write now; keep what the socket does not take (`outgoing` was empty).
            let written = match Pin::new(&mut self.io).poll_write(cx, out) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => 0,
            };
            self.outgoing.extend_from_slice(&out[written..]);
            Ok(())
        })?;
        self.take_over_if_idle()?;
        Poll::Ready(Ok(total))
    }

    /// Seals `plain` into records appended to `out`, behind what rustls has to send first.
    fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.with_traffic(out, |traffic, out| {
            // Room for every record's header and tag at once: no second try, no second fill.
            let room = plain.len() + (plain.len() / 16_384 + 1) * RECORD_OVERHEAD;
            encrypt(out, room, |buf| traffic.encrypt(plain, buf))
        })?
    }

    /// Runs `f` with rustls' writing state and `out`, after appending to `out` what rustls
    /// has to send first (a KeyUpdate, say).
    fn with_traffic<R>(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> R,
    ) -> io::Result<R> {
        loop {
            let Engine::Rustls(conn) = &mut self.conn else {
                return Err(unexpected_state());
            };
            let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(error) => {
                    self.incoming.drain(..discard);
                    let mut rest = std::mem::take(&mut self.incoming);
                    return Err(self.fail(error, &mut rest));
                }
            };
            match state {
                ConnectionState::WriteTraffic(mut traffic) => {
                    let r = f(&mut traffic, out);
                    self.incoming.drain(..discard);
                    return Ok(r);
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(out, |buf| data.encode(buf)).map_err(tls_error)?
                }
                ConnectionState::TransmitTlsData(data) => data.done(),
                ConnectionState::PeerClosed => self.read_closed = true,
                // Records that came behind the handshake, not read yet: kept for the reader.
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                _ => return Err(unexpected_state()),
            }
            self.incoming.drain(..discard);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.plain_pos < this.plain.len() {
            let n = buf.len().min(this.plain.len() - this.plain_pos);
            buf[..n].copy_from_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
            this.plain_pos += n;
            if this.plain_pos == this.plain.len() {
                this.plain = Vec::new(); // read: free it
                this.plain_pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Err(error));
        }
        if buf.is_empty() || this.read_closed {
            return Poll::Ready(Ok(0));
        }
        INCOMING.with_borrow_mut(|scratch| {
            let size = buf.len().max(this.incoming.len()) + MAX_RECORD;
            if scratch.len() < size {
                scratch.resize(size, 0);
            }
            let mut have = this.incoming.len();
            scratch[..have].copy_from_slice(&this.incoming);
            this.incoming = Vec::new();
            let mut filled = 0;
            let result = loop {
                // No ciphertext and no record left in rustls: straight to the socket.
                let step = if have == 0 && this.drained {
                    Ok(0)
                } else {
                    this.decrypt(&mut scratch[..have], buf, &mut filled)
                };
                match step {
                    Ok(used) => {
                        scratch.copy_within(used..have, 0);
                        have -= used;
                    }
                    Err((error, held)) => {
                        let error = this.fail(error, &mut scratch[held.min(have)..have]);
                        this.try_send(cx);
                        have = 0;
                        if filled == 0 {
                            break Poll::Ready(Err(error));
                        }
                        // The records before the bad one are read first, the error next.
                        this.failed = Some(error);
                        break Poll::Ready(Ok(()));
                    }
                }
                if filled > 0 || this.read_closed {
                    break Poll::Ready(Ok(()));
                }
                // Read up to the caller's buffer, or to the end of the record under way.
                let want = buf.len().max(record_len(&scratch[..have])).max(have + 5);
                if want > size {
                    break Poll::Ready(Err(tls_error(rustls::Error::General(
                        "TLS record over its largest size".into(),
                    ))));
                }
                match Pin::new(&mut this.io).poll_read(cx, &mut scratch[have..want]) {
                    Poll::Ready(Ok(0)) => {
                        break Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed connection without sending TLS close_notify",
                        )));
                    }
                    Poll::Ready(Ok(n)) => have += n,
                    Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                    Poll::Pending => break Poll::Pending,
                }
            };
            if have > 0 {
                this.incoming = scratch[..have].to_vec();
            }
            // What rustls answered with (a KeyUpdate, an alert) goes out as far as it can.
            if this.out_pos < this.outgoing.len() {
                this.try_send(cx);
            }
            result.map_ok(|()| filled)
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_seal(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_seal(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            ready!(this.poll_send(cx))?;
            let mut out = Vec::new();
            let queued = match &mut this.conn {
                Engine::Own(records) => records
                    .seal_alert(&mut out, AlertDescription::CloseNotify)
                    .map_err(tls_error),
                Engine::Rustls(_) => this
                    .with_traffic(&mut out, |traffic, out| {
                        encrypt(out, RECORD_OVERHEAD, |buf| traffic.queue_close_notify(buf))
                    })
                    .and_then(|queued| queued),
                // A fatal alert was the last word.
                Engine::Gone => Ok(()),
            };
            this.outgoing = out;
            this.close_queued = true;
            queued?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

/// Appends to `out` what `f` writes into the buffer it is given (`room` bytes at first), growing
/// that buffer to the size `f`'s error asks for (rustls' [`InsufficientSizeError`]).
fn append<E>(
    out: &mut Vec<u8>,
    mut room: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match required(&e) {
                Some(size) if size > room => room = size,
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

/// Hands `conn`'s keys to our record layer, after taking what rustls still holds: the
/// records it decrypted behind the client's Finished (to `plain`), the messages it has to
/// send (session tickets, to `outgoing`).
///
/// Errors: rustls' errors, as `InvalidData`.
fn take_over(
    mut conn: UnbufferedServerConnection,
    plain: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
) -> io::Result<Records> {
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut []);
        debug_assert_eq!(discard, 0);
        match state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    plain.extend_from_slice(record.payload);
                }
            }
            ConnectionState::EncodeTlsData(mut data) => {
                encode(outgoing, |out| data.encode(out)).map_err(tls_error)?
            }
            ConnectionState::TransmitTlsData(data) => data.done(),
            ConnectionState::WriteTraffic(_) => break,
            _ => return Err(unexpected_state()),
        }
    }
    Records::take_over(conn).map_err(tls_error)
}

/// Opens the whole records at the start of `data` with `records`, copying their plaintext
/// into `buf[*filled..]` (what does not fit goes to `plain`), up to the peer's close_notify
/// (`closed`); a warning they call for is sealed into `outgoing`. Returns how many bytes of
/// `data` are done with.
///
/// Errors: [`Records::open`]'s, and `PeerSentOversizedRecord` for a header that announces
/// more than a record holds.
fn open(
    records: &mut Records,
    data: &mut [u8],
    buf: &mut [u8],
    filled: &mut usize,
    plain: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
    closed: &mut bool,
) -> Result<usize, rustls::Error> {
    let mut used = 0;
    while !*closed && data.len() - used >= 5 {
        let len = record_len(&data[used..]);
        if len - 5 > records.max_body() {
            return Err(rustls::Error::PeerSentOversizedRecord);
        }
        let Some(record) = data.get_mut(used..used + len) else {
            break; // the rest of the record is still to come
        };
        match records.open(record)? {
            Opened::Data(range) => {
                let content = &record[range];
                let n = content.len().min(buf.len() - *filled);
                buf[*filled..*filled + n].copy_from_slice(&content[..n]);
                *filled += n;
                plain.extend_from_slice(&content[n..]);
            }
            Opened::Nothing => records.seal_warning_due(outgoing)?,
            Opened::Closed => *closed = true,
        }
        used += len;
    }
    Ok(used)
}

/// [`append`] for handshake messages and alerts.
fn encode(
    out: &mut Vec<u8>,
    f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    append(out, 1024, f, |e| match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    })
    .map_err(|e| rustls::Error::General(e.to_string()))
}

/// [`append`] for sealing application data and close_notify.
fn encrypt(
    out: &mut Vec<u8>,
    room: usize,
    f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    append(out, room, f, |e| match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    })
    .map_err(|e| io::Error::other(e.to_string()))
}

/// The length of the record `data` starts with, header included; 0 if its header is not
/// all there.
fn record_len(data: &[u8]) -> usize {
    match data {
        [_, _, _, hi, lo, ..] => 5 + usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    }
}

/// A rustls error as futures-rustls reports it: `InvalidData` wrapping the error.
fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// What a connection says once a fatal error (or a failed handover of its keys) ended it.
const GONE: &str = "the TLS connection has ended";

/// What rustls asks of us that a server under wssd's configuration never meets.
const UNEXPECTED: &str = "unexpected TLS state: TLS early data (0-RTT) is not served, leave ServerConfig::max_early_data_size at 0";

fn unexpected_state() -> io::Error {
    io::Error::other(UNEXPECTED)
}

/// The host name in the SNI extension (RFC 6066 section 3) of the ClientHello that `data`
/// starts with (a TLS record of type handshake), if that record holds the whole extension
/// list.
fn client_hello_sni(data: &[u8]) -> Option<String> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = data.split_at_checked(n)?;
        *data = rest;
        Some(head)
    }
    fn len(data: &mut &[u8], bytes: usize) -> Option<usize> {
        Some(
            take(data, bytes)?
                .iter()
                .fold(0, |n, b| n << 8 | usize::from(*b)),
        )
    }
    fn vector<'a>(data: &mut &'a [u8], bytes: usize) -> Option<&'a [u8]> {
        let n = len(data, bytes)?;
        take(data, n)
    }
    let mut d = data.get(..record_len(data))?;
    let header = take(&mut d, 5)?;
    if header[0] != 0x16 || take(&mut d, 1)? != [0x01] {
        return None; // not a handshake record starting a ClientHello
    }
    len(&mut d, 3)?;
    take(&mut d, 2 + 32)?; // legacy_version, random
    vector(&mut d, 1)?; // legacy_session_id
    vector(&mut d, 2)?; // cipher_suites
    vector(&mut d, 1)?; // legacy_compression_methods
    let mut extensions = vector(&mut d, 2)?;
    while !extensions.is_empty() {
        let kind = len(&mut extensions, 2)?;
        let mut body = vector(&mut extensions, 2)?;
        if kind != 0 {
            continue;
        }
        let mut names = vector(&mut body, 2)?;
        while !names.is_empty() {
            let name_type = take(&mut names, 1)?[0];
            let name = vector(&mut names, 2)?;
            if name_type == 0 {
                return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
    use futures_rustls::rustls::crypto::ring::{ALL_CIPHER_SUITES, default_provider};
    use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use futures_rustls::rustls::{CipherSuite, SupportedCipherSuite, sign};

    #[test]
    fn sni_is_read_from_a_client_hello_and_nothing_else() {
        let name = b"chat.example.com";
        let mut sni = vec![0, 0]; // extension type server_name
        let list_len = 1 + 2 + name.len();
        sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        sni.extend_from_slice(&(list_len as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let other = [0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]; // ec_point_formats
        let mut extensions = other.to_vec();
        extensions.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut hello = vec![0x01, 0, 0, body.len() as u8];
        hello.extend_from_slice(&body);
        let mut record = vec![0x16, 3, 1, 0, hello.len() as u8];
        record.extend_from_slice(&hello);

        assert_eq!(
            client_hello_sni(&record).as_deref(),
            Some("chat.example.com")
        );
        // Cut anywhere, or not a handshake: no name, no panic.
        for cut in 0..record.len() {
            assert_eq!(client_hello_sni(&record[..cut]), None);
        }
        let mut alert = record.clone();
        alert[0] = 0x15;
        assert_eq!(client_hello_sni(&alert), None);
    }

    /// One end of an in-memory connection, which flips the top bit of the byte at `flip`
    /// (counted over all it read) as it reads it, and keeps the size of each write.
    struct End {
        reader: piper::Reader,
        writer: piper::Writer,
        read: usize,
        flip: Option<usize>,
        writes: Vec<usize>,
    }

    impl AsyncRead for End {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.reader).poll_read(cx, buf))?;
            if let Some(at) = self
                .flip
                .filter(|at| (self.read..self.read + n).contains(at))
            {
                buf[at - self.read] ^= 0x80;
            }
            self.read += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for End {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.writer).poll_write(cx, buf))?;
            self.writes.push(n);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.writer).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.writer).poll_close(cx)
        }
    }

    fn ends() -> (End, End) {
        let (r1, w1) = piper::pipe(64 * 1024);
        let (r2, w2) = piper::pipe(64 * 1024);
        let end = |reader, writer| End {
            reader,
            writer,
            read: 0,
            flip: None,
            writes: Vec::new(),
        };
        (end(r1, w2), end(r2, w1))
    }

    type Client = futures_rustls::client::TlsStream<End>;

    /// A server under wssd's own configuration (ECDSA P-256) and a client offering only
    /// `suite`, after their handshake; `extract` as the server configuration's
    /// `enable_secret_extraction`.
    fn connect(suite: SupportedCipherSuite, extract: bool) -> (TlsStream<End>, Client) {
        let (config, cert) = server_config(extract);
        let connector = connector(suite, cert);
        let (server_end, client_end) = ends();
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = future::block_on(future::zip(
            accept(config, server_end, Vec::new()),
            connector.connect(name, client_end),
        ));
        (server.unwrap().0, client.unwrap())
    }

    /// A client offering only `suite` and trusting `cert`.
    fn connector(
        suite: SupportedCipherSuite,
        cert: CertificateDer<'static>,
    ) -> futures_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::clone(&cert)).unwrap();
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..default_provider()
        };
        let version = match suite {
            SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
            SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        };
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // A test may take the keys to send records a rustls client never sends.
        client.enable_secret_extraction = true;
        futures_rustls::TlsConnector::from(Arc::new(client))
    }

    /// [`connect`] with our record layer, after the first exchange that hands it the keys.
    fn connect_own(suite: SupportedCipherSuite) -> (TlsStream<End>, Client) {
        let (mut server, mut client) = connect(suite, true);
        exchange(&mut server, &mut client, b"first");
        assert!(
            matches!(server.conn, Engine::Own(_)),
            "rustls kept {suite:?}"
        );
        (server, client)
    }

    /// The suites a client of an ECDSA server can get: TLS 1.3's three, TLS 1.2's ECDSA ones.
    fn suites() -> impl Iterator<Item = SupportedCipherSuite> {
        ALL_CIPHER_SUITES.iter().copied().filter(|s| {
            !matches!(
                s.suite(),
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                    | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                    | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            )
        })
    }

    /// `client` sends `data`, `server` reads it whole; then the other way.
    fn exchange(server: &mut TlsStream<End>, client: &mut Client, data: &[u8]) {
        let got = pass(client, server, data);
        assert!(got == data, "the server read what the client sent");
        let got = pass(server, client, data);
        assert!(got == data, "the client read what the server sent");
    }

    /// `from` writes and flushes `data` while `to` reads as many bytes; returns them.
    fn pass(
        from: &mut (impl AsyncWrite + Unpin),
        to: &mut (impl AsyncRead + Unpin),
        data: &[u8],
    ) -> Vec<u8> {
        let mut got = vec![0; data.len()];
        let (sent, read) = future::block_on(future::zip(
            async { from.write_all(data).await.and(from.flush().await) },
            to.read_exact(&mut got),
        ));
        sent.and(read).unwrap();
        got
    }

    fn message(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// A server under wssd's configuration, with `extract` as its
    /// `enable_secret_extraction`.
    fn server_config(extract: bool) -> (Arc<ServerConfig>, CertificateDer<'static>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let key = futures_rustls::rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        let mut config =
            crate::tls::server_config(sign::CertifiedKey::new(vec![cert.clone()], key));
        Arc::make_mut(&mut config).enable_secret_extraction = extract;
        (config, cert)
    }

    /// `bytes` from a client, then its end of stream; what the server's accept returned.
    fn accept_bytes(bytes: &[u8]) -> io::Result<()> {
        let (server_end, mut client_end) = ends();
        let (config, _) = server_config(false);
        let (accepted, ()) =
            future::block_on(future::zip(accept(config, server_end, Vec::new()), async {
                client_end.write_all(bytes).await.unwrap();
                client_end.close().await.unwrap();
                // Whatever the server answers (an alert) is read and dropped.
                let _ = client_end.read_to_end(&mut Vec::new()).await;
            }));
        accepted.map(drop)
    }

    #[test]
    fn the_start_of_a_client_hello_then_another_record_type_is_refused_not_a_panic() {
        // The 12-byte probe: a handshake record with 2 bytes of a ClientHello, then in the
        // same write a record of another type. rustls holds the 2 bytes as part of a
        // message; the error path must hand it back the buffer they are in.
        let start = [0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00];
        let behind: [&[u8]; 5] = [
            &[0x17, 0x03, 0x03, 0x00, 0x00],             // empty application_data
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], // plaintext alert
            &[0x14, 0x03, 0x03, 0x00, 0x01, 0x01],       // ChangeCipherSpec
            &[0x18, 0x03, 0x03, 0x00, 0x01, 0x00],       // heartbeat
            &[0x16, 0x03, 0x03, 0x00, 0x01],             // a cut handshake record
        ];
        for record in behind {
            let bytes = [&start[..], record].concat();
            let result = std::panic::catch_unwind(|| accept_bytes(&bytes));
            let accepted = result.unwrap_or_else(|_| panic!("panicked on {bytes:02x?}"));
            assert!(accepted.is_err(), "{bytes:02x?}");
        }
    }

    #[test]
    fn a_client_hello_of_16_kib_or_more_or_a_huge_claim_is_refused_not_a_panic() {
        // A ClientHello message of 20,000 bytes over two records, then nonsense; and a
        // handshake message that claims 16 MiB.
        let mut hello = vec![0x01, 0x00, 0x4e, 0x20];
        hello.extend(std::iter::repeat_n(0x41, 20_000));
        let mut bytes = Vec::new();
        for chunk in hello.chunks(16_384) {
            bytes.extend_from_slice(&[0x16, 0x03, 0x01]);
            bytes.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            bytes.extend_from_slice(chunk);
        }
        bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x00]);
        let claim = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff];
        for bytes in [&bytes[..], &claim] {
            let result = std::panic::catch_unwind(|| accept_bytes(bytes));
            assert!(matches!(result, Ok(Err(_))), "{:02x?}", &bytes[..9]);
        }
    }

    #[test]
    fn our_records_serve_every_suite_both_ways_and_rustls_serves_without_the_flag() {
        for suite in suites() {
            for extract in [true, false] {
                let (mut server, mut client) = connect(suite, extract);
                // rustls' records until its first write, after which it holds nothing.
                assert!(matches!(server.conn, Engine::Rustls(_)), "{suite:?}");
                // One byte, several records (one cut short), an empty write.
                for n in [1, 40_000, 0, 300] {
                    exchange(&mut server, &mut client, &message(n));
                    let ours = matches!(server.conn, Engine::Own(_));
                    assert_eq!(ours, extract, "{suite:?}");
                }
                // close_notify each way: the other side reads the end.
                future::block_on(async {
                    server.close().await.unwrap();
                    assert_eq!(client.read(&mut [0; 8]).await.unwrap(), 0, "{suite:?}");
                    client.close().await.unwrap();
                    assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 0, "{suite:?}");
                });
            }
        }
    }

    /// A handshake whose client sends `then` (a request, a KeyUpdate first) right behind its
    /// Finished, as browsers send their request; the server has read that request.
    fn connect_with(
        suite: SupportedCipherSuite,
        key_update: bool,
        request: &[u8],
    ) -> (TlsStream<End>, Client) {
        let (config, cert) = server_config(true);
        let (server_end, client_end) = ends();
        let connector = connector(suite, cert);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) =
            future::block_on(future::zip(accept(config, server_end, Vec::new()), async {
                let mut client = connector.connect(name, client_end).await?;
                if key_update {
                    client.get_mut().1.refresh_traffic_keys().unwrap();
                }
                client.write_all(request).await?;
                client.flush().await?;
                Ok::<_, io::Error>(client)
            }));
        let (mut server, client) = (server.unwrap().0, client.unwrap());
        let mut got = vec![0; request.len()];
        future::block_on(server.read_exact(&mut got)).unwrap();
        assert_eq!(got, request);
        (server, client)
    }

    #[test]
    fn a_key_update_that_came_with_the_finished_is_answered_before_our_data() {
        // rustls answers it and holds its answer for its next write: our records must not
        // take over before that write, or the client reads our data under a key it lacks.
        for suite in suites().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))) {
            let (mut server, mut client) = connect_with(suite, true, b"request");
            for n in [10, 20_000, 5] {
                let got = pass(&mut server, &mut client, &message(n));
                assert!(got == message(n), "{suite:?}");
                exchange(&mut server, &mut client, &message(n));
            }
            assert!(matches!(server.conn, Engine::Own(_)), "{suite:?}");
        }
    }

    #[test]
    fn what_answers_the_finished_goes_out_before_the_handshake_ends() {
        // A client may wait for its session ticket (tlsfuzzer's conversations do), and one
        // with Nagle's algorithm on holds a small request until its Finished is acknowledged:
        // the ticket answers the Finished at once, whether or not a request came with it.
        for suite in suites() {
            let tls13 = matches!(suite, SupportedCipherSuite::Tls13(_));
            for request in [false, true] {
                let (mut server, mut client) = if request {
                    connect_with(suite, false, b"request")
                } else {
                    connect(suite, true)
                };
                // TLS 1.3: ServerHello's flight, then the ticket. TLS 1.2: ServerHello's
                // flight, then the one ending with our Finished.
                assert_eq!(server.io.writes.len(), 2, "{suite:?}");
                if tls13 {
                    let ticket = server.io.writes[1];
                    assert!((60..160).contains(&ticket), "{suite:?}: {ticket}");
                }
                exchange(&mut server, &mut client, &message(10));
                assert_eq!(server.io.writes.len(), 3, "{suite:?}");
            }
        }
    }

    #[test]
    fn a_client_key_update_gets_ours_and_both_sides_read_on() {
        for suite in suites().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))) {
            let (mut server, mut client) = connect_own(suite);
            for round in 0..3 {
                // update_requested: the server must answer with its own before its data.
                client.get_mut().1.refresh_traffic_keys().unwrap();
                exchange(&mut server, &mut client, &message(100 + round));
                // The server's data went out as the first record under its new key.
                let Engine::Own(records) = &server.conn else {
                    panic!("rustls kept {suite:?}")
                };
                assert_eq!(records.tx_seq(), 1, "{suite:?}");
            }
            // 32 KeyUpdates with no data between them are taken; the 33rd ends the connection.
            for _ in 0..32 {
                client.get_mut().1.refresh_traffic_keys().unwrap();
            }
            exchange(&mut server, &mut client, &message(10));
            for _ in 0..33 {
                client.get_mut().1.refresh_traffic_keys().unwrap();
            }
            future::block_on(async {
                client.write_all(b"late").await.unwrap();
                client.flush().await.unwrap();
                let error = server.read(&mut [0; 64]).await.unwrap_err();
                assert!(
                    error.to_string().contains("KeyUpdates"),
                    "{suite:?}: {error}"
                );
            });
        }
    }

    #[test]
    fn at_a_keys_record_limit_tls_1_3_updates_it_and_tls_1_2_ends() {
        for suite in suites() {
            let (mut server, mut client) = connect_own(suite);
            let Engine::Own(records) = &mut server.conn else {
                panic!("rustls kept {suite:?}")
            };
            records.limit_after(2);
            let written = future::block_on(async {
                let mut written = 0;
                for i in 0..7 {
                    if server.write_all(&message(10 + i)).await.is_err() {
                        break;
                    }
                    server.flush().await.unwrap();
                    let mut got = vec![0; 10 + i];
                    client.read_exact(&mut got).await.unwrap();
                    assert_eq!(got, message(10 + i), "{suite:?}");
                    written += 1;
                }
                written
            });
            let expected = match suite {
                SupportedCipherSuite::Tls13(_) => 7,
                SupportedCipherSuite::Tls12(_) => 2,
            };
            assert_eq!(written, expected, "{suite:?}");
        }
    }

    #[test]
    fn a_tampered_record_ends_the_connection_with_bad_record_mac() {
        for suite in suites() {
            let (mut server, mut client) = connect_own(suite);
            server.io.flip = Some(server.io.read + 20); // in the next record's body
            future::block_on(async {
                client.write_all(&message(50)).await.unwrap();
                client.flush().await.unwrap();
                let error = server.read(&mut [0; 64]).await.unwrap_err();
                assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{suite:?}");
                assert!(error.to_string().contains("decrypt"), "{suite:?}: {error}");
                let alert = client.read(&mut [0; 64]).await.unwrap_err();
                assert!(
                    alert.to_string().contains("BadRecordMac"),
                    "{suite:?}: {alert}"
                );
            });
        }
    }

    /// A TLS 1.3 connection served by our records, its client's keys in a raw peer that
    /// seals what a rustls client never sends, and the client's end of the pipe.
    fn raw_peer() -> (TlsStream<End>, crate::records::Peer, End) {
        let suite = suites()
            .find(|s| s.suite() == CipherSuite::TLS13_AES_128_GCM_SHA256)
            .unwrap();
        let (server, client) = connect_own(suite);
        let (end, conn) = client.into_inner();
        let peer = crate::records::Peer::new(conn.dangerous_extract_secrets().unwrap());
        (server, peer, end)
    }

    /// What `records` makes (sealed by a raw client) go to the server; returns its read's
    /// error and the alert it sent.
    fn refused(records: impl FnOnce(&mut crate::records::Peer) -> Vec<Vec<u8>>) -> (io::Error, u8) {
        let (mut server, mut peer, mut end) = raw_peer();
        let records = records(&mut peer).concat();
        future::block_on(async {
            end.write_all(&records).await.unwrap();
            // Then the end of stream: a server that takes the records reads it, not an error.
            end.close().await.unwrap();
            let error = loop {
                match server.read(&mut [0; 64]).await {
                    Ok(n) => assert!(n > 0, "the stream ended without an error"),
                    Err(e) => break e,
                }
            };
            // The server's side ends too: what it sent is all there is to read.
            let _ = server.close().await;
            let mut record = vec![0; 5];
            end.read_exact(&mut record).await.unwrap();
            record.resize(record_len(&record), 0);
            end.read_exact(&mut record[5..]).await.unwrap();
            let alert = peer.open(&mut record);
            assert_eq!(
                (alert.len(), alert[0], alert[2]),
                (3, 2, 21),
                "a fatal alert: {alert:?}"
            );
            (error, alert[1])
        })
    }

    /// `records` go to the server, which reads `expected` from them.
    fn taken(records: impl FnOnce(&mut crate::records::Peer) -> Vec<Vec<u8>>, expected: &[u8]) {
        let (mut server, mut peer, mut end) = raw_peer();
        let records = records(&mut peer).concat();
        future::block_on(async {
            end.write_all(&records).await.unwrap();
            end.flush().await.unwrap();
            let mut got = vec![0; expected.len()];
            server.read_exact(&mut got).await.unwrap();
            assert!(got == expected);
        });
    }

    #[test]
    fn our_records_refuse_inner_plaintext_over_its_limit_with_record_overflow() {
        // 2^14 bytes of content and its type: the most a TLSInnerPlaintext holds (RFC 8446
        // section 5.4). One byte of padding more is too much.
        let mut inner = vec![b'a'; 16_384];
        inner.push(23);
        taken(|peer| vec![peer.seal(&inner)], &inner[..16_384]);
        inner.push(0);
        let (_, alert) = refused(|peer| vec![peer.seal(&inner)]);
        assert_eq!(alert, 22, "record_overflow");
    }

    #[test]
    fn our_records_take_32_empty_records_in_a_row_not_33() {
        taken(
            |peer| {
                let mut records: Vec<_> = (0..32).map(|_| peer.seal(&[23])).collect();
                records.push(peer.seal(b"ok\x17"));
                records
            },
            b"ok",
        );
        let (error, alert) = refused(|peer| (0..33).map(|_| peer.seal(&[23])).collect());
        assert_eq!(alert, 10, "unexpected_message: {error}");
    }

    #[test]
    fn a_malformed_key_update_gets_illegal_parameter_or_decode_error() {
        // request_update 2 (RFC 8446 section 4.6.3): illegal_parameter.
        let (_, alert) = refused(|peer| vec![peer.seal(&[24, 0, 0, 1, 2, 22])]);
        assert_eq!(alert, 47, "illegal_parameter");
        // A KeyUpdate of two bytes: decode_error.
        let (_, alert) = refused(|peer| vec![peer.seal(&[24, 0, 0, 2, 0, 0, 22])]);
        assert_eq!(alert, 50, "decode_error");
    }
}
