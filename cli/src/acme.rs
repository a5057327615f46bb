//! `--acme`: certificates from an ACME CA (RFC 8555), Let's Encrypt by default, through
//! rustls-acme. The TLS-ALPN-01 challenge (RFC 8737) is answered on the wss port itself, so
//! one wssd on port 443 needs nothing else. Certificates are cached in a directory and
//! reused across restarts, renewed in the background a third of their lifetime before they
//! expire, and swapped in for new handshakes; open connections keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_lite::StreamExt;
use rustls_acme::acme::{LETS_ENCRYPT_PRODUCTION_DIRECTORY, LETS_ENCRYPT_STAGING_DIRECTORY};
use rustls_acme::{AccountCache, AcmeConfig, CertCache, EventError, EventOk, OrderError};
use wssd::rustls::pki_types::CertificateDer;
use wssd::rustls::pki_types::pem::PemObject;
use wssd::rustls::{ClientConfig, RootCertStore, ServerConfig};
use wssd::tls::CertificateNotes;

use crate::certcheck;

/// The ACME options, as given on the command line.
pub struct AcmeArgs<'a> {
    pub domains: &'a [String],
    pub email: &'a Option<String>,
    pub cache: &'a Path,
    pub directory: &'a Option<String>,
    pub staging: bool,
    pub ca: &'a Option<PathBuf>,
    pub port: u16,
}

/// Checks the options, starts the ACME client on a thread of its own, and returns the
/// server configuration whose certificates it provides.
pub fn start(args: AcmeArgs<'_>, notes: CertificateNotes) -> Result<Arc<ServerConfig>, String> {
    for domain in args.domains {
        if domain.starts_with("*.") {
            return Err(format!(
                "--acme {domain}: a wildcard name needs the DNS-01 challenge, which wssd does not answer: list each name (--acme a.example.com --acme b.example.com)"
            ));
        }
        if wssd::rustls::pki_types::DnsName::try_from(domain.as_str()).is_err()
            || domain.parse::<std::net::IpAddr>().is_ok()
        {
            return Err(format!(
                "--acme {:?}: not a domain name: give the name clients connect to, such as --acme chat.example.com",
                wssd::text::escape(domain)
            ));
        }
    }
    let directory = match (args.directory, args.staging) {
        (Some(_), true) => {
            return Err(
                "--acme-staging and --acme-directory exclude each other: choose one".into(),
            );
        }
        (Some(url), false) => url.clone(),
        (None, true) => LETS_ENCRYPT_STAGING_DIRECTORY.into(),
        (None, false) => LETS_ENCRYPT_PRODUCTION_DIRECTORY.into(),
    };
    if let Some(email) = args.email
        && !email.contains('@')
    {
        return Err(format!(
            "--acme-email {:?}: not an email address",
            wssd::text::escape(email)
        ));
    }
    let client = client_config(args.ca)?;
    create_private_dir(args.cache).map_err(|e| {
        format!(
            "--acme-cache {}: cannot create it: {e}: choose a directory wssd's user may write",
            args.cache.display()
        )
    })?;
    if args.port != 443 {
        log::warn!(
            "ACME: wssd listens on port {}, but Let's Encrypt validates the TLS-ALPN-01 challenge on port 443 only: listen on :443 (see the README for running on 443 without root), or forward port 443 to {}",
            args.port,
            args.port
        );
    }
    let cache = FileCache {
        dir: args.cache.to_owned(),
        last: Arc::default(),
        directory: directory.clone(),
    };
    let last = cache.last.clone();
    let mut config = AcmeConfig::new_with_client_config(args.domains, client)
        .directory(&directory)
        .cache(cache);
    if let Some(email) = args.email {
        config = config.contact_push(format!("mailto:{email}"));
    }
    let mut state = config.state();
    // ALPN offers acme-tls/1 beside http/1.1 (RFC 8737): the challenges come to this port.
    let mut server_config = (*wssd::tls::resolver_config(state.resolver())).clone();
    server_config
        .alpn_protocols
        .push(wssd::tls::ACME_TLS_ALPN.to_vec());
    let server_config = Arc::new(server_config);
    let names = args.domains.join(", ");
    let cache_dir = args.cache.display().to_string();
    log::info!(
        "ACME: certificates for {names} from {directory}, cached in {cache_dir}; the TLS-ALPN-01 challenge is answered on this port"
    );
    std::thread::Builder::new()
        .name("wssd-acme".into())
        .spawn(move || {
            smol::block_on(async move {
                while let Some(event) = state.next().await {
                    match event {
                        Ok(EventOk::DeployedCachedCert) => {
                            deployed(&last, "serving the cached certificate", &notes)
                        }
                        Ok(EventOk::DeployedNewCert) => log::info!(
                            "ACME: certificate issued for {names}; new connections get it, open ones keep theirs"
                        ),
                        Ok(EventOk::CertCacheStore) => {
                            deployed(&last, "stored the new certificate", &notes)
                        }
                        Ok(EventOk::AccountCacheStore) => {
                            log::info!("ACME: account key stored in {cache_dir}")
                        }
                        Err(e) => log::error!("ACME: {}", explain(&e, &names, &directory)),
                    }
                }
            })
        })
        .map_err(|e| format!("cannot start the ACME thread: {e}"))?;
    Ok(server_config)
}

