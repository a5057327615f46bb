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

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, UnbufferedStatus, WriteTraffic};
use rustls::{self, AlertDescription, ServerConfig};

use crate::records::Records;
use crate::request::{TlsInfo, tls_info};

#[cfg(test)]
mod tests;
mod wire;

use wire::*;

/// The largest TLS record on the wire: a 5-byte header, 2^14 bytes of plaintext and at most
/// 2048 bytes of expansion (RFC 5246 section 6.2.3; TLS 1.3 allows less).
const MAX_RECORD: usize = 5 + 16_384 + 2_048;

/// The most a record adds to its plaintext: its header, TLS 1.3's content type, the AEAD tag, or
/// TLS 1.2's explicit nonce and tag (RFC 8446 section 5.2, RFC 5288 section 3), with room to spare.
const RECORD_OVERHEAD: usize = 64;

/// The most plaintext sealed per write: four full records.
const MAX_WRITE: usize = 4 * 16_384;

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

    /// [`TlsStream::fail`] for an error of rustls' record processing, which had taken
    /// `discard` bytes of the incoming data: the rest is what the alert is queued with.
    fn fail_at(&mut self, discard: usize, error: rustls::Error) -> io::Error {
        self.incoming.drain(..discard);
        let mut rest = std::mem::take(&mut self.incoming);
        self.fail(error, &mut rest)
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
                    let error = self.fail_at(discard, error);
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
        crate::per_thread::TLS_OUT.with_borrow_mut(|out| {
            out.clear();
            match (&mut self.conn, single) {
                (Engine::Own(records), _) => records.seal(out, bufs, total).map_err(tls_error)?,
                (Engine::Gone, _) => return Err(io::ErrorKind::BrokenPipe.into()),
                (Engine::Rustls(_), Some(buf)) => self.seal(&buf[..total], out)?,
                (Engine::Rustls(_), None) => {
                    crate::per_thread::TLS_JOINED.with_borrow_mut(|joined| {
                        joined.clear();
                        for buf in bufs {
                            let n = buf.len().min(total - joined.len());
                            joined.extend_from_slice(&buf[..n]);
                        }
                        self.seal(joined, out)
                    })?
                }
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
                Err(error) => return Err(self.fail_at(discard, error)),
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
        crate::per_thread::TLS_IN.with_borrow_mut(|scratch| {
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
