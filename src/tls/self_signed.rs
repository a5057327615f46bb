//! A local CA and a leaf certificate made with rcgen (feature `self-signed`).

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A local certificate authority and a leaf certificate it signed, for `localhost`, `127.0.0.1` and `::1`.
///
/// This is the model mkcert follows: a browser or client trusts `ca_pem`
/// once (an NSS database, a system store, `ssl.create_default_context(cafile=...)`),
/// and the leaf then verifies properly, with no certificate errors ignored.
/// All three are PEM text (RFC 7468). Keys are ECDSA P-256.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The CA certificate, PEM. Give this to clients to trust.
    pub ca_pem: String,
    /// The leaf certificate followed by the CA certificate (the certificate chain), PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM. Keep it secret.
    pub key_pem: String,
    /// Where the files live, if they were written or read there; names them in errors.
    dir: Option<PathBuf>,
}

impl SelfSigned {
    /// Generates a new CA and a leaf for `localhost`, `127.0.0.1` and `::1`, valid for 825 days.
    ///
    /// # Errors
    /// [`TlsError::Other`] if rcgen fails, which it does not for these fixed parameters.
    ///
    /// ```
    /// let generated = wssd::tls::SelfSigned::generate()?;
    /// let config = wssd::Config::default().tls(generated.server_config()?);
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn generate() -> Result<Self, TlsError> {
        let err = |e: rcgen::Error| TlsError::Other(format!("certificate generation: {e}"));
        // A day of slack for clocks that run behind; 825 days is the longest
        // validity Apple platforms accept for a TLS server certificate.
        let day = std::time::Duration::from_secs(24 * 3600);
        let not_before = std::time::SystemTime::now() - day;
        let not_after = not_before + 826 * day;

        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "wssd local CA");
        ca.distinguished_name
            .push(DnType::OrganizationName, "wssd development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (ca.not_before, ca.not_after) = (not_before.into(), not_after.into());
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().map_err(err)?;
        let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        let mut leaf = CertificateParams::new(names).map_err(err)?;
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        (leaf.not_before, leaf.not_after) = (not_before.into(), not_after.into());
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(err)?;

        Ok(SelfSigned {
            cert_pem: leaf_cert.pem() + &ca_cert.pem(),
            ca_pem: ca_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
            dir: None,
        })
    }

    /// Reuses `ca.pem`, `cert.pem` and `key.pem` from `dir` when all three exist, else generates them and writes them there.
    ///
    /// The directory is created if needed. On Unix, `key.pem` is written with mode 0600.
    ///
    /// # Errors
    /// [`TlsError::Read`] or [`TlsError::Write`] naming the file, or any
    /// error of [`SelfSigned::server_config`] for files that were reused.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("wssd-doc-self-signed-{}", std::process::id()));
    /// let first = wssd::tls::SelfSigned::load_or_create(&dir)?; // generated and written
    /// let again = wssd::tls::SelfSigned::load_or_create(&dir)?; // the same CA, read back
    /// assert_eq!(first.ca_pem, again.ca_pem); // trust it once (a browser, `--ca`), keep it
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let [ca, cert, key] = ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.join(f));
        if ca.exists() && cert.exists() && key.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|source| TlsError::Read {
                    path: p.to_owned(),
                    source,
                })
            };
            return Ok(SelfSigned {
                ca_pem: read(&ca)?,
                cert_pem: read(&cert)?,
                key_pem: read(&key)?,
                dir: Some(dir.to_owned()),
            });
        }
        let mut this = Self::generate()?;
        this.dir = Some(dir.to_owned());
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write_file(&ca, &this.ca_pem, false)?;
        write_file(&cert, &this.cert_pem, false)?;
        write_file(&key, &this.key_pem, true)?;
        Ok(this)
    }

    /// The leaf certificate, DER.
    ///
    /// # Errors
    /// As [`load_certificate_chain`], when `cert_pem` holds no certificate.
    ///
    /// ```
    /// let leaf = wssd::tls::SelfSigned::generate()?.leaf()?; // DER, for a fingerprint or a check
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn leaf(&self) -> Result<CertificateDer<'static>, TlsError> {
        let mut chain = parse_chain(self.cert_pem.as_bytes(), &self.path("cert.pem"))?;
        Ok(chain.swap_remove(0))
    }

    /// Builds the server configuration that presents the leaf and the CA as the certificate chain,
    /// and logs the leaf's SHA-256 fingerprint (info), as `CertFiles` does for its files.
    ///
    /// # Errors
    /// As [`from_pem_files`], naming `cert.pem` and `key.pem` (in the directory, if any).
    ///
    /// ```
    /// let tls = wssd::tls::SelfSigned::generate()?.server_config()?;
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let (cert_path, key_path) = (self.path("cert.pem"), self.path("key.pem"));
        let chain = parse_chain(self.cert_pem.as_bytes(), &cert_path)?;
        let key = parse_key(self.key_pem.as_bytes(), &key_path)?;
        log::info!(
            "self-signed certificate, SHA-256 fingerprint {}",
            super::fingerprint(&chain[0])
        );
        Ok(server_config(certified_key(
            chain, key, &cert_path, &key_path,
        )?))
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.as_deref().unwrap_or(Path::new("")).join(file)
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
}
