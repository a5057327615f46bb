//! The TLS reference for `scripts/interop`'s tlsfuzzer comparison: wssd's own rustls
//! configuration ([`wssd::tls::from_pem_files`]) served through futures-rustls' plain
//! `TlsAcceptor` (rustls' buffered connection, none of wssd's TLS stream), with wssd's plain
//! WebSocket acceptor on top, answering every message with `ok`. The same bytes sent to it
//! and to the `wssd` binary show where wssd's TLS stream differs from rustls itself.
//!
//! Run: `cargo run --example rustls_reference -- 127.0.0.1:0 cert.pem key.pem`; it prints
//! `serving wss://127.0.0.1:PORT`.

use std::sync::Arc;

use futures_lite::FutureExt;
use wssd::{Acceptor, Config, Connection, Data, Handler};

/// Every message is answered with `ok`, as the recipe's server does.
struct ReplyOk;

impl Handler for ReplyOk {
    fn on_message(&self, conn: &Connection, _msg: Data) {
        let _ = conn.try_send(Data::text("ok"));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rustls_reference ADDR CERT.pem KEY.pem";
    let (Some(addr), Some(cert), Some(key)) = (args.next(), args.next(), args.next()) else {
        return Err(usage.into());
    };
    let tls = futures_rustls::TlsAcceptor::from(wssd::tls::from_pem_files(cert, key)?);
    // Plain WebSocket over the TLS stream futures-rustls gives.
    let acceptor = Acceptor::new(Config::default());
    let handler = Arc::new(ReplyOk);
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind(addr.as_str()).await?;
        println!("serving wss://127.0.0.1:{}", listener.local_addr()?.port());
        loop {
            let (stream, peer) = listener.accept().await?;
            let (tls, acceptor, handler) = (tls.clone(), acceptor.clone(), handler.clone());
            let serve = async move {
                let stream = match tls.accept(stream).await {
                    Ok(stream) => stream,
                    Err(e) => return eprintln!("{peer}: TLS: {e}"),
                };
                match acceptor.accept(stream, peer).await {
                    Ok(accepted) => drop(accepted.serve(&*handler).await),
                    Err(e) => eprintln!("{peer}: {e}"),
                }
            };
            // A panic ends this connection alone.
            smol::spawn(std::panic::AssertUnwindSafe(serve).catch_unwind()).detach();
        }
    })
}
