//! The TLS record layer after the handshake, on ring's AEADs (RFC 8446 section 5, RFC 5246
//! section 6.2, RFC 5288, RFC 7905), with rustls keeping the key schedule.
//!
//! rustls' unbuffered API copies each record it decrypts into a vector of its own, and
//! seals each record it encrypts in another, then copies it out: two allocations and two
//! copies of every message. Here, once rustls has finished the handshake, records are
//! opened where they landed and sealed where they are written, with the keys rustls hands
//! over ([`UnbufferedServerConnection::dangerous_into_kernel_connection`], the interface
//! rustls offers for kernel TLS). rustls still derives the keys of a TLS 1.3 KeyUpdate
//! (RFC 8446 section 4.6.3).

use std::io::IoSlice;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::{
    self, AlertDescription, CipherSuite, ConnectionTrafficSecrets, ProtocolVersion, ServerConfig,
    SupportedCipherSuite,
};

/// The most plaintext a record holds: 2^14 bytes (RFC 8446 section 5.1).
pub(crate) const MAX_FRAGMENT: usize = 16_384;

/// Record content types (RFC 8446 section 5.1).
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// The handshake message type of a KeyUpdate (RFC 8446 section 4).
const KEY_UPDATE: u8 = 24;

/// The AEAD tag every suite served here adds: 16 bytes.
const TAG: usize = 16;

/// KeyUpdates taken with no application data between them before the connection ends, and
/// warning alerts taken in all: each KeyUpdate costs a key derivation for a 27-byte record
/// (BoringSSL's and rustls' limits).
const KEY_UPDATES: u8 = 32;
const WARNINGS: u8 = 4;

/// Empty records taken in a row (no content: application data of length 0) before the
/// connection ends, as rustls and OpenSSL allow: each costs a decryption for no data.
const EMPTY_RECORDS: u8 = 32;

/// The handshake message type of a ClientHello (RFC 5246 section 7.4).
const CLIENT_HELLO: u8 = 1;

/// What a record opened with [`Records::open`] held for the reader.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Application data: this range of the record.
    Data(std::ops::Range<usize>),
    /// Nothing for the reader (an empty record, a KeyUpdate, a warning alert).
    Nothing,
    /// The peer's close_notify (RFC 8446 section 6.1): the end of its data.
    Closed,
}

/// One direction's key, its IV and the next record's sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Keys, rustls::Error> {
        let (algorithm, key, iv): (_, AeadKey, Iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(rustls::Error::General("cipher suite not served".into())),
        };
        let key = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| rustls::Error::General("bad traffic key".into()))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| rustls::Error::General("bad traffic IV".into()))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The per-record nonce: the IV with the sequence number XORed into its last 8 bytes
    /// (RFC 8446 section 5.3, RFC 7905 section 2; TLS 1.2's AES-GCM sends its last 8 bytes).
    fn nonce(&self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    /// Takes the next sequence number; a connection that ran through 2^64 - 1 records ends.
    fn next(&mut self) -> Result<u64, rustls::Error> {
        let seq = self.seq;
        self.seq = seq
            .checked_add(1)
            .filter(|&next| next < u64::MAX)
            .ok_or_else(|| rustls::Error::EncryptError)?;
        Ok(seq)
    }
}

/// A TLS connection's record protection after its handshake: keys and sequence numbers
/// both ways, for TLS 1.3 or TLS 1.2 with AES-GCM or ChaCha20-Poly1305.
pub(crate) struct Records {
    rx: Keys,
    tx: Keys,
    /// TLS 1.2: the record type is in the clear and AES-GCM sends an explicit nonce.
    tls12: bool,
    /// TLS 1.2 AES-GCM's explicit nonce: 8 bytes before the ciphertext (RFC 5288 section 3).
    explicit: usize,
    /// Records sealed under one key before TLS 1.3 updates it (the suite's confidentiality
    /// limit, 2^24 for AES-GCM); a TLS 1.2 connection ends there instead.
    tx_limit: u64,
    /// The peer asked for our KeyUpdate, due before our next application data.
    update_due: bool,
    /// KeyUpdates the peer may still send before its next application data.
    key_updates_left: u8,
    /// Warning alerts the peer may still send.
    warnings_left: u8,
    /// Empty records the peer may still send before its next non-empty one.
    empties_left: u8,
    /// A warning alert due before our next record (TLS 1.2's `no_renegotiation`).
    warning_due: Option<AlertDescription>,
    /// rustls' key schedule, for KeyUpdate (on the heap: it is seldom used and not small).
    /// `None` only in the fuzz target's records, whose KeyUpdates then end the connection.
    kernel: Option<Box<KernelConnection<ServerConnectionData>>>,
}