/// Logs what the certificate in `last` covers and when it is renewed, and checks it.
fn deployed(last: &Mutex<Option<Vec<u8>>>, what: &str, notes: &CertificateNotes) {
    let Some(pem) = last.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    let Some(facts) = chain.first().and_then(|leaf| certcheck::facts(leaf)) else {
        return;
    };
    // rustls-acme renews a third of the lifetime before the end.
    let renew = facts.not_after - (facts.not_after - facts.not_before) / 3;
    if renew <= certcheck::now() {
        log::info!(
            "ACME: {what} for {}, valid until {}: renewing it now",
            facts.names.join(", "),
            certcheck::date(facts.not_after),
        );
    } else {
        log::info!(
            "ACME: {what} for {}, valid until {}; renewal due {}",
            facts.names.join(", "),
            certcheck::date(facts.not_after),
            certcheck::date(renew)
        );
    }
    let problems = certcheck::check("ACME certificate", None, &chain, true);
    notes.set((!problems.is_empty()).then(|| problems.join("; ")));
}

/// The TLS client configuration for talking to the ACME server: this machine's trusted
/// roots, and `--acme-ca`'s.
fn client_config(ca: &Option<PathBuf>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = ca {
        let certs = wssd::tls::load_certificate_chain(ca).map_err(|e| format!("--acme-ca: {e}"))?;
        roots.add_parsable_certificates(certs);
    }
    if roots.is_empty() {
        return Err(
            "ACME: no trusted roots to check the ACME server's certificate: install the ca-certificates package, or pass --acme-ca".into(),
        );
    }
    #[allow(deprecated)]
    // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
    let provider = Arc::new(wssd::rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A failed step, in plain words with its fix.
fn explain(e: &EventError<io::Error, io::Error>, names: &str, directory: &str) -> String {
    match e {
        EventError::CertCacheLoad(e) | EventError::AccountCacheLoad(e) => format!(
            "cannot read the cache ({e}): give wssd's user access to --acme-cache's directory"
        ),
        EventError::CertCacheStore(e) | EventError::AccountCacheStore(e) => format!(
            "cannot write the cache ({e}): give wssd's user write access to --acme-cache's directory, or the next start orders again"
        ),
        EventError::CachedCertParse(e) => {
            format!("the cached certificate cannot be read ({e}): ordering a new one")
        }
        EventError::NewCertParse(e) => {
            format!("the issued certificate cannot be read ({e}): ordering again")
        }
        EventError::Order(e) => format!(
            "ordering a certificate for {names} failed: {}; retrying with a growing delay",
            order_failure(e, names, directory)
        ),
    }
}

fn order_failure(e: &OrderError, names: &str, directory: &str) -> String {
    use rustls_acme::acme::AcmeError;
    match e {
        // rustls-acme keeps its HTTP error type private: its text is what there is.
        OrderError::Acme(AcmeError::HttpRequest(e)) => {
            let text = e.to_string();
            let shown = wssd::text::escape(&text);
            if text.contains(":rateLimited") {
                format!(
                    "the ACME server's rate limit ({shown}): wait until the time it names; test with --acme-staging, whose limits are far higher"
                )
            } else if text.starts_with("non 2xx") {
                format!("the ACME server refused a request: {shown}")
            } else if text.contains("UnknownIssuer") || text.contains("certificate") {
                format!(
                    "the ACME server's own TLS certificate is not trusted ({shown}): for a private ACME server (Pebble, a company CA), pass its CA with --acme-ca FILE"
                )
            } else {
                format!(
                    "cannot reach the ACME server {directory} ({shown}): check --acme-directory, and this machine's network, DNS and outgoing HTTPS"
                )
            }
        }
        OrderError::BadAuth(auth) => {
            let problem = auth
                .challenges
                .iter()
                .find_map(|c| c.error.as_ref())
                .map(|p| {
                    (
                        p.typ.clone().unwrap_or_default(),
                        p.detail.clone().unwrap_or_default(),
                    )
                });
            let (typ, detail) = problem.unwrap_or_default();
            let detail = wssd::text::escape(&detail).into_owned();
            let lower = detail.to_ascii_lowercase();
            let fix = if typ.ends_with(":dns")
                || lower.contains("dns problem")
                || lower.contains("no valid a")
                || lower.contains("nxdomain")
                || lower.contains("could not resolve")
            {
                format!(
                    "the domain does not resolve to this machine: give {names} a DNS A (or AAAA) record with this server's public address"
                )
            } else if typ.ends_with(":connection")
                || lower.contains("connect")
                || lower.contains("timeout")
            {
                "the ACME server could not connect to port 443: open port 443 to wssd (firewall, cloud security group), and have wssd listen on :443".into()
            } else if typ.ends_with(":tls") || typ.ends_with(":unauthorized") {
                "the ACME server reached something other than this wssd on port 443 (another server, or a proxy that terminates TLS): wssd must answer port 443 itself for TLS-ALPN-01".into()
            } else {
                "check that the domain resolves to this machine and that port 443 reaches wssd"
                    .into()
            };
            format!("the ACME server could not validate the challenge ({typ}: {detail}): {fix}")
        }
        OrderError::TooManyAttemptsAuth(domain) => format!(
            "the ACME server did not validate {domain} in time: check that {domain} resolves to this machine and that port 443 reaches wssd"
        ),
        other => wssd::text::escape(&other.to_string()).into_owned(),
    }
}

/// Creates `dir` readable by this user only (it holds private keys).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The cache: one file per certificate (its key first, then the chain, PEM) and per
/// account key, named after the domains or contacts and the directory URL; written with
/// mode 0600. It remembers the last certificate read or written, for the log.
struct FileCache {
    dir: PathBuf,
    last: Arc<Mutex<Option<Vec<u8>>>>,
    directory: String,
}

impl FileCache {
    fn file(&self, kind: &str, parts: &[String], directory: &str) -> PathBuf {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in parts {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        ctx.update(directory.as_bytes());
        let hex: String = ctx.finish().as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let first = parts.first().map_or("none", String::as_str);
        let readable: String = first
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{kind}-{readable}-{hex}.pem"))
    }

    async fn read(path: PathBuf) -> io::Result<Option<Vec<u8>>> {
        smol::unblock(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn write(path: PathBuf, bytes: Vec<u8>) -> io::Result<()> {
        smol::unblock(move || {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
    }
}

#[async_trait::async_trait]
impl CertCache for FileCache {
    type EC = io::Error;

    async fn load_cert(&self, domains: &[String], directory: &str) -> io::Result<Option<Vec<u8>>> {
        let path = self.file("cert", domains, directory);
        let found = Self::read(path.clone()).await?;
        match &found {
            Some(_) => log::info!("ACME: found a cached certificate in {}", path.display()),
            None => log::info!(
                "ACME: no cached certificate for {}: ordering one from {}",
                domains.join(", "),
                self.directory
            ),
        }
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(&found);
        Ok(found)
    }

    async fn store_cert(&self, domains: &[String], directory: &str, cert: &[u8]) -> io::Result<()> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(cert.to_vec());
        Self::write(self.file("cert", domains, directory), cert.to_vec()).await
    }
}

#[async_trait::async_trait]
impl AccountCache for FileCache {
    type EA = io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        Self::read(self.file("account", contact, directory)).await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory: &str,
        account: &[u8],
    ) -> io::Result<()> {
        Self::write(self.file("account", contact, directory), account.to_vec()).await
    }
}
