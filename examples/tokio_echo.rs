//! Embedding wssd in a tokio app through `tokio_util::compat`: wss with a generated local CA,
//! echoing every message.
//!
//! Run: `cargo run --example tokio_echo -- 127.0.0.1:8282 dev-ca`
//! then trust `dev-ca/ca.pem` and connect to `wss://localhost:8282`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::compat::TokioAsyncReadCompatExt;
use wssd::{Acceptor, Config, Connection, Handler, Message};

/// Sends every message back, same opcode, same payload.
struct Echo;

impl Handler for Echo {
    fn on_message(&self, conn: &Connection, msg: Message) {
        if let Err(e) = conn.try_send(msg) {
            eprintln!("{}: {e}", conn.request().client_ip);
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8282".into());
    let dir = args.next().unwrap_or_else(|| "dev-ca".into());
    let certs = wssd::tls::SelfSigned::load_or_create(dir.as_ref())?;
    let acceptor = Acceptor::new(Config::default().tls(certs.server_config()?));
    let handler = Arc::new(Echo);

    let listener = TcpListener::bind(addr.as_str()).await?;
    println!("serving wss://localhost:{}", listener.local_addr()?.port());
    loop {
        let (stream, peer) = listener.accept().await?;
        let (acceptor, handler) = (acceptor.clone(), handler.clone());
        tokio::spawn(async move {
            // tokio's AsyncRead/AsyncWrite become futures-io's through compat.
            match acceptor.accept(stream.compat(), peer).await {
                Ok(accepted) => {
                    // The acceptor's limits travel with `accepted`.
                    accepted.serve(&*handler).await;
                }
                Err(e) => eprintln!("{peer}: {e}"),
            }
        });
    }
}
