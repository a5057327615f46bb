//! `wssd probe URL`: a client-side doctor for ws:// and wss:// deployments.
//!
//! One line per step, in order (DNS, TCP, TLS, certificate, expiry, HTTP upgrade, echo),
//! each passed, warned or failed with the fix. Exit code 0 only when nothing failed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use smol::{future, net::TcpStream};
use wssd::Message;
use wssd::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::WebPkiServerVerifier,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use wssd::text::escape;
use wssd::tungstenite::{
    handshake::derive_accept_key,
    http::Uri,
    protocol::{Role, WebSocketConfig},
};

#[derive(FromArgs)]
/// Diagnose a ws:// or wss:// URL step by step (DNS, TCP, TLS, certificate, HTTP upgrade,
/// echo), naming the fix for each failure. Exit code 0 only when every step passes.
#[argh(subcommand, name = "probe")]
pub struct Probe {
    /// the URL, such as wss://example.com/wss
    #[argh(positional)]
    url: String,

    /// report certificate problems (untrusted, wrong name, expired) as warnings, not failures
    #[argh(switch)]
    insecure: bool,

    /// also trust the CA certificates in this PEM file (such as wssd's self-signed ca.pem)
    #[argh(option)]
    ca: Option<PathBuf>,

    /// print one JSON object instead of lines
    #[argh(switch)]
    json: bool,

    /// seconds each network step may take (default 5)
    #[argh(option, default = "5")]
    timeout: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Warn,
    Fail,
}

struct Step {
    name: &'static str,
    status: Status,
    detail: String,
    fix: Option<String>,
}

struct Report {
    steps: Vec<Step>,
}

