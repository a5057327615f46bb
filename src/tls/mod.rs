//! TLS: the certificate chain, the private key and the rustls server configuration.
//!
//! wssd speaks TLS 1.2 and TLS 1.3 only (RFC 5246, RFC 8446). WeChat Mini
//! Programs refuse anything older, and rustls has no older versions to offer.
//! ALPN is `http/1.1` (RFC 7301), since the WebSocket opening handshake is an
//! HTTP/1.1 request (RFC 6455 section 4.1). Client certificates are not asked for.
//!
//! Certificates and keys come from PEM files (RFC 7468):
//! - the certificate file (`.pem` or `.crt`) holds the certificate chain, the
//!   leaf first, then the intermediates;
//! - the key file holds one private key: PKCS#8 (`BEGIN PRIVATE KEY`),
//!   PKCS#1 RSA (`BEGIN RSA PRIVATE KEY`) or SEC1 EC (`BEGIN EC PRIVATE KEY`).
//!
//! Every error names the file it is about and says how to fix it.
//!
//! ```no_run
//! let tls = wssd::tls::from_pem_files("server.pem", "server.key")?;
//! let config = wssd::Config::default().tls(tls);
//! # Ok::<(), wssd::tls::TlsError>(())
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::ResolvesServerCert;
use rustls::{
    self, ServerConfig, crypto::CryptoProvider, sign::CertifiedKey, sign::SingleCertAndKey,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// An error loading a certificate chain or private key, or building the TLS configuration.
///
/// Its `Display` names the file and gives the fix, in one or two sentences, so
/// that a binary can print it as it is.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read: it is missing, or this user may not read it.
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file is DER (binary), not PEM (text with `-----BEGIN` lines).
    Der {
        /// The file.
        path: PathBuf,
        /// `true` when a private key was expected, `false` for a certificate.
        key: bool,
    },
    /// The file is not PEM, or its PEM is damaged.
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key section.
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is encrypted with a passphrase, which wssd cannot ask for.
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key was parsed but rustls cannot use it (an unsupported algorithm or curve).
    UnusableKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The private key does not belong to the leaf certificate.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A file could not be written (`--self-signed-dir`).
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// rustls refused the configuration, or certificate generation failed.
    Other(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } if source.kind() == io::ErrorKind::NotFound => write!(
                f,
                "{}: file not found: check the path (it is relative to the working directory)",
                path.display()
            ),
            TlsError::Read { path, source } if source.kind() == io::ErrorKind::PermissionDenied => {
                write!(
                    f,
                    "{}: permission denied: run wssd as a user that may read it, or fix its mode (chmod 640 and the right group)",
                    path.display()
                )
            }
            TlsError::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            TlsError::Der { path, key: false } => write!(
                f,
                "{p}: this certificate is DER (binary), wssd needs PEM: convert it with `openssl x509 -inform DER -in {p} -out {p}.pem`",
                p = path.display()
            ),
            TlsError::Der { path, key: true } => write!(
                f,
                "{p}: this private key is DER (binary), wssd needs PEM: convert it with `openssl pkey -inform DER -in {p} -out {p}.pem`",
                p = path.display()
            ),
            TlsError::BadPem { path, detail } => write!(
                f,
                "{}: not valid PEM ({detail}): the file should hold `-----BEGIN ...-----` sections as your certificate authority issued them",
                path.display()
            ),
            TlsError::NoCertificate { path } => write!(
                f,
                "{}: no certificate in this file (no `-----BEGIN CERTIFICATE-----`): pass the certificate file (.pem or .crt) as the certificate and the private key file as the key (tls::from_pem_files)",
                path.display()
            ),
            TlsError::NoKey { path } => write!(
                f,
                "{}: no private key in this file (no `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`): pass the private key file as the key and the certificate file as the certificate (tls::from_pem_files)",
                path.display()
            ),
            TlsError::EncryptedKey { path } => write!(
                f,
                "{p}: the private key is encrypted with a passphrase: decrypt it once with `openssl pkey -in {p} -out {p}.decrypted` (it asks for the passphrase), keep the result readable only by the server's user, and pass that as the key (tls::from_pem_files)",
                p = path.display()
            ),
            TlsError::UnusableKey { path, detail } => write!(
                f,
                "{}: this private key cannot be used ({detail}): use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key",
                path.display()
            ),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "{k}: this private key does not belong to the certificate in {c}: pass the key that was made with this certificate (compare `openssl x509 -noout -pubkey -in {c}` with `openssl pkey -pubout -in {k}`)",
                c = cert.display(),
                k = key.display()
            ),
            TlsError::Write { path, source } => {
                write!(
                    f,
                    "{}: cannot write: {source}: choose a writable directory",
                    path.display()
                )
            }
            TlsError::Other(detail) => write!(f, "TLS setup failed: {detail}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } | TlsError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Builds the server configuration from a PEM certificate chain file and a PEM private key file.
///
/// This is Method 2 of the recipe: wssd terminates TLS itself. The key is
/// checked against the leaf certificate at load time.
///
/// # Errors
/// A [`TlsError`] naming the file for each of: a missing or unreadable file,
/// DER instead of PEM, no certificate, no key, an encrypted key, an unusable
/// key, and a key that does not match the certificate.
///
/// ```
/// # let (cert, key) = include!("../doc_pem.rs");
/// let tls = wssd::tls::from_pem_files(&cert, &key)?; // errors name the file and the fix
/// let config = wssd::Config::default().tls(tls);
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
pub fn from_pem_files(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(server_config(load_certified_key(
        cert.as_ref(),
        key.as_ref(),
    )?))
}

/// Loads a PEM certificate chain and private key and checks that they belong together.
///
/// # Errors
/// As [`from_pem_files`].
///
/// ```
/// # let (cert, key) = include!("../doc_pem.rs");
/// let certified = wssd::tls::load_certified_key(&cert, &key)?;
/// let tls = wssd::tls::server_config(certified);
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    load_certified_key_with_chain(cert, None, key)
}

