//! The record-level pieces of the TLS stream: rustls' output appended to a buffer, the hand
//! over to the own record layer, records opened, encoded and sealed, the errors, and the SNI
//! of a ClientHello.

use std::io::{self};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{self};

use crate::records::{Opened, Records};

/// Appends to `out` what `f` writes into the buffer it is given (`room` bytes at first), growing
/// that buffer to the size `f`'s error asks for (rustls' [`InsufficientSizeError`]).
pub(super) fn append<E>(
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
pub(super) fn take_over(
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
pub(super) fn open(
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
pub(super) fn encode(
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
pub(super) fn encrypt(
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
pub(super) fn record_len(data: &[u8]) -> usize {
    match data {
        [_, _, _, hi, lo, ..] => 5 + usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    }
}

/// A rustls error as futures-rustls reports it: `InvalidData` wrapping the error.
pub(super) fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// What a connection says once a fatal error (or a failed handover of its keys) ended it.
pub(super) const GONE: &str = "the TLS connection has ended";

/// What rustls asks of us that a server under wssd's configuration never meets.
pub(super) const UNEXPECTED: &str = "unexpected TLS state: TLS early data (0-RTT) is not served, leave ServerConfig::max_early_data_size at 0";

pub(super) fn unexpected_state() -> io::Error {
    io::Error::other(UNEXPECTED)
}

/// The host name in the SNI extension (RFC 6066 section 3) of the ClientHello that `data`
/// starts with (a TLS record of type handshake), if that record holds the whole extension
/// list.
pub(super) fn client_hello_sni(data: &[u8]) -> Option<String> {
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