impl Records {
    /// Whether [`Records::take_over`] serves `conn` under `config`: `config` lets secrets
    /// out (`enable_secret_extraction`), is not in FIPS mode (ring's AEADs would stand in for
    /// the provider's) and keeps full-size records; the suite is one of the nine below (AES-GCM
    /// or ChaCha20-Poly1305, TLS 1.3 or TLS 1.2 with ECDHE).
    pub(crate) fn serves(conn: &UnbufferedServerConnection, config: &ServerConfig) -> bool {
        use CipherSuite::*;
        config.enable_secret_extraction
            && !config.fips()
            && config.max_fragment_size.is_none()
            && matches!(
                conn.negotiated_cipher_suite().map(|s| s.suite()),
                Some(
                    TLS13_AES_128_GCM_SHA256
                        | TLS13_AES_256_GCM_SHA384
                        | TLS13_CHACHA20_POLY1305_SHA256
                        | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                        | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                        | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                        | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                        | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                        | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                )
            )
    }

    /// Takes `conn`'s keys and sequence numbers. `conn` must have finished its handshake,
    /// hold nothing to send and nothing decrypted, and pass [`Records::serves`].
    ///
    /// Errors: rustls' refusal to let the secrets out.
    pub(crate) fn take_over(conn: UnbufferedServerConnection) -> Result<Records, rustls::Error> {
        let tls12 = conn.protocol_version() != Some(ProtocolVersion::TLSv1_3);
        let tx_limit = conn
            .negotiated_cipher_suite()
            .map_or(u64::MAX, |suite| match suite {
                SupportedCipherSuite::Tls12(suite) => suite.common.confidentiality_limit,
                SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
            });
        let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
        let aes = !matches!(
            secrets.tx.1,
            ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
        );
        Ok(Records {
            rx: Keys::new(secrets.rx)?,
            tx: Keys::new(secrets.tx)?,
            tls12,
            explicit: if tls12 && aes { 8 } else { 0 },
            tx_limit,
            update_due: false,
            key_updates_left: KEY_UPDATES,
            warnings_left: WARNINGS,
            empties_left: EMPTY_RECORDS,
            warning_due: None,
            kernel: Some(Box::new(kernel)),
        })
    }

    /// The largest ciphertext (record body) the peer may send: 2^14 + 256 bytes in TLS 1.3,
    /// 2^14 + 2048 in TLS 1.2 (RFC 8446 section 5.2, RFC 5246 section 6.2.3).
    pub(crate) fn max_body(&self) -> usize {
        MAX_FRAGMENT + if self.tls12 { 2048 } else { 256 }
    }

    /// rustls' key schedule.
    fn kernel(&mut self) -> Result<&mut KernelConnection<ServerConnectionData>, rustls::Error> {
        self.kernel
            .as_deref_mut()
            .ok_or_else(|| rustls::Error::General("no key schedule to update the keys".into()))
    }

    /// Makes this key's record limit `records` from now, for tests.
    #[cfg(test)]
    pub(crate) fn limit_after(&mut self, records: u64) {
        self.tx_limit = self.tx.seq + records;
    }