impl Report {
    fn add(
        &mut self,
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        // What the server sent (headers, bodies, close reasons) reaches the terminal
        // only escaped: no control sequences, line breaks or bidirectional overrides.
        self.steps.push(Step {
            name,
            status,
            detail: escape(&detail.into()).into_owned(),
            fix: fix.map(|fix| escape(&fix).into_owned()),
        });
    }
    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.add(name, Status::Pass, detail, None);
    }
    fn fail(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(name, Status::Fail, detail, Some(fix.into()));
    }
    fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Fail)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Probe {
    /// Runs the probe, prints the report, and returns whether every step passed.
    pub fn run(&self) -> bool {
        let mut report = Report { steps: Vec::new() };
        smol::block_on(self.steps(&mut report));
        if self.json {
            let steps: Vec<_> = report
                .steps
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "step": s.name,
                        "status": match s.status { Status::Pass => "pass", Status::Warn => "warn", Status::Fail => "fail" },
                        "detail": s.detail,
                        "fix": s.fix,
                    })
                })
                .collect();
            let out =
                serde_json::json!({ "url": self.url, "ok": !report.failed(), "steps": steps });
            println!("{out}");
        } else {
            for s in &report.steps {
                let status = match s.status {
                    Status::Pass => "PASS",
                    Status::Warn => "WARN",
                    Status::Fail => "FAIL",
                };
                println!("{status} {:<11} {}", s.name, s.detail);
                if let Some(fix) = &s.fix {
                    println!("     {:<11} fix: {fix}", "");
                }
            }
        }
        !report.failed()
    }

    async fn steps(&self, report: &mut Report) {
        let Some(target) = parse_url(&self.url, report) else {
            return;
        };
        let limit = Duration::from_secs(self.timeout.max(1));

        // DNS.
        let addrs: Vec<SocketAddr> = match (target.host.as_str(), target.port).to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                return report.fail(
                    "dns",
                    format!("{} does not resolve: {e}", target.host),
                    "check the spelling of the domain, its DNS records, or /etc/hosts",
                );
            }
        };
        let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        report.pass("dns", format!("{} -> {}", target.host, list.join(", ")));

        // TCP.
        let Some(tcp) = self.connect(&addrs, limit, report).await else {
            return;
        };

        // TLS.
        let mut stream: Box<dyn Io> = if target.tls {
            match self.tls(tcp, &target, limit, report).await {
                Some(tls) => tls,
                None => return,
            }
        } else {
            Box::new(tcp)
        };

        // The HTTP upgrade.
        let Some(leftover) = upgrade(&mut stream, &target, limit, report).await else {
            return;
        };

        // An echo round trip.
        // Bounded memory whatever the server sends: messages up to 1 MiB, and pong
        // replies to a server that reads none replace each other instead of piling up.
        let config = WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20))
            .write_buffer_size(0)
            .max_write_buffer_size(64 << 10);
        let mut ws = async_tungstenite::WebSocketStream::from_partially_read(
            stream,
            leftover,
            Role::Client,
            Some(config),
        )
        .await;
        let started = Instant::now();
        let round_trip = async {
            ws.send(Message::text("wssd probe")).await?;
            loop {
                // A server that streams control frames keeps the socket always readable, so
                // each read is ready at once: yielding lets `with_timeout` see its deadline.
                futures_lite::future::yield_now().await;
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Ok(format!("text \"{}\"", t.as_str())),
                    Some(Ok(Message::Binary(b))) => {
                        return Ok(format!("{} bytes of binary", b.len()));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(wssd::tungstenite::Error::Io(std::io::Error::other(
                            format!(
                                "the server closed instead: {}",
                                frame.map_or("no close code".to_string(), |f| format!(
                                    "{} {}",
                                    u16::from(f.code),
                                    f.reason
                                ))
                            ),
                        )));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e),
                    None => return Err(wssd::tungstenite::Error::ConnectionClosed),
                }
            }
        };
        match with_timeout(limit, round_trip).await {
            Some(Ok(reply)) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                report.pass(
                    "echo",
                    format!("sent \"wssd probe\", got {reply} in {ms:.1} ms"),
                );
                let _ = with_timeout(limit, ws.close(None)).await;
            }
            Some(Err(e)) => report.fail(
                "echo",
                format!("sending a message failed: {e}"),
                "see the server's log for why it closed",
            ),
            None => report.add(
                "echo",
                Status::Warn,
                format!("no reply within {} s", limit.as_secs()),
                Some("fine for a push-only server; an echo or --reply server should answer".into()),
            ),
        }
    }

    async fn connect(
        &self,
        addrs: &[SocketAddr],
        limit: Duration,
        report: &mut Report,
    ) -> Option<TcpStream> {
        let mut last = String::new();
        let mut timed_out = false;
        for addr in addrs {
            match with_timeout(limit, TcpStream::connect(addr)).await {
                Some(Ok(tcp)) => {
                    report.pass("tcp", format!("connected to {addr}"));
                    return Some(tcp);
                }
                Some(Err(e)) => last = format!("{addr}: {e}"),
                None => {
                    timed_out = true;
                    last = format!("{addr}: no answer within {} s", limit.as_secs());
                }
            }
        }
        let fix = if timed_out {
            "a firewall drops the port (ufw, iptables, a cloud security group): open it, or check the address"
        } else {
            "nothing listens on that port: is wssd running, with --listen on this address and port?"
        };
        report.fail("tcp", format!("cannot connect: {last}"), fix);
        None
    }

    async fn tls(
        &self,
        tcp: TcpStream,
        target: &Target,
        limit: Duration,
        report: &mut Report,
    ) -> Option<Box<dyn Io>> {
        let verifier = match self.verifier() {
            Ok(v) => v,
            Err(e) => {
                report.fail("tls", e, "pass a readable PEM file with --ca");
                return None;
            }
        };
        #[allow(deprecated)]
        // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = match ServerName::try_from(target.host.clone()) {
            Ok(name) => name,
            Err(e) => {
                report.fail(
                    "tls",
                    format!("{:?} is not a valid server name: {e}", target.host),
                    "fix the URL",
                );
                return None;
            }
        };
        let connector = futures_rustls::TlsConnector::from(Arc::new(config));
        let tls = match with_timeout(limit, connector.connect(name, tcp)).await {
            Some(Ok(tls)) => tls,
            Some(Err(e)) => {
                let (detail, fix) = tls_failure(&e, target);
                report.fail("tls", detail, fix);
                return None;
            }
            None => {
                report.fail(
                    "tls",
                    format!("no TLS answer within {} s", limit.as_secs()),
                    format!(
                        "the port may speak plain ws://: try ws://{}:{}{}",
                        target.host, target.port, target.path
                    ),
                );
                return None;
            }
        };
        let conn = tls.get_ref().1;
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        let alpn = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        report.pass(
            "tls",
            format!("{version}, ALPN {}", alpn.as_deref().unwrap_or("none")),
        );

        let recorded = verifier.result.lock().unwrap().take();
        let status = if self.insecure {
            Status::Warn
        } else {
            Status::Fail
        };
        let leaf = verifier.leaf.lock().unwrap().take();
        let facts = leaf.as_deref().and_then(crate::certcheck::facts);
        match recorded {
            Some(Ok(())) => report.pass("certificate", "chain verified, valid for this name"),
            Some(Err(e)) => {
                let (detail, fix) = certificate_failure(&e, target, facts.as_ref());
                let fix = if self.insecure {
                    format!("{fix} (ignored: --insecure)")
                } else {
                    fix
                };
                report.add("certificate", status, detail, Some(fix));
            }
            None => report.fail(
                "certificate",
                "the server sent no certificate",
                "configure the server's certificate",
            ),
        }
        if let Some(leaf) = leaf {
            expiry(&leaf, report);
        }
        Some(Box::new(tls))
    }

    fn verifier(&self) -> Result<Arc<Recording>, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(ca) = &self.ca {
            let certs = wssd::tls::load_certificate_chain(ca).map_err(|e| e.to_string())?;
            roots.add_parsable_certificates(certs);
        }
        #[allow(deprecated)]
        // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("no trust anchors: {e} (no system CA store, and no --ca)"))?;
        Ok(Arc::new(Recording {
            inner,
            result: Mutex::new(None),
            leaf: Mutex::new(None),
        }))
    }
}

