// A certificate and its key in PEM files, for the doc examples of `tls`, included as a hidden
// line (`# let (cert, key) = include!("../doc_pem.rs");`): a self-signed ECDSA P-256 leaf for
// `localhost` (rcgen, a dev-dependency), written to a directory of its own under the
// system's temporary directory. Not a module: an expression, compiled only with the doc tests.
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wssd-doc-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}