/// Loads a PEM certificate, its intermediates from a file of their own (as Apache's
/// `SSLCertificateChainFile`; `None` when `cert` holds them), and the private key.
///
/// The served chain is `cert`'s certificates, then `chain`'s (RFC 5246 section 7.4.2:
/// the leaf first, each next one certifying the one before).
///
/// # Errors
/// As [`from_pem_files`], each naming the file at fault.
///
/// ```
/// # let (cert, key) = include!("../doc_pem.rs");
/// // With the intermediates in a file of their own (`None`: the certificate file has them):
/// let certified = wssd::tls::load_certified_key_with_chain(&cert, None, &key)?;
/// assert_eq!(certified.cert.len(), 1);
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
pub fn load_certified_key_with_chain(
    cert: &Path,
    chain: Option<&Path>,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let mut certs = load_certificate_chain(cert)?;
    if let Some(chain) = chain {
        certs.extend(load_certificate_chain(chain)?);
    }
    let key_der = load_private_key(key)?;
    certified_key(certs, key_der, cert, key)
}

/// Reads a PEM certificate chain: the leaf first, then the intermediates (RFC 5246 section 7.4.2).
///
/// # Errors
/// [`TlsError::Read`], [`TlsError::Der`], [`TlsError::BadPem`] or
/// [`TlsError::NoCertificate`], each naming `path`.
///
/// ```
/// # let (cert, key) = include!("../doc_pem.rs");
/// let chain = wssd::tls::load_certificate_chain(&cert)?;
/// assert_eq!(chain.len(), 1); // the leaf; a CA's file holds its intermediates after it
/// // The key file is not a certificate, and the error says so:
/// assert!(wssd::tls::load_certificate_chain(&key).is_err());
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
pub fn load_certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_chain(&read_pem_file(path, false)?, path)
}

