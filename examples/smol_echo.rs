//! Embedding wssd in a smol app: wss with a generated local CA, answering every message with `ok`.
//!
//! Run: `cargo run --example smol_echo -- 127.0.0.1:8282 dev-ca`
//! then trust `dev-ca/ca.pem` and connect to `wss://localhost:8282`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_lite::FutureExt;
use wssd::{Acceptor, Config, Connection, Data, Handler};

/// The recipe's example: every message is answered with `ok`.
struct ReplyOk;

impl Handler for ReplyOk {
    fn on_message(&self, conn: &Connection, _msg: Data) {
        if let Err(e) = conn.try_send(Data::text("ok")) {
            eprintln!("{}: {e}", conn.request().peer_addr);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8282".into());
    let dir = args.next().unwrap_or_else(|| "dev-ca".into());

    let certs = wssd::tls::SelfSigned::load_or_create(dir.as_ref())?;
    let acceptor = Acceptor::new(Config::default().tls(certs.server_config()?));
    let handler = Arc::new(ReplyOk);

    smol::block_on(async {
        let listener = smol::net::TcpListener::bind(addr.as_str()).await?;
        println!("serving wss://localhost:{}", listener.local_addr()?.port());
        loop {
            let (stream, peer) = listener.accept().await?;
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            let connection = async move {
                match acceptor.accept(stream, peer).await {
                    // The handshake timeout applies inside accept; serve applies every
                    // other limit of the acceptor.
                    Ok(accepted) => {
                        accepted.serve(&*handler).await;
                    }
                    Err(e) => eprintln!("{peer}: {e}"),
                }
            };
            // A panic in one connection's handling ends that connection alone.
            smol::spawn(async move {
                if AssertUnwindSafe(connection).catch_unwind().await.is_err() {
                    eprintln!("{peer}: a panic closed this connection");
                }
            })
            .detach();
        }
    })
}