    /// Seals the warning alert due (TLS 1.2's `no_renegotiation`), if any, appended to
    /// `out`: it answers what the peer sent, and goes before our next data.
    ///
    /// Errors: as [`Records::seal`].
    pub(crate) fn seal_warning_due(&mut self, out: &mut Vec<u8>) -> Result<(), rustls::Error> {
        if self.warning_due.is_some() {
            // `begin` seals the warning, then starts a record (taking no sequence number
            // yet), which is dropped.
            let start = self.begin(out)?;
            out.truncate(start);
        }
        Ok(())
    }

    /// The sequence number of the next record sealed, for tests.
    #[cfg(test)]
    pub(crate) fn tx_seq(&self) -> u64 {
        self.tx.seq
    }

    /// Opens `record` (header and body, whole, the body at most [`Records::max_body`] bytes:
    /// the caller checks the header before it waits for the rest) in place.
    ///
    /// Errors: `DecryptError` for a record that does not authenticate, `PeerSentOversizedRecord`,
    /// `AlertReceived` for the peer's fatal alert, and a general error naming what else is
    /// wrong (a record type or handshake message a finished connection does not take). The
    /// connection is over after any of them; [`Records::alert_for`] says which alert to send.
    pub(crate) fn open(&mut self, record: &mut [u8]) -> Result<Opened, rustls::Error> {
        let (header, body) = record.split_at_mut(5);
        debug_assert!(body.len() <= self.max_body());
        let mut typ = header[0];
        let valid = if self.tls12 {
            matches!(typ, ALERT | HANDSHAKE | APPLICATION_DATA)
        } else {
            typ == APPLICATION_DATA
        };
        if !valid {
            return Err(unexpected(if typ == CHANGE_CIPHER_SPEC {
                "a ChangeCipherSpec record after the handshake"
            } else {
                "a record of an unknown or unencrypted type after the handshake"
            }));
        }
        if body.len() < self.explicit + TAG {
            return Err(rustls::Error::DecryptError);
        }
        let mut nonce = self.rx.nonce();
        if self.explicit > 0 {
            nonce[4..].copy_from_slice(&body[..8]);
        }
        let plain_len = body.len() - self.explicit - TAG;
        let seq = self.rx.next().map_err(|_| rustls::Error::DecryptError)?;
        let (aad, aad_len) = self.additional_data(header, seq, typ, plain_len);
        let opened = self
            .rx
            .key
            .open_within(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..aad_len]),
                body,
                self.explicit..,
            )
            .map_err(|_| rustls::Error::DecryptError)?;
        let mut len = opened.len();
        if !self.tls12 && len > MAX_FRAGMENT + 1 {
            // TLSInnerPlaintext, content type and padding included, over 2^14 + 1 bytes
            // (RFC 8446 section 5.4).
            return Err(rustls::Error::PeerSentOversizedRecord);
        }
        if !self.tls12 {
            // TLSInnerPlaintext: content, its type, zeros (RFC 8446 section 5.2).
            len = opened
                .iter()
                .rposition(|&b| b != 0)
                .ok_or_else(|| unexpected("a TLS 1.3 record with no content type"))?;
            typ = opened[len];
        }
        if len > MAX_FRAGMENT {
            return Err(rustls::Error::PeerSentOversizedRecord);
        }
        let content = &opened[..len];
        if len > 0 {
            self.empties_left = EMPTY_RECORDS;
        } else if self.empties_left == 0 {
            return Err(unexpected(
                "more empty records in a row than a connection takes",
            ));
        } else {
            self.empties_left -= 1;
        }
        match typ {
            APPLICATION_DATA if len == 0 => Ok(Opened::Nothing),
            APPLICATION_DATA => {
                self.key_updates_left = KEY_UPDATES;
                Ok(Opened::Data(5..5 + len))
            }
            ALERT => match *content {
                [_, 0] => Ok(Opened::Closed), // close_notify
                // user_canceled (TLS 1.3), any warning (TLS 1.2): nothing to do, a few times.
                [1, _] | [_, 90] if self.warnings_left == 0 => {
                    Err(unexpected("more warning alerts than a connection takes"))
                }
                [_, 90] => {
                    self.warnings_left -= 1;
                    Ok(Opened::Nothing)
                }
                [1, _] if self.tls12 => {
                    self.warnings_left -= 1;
                    Ok(Opened::Nothing)
                }
                [_, description] => Err(rustls::Error::AlertReceived(description.into())),
                _ => Err(unexpected("an alert record that is not one whole alert")),
            },
            // A renegotiation attempt: refused with a warning, the connection goes on (RFC
            // 5246 section 7.2.2, RFC 5746 section 4.4), a few times.
            HANDSHAKE if self.tls12 && content.first() == Some(&CLIENT_HELLO) => {
                if self.warnings_left == 0 {
                    return Err(unexpected(
                        "more renegotiation attempts than a connection takes",
                    ));
                }
                self.warnings_left -= 1;
                self.warning_due = Some(AlertDescription::NoRenegotiation);
                Ok(Opened::Nothing)
            }
            HANDSHAKE if self.tls12 => Err(unexpected(
                "a handshake message after the TLS 1.2 handshake (renegotiation is not served)",
            )),
            // A KeyUpdate, alone in its record (RFC 8446 section 4.6.3, section 5.1).
            HANDSHAKE => match *content {
                [KEY_UPDATE, 0, 0, 1, _] if self.key_updates_left == 0 => Err(unexpected(
                    "more KeyUpdates than a connection takes without application data between them",
                )),
                [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => {
                    self.key_updates_left -= 1;
                    self.rx = Keys::new(self.kernel()?.update_rx_secret()?)?;
                    self.update_due |= request == 1;
                    Ok(Opened::Nothing)
                }
                // request_update neither 0 nor 1 (RFC 8446 section 4.6.3).
                [KEY_UPDATE, 0, 0, 1, _] => Err(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidKeyUpdate,
                )),
                // A KeyUpdate whose length is not 1, or that is not whole in its record.
                [KEY_UPDATE, ..] => Err(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::TrailingData("KeyUpdate"),
                )),
                _ => Err(unexpected(
                    "a handshake message after the TLS 1.3 handshake that is not a KeyUpdate alone in its record",
                )),
            },
            _ => Err(unexpected("a TLS 1.3 record of an unknown content type")),
        }
    }

    /// Seals the first `total` bytes of `bufs` (application data) as records appended to
    /// `out`, behind the KeyUpdate due first, if any.
    ///
    /// Errors: a general error when a TLS 1.2 connection reached its suite's record limit
    /// (2^24 records for AES-GCM), `EncryptError` when sequence numbers run out; rustls'
    /// errors deriving a TLS 1.3 key.
    pub(crate) fn seal(
        &mut self,
        out: &mut Vec<u8>,
        bufs: &[IoSlice<'_>],
        total: usize,
    ) -> Result<(), rustls::Error> {
        let records = total.div_ceil(MAX_FRAGMENT);
        out.reserve(total + records * (5 + self.explicit + 1 + TAG));
        let mut slices = bufs.iter().map(|b| &b[..]);
        let mut current: &[u8] = &[];
        let mut left = total;
        while left > 0 {
            let start = self.begin(out)?;
            let mut room = left.min(MAX_FRAGMENT);
            while room > 0 {
                if current.is_empty() {
                    let Some(next) = slices.next() else { break };
                    current = next;
                }
                let (take, rest) = current.split_at(room.min(current.len()));
                out.extend_from_slice(take);
                current = rest;
                room -= take.len();
                left -= take.len();
            }
            self.finish(out, start, APPLICATION_DATA)?;
            if room > 0 {
                break; // `bufs` held less than `total`
            }
        }
        Ok(())
    }

    /// Seals `description` as an alert record appended to `out` (RFC 8446 section 6): fatal,
    /// but for close_notify.
    ///
    /// Errors: as [`Records::seal`].
    pub(crate) fn seal_alert(
        &mut self,
        out: &mut Vec<u8>,
        description: AlertDescription,
    ) -> Result<(), rustls::Error> {
        let level = if description == AlertDescription::CloseNotify {
            1
        } else {
            2
        };
        let start = self.begin(out)?;
        out.extend_from_slice(&[level, description.into()]);
        self.finish(out, start, ALERT)
    }

    /// The alert that tells the peer why `error`, from [`Records::open`], ended the
    /// connection; none for the peer's own alert.
    pub(crate) fn alert_for(error: &rustls::Error) -> Option<AlertDescription> {
        match error {
            rustls::Error::DecryptError => Some(AlertDescription::BadRecordMac),
            rustls::Error::PeerSentOversizedRecord => Some(AlertDescription::RecordOverflow),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidKeyUpdate) => {
                Some(AlertDescription::IllegalParameter)
            }
            rustls::Error::InvalidMessage(_) => Some(AlertDescription::DecodeError),
            rustls::Error::AlertReceived(_) => None,
            _ => Some(AlertDescription::UnexpectedMessage),
        }
    }

    /// A record's additional data, and its length: in TLS 1.3 the record's header (RFC 8446
    /// section 5.2); in TLS 1.2 the sequence number, type, version and plaintext length
    /// (RFC 5246 section 6.2.3.3).
    fn additional_data(&self, header: &[u8], seq: u64, typ: u8, plain: usize) -> ([u8; 13], usize) {
        let mut aad = [0; 13];
        if self.tls12 {
            aad[..8].copy_from_slice(&seq.to_be_bytes());
            aad[8] = typ;
            aad[9..11].copy_from_slice(&header[1..3]);
            aad[11..].copy_from_slice(&(plain as u16).to_be_bytes());
            (aad, 13)
        } else {
            aad[..5].copy_from_slice(&header[..5]);
            (aad, 5)
        }
    }

    /// Starts a record at the end of `out`, after the KeyUpdate due first (the peer's
    /// request, or this key's record limit); returns where it starts.
    fn begin(&mut self, out: &mut Vec<u8>) -> Result<usize, rustls::Error> {
        if let Some(description) = self.warning_due.take() {
            let start = self.begin(out)?;
            out.extend_from_slice(&[1, description.into()]);
            self.finish(out, start, ALERT)?;
        }
        if self.tx.seq >= self.tx_limit || self.update_due {
            if self.tls12 {
                return Err(rustls::Error::General(format!(
                    "this TLS 1.2 connection sealed the {} records its cipher suite allows; the client must reconnect",
                    self.tx_limit
                )));
            }
            self.update_due = false;
            let start = out.len();
            out.extend_from_slice(&[0; 5]);
            out.extend_from_slice(&[KEY_UPDATE, 0, 0, 1, 0]); // update_not_requested
            self.finish(out, start, HANDSHAKE)?;
            self.tx = Keys::new(self.kernel()?.update_tx_secret()?)?;
        }
        let start = out.len();
        out.extend_from_slice(&[0; 5]);
        if self.explicit > 0 {
            out.extend_from_slice(&self.tx.nonce()[4..]);
        }
        Ok(start)
    }

    /// Seals the record begun at `out[start..]` with the content after its header, of type
    /// `typ`, and writes its header.
    fn finish(&mut self, out: &mut Vec<u8>, start: usize, typ: u8) -> Result<(), rustls::Error> {
        let body = start + 5 + self.explicit;
        let outer = if self.tls12 {
            typ
        } else {
            out.push(typ); // TLSInnerPlaintext's type, no padding
            APPLICATION_DATA
        };
        let len = out.len() - body + TAG + self.explicit;
        let length = u16::try_from(len).map_err(|_| rustls::Error::EncryptError)?;
        let header = [outer, 3, 3, (length >> 8) as u8, length as u8];
        let nonce = Nonce::assume_unique_for_key(self.tx.nonce());
        let seq = self.tx.next()?;
        let (aad, aad_len) = self.additional_data(&header, seq, typ, out.len() - body);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&aad[..aad_len]), &mut out[body..])
            .map_err(|_| rustls::Error::EncryptError)?;
        out.extend_from_slice(tag.as_ref());
        out[start..start + 5].copy_from_slice(&header);
        Ok(())
    }
}

