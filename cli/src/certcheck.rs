//! The certificate check at start and after each reload: what a served certificate
//! covers, until when, and what a client will refuse it for, each problem with its fix.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use wssd::rustls::pki_types::CertificateDer;

use crate::x509::{self, AltName};

/// What a leaf certificate says about itself.
pub struct Facts {
    /// The DNS names and IP addresses of its subjectAltName; its CN when it has none.
    pub names: Vec<String>,
    /// Whether the names come from the CN alone (browsers ignore the CN).
    pub cn_only: bool,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The issuer's distinguished name, as `openssl x509 -issuer` prints it.
    pub issuer: String,
    /// The issuer's name as DER, to match against the subjects of other certificates.
    issuer_raw: Vec<u8>,
    /// Whether it signed itself (issuer and subject are the same name).
    pub self_issued: bool,
    /// Whether it is a CA certificate (basicConstraints CA:TRUE).
    pub ca: bool,
}

/// Reads a leaf certificate; `None` when it is not X.509 DER (rustls then refuses it too).
pub fn facts(der: &[u8]) -> Option<Facts> {
    let cert = x509::parse(der)?;
    let mut names: Vec<String> = cert
        .alt_names
        .iter()
        .map(|name| match name {
            AltName::Dns(dns) => dns.to_string(),
            AltName::Ip(ip) => ip_text(ip),
        })
        .collect();
    let cn_only = names.is_empty();
    if cn_only {
        names = x509::common_names(cert.subject);
    }
    Some(Facts {
        names,
        cn_only,
        not_before: cert.not_before,
        not_after: cert.not_after,
        issuer: x509::name_text(cert.issuer)?,
        issuer_raw: cert.issuer.to_vec(),
        self_issued: cert.issuer == cert.subject,
        ca: cert.ca,
    })
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()).to_string(),
        _ => "(an IP address)".into(),
    }
}

/// Whether `host` is covered by one of `names` (one leading `*.` label matches one label).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|name| {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(base) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == base),
            None => name == host,
        }
    })
}

/// A date as `2026-11-22 03:00:00 UTC`.
pub fn date(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{} {:02}:{:02}:{:02} UTC",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} s after 1970"),
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The subjects of this machine's trusted roots (the system store), read once.
fn system_root_subjects() -> &'static Vec<Vec<u8>> {
    static ROOTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .filter_map(|der| x509::parse(der).map(|c| c.subject.to_vec()))
            .collect()
    })
}

/// How the CA:TRUE leaf of `openssl req -x509` fares, for the check and for probe.
pub const CA_LEAF: &str = "the leaf certificate is a CA certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes by default): browsers and OpenSSL clients (curl, Python) accept it once trusted, but rustls and webpki clients (Rust apps, wssd probe) refuse it (CaUsedAsEndEntity); make it with `-addext basicConstraints=critical,CA:FALSE`, or run wssd --self-signed-dir DIR, which makes a CA and a leaf";

/// Checks one served certificate chain: logs what it covers, warns about each problem
/// with its fix, and returns the problems (for the failed-handshake log lines).
///
/// `what` names it (the file, or `ACME certificate`); `sni` is the name it is served for;
/// `renewed` when wssd renews it itself (ACME), so that its expiry needs no one's action.
pub fn check(
    what: &str,
    sni: Option<&str>,
    chain: &[CertificateDer<'_>],
    renewed: bool,
) -> Vec<String> {
    let Some(leaf) = chain.first().and_then(|der| facts(der)) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let now = now();
    log::info!(
        "{what}: covers {}, valid until {}, issued by {}",
        leaf.names.join(", "),
        date(leaf.not_after),
        leaf.issuer
    );
    if now > leaf.not_after && renewed {
        problems.push(format!(
            "{what}: the certificate expired on {}: clients refuse it (browsers: ERR_CERT_DATE_INVALID) until the new one, being ordered now, is issued",
            date(leaf.not_after)
        ));
    } else if now > leaf.not_after {
        problems.push(format!(
            "{what}: the certificate expired on {}: clients refuse it (browsers: ERR_CERT_DATE_INVALID); renew it (certbot renew, your CA, or wssd --acme) and reload wssd (SIGHUP)",
            date(leaf.not_after)
        ));
    } else if now < leaf.not_before {
        problems.push(format!(
            "{what}: the certificate is not valid before {}: clients refuse it until then; check this machine's clock (timedatectl), or the certificate's dates",
            date(leaf.not_before)
        ));
    } else if leaf.not_after - now < 14 * 86_400 && !renewed {
        log::warn!(
            "{what}: the certificate expires in {} days ({}): renew it soon, then reload wssd (SIGHUP)",
            (leaf.not_after - now) / 86_400,
            date(leaf.not_after)
        );
    }
    if leaf.cn_only {
        problems.push(format!(
            "{what}: the certificate has no subjectAltName, only a CN ({}): browsers ignore the CN and refuse it (ERR_CERT_COMMON_NAME_INVALID); make it with `-addext subjectAltName=DNS:{}`",
            leaf.names.join(", "),
            leaf.names.first().map_or("example.com", String::as_str)
        ));
    }
    if let Some(name) = sni
        && !covers(&leaf.names, name)
    {
        problems.push(format!(
            "{what}: served for {name} (SNI), but the certificate covers only {}: clients that connect by {name} refuse it (browsers: ERR_CERT_COMMON_NAME_INVALID); get one that covers {name}",
            leaf.names.join(", ")
        ));
    }
    if leaf.self_issued && leaf.ca && chain.len() == 1 {
        problems.push(format!("{what}: {CA_LEAF}"));
    }
    if !leaf.self_issued {
        let in_chain = chain[1..]
            .iter()
            .any(|der| x509::parse(der).is_some_and(|c| c.subject == leaf.issuer_raw.as_slice()));
        if !in_chain && !system_root_subjects().contains(&leaf.issuer_raw) {
            problems.push(format!(
                "{what}: the chain lacks the intermediate certificate that signed the leaf ({}): browsers and apps fail with ERR_CERT_AUTHORITY_INVALID or `unable to get local issuer certificate`; serve the full chain (certbot's fullchain.pem, not cert.pem), or pass the intermediates with --chain (if clients trust {} itself as a private root, ignore this)",
                leaf.issuer, leaf.issuer
            ));
        }
    }
    for problem in &problems {
        log::warn!("{problem}");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_dates() {
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(1_795_316_405), "2026-11-22 03:00:05 UTC");
        assert_eq!(date(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["*.example.com".to_string(), "example.com".to_string()];
        assert!(covers(&names, "chat.example.com"));
        assert!(covers(&names, "EXAMPLE.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(!covers(&names, "example.org"));
    }
}
