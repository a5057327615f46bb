//! What both peer servers share: a self-signed ECDSA P-256 certificate in a rustls
//! (`ring`) acceptor, and the listener with its `serving URL` line.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// Binds the address in the first argument (default 127.0.0.1:0); `--plain` in the second
/// means no TLS. Prints `serving URL`.
pub async fn listen() -> (TcpListener, Option<TlsAcceptor>) {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:0", String::as_str);
    let plain = args.iter().any(|a| a == "--plain");
    let listener = TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    println!(
        "serving {}://localhost:{port}",
        if plain { "ws" } else { "wss" }
    );
    (listener, (!plain).then(acceptor))
}

fn acceptor() -> TlsAcceptor {
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}
