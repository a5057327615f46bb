//! `wssd probe` names the right fix for each misconfiguration, and exits non-zero on each.

use wssd_testkit as common;

use std::path::Path;
use std::process::Command;

use common::Wssd;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Runs `wssd probe ARGS`; returns (exit success, stdout).
fn probe(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wssd"))
        .arg("probe")
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

/// Writes a CA and a leaf for `names`, valid from `from_days` to `to_days` relative to now.
fn certificate(dir: &Path, names: &[&str], from_days: i64, to_days: i64) {
    let day = std::time::Duration::from_secs(86_400);
    let at = |days: i64| {
        let now = std::time::SystemTime::now();
        if days < 0 {
            now - day * (-days) as u32
        } else {
            now + day * days as u32
        }
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.not_before = at(-400).into();
    ca.not_after = at(400).into();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.not_before = at(from_days).into();
    leaf.not_after = at(to_days).into();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

fn serve_certificate(dir: &Path) -> Wssd {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    Wssd::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
}

#[test]
fn healthy_wssd_passes_every_step() {
    let dir = common::temp_dir("probe-ok");
    let server = Wssd::start(&["--self-signed-dir", dir.to_str().unwrap()]);
    let ca = dir.join("ca.pem");
    let (ok, out) = probe(&[&server.url, "--ca", ca.to_str().unwrap()]);
    assert!(ok, "{out}");
    for step in [
        "dns",
        "tcp",
        "tls",
        "certificate",
        "expiry",
        "upgrade",
        "echo",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.contains(step)),
            "{step}: {out}"
        );
    }
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn expired_certificate_says_renew() {
    let dir = common::temp_dir("probe-expired");
    certificate(&dir, &["localhost"], -30, -2);
    let server = serve_certificate(&dir);
    let (ok, out) = probe(&[&server.url, "--ca", dir.join("ca.pem").to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL certificate the certificate has expired"),
        "{out}"
    );
    assert!(out.contains("renew"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL expiry") && l.contains("days ago")),
        "{out}"
    );
}

#[test]
fn wrong_hostname_says_connect_by_the_domain() {
    let dir = common::temp_dir("probe-name");
    certificate(&dir, &["wss.example.com"], -1, 90);
    let server = serve_certificate(&dir);
    // By localhost, which the certificate does not cover (the banner names wss.example.com).
    let by_localhost = format!("wss://localhost:{}", server.addr().port());
    let (ok, out) = probe(&[&by_localhost, "--ca", dir.join("ca.pem").to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "FAIL certificate the certificate is not valid for localhost: it covers wss.example.com"
        ),
        "{out}"
    );
    assert!(
        out.contains("certificates are bound to domain names"),
        "{out}"
    );
    // By IP address, the fix says to use the domain name instead.
    let by_ip = by_localhost.replace("localhost", "127.0.0.1");
    let (ok, out) = probe(&[&by_ip, "--ca", dir.join("ca.pem").to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("connect by the domain name, not the IP address"),
        "{out}"
    );
    // --insecure turns certificate problems into warnings.
    let (ok, out) = probe(&[&by_localhost, "--insecure"]);
    assert!(ok, "{out}");
    assert!(out.contains("WARN certificate"), "{out}");
}

#[test]
fn a_url_without_a_scheme_gets_the_two_forms_to_use() {
    let (ok, out) = probe(&["example.com:8282/wss"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL url") && out.contains("has no scheme"),
        "{out}"
    );
    assert!(
        out.contains("wss://example.com:8282/wss") && out.contains("ws://example.com:8282/wss"),
        "{out}"
    );
    assert!(!out.contains("None"), "{out}");
}

#[test]
fn ws_url_against_the_tls_port_says_use_wss() {
    let dir = common::temp_dir("probe-ws-on-tls");
    let server = Wssd::start(&["--self-signed-dir", dir.to_str().unwrap()]);
    let (ok, out) = probe(&[&server.url.replace("wss://", "ws://")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("fix: this port speaks TLS: use wss://"),
        "{out}"
    );
}

#[test]
fn wss_url_against_a_plain_port_says_use_ws() {
    let server = Wssd::start(&["--plain"]);
    let (ok, out) = probe(&[&server.url.replace("ws://", "wss://")]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL tls"), "{out}");
    assert!(
        out.contains("the port speaks plain ws://: use ws://"),
        "{out}"
    );
}

#[test]
fn closed_port_points_at_the_port_or_firewall() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is dropped: nothing listens there now.
    let (ok, out) = probe(&[&format!("ws://127.0.0.1:{port}/"), "--timeout", "2"]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL tcp"), "{out}");
    assert!(out.contains("nothing listens on that port"), "{out}");
}

#[test]
fn json_output_is_machine_readable() {
    let server = Wssd::start(&["--plain", "--path", "/wss"]);
    let (ok, out) = probe(&["--json", &server.url.replace("/wss", "/other")]);
    assert!(!ok);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], false);
    let upgrade = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "upgrade")
        .unwrap();
    assert_eq!(upgrade["status"], "fail");
    assert!(
        upgrade["fix"]
            .as_str()
            .unwrap()
            .contains("no WebSocket at /other"),
        "{upgrade}"
    );
}
