//! The TLS setup the flags ask for, and reloading certificates from disk on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use wssd::rustls::ServerConfig;
use wssd::tls::{self, CertResolver};

/// `--sni NAME=CERT,KEY`: a host name and the PEM files that serve it.
#[derive(Debug, Clone)]
pub struct SniCert {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

/// Parses `NAME=CERT,KEY`.
pub fn parse_sni(value: &str) -> Result<SniCert, String> {
    let bad = || {
        format!("--sni {value:?}: expected NAME=CERT,KEY, as in --sni b.example.com=b.pem,b.key")
    };
    let (name, files) = value.split_once('=').ok_or_else(bad)?;
    let (cert, key) = files.split_once(',').ok_or_else(bad)?;
    if name.is_empty() || cert.is_empty() || key.is_empty() {
        return Err(bad());
    }
    Ok(SniCert {
        name: name.to_string(),
        cert: cert.into(),
        key: key.into(),
    })
}

/// Which certificate files to serve, and where to reload them from.
pub struct Files {
    default: (PathBuf, PathBuf),
    sni: Vec<SniCert>,
    resolver: Arc<CertResolver>,
}

impl Files {
    /// Loads the default pair and every `--sni` pair; the first error stops it.
    pub fn load(default: (PathBuf, PathBuf), sni: Vec<SniCert>) -> Result<Self, String> {
        let certified =
            tls::load_certified_key(&default.0, &default.1).map_err(|e| e.to_string())?;
        log::info!(
            "TLS certificate chain {}, private key {}",
            default.0.display(),
            default.1.display()
        );
        let resolver = CertResolver::new(certified);
        for s in &sni {
            let certified = tls::load_certified_key(&s.cert, &s.key).map_err(|e| e.to_string())?;
            log::info!(
                "SNI {}: certificate chain {}, private key {}",
                s.name,
                s.cert.display(),
                s.key.display()
            );
            resolver.set_for_name(&s.name, certified);
        }
        Ok(Files {
            default,
            sni,
            resolver,
        })
    }

    /// The server configuration that follows reloads.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.resolver.server_config()
    }

    /// Reloads every pair from disk. A pair that fails to load keeps its current
    /// certificate, and the error is logged; live connections are never touched.
    pub fn reload(&self) {
        let fingerprint = |c: &wssd::rustls::sign::CertifiedKey| tls::fingerprint(&c.cert[0]);
        match tls::load_certified_key(&self.default.0, &self.default.1) {
            Ok(certified) => {
                log::info!(
                    "reloaded {}: SHA-256 {}",
                    self.default.0.display(),
                    fingerprint(&certified)
                );
                self.resolver.set_default(certified);
            }
            Err(e) => log::error!("reload failed, keeping the current certificate: {e}"),
        }
        for s in &self.sni {
            match tls::load_certified_key(&s.cert, &s.key) {
                Ok(certified) => {
                    log::info!(
                        "reloaded SNI {} from {}: SHA-256 {}",
                        s.name,
                        s.cert.display(),
                        fingerprint(&certified)
                    );
                    self.resolver.set_for_name(&s.name, certified);
                }
                Err(e) => log::error!(
                    "reload of SNI {} failed, keeping its current certificate: {e}",
                    s.name
                ),
            }
        }
    }
}

/// What the TLS flags came to.
pub struct TlsSetup {
    /// `None` for `--plain`.
    pub config: Option<Arc<ServerConfig>>,
    /// A line telling how to trust a self-signed certificate.
    pub trust_hint: Option<String>,
    /// Certificate files to reload on SIGHUP.
    pub files: Option<Files>,
}

/// The TLS options, as given on the command line.
pub struct TlsArgs<'a> {
    pub cert: &'a Option<PathBuf>,
    pub key: &'a Option<PathBuf>,
    pub sni: &'a [SniCert],
    pub plain: bool,
    pub self_signed: bool,
    pub self_signed_dir: &'a Option<PathBuf>,
}

/// The TLS configuration the flags ask for.
pub fn setup(args: TlsArgs<'_>) -> Result<TlsSetup, String> {
    let self_signed = args.self_signed || args.self_signed_dir.is_some();
    let files = !args.sni.is_empty() || args.cert.is_some() || args.key.is_some();
    if args.plain && (files || self_signed) {
        return Err(
            "--plain serves ws:// without TLS: drop --plain, or drop the certificate options"
                .into(),
        );
    }
    if self_signed && files {
        return Err("--self-signed and --cert/--key/--sni exclude each other: choose one".into());
    }
    match (args.cert, args.key) {
        (Some(_), None) => return Err("--cert needs --key: pass the private key file too".into()),
        (None, Some(_)) => return Err("--key needs --cert: pass the certificate file too".into()),
        _ => {}
    }
    if args.plain {
        return Ok(TlsSetup {
            config: None,
            trust_hint: None,
            files: None,
        });
    }
    if files {
        let mut sni = args.sni.to_vec();
        let default = match (args.cert, args.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            // No --cert: the first --sni pair is also the default.
            _ => {
                let first = sni.remove(0);
                let pair = (first.cert.clone(), first.key.clone());
                sni.insert(0, first);
                pair
            }
        };
        let files = Files::load(default, sni)?;
        return Ok(TlsSetup {
            config: Some(files.server_config()),
            trust_hint: None,
            files: Some(files),
        });
    }
    let generated = match args.self_signed_dir {
        Some(dir) => tls::SelfSigned::load_or_create(dir),
        None => tls::SelfSigned::generate(),
    }
    .map_err(|e| e.to_string())?;
    let config = generated.server_config().map_err(|e| e.to_string())?;
    let leaf = generated.leaf().map_err(|e| e.to_string())?;
    log::info!(
        "self-signed certificate, SHA-256 fingerprint {}",
        tls::fingerprint(&leaf)
    );
    let hint = match args.self_signed_dir {
        Some(dir) => format!(
            "The certificate is signed by a local CA: trust {} in the browser or client first.",
            dir.join("ca.pem").display()
        ),
        None => "The certificate is self-signed and new each start: open the https:// form of that URL once and accept the warning, or use --self-signed-dir DIR and trust DIR/ca.pem.".to_string(),
    };
    Ok(TlsSetup {
        config: Some(config),
        trust_hint: Some(hint),
        files: None,
    })
}