/// What the probe connects to.
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query.
    path: String,
}

fn parse_url(url: &str, report: &mut Report) -> Option<Target> {
    let bad = |report: &mut Report, why: String| {
        report.fail(
            "url",
            why,
            "give a URL such as wss://example.com/wss or ws://127.0.0.1:8282/",
        );
        None
    };
    if !url.contains("://") {
        let rest = wssd::text::escape(url.trim_start_matches('/'));
        report.fail(
            "url",
            format!("{rest:?} has no scheme"),
            format!("write wss://{rest} (TLS, as a browser's wss:// URL) or ws://{rest} (plain, as behind a proxy on this machine)"),
        );
        return None;
    }
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            return bad(
                report,
                format!("{:?} is not a URL: {e}", wssd::text::escape(url)),
            );
        }
    };
    let tls = match uri.scheme_str() {
        Some("wss") | Some("https") => true,
        Some("ws") | Some("http") => false,
        other => {
            return bad(
                report,
                format!(
                    "scheme {}:// : wssd probes ws:// and wss://",
                    wssd::text::escape(other.unwrap_or(""))
                ),
            );
        }
    };
    let Some(host) = uri.host() else {
        return bad(report, format!("{url:?} has no host"));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Some(Target {
        tls,
        host,
        port,
        path,
    })
}