/// Parses PEM certificates from `bytes`; `path` names them in errors.
fn parse_chain(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// Reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
///
/// # Errors
/// [`TlsError::Read`], [`TlsError::Der`], [`TlsError::BadPem`],
/// [`TlsError::EncryptedKey`] or [`TlsError::NoKey`], each naming `path`.
///
/// ```
/// # let (cert, key) = include!("../doc_pem.rs");
/// let key_der = wssd::tls::load_private_key(&key)?;
/// assert!(wssd::tls::load_private_key(&cert).is_err()); // a swapped pair is named
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_key(&read_pem_file(path, true)?, path)
}

/// Parses one PEM private key from `bytes`; `path` names it in errors.
fn parse_key(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if contains(bytes, b"ENCRYPTED PRIVATE KEY") || contains(bytes, b"Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => pem_error(path, e),
    })
}

/// Pairs a certificate chain with its private key, checking that the key belongs to the leaf.
///
/// The leaf is the certificate of the key. When it is not first (an intermediate pasted
/// before it, say), it is moved first and a warning names the file; the others keep their
/// order. `cert_path` and `key_path` are only used to name the files in errors.
///
/// # Errors
/// [`TlsError::UnusableKey`] when rustls cannot load the key, and
/// [`TlsError::KeyMismatch`] when the key belongs to none of the certificates.
///
/// ```
/// # let (cert, key) = include!("../doc_pem.rs");
/// let chain = wssd::tls::load_certificate_chain(&cert)?;
/// let key_der = wssd::tls::load_private_key(&key)?;
/// let certified = wssd::tls::certified_key(chain, key_der, &cert, &key)?; // checks they match
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let provider = provider();
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnusableKey {
                path: key_path.to_owned(),
                detail: e.to_string(),
            })?;
    for leaf in 0..chain.len() {
        let mut ordered = chain.clone();
        let cert = ordered.remove(leaf);
        ordered.insert(0, cert);
        let certified = CertifiedKey::new(ordered, signing_key.clone());
        match certified.keys_match() {
            // A key whose public half rustls cannot tell is taken as it comes.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                if leaf > 0 {
                    log::warn!(
                        "{}: the certificate of this private key is number {} in the file, not first: served first (put the leaf first in the file, then its intermediates)",
                        cert_path.display(),
                        leaf + 1
                    );
                }
                return Ok(certified);
            }
            // Another's certificate, or one rustls cannot parse: try the next.
            Err(_) => {}
        }
    }
    Err(TlsError::KeyMismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    })
}

/// Builds the rustls server configuration for one certificate: TLS 1.2 and 1.3, ALPN `http/1.1`, no client authentication.
///
/// Uses rustls' `ring` crypto provider.
///
/// ```
/// # let (cert, key) = include!("../doc_pem.rs");
/// let tls = wssd::tls::server_config(wssd::tls::load_certified_key(&cert, &key)?);
/// assert_eq!(tls.alpn_protocols, [b"http/1.1".to_vec()]);
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
pub fn server_config(certified: CertifiedKey) -> Arc<ServerConfig> {
    config_with(Arc::new(SingleCertAndKey::from(certified)))
}

fn config_with(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    resolver_config(resolver)
}

/// The ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737 section 3).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Builds the server configuration around any certificate resolver: TLS 1.2 and 1.3,
/// ALPN `http/1.1`, no client authentication, and one TLS 1.3 session ticket per
/// connection (RFC 8446 section 4.6.1) in rustls' in-memory session cache of 256.
///
/// For a resolver that answers the TLS-ALPN-01 challenges of an ACME client (RFC 8555) on
/// the wss port itself, such as rustls-acme's, add [`ACME_TLS_ALPN`] to the configuration's
/// `alpn_protocols` (RFC 8737): a connection that negotiates it is closed after the TLS
/// handshake, with [`AcceptError::AcmeChallenge`](crate::AcceptError::AcmeChallenge).
///
/// ```
/// # use std::sync::Arc;
/// # let resolver = Arc::new(wssd::rustls::server::ResolvesServerCertUsingSni::new());
/// let mut config = (*wssd::tls::resolver_config(resolver)).clone();
/// config.alpn_protocols.push(wssd::tls::ACME_TLS_ALPN.to_vec()); // ACME on the wss port
/// let config = wssd::Config::default().tls(Arc::new(config));
/// ```
pub fn resolver_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // One TLS 1.3 ticket per connection (RFC 8446 section 4.6.1), not rustls' two: a wss
    // client holds one connection and resumes it once when it reconnects. Each ticket is an
    // entry in the server's session cache (256 of them), so one each lets twice as many
    // clients resume, and the handshake makes half the tickets.
    config.send_tls13_tickets = 1;
    Arc::new(config)
}

