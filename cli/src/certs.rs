//! The TLS setup the flags ask for, and reloading certificates from disk on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use wssd::rustls::ServerConfig;
use wssd::tls;

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

/// Checks every served certificate (see [`crate::certcheck`]) and keeps what is wrong in
/// `notes`, where the accept path finds the likely cause of a failed handshake.
pub fn check(files: &tls::CertFiles, notes: &tls::CertificateNotes) {
    let mut problems = Vec::new();
    for (name, file, certified) in files.served() {
        let what = file.display().to_string();
        problems.extend(crate::certcheck::check(
            &what,
            name.as_deref(),
            &certified.cert,
            false,
        ));
    }
    notes.set((!problems.is_empty()).then(|| problems.join("; ")));
}

/// What the TLS flags came to.
pub struct TlsSetup {
    /// `None` for `--plain`.
    pub config: Option<Arc<ServerConfig>>,
    /// A line telling how to trust a self-signed certificate.
    pub trust_hint: Option<String>,
    /// Certificate files to reload on SIGHUP.
    pub files: Option<tls::CertFiles>,
    /// A host name the served certificate covers (its first name that is not a wildcard),
    /// for the URL the banner shows; `None` for a self-signed one (localhost) or plain ws.
    pub name: Option<String>,
}

/// The TLS options, as given on the command line.
pub struct TlsArgs<'a> {
    pub cert: &'a Option<PathBuf>,
    pub chain: &'a Option<PathBuf>,
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
    if args.chain.is_some() && args.cert.is_none() {
        return Err("--chain holds the intermediates of --cert: pass --cert and --key too".into());
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
            name: None,
        });
    }
    if files {
        let default = match (args.cert, args.key) {
            (Some(cert), Some(key)) => (cert, key),
            // No --cert: the first --sni pair is also the default.
            _ => (&args.sni[0].cert, &args.sni[0].key),
        };
        let mut files = tls::CertFiles::load_with_chain(default.0, args.chain.as_ref(), default.1)
            .map_err(|e| e.to_string())?;
        for s in args.sni {
            files = files
                .with_sni(&s.name, &s.cert, &s.key)
                .map_err(|e| e.to_string())?;
        }
        let name = files.served().first().and_then(|(_, _, certified)| {
            let facts = crate::certcheck::facts(certified.cert.first()?)?;
            facts
                .names
                .into_iter()
                .find(|n| !n.starts_with("*.") && n.parse::<std::net::IpAddr>().is_err())
        });
        return Ok(TlsSetup {
            config: Some(files.server_config()),
            trust_hint: None,
            files: Some(files),
            name,
        });
    }
    let generated = match args.self_signed_dir {
        Some(dir) => tls::SelfSigned::load_or_create(dir),
        None => tls::SelfSigned::generate(),
    }
    .map_err(|e| e.to_string())?;
    // Logs the leaf's SHA-256 fingerprint, as CertFiles does for the files it serves.
    let config = generated.server_config().map_err(|e| e.to_string())?;
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
        name: None,
    })
}