/// Reads the upgrade response; returns the bytes after it (the start of the WebSocket stream).
async fn upgrade(
    stream: &mut Box<dyn Io>,
    target: &Target,
    limit: Duration,
    report: &mut Report,
) -> Option<Vec<u8>> {
    let key = "d3NzZCBwcm9iZSBrZXkhIQ==";
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wssd-probe\r\n\r\n",
        target.path, target.port
    );
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 << 10 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match with_timeout(limit, exchange).await {
        Some(Ok(buf)) => buf,
        Some(Err(e)) => {
            report.fail(
                "upgrade",
                format!("the connection failed: {e}"),
                "see the server's log",
            );
            return None;
        }
        None => {
            report.fail(
                "upgrade",
                format!("no HTTP answer within {} s", limit.as_secs()),
                "the server accepted the connection but does not speak HTTP there",
            );
            return None;
        }
    };
    if buf.is_empty() {
        let fix = if target.tls {
            "the server closed without answering: see its log"
        } else {
            "the server closed without answering: if it speaks TLS, use wss://"
        };
        report.fail("upgrade", "no answer to the upgrade request", fix);
        return None;
    }
    if buf[0] == 0x15 {
        report.fail(
            "upgrade",
            "the server answered with a TLS alert",
            format!(
                "this port speaks TLS: use wss://{}:{}{}",
                target.host, target.port, target.path
            ),
        );
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => {
            let start = String::from_utf8_lossy(&buf[..buf.len().min(60)]).into_owned();
            report.fail(
                "upgrade",
                format!("not an HTTP answer: \"{start}\""),
                "check that this port is the WebSocket server's",
            );
            return None;
        }
    };
    let code = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let body = String::from_utf8_lossy(&buf[head_len..]);
    let first_line = body.lines().next().unwrap_or("").trim().to_string();
    let detail = if first_line.is_empty() {
        format!("HTTP {code} instead of 101")
    } else {
        format!("HTTP {code} instead of 101: {first_line}")
    };
    if code == 101 {
        if header("sec-websocket-accept").as_deref()
            != Some(derive_accept_key(key.as_bytes()).as_str())
        {
            report.fail(
                "upgrade",
                "101 with a wrong Sec-WebSocket-Accept",
                "something between rewrites the handshake",
            );
            return None;
        }
        let via = header("server")
            .map(|s| format!(" (server: {s})"))
            .unwrap_or_default();
        report.pass("upgrade", format!("101 Switching Protocols{via}"));
        return Some(buf[head_len..].to_vec());
    }
    let fix = match code {
        400 if body.contains("speaks TLS") => {
            format!("this port speaks TLS: use wss://{}:{}{}", target.host, target.port, target.path)
        }
        400 | 200 | 426 => "the Upgrade request did not arrive intact: a proxy in between drops it. nginx needs \
             `proxy_http_version 1.1;`, `proxy_set_header Upgrade $http_upgrade;` and \
             `proxy_set_header Connection \"upgrade\";` (see `wssd proxy-config nginx`)"
            .to_string(),
        404 => wrong_path(&body, &target.path),
        502..=504 => "the proxy answered but its upstream (wssd) is down or unreachable: start wssd, and check the proxy's upstream address".to_string(),
        _ => "see the server's log".to_string(),
    };
    report.fail("upgrade", detail, fix);
    None
}

/// The fix for a 404. wssd's own 404 names the path it received; when that is not the
/// path this URL asked for, a proxy in between rewrote it.
fn wrong_path(body: &str, asked: &str) -> String {
    let received = body
        .split_once("No WebSocket at path \"")
        .and_then(|(_, rest)| rest.split_once("\", the path this server received"))
        .map(|(path, _)| path);
    match received {
        Some(received) if received != asked => format!(
            "a proxy in between changed the path: this URL asks for {asked}, wssd received {}. \
             nginx: a URI after proxy_pass's address (proxy_pass http://127.0.0.1:8282/; with the \
             trailing slash) replaces the location's prefix: write proxy_pass http://127.0.0.1:8282; \
             Apache: ProxyPass {asked} ws://127.0.0.1:8282{asked} (the same path on both sides). \
             See `wssd proxy-config`",
            received
        ),
        Some(_) => format!(
            "wssd has no WebSocket at {asked}: connect to the path its answer names, or change its --path"
        ),
        None => format!(
            "no WebSocket at {asked}: check the URL's path against wssd's --path or the proxy's location"
        ),
    }
}

fn tls_failure(e: &std::io::Error, target: &Target) -> (String, String) {
    let plain = format!(
        "the port speaks plain ws://: use ws://{}:{}{}",
        target.host, target.port, target.path
    );
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(_)) => ("the server answered with something other than TLS".into(), plain),
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion))
        | Some(rustls::Error::PeerIncompatible(_)) => (
            format!("no TLS version in common: {e}"),
            "the server offers only TLS older than 1.2: enable TLS 1.2 and 1.3 (WeChat Mini Programs refuse anything older)".into(),
        ),
        Some(rustls::Error::AlertReceived(alert)) => (
            format!("the server ended the TLS handshake with the alert {alert:?}"),
            "no TLS version or cipher suite in common, or no certificate for this name (SNI): the server's log says which".into(),
        ),
        Some(_) => ("the TLS handshake failed".into(), "the server's log says why".into()),
        None if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) => (
            "the server closed the connection at the TLS ClientHello".into(),
            format!("{plain} (or the server offers only TLS older than 1.2)"),
        ),
        None => (format!("TLS handshake failed: {e}"), "see the server's log".into()),
    }
}

