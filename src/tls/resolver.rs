//! Certificates that can be replaced while the server runs: [`CertResolver`] (chosen by SNI,
//! RFC 6066 section 3) and [`CertFiles`] (the files behind them, reloaded on demand).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::{ServerConfig, sign::CertifiedKey};

use super::{
    TlsError, config_with, fingerprint, load_certified_key, load_certified_key_with_chain,
};

/// Certificates that can be replaced while the server runs, chosen by SNI (RFC 6066 section 3).
///
/// New TLS handshakes use whatever is current; connections already open keep the
/// certificate they were made with. A client that sends no SNI, or a name with no
/// certificate of its own, gets the default one.
///
/// ```no_run
/// use std::path::Path;
/// use wssd::tls::{CertResolver, load_certified_key};
///
/// let resolver = CertResolver::new(load_certified_key(Path::new("a.pem"), Path::new("a.key"))?);
/// resolver.set_for_name("b.example.com", load_certified_key(Path::new("b.pem"), Path::new("b.key"))?);
/// let config = wssd::Config::default().tls(resolver.server_config());
/// // Later, after renewal (on SIGHUP, say): new handshakes get the new certificate.
/// resolver.set_default(load_certified_key(Path::new("a.pem"), Path::new("a.key"))?);
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
#[derive(Debug)]
pub struct CertResolver {
    default: RwLock<Arc<CertifiedKey>>,
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// A resolver with this default certificate and no names of its own.
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let resolver = wssd::tls::CertResolver::new(wssd::tls::load_certified_key(&cert, &key)?);
    /// let config = wssd::Config::default().tls(resolver.server_config());
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn new(default: CertifiedKey) -> Arc<Self> {
        Arc::new(CertResolver {
            default: RwLock::new(Arc::new(default)),
            by_name: RwLock::default(),
        })
    }

    /// Replaces the default certificate, for handshakes from now on.
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let resolver = wssd::tls::CertResolver::new(wssd::tls::load_certified_key(&cert, &key)?);
    /// // A renewed pair: new handshakes get it, live connections keep theirs.
    /// resolver.set_default(wssd::tls::load_certified_key(&cert, &key)?);
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn set_default(&self, certified: CertifiedKey) {
        *self.default.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
    }