/// What is known to be wrong with the served certificates, in plain words with the fix,
/// shared by whoever checks them (the `wssd` binary, at start and after each reload) and
/// the accept path, which names it when a client fails the TLS handshake. Cheap to clone:
/// every clone is the same note.
#[derive(Debug, Clone, Default)]
pub struct CertificateNotes(Arc<RwLock<Option<Arc<str>>>>);

impl CertificateNotes {
    /// Replaces the note; `None` when nothing is known to be wrong.
    ///
    /// ```
    /// let notes = wssd::tls::CertificateNotes::default();
    /// notes.set(Some("the certificate expired on 2026-01-01".into()));
    /// let config = wssd::Config::default(); // config.certificate_notes = notes.clone() to use it
    /// ```
    pub fn set(&self, note: Option<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = note.map(Into::into);
    }

    /// The note, if any.
    ///
    /// ```
    /// let notes = wssd::tls::CertificateNotes::default();
    /// assert!(notes.get().is_none()); // nothing known to be wrong
    /// ```
    pub fn get(&self) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex (the form browsers and `openssl x509 -fingerprint -sha256` show).
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// rustls' `ring` provider, with the handshake's public random values drawn in user space.
#[allow(deprecated)] // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
fn provider() -> CryptoProvider {
    CryptoProvider {
        secure_random: &ThreadRandom,
        ..rustls::crypto::ring::default_provider()
    }
}

/// The random values a rustls server sends in its handshake: the server random (RFC 8446
/// section 4.1.3, RFC 5246 section 7.4.1.3), TLS 1.2 session IDs, and TLS 1.3 tickets'
/// nonces, age offsets and IDs (RFC 8446 section 4.6.1). None is a key: each is sent to
/// the client, or stands for a session the way a session ID does.
///
/// They come from rand's thread-local generator (ChaCha12, reseeded from the operating
/// system's `getrandom` after every 64 KiB), as OpenSSL's and BoringSSL's come from a
/// user-space DRBG, instead of one `getrandom` system call per value: a resumed TLS 1.3
/// handshake with rustls' two tickets made seven, with wssd's one it would make four.
/// Key-exchange private keys and signatures' nonces still come from `ring`, one `getrandom`
/// call each.
///
/// The generator is not reseeded when a process forks: a child would draw the values its
/// parent draws next. The `wssd` binary never forks; an application that forks and accepts
/// TLS connections in the child reseeds there first (`rand::rng().reseed()`).
#[derive(Debug)]
struct ThreadRandom;

impl rustls::crypto::SecureRandom for ThreadRandom {
    /// Never returns an error: rand panics if the operating system refuses to seed it (a
    /// seccomp filter that denies `getrandom`, say), where ring's own calls for the key
    /// exchange would fail every handshake anyway.
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        rand::Rng::fill_bytes(&mut rand::rng(), buf);
        Ok(())
    }
}

fn read_pem_file(path: &Path, key: bool) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !contains(&bytes, b"-----BEGIN ") {
        // A DER file is an ASN.1 SEQUENCE: it starts with 0x30.
        return Err(if bytes.first() == Some(&0x30) {
            TlsError::Der {
                path: path.to_owned(),
                key,
            }
        } else {
            TlsError::BadPem {
                path: path.to_owned(),
                detail: "no `-----BEGIN` line".into(),
            }
        });
    }
    Ok(bytes)
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    TlsError::BadPem {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(feature = "self-signed")]
pub use self_signed::SelfSigned;

#[cfg(feature = "self-signed")]
mod resolver;
pub use resolver::{CertFiles, CertResolver};
mod self_signed;