fn certificate_failure(
    e: &rustls::Error,
    target: &Target,
    leaf: Option<&crate::certcheck::Facts>,
) -> (String, String) {
    let by_ip = target.host.parse::<std::net::IpAddr>().is_ok();
    let covers = leaf.map_or(String::new(), |f| {
        format!(": it covers {}", f.names.join(", "))
    });
    // webpki's own reasons reach rustls as `Other`, known here by name only.
    let other = format!("{e:?}");
    match e {
        _ if other.contains("CaUsedAsEndEntity") => (
            "the leaf certificate is a CA certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes by default)".into(),
            "browsers and OpenSSL clients (curl, Python) accept it once trusted, but rustls and webpki clients (Rust apps, this probe) refuse it: make the leaf with `-addext basicConstraints=critical,CA:FALSE` (or run wssd --self-signed-dir DIR, which makes a CA and a leaf); --insecure lets the probe go on".into(),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            format!("the certificate is not valid for {}{covers}", target.host),
            if by_ip {
                "certificates are bound to domain names: connect by the domain name, not the IP address".into()
            } else {
                format!("certificates are bound to domain names: get one that covers {} (or connect by a name it covers)", target.host)
            },
        ),
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => (
            "the certificate has expired".into(),
            "renew it (certbot renew, or your CA), then reload the server".into(),
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => (
            "the certificate is not signed by a trusted CA".into(),
            "self-signed or a private CA: pass it with --ca CA.pem, or serve a certificate from a public CA with its full chain".into(),
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => (
            "the certificate is not valid yet: its start date is in the future".into(),
            "check the clocks of the server and of this machine (timedatectl), or the certificate's dates".into(),
        ),
        rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }) => (
            "the certificate is not for TLS servers: its extendedKeyUsage lacks serverAuth".into(),
            "get a server certificate (extendedKeyUsage serverAuth), as CAs issue for web servers".into(),
        ),
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => (
            "the certificate has been revoked by its CA".into(),
            "get a new one from the CA, then reload the server".into(),
        ),
        rustls::Error::InvalidCertificate(CertificateError::BadSignature | CertificateError::UnsupportedSignatureAlgorithmContext { .. }) => (
            "the certificate's signature is not one this client can check (a broken chain, or an unsupported algorithm)".into(),
            "serve the chain the CA issued, in order (leaf first), with RSA, ECDSA P-256/P-384 or Ed25519 keys".into(),
        ),
        _ => (
            "the certificate chain did not verify".into(),
            "serve the full chain the CA issued (leaf first, then intermediates); the server's log checks it at start and names what is wrong".into(),
        ),
    }
}

fn expiry(leaf: &[u8], report: &mut Report) {
    let Some(facts) = crate::certcheck::facts(leaf) else {
        return report.add(
            "expiry",
            Status::Warn,
            "cannot read the certificate's dates",
            None,
        );
    };
    let days = (facts.not_after - crate::certcheck::now()).div_euclid(86_400);
    if days < 0 {
        report.fail(
            "expiry",
            format!("expired {} days ago", -days),
            "renew the certificate, then reload the server",
        );
    } else if days < 14 {
        report.add(
            "expiry",
            Status::Warn,
            format!("{days} days left"),
            Some("renew it soon".into()),
        );
    } else {
        report.pass("expiry", format!("{days} days left"));
    }
}

async fn with_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        wssd::Clock::system().sleep(limit).await;
        None
    })
    .await
}

/// A verifier that records the real verdict and the leaf, and lets the handshake go on, so
/// every later step still runs. The probe reports the verdict as its own step.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    result: Mutex<Option<Result<(), rustls::Error>>>,
    leaf: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        *self.result.lock().unwrap() = Some(verdict.map(|_| ()));
        *self.leaf.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