    /// Sets or replaces the certificate for one SNI host name (case-insensitive).
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let resolver = wssd::tls::CertResolver::new(wssd::tls::load_certified_key(&cert, &key)?);
    /// resolver.set_for_name("chat.example.com", wssd::tls::load_certified_key(&cert, &key)?);
    /// assert!(resolver.current().1.contains_key("chat.example.com"));
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn set_for_name(&self, name: &str, certified: CertifiedKey) {
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_ascii_lowercase(), Arc::new(certified));
    }

    /// The server configuration that takes its certificates from this resolver.
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let resolver = wssd::tls::CertResolver::new(wssd::tls::load_certified_key(&cert, &key)?);
    /// let tls = resolver.server_config(); // serves whatever the resolver holds at each handshake
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        config_with(self.clone())
    }

    /// The default certificate and those by SNI name (lower case), as they are now.
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let resolver = wssd::tls::CertResolver::new(wssd::tls::load_certified_key(&cert, &key)?);
    /// let (default, by_name) = resolver.current();
    /// assert!(by_name.is_empty());
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn current(&self) -> (Arc<CertifiedKey>, HashMap<String, Arc<CertifiedKey>>) {
        let default = self
            .default
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let by_name = self
            .by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (default, by_name)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let map = self.by_name.read().unwrap_or_else(|e| e.into_inner());
            if let Some(certified) = map.get(&name.to_ascii_lowercase()) {
                return Some(certified.clone());
            }
        }
        Some(
            self.default
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Certificate files served and reloaded from disk: a default PEM pair (certificate chain
/// and private key) and any number of SNI pairs (RFC 6066 section 3), behind one
/// [`CertResolver`]. Call [`CertFiles::reload`] after a renewal (on SIGHUP, say): new TLS
/// handshakes get the new certificates, live connections are untouched, and a pair that
/// fails to load (the certificate replaced, the key not yet) keeps its current one.
///
/// ```no_run
/// let files = wssd::tls::CertFiles::load("example.com.pem", "example.com.key")?
///     .with_sni("chat.example.com", "chat.pem", "chat.key")?;
/// let acceptor = wssd::Acceptor::new(wssd::Config::default().tls(files.server_config()));
/// // After certbot renewed the files:
/// files.reload()?;
/// # Ok::<(), wssd::tls::TlsError>(())
/// ```
#[derive(Debug)]
pub struct CertFiles {
    default: (PathBuf, Option<PathBuf>, PathBuf),
    sni: Vec<(String, PathBuf, PathBuf)>,
    resolver: Arc<CertResolver>,
}

impl CertFiles {
    /// Loads the default certificate chain and private key (PEM), logging which files.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file and the fix, as [`from_pem_files`](super::from_pem_files).
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let files = wssd::tls::CertFiles::load(&cert, &key)?;
    /// let config = wssd::Config::default().tls(files.server_config());
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn load(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        Self::load_with_chain(cert, None::<&Path>, key)
    }

    /// Loads the default certificate, its intermediates from a file of their own (`None`
    /// when the certificate file holds them) and the private key (PEM), as
    /// [`load_certified_key_with_chain`], logging which files.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file and the fix, as [`from_pem_files`](super::from_pem_files).
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let files = wssd::tls::CertFiles::load_with_chain(&cert, None::<&std::path::Path>, &key)?;
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn load_with_chain(
        cert: impl AsRef<Path>,
        chain: Option<impl AsRef<Path>>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let chain = chain.map(|c| c.as_ref().to_path_buf());
        let certified = load_certified_key_with_chain(&cert, chain.as_deref(), &key)?;
        match &chain {
            Some(chain) => log::info!(
                "TLS certificate {}, intermediates {}, private key {}",
                cert.display(),
                chain.display(),
                key.display()
            ),
            None => log::info!(
                "TLS certificate chain {}, private key {}",
                cert.display(),
                key.display()
            ),
        }
        Ok(CertFiles {
            default: (cert, chain, key),
            sni: Vec::new(),
            resolver: CertResolver::new(certified),
        })
    }

    /// Adds a pair served to clients that ask for `name` by SNI (case-insensitive).
    ///
    /// # Errors
    /// A [`TlsError`] naming the file and the fix.
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let files = wssd::tls::CertFiles::load(&cert, &key)?
    ///     .with_sni("chat.example.com", &cert, &key)?; // its own pair for that name
    /// assert_eq!(files.served().len(), 2);
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn with_sni(
        mut self,
        name: &str,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let certified = load_certified_key(&cert, &key)?;
        log::info!(
            "SNI {name}: certificate chain {}, private key {}",
            cert.display(),
            key.display()
        );
        self.resolver.set_for_name(name, certified);
        self.sni.push((name.to_owned(), cert, key));
        Ok(self)
    }

    /// The server configuration that follows reloads.
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let files = wssd::tls::CertFiles::load(&cert, &key)?;
    /// let tls = files.server_config(); // follows every reload()
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.resolver.server_config()
    }

    /// The certificates served now, each with its SNI name (`None` for the default) and
    /// the file it came from: to check them after a load or a reload.
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let files = wssd::tls::CertFiles::load(&cert, &key)?;
    /// let (name, path, _) = &files.served()[0];
    /// assert_eq!((name, path), (&None, &cert)); // the default pair, from this file
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn served(&self) -> Vec<(Option<String>, PathBuf, Arc<CertifiedKey>)> {
        let current = self.resolver.current();
        let mut served = vec![(None, self.default.0.clone(), current.0)];
        for (name, cert, _) in &self.sni {
            if let Some(certified) = current.1.get(&name.to_ascii_lowercase()) {
                served.push((Some(name.clone()), cert.clone(), certified.clone()));
            }
        }
        served
    }

    /// Reloads every pair from disk, logging each new SHA-256 fingerprint. A pair that
    /// fails to load keeps its current certificate, and the error is logged.
    ///
    /// # Errors
    /// The first pair's [`TlsError`], when any failed (all of them are logged).
    ///
    /// ```
    /// # let (cert, key) = include!("../doc_pem.rs");
    /// let files = wssd::tls::CertFiles::load(&cert, &key)?;
    /// // On SIGHUP, or when the certificate files were renewed:
    /// files.reload()?; // a pair that fails to load keeps the one served, and says why
    /// # Ok::<(), wssd::tls::TlsError>(())
    /// ```
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut first = None;
        let (cert, chain, key) = &self.default;
        match load_certified_key_with_chain(cert, chain.as_deref(), key) {
            Ok(certified) => {
                // Swapped first, then logged: once the line is out, handshakes get it.
                let sha = fingerprint(&certified.cert[0]);
                self.resolver.set_default(certified);
                log::info!("reloaded {}: SHA-256 {sha}", self.default.0.display());
            }
            Err(e) => {
                log::error!("reload failed, keeping the current certificate: {e}");
                first = Some(e);
            }
        }
        for (name, cert, key) in &self.sni {
            match load_certified_key(cert, key) {
                Ok(certified) => {
                    let sha = fingerprint(&certified.cert[0]);
                    self.resolver.set_for_name(name, certified);
                    log::info!("reloaded SNI {name} from {}: SHA-256 {sha}", cert.display());
                }
                Err(e) => {
                    log::error!(
                        "reload of SNI {name} failed, keeping its current certificate: {e}"
                    );
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