fn unexpected(what: &str) -> rustls::Error {
    rustls::Error::General(format!("the client sent {what}"))
}

/// A TLS 1.3 client's record protection, for tests and the fuzz target: it seals records
/// with any inner plaintext (content, type and padding as given), which a rustls client
/// never sends, and opens the server's.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) struct Peer {
    tx: Keys,
    rx: Keys,
}

#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))]
impl Peer {
    /// The keys a client handed over.
    #[cfg(test)]
    pub(crate) fn new(secrets: rustls::ExtractedSecrets) -> Peer {
        Peer {
            tx: Keys::new(secrets.tx).unwrap(),
            rx: Keys::new(secrets.rx).unwrap(),
        }
    }

    /// A record whose TLSInnerPlaintext is `inner` (RFC 8446 section 5.2).
    pub(crate) fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let len = (inner.len() + TAG) as u16;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let nonce = Nonce::assume_unique_for_key(self.tx.nonce());
        self.tx.next().unwrap();
        let mut body = inner.to_vec();
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut body)
            .unwrap();
        [&header[..], &body, tag.as_ref()].concat()
    }

    /// The TLSInnerPlaintext of the server's `record`.
    pub(crate) fn open(&mut self, record: &mut [u8]) -> Vec<u8> {
        let (header, body) = record.split_at_mut(5);
        let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
        self.rx.next().unwrap();
        let plain = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(&*header), body)
            .unwrap();
        plain.to_vec()
    }
}

