//! Issue 14: the certificate check at start names each problem and its fix, a separate
//! chain file and a leaf that is not first work, a handshake that the client fails on the
//! certificate is logged with the likely cause, and ACME failures are explained.

use wssd_testkit as common;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use common::{Wssd, bounded};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::ServerName;
use smol::net::TcpStream;

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

fn days(n: i64) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    if n < 0 {
        now - DAY * (-n) as u32
    } else {
        now + DAY * n as u32
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = days(-400).into();
    params.not_after = days(400).into();
    params
}

/// Writes root.pem, int.pem (the intermediate), leaf.pem (for `names`, signed by the
/// intermediate, valid from `from` to `to` days from now), leaf.key, and full.pem (leaf
/// then intermediate).
fn chain(dir: &Path, names: &[&str], from: i64, to: i64) {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("wssd test root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let int_key = KeyPair::generate().unwrap();
    let int_params = ca_params("wssd test intermediate");
    let int = int_params.signed_by(&int_key, &root_issuer).unwrap();
    let int_issuer = Issuer::new(int_params, int_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.not_before = days(from).into();
    leaf.not_after = days(to).into();
    let leaf = leaf.signed_by(&key, &int_issuer).unwrap();
    std::fs::write(dir.join("root.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("int.pem"), int.pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("leaf.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("full.pem"), leaf.pem() + &int.pem()).unwrap();
    std::fs::write(dir.join("wrongorder.pem"), int.pem() + &leaf.pem()).unwrap();
}

fn p(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_string()
}

/// Connects over TLS trusting only `root.pem`, and echoes one message; `Err` carries the
/// TLS error when the handshake fails.
fn echo_trusting_root(server: &Wssd, dir: &Path) -> Result<(), std::io::Error> {
    let connector = common::tls_connector(&std::fs::read_to_string(dir.join("root.pem")).unwrap());
    smol::block_on(bounded(async {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let mut tls = connector.connect(common::localhost(), tcp).await?;
        common::raw_handshake(&mut tls, common::UPGRADE_REQUEST).await;
        // A masked text frame "tom"; the echo comes back unmasked.
        tls.write_all(&[0x81, 0x83, 1, 2, 3, 4, b't' ^ 1, b'o' ^ 2, b'm' ^ 3])
            .await?;
        let mut echo = [0u8; 5];
        tls.read_exact(&mut echo).await?;
        assert_eq!(&echo, &[0x81, 3, b't', b'o', b'm']);
        Ok(())
    }))
}

/// wssd serving `cert` (a file in `dir`) with `leaf.key`.
fn serve(dir: &Path, cert: &str) -> Wssd {
    Wssd::start(&["--cert", &p(dir, cert), "--key", &p(dir, "leaf.key")])
}

/// Waits for the log line with `text` (bounded, 30 s) and checks that it is a warning.
fn warned(server: &Wssd, text: &str) -> bool {
    server
        .wait_for_log(text, 1)
        .iter()
        .all(|l| l.contains("WARN"))
}

#[test]
fn a_leaf_without_its_intermediate_is_named_at_start_and_in_each_failed_handshake() {
    let dir = common::temp_dir("cert-nochain");
    chain(&dir, &["localhost"], -1, 90);
    let server = serve(&dir, "leaf.pem");
    assert!(
        warned(
            &server,
            "the chain lacks the intermediate certificate that signed the leaf (CN=wssd test intermediate)"
        ),
        "{:#?}",
        server.log_lines()
    );
    assert!(warned(&server, "--chain"), "the fix names --chain");
    let err = echo_trusting_root(&server, &dir).unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let line = server
        .wait_for_log("the client rejected the certificate", 1)
        .remove(0);
    assert!(
        line.contains("the likely cause:") && line.contains("lacks the intermediate"),
        "{line}"
    );
}

#[test]
fn a_separate_chain_file_serves_the_full_chain() {
    let dir = common::temp_dir("cert-chainfile");
    chain(&dir, &["localhost"], -1, 90);
    let server = Wssd::start(&[
        "--cert",
        &p(&dir, "leaf.pem"),
        "--chain",
        &p(&dir, "int.pem"),
        "--key",
        &p(&dir, "leaf.key"),
    ]);
    echo_trusting_root(&server, &dir).unwrap();
    // The check's lines come before the connection's, so all of them are in by then.
    server.wait_for_log("] open ", 1);
    server.wait_for_log("covers localhost, valid until", 1);
    assert!(
        !server
            .log_lines()
            .iter()
            .any(|l| l.contains("lacks the intermediate")),
        "{:#?}",
        server.log_lines()
    );
}

#[test]
fn a_leaf_after_its_intermediate_is_served_first_with_a_warning() {
    let dir = common::temp_dir("cert-order");
    chain(&dir, &["localhost"], -1, 90);
    let server = serve(&dir, "wrongorder.pem");
    assert!(
        warned(
            &server,
            "the certificate of this private key is number 2 in the file, not first: served first"
        ),
        "{:#?}",
        server.log_lines()
    );
    echo_trusting_root(&server, &dir).unwrap();
}

#[test]
fn a_key_that_belongs_to_no_certificate_in_the_file_is_refused_naming_both() {
    let dir = common::temp_dir("cert-mismatch");
    chain(&dir, &["localhost"], -1, 90);
    std::fs::write(
        dir.join("other.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let out = std::process::Command::new(common::wssd_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cert",
            &p(&dir, "full.pem"),
            "--key",
            &p(&dir, "other.key"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("other.key: this private key does not belong to the certificate in")
            && err.contains("full.pem"),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_is_named_at_start_with_the_fix() {
    let dir = common::temp_dir("cert-expired");
    chain(&dir, &["localhost"], -90, -2);
    let server = serve(&dir, "full.pem");
    assert!(
        warned(&server, "the certificate expired on") && warned(&server, "renew it"),
        "{:#?}",
        server.log_lines()
    );
}

#[test]
fn a_certificate_not_yet_valid_is_named_at_start() {
    let dir = common::temp_dir("cert-future");
    chain(&dir, &["localhost"], 3, 90);
    let server = serve(&dir, "full.pem");
    assert!(
        warned(&server, "is not valid before"),
        "{:#?}",
        server.log_lines()
    );
}

#[test]
fn an_sni_name_the_certificate_does_not_cover_is_named_with_the_names_it_covers() {
    let dir = common::temp_dir("cert-sni");
    chain(&dir, &["a.example.test", "www.a.example.test"], -1, 90);
    let sni = format!(
        "b.example.test={},{}",
        p(&dir, "full.pem"),
        p(&dir, "leaf.key")
    );
    let server = Wssd::start(&["--sni", &sni]);
    assert!(
        warned(
            &server,
            "served for b.example.test (SNI), but the certificate covers only a.example.test, www.a.example.test"
        ),
        "{:#?}",
        server.log_lines()
    );
}

#[test]
fn a_ca_true_self_signed_leaf_is_explained() {
    let dir = common::temp_dir("cert-ca-leaf");
    let key = KeyPair::generate().unwrap();
    let mut params = ca_params("localhost");
    params.subject_alt_names = vec![rcgen::SanType::DnsName("localhost".try_into().unwrap())];
    std::fs::write(dir.join("ss.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("ss.key"), key.serialize_pem()).unwrap();
    let server = Wssd::start(&["--cert", &p(&dir, "ss.pem"), "--key", &p(&dir, "ss.key")]);
    assert!(
        warned(
            &server,
            "the leaf certificate is a CA certificate (basicConstraints CA:TRUE"
        ) && warned(&server, "basicConstraints=critical,CA:FALSE"),
        "{:#?}",
        server.log_lines()
    );
    // And probe explains it in the same words, with no library text.
    let out = std::process::Command::new(common::wssd_bin())
        .args(["probe", &server.url, "--ca", &p(&dir, "ss.pem")])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("FAIL certificate the leaf certificate is a CA certificate"),
        "{out}"
    );
    assert!(
        !out.contains("CaUsedAsEndEntity") && !out.contains("Other("),
        "{out}"
    );
}

#[test]
fn a_client_that_closes_during_the_tls_handshake_is_explained() {
    let dir = common::temp_dir("cert-eof");
    chain(&dir, &["localhost"], -1, 90);
    let server = serve(&dir, "full.pem");
    // A client that sends its ClientHello, reads the server's answer, and hangs up without
    // a word, as OpenSSL-based clients do when they reject a certificate.
    #[allow(deprecated)]
    // ring is this project's provider; rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    tcp.write_all(&hello).unwrap();
    let mut answer = [0u8; 1024];
    assert!(
        tcp.read(&mut answer).unwrap() > 0,
        "the server answers the ClientHello"
    );
    drop(tcp);
    let line = server
        .wait_for_log("closed the connection during the TLS handshake", 1)
        .remove(0);
    assert!(
        line.contains("most often it rejected the certificate"),
        "{line}"
    );
    assert!(line.contains("wssd probe"), "{line}");
}

#[test]
fn acme_names_refuse_wildcards_and_ip_addresses() {
    for (name, says) in [
        ("*.example.com", "needs the DNS-01 challenge"),
        ("127.0.0.1", "not a domain name"),
    ] {
        let out = std::process::Command::new(common::wssd_bin())
            .args(["--listen", "127.0.0.1:0", "--acme", name])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{name}: {err}");
    }
}

/// Starts wssd with `--acme chat.example.test` against `directory`, and returns it with
/// its first line saying that ordering failed.
fn acme_failure(directory: &str, cache: &str) -> (Wssd, String) {
    let server = Wssd::start(&[
        "--acme",
        "chat.example.test",
        "--acme-directory",
        directory,
        "--acme-cache",
        cache,
    ]);
    let line = server
        .wait_for_log(
            "ACME: ordering a certificate for chat.example.test failed",
            1,
        )
        .remove(0);
    (server, line)
}

#[test]
fn acme_failures_name_the_fix() {
    let dir = common::temp_dir("acme-fail");
    let cache = p(&dir, "cache");
    // An ACME server whose own certificate is not trusted: another wssd, self-signed.
    let fake = Wssd::start(&["--self-signed"]);
    let directory = format!("https://localhost:{}/dir", fake.addr().port());
    let (_, line) = acme_failure(&directory, &cache);
    assert!(
        line.contains("the ACME server's own TLS certificate is not trusted")
            && line.contains("--acme-ca"),
        "{line}"
    );
    // Nothing listens: the fix is the directory URL and the network.
    let directory = format!("https://127.0.0.1:{}/dir", common::free_port());
    let (server, line) = acme_failure(&directory, &cache);
    assert!(line.contains("cannot reach the ACME server"), "{line}");
    // The cache holds private keys: only wssd's user may read it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("cache"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // Before a certificate exists, a handshake fails saying why (the client trusts
    // nothing: it does not get as far as checking).
    let err = smol::block_on(bounded(async {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        common::tls_connector("")
            .connect(ServerName::try_from("chat.example.test").unwrap(), tcp)
            .await
            .err()
    }));
    assert!(err.is_some());
    server.wait_for_log("the first certificate is not issued yet", 1);
}
