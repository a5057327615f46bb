//! Certificate and key loading: each mistake gets an error that names the file and the fix.

use wssd_testkit as common;

use std::path::Path;

use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use wssd::tls::{self, SelfSigned, TlsError};

/// A generated certificate and key written to a fresh directory.
fn files(tag: &str) -> (common::TempDir, SelfSigned) {
    let dir = common::temp_dir(tag);
    let certs = SelfSigned::load_or_create(&dir).unwrap();
    (dir, certs)
}

fn message(cert: &Path, key: &Path) -> (TlsError, String) {
    let err = tls::from_pem_files(cert, key).expect_err("loading must fail");
    let text = err.to_string();
    (err, text)
}

#[test]
fn good_files_load() {
    let (dir, _) = files("good");
    tls::from_pem_files(dir.join("cert.pem"), dir.join("key.pem")).unwrap();
}

#[test]
fn missing_file_is_named() {
    let (dir, _) = files("missing");
    let missing = dir.join("nope.pem");
    let (err, text) = message(&missing, &dir.join("key.pem"));
    assert!(matches!(err, TlsError::Read { .. }));
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("not found"), "{text}");
}

#[test]
fn file_without_a_certificate_is_named() {
    let (dir, _) = files("nocert");
    // The key file passed as the certificate: a swapped pair.
    let key = dir.join("key.pem");
    let (err, text) = message(&key, &key);
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(text.contains("as the key (tls::from_pem_files)"), "{text}");
}

#[test]
fn file_without_a_key_is_named() {
    let (dir, _) = files("nokey");
    let cert = dir.join("cert.pem");
    let (err, text) = message(&cert, &cert);
    assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
    assert!(text.contains(&cert.display().to_string()), "{text}");
    assert!(
        text.contains("as the certificate (tls::from_pem_files)"),
        "{text}"
    );
}

#[test]
fn encrypted_key_is_named_with_the_openssl_command() {
    let (dir, _) = files("encrypted");
    let key = dir.join("enc.key");
    std::fs::write(
        &key,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let (err, text) = message(&dir.join("cert.pem"), &key);
    assert!(matches!(err, TlsError::EncryptedKey { .. }), "{err:?}");
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("openssl pkey -in {}", key.display())),
        "{text}"
    );
}

#[test]
fn key_that_does_not_match_the_certificate_is_named() {
    let (dir, _) = files("mismatch");
    let (other, _) = files("mismatch-other");
    let (cert, key) = (dir.join("cert.pem"), other.join("key.pem"));
    let (err, text) = message(&cert, &key);
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert!(text.contains(&cert.display().to_string()), "{text}");
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(text.contains("does not belong"), "{text}");
}

#[test]
fn der_files_are_named_with_the_conversion_command() {
    let (dir, certs) = files("der");
    let der_cert = dir.join("cert.der");
    std::fs::write(&der_cert, certs.leaf().unwrap().as_ref()).unwrap();
    let (err, text) = message(&der_cert, &dir.join("key.pem"));
    assert!(matches!(err, TlsError::Der { key: false, .. }), "{err:?}");
    assert!(text.contains(&der_cert.display().to_string()), "{text}");
    assert!(text.contains("openssl x509 -inform DER"), "{text}");

    let der_key = dir.join("key.der");
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
    std::fs::write(&der_key, key.secret_der()).unwrap();
    let (err, text) = message(&dir.join("cert.pem"), &der_key);
    assert!(matches!(err, TlsError::Der { key: true, .. }), "{err:?}");
    assert!(text.contains(&der_key.display().to_string()), "{text}");
    assert!(text.contains("openssl pkey -inform DER"), "{text}");
}