/// The fuzz target of `Records::open` (feature `fuzzing`): TLS 1.3 records whose inner
/// plaintexts (content, type and padding) are the input's, cut at each `0xFF 0xFE` pair, sealed
/// with the client's key of a fixed ChaCha20-Poly1305 pair, opened by the server's records until one
/// ends the connection. With the first input byte odd, the input goes as raw ciphertext
/// instead (headers and all). Never panics; an error names an alert.
#[cfg(feature = "fuzzing")]
pub fn fuzz(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let keys = |byte: u8| {
        Keys::new((
            0,
            ConnectionTrafficSecrets::Chacha20Poly1305 {
                key: AeadKey::from([byte; 32]),
                iv: Iv::new([byte; 12]),
            },
        ))
        .expect("ChaCha20-Poly1305")
    };
    let mut records = Records {
        rx: keys(1),
        tx: keys(2),
        tls12: false,
        explicit: 0,
        tx_limit: u64::MAX,
        update_due: false,
        key_updates_left: KEY_UPDATES,
        warnings_left: WARNINGS,
        empties_left: EMPTY_RECORDS,
        warning_due: None,
        kernel: None,
    };
    let mut peer = Peer {
        tx: keys(1),
        rx: keys(2),
    };
    let mut out = Vec::new();
    if mode & 1 == 1 {
        let mut data = data.to_vec();
        let mut at = 0;
        while data.len() - at >= 5 {
            let len = 5 + usize::from(u16::from_be_bytes([data[at + 3], data[at + 4]]));
            if len - 5 > records.max_body() || data.len() - at < len {
                return;
            }
            if handle(&mut records, &mut data[at..at + len], &mut out) {
                return;
            }
            at += len;
        }
        return;
    }
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == [0xFF, 0xFE])
            .unwrap_or(rest.len());
        let mut record = peer.seal(&rest[..end]);
        if record.len() - 5 > records.max_body() || handle(&mut records, &mut record, &mut out) {
            return;
        }
        rest = rest.get(end + 2..).unwrap_or_default();
    }

    /// Opens `record`; whether the connection ended.
    fn handle(records: &mut Records, record: &mut [u8], out: &mut Vec<u8>) -> bool {
        match records.open(record) {
            Ok(Opened::Data(range)) => {
                assert!(range.end <= record.len() && range.len() <= MAX_FRAGMENT);
                false
            }
            Ok(Opened::Nothing) => records.seal_warning_due(out).is_err(),
            Ok(Opened::Closed) => true,
            Err(error) => {
                let _ = Records::alert_for(&error);
                true
            }
        }
    }
}
