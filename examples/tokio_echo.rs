//! Embedding wssd in a tokio app (feature `tokio`): wss with a generated local CA, echoing
//! every message. `wssd::tokio::serve` is the accept loop; the connection caps, admission,
//! graceful shutdown, log lines and counters are `wssd::Server`'s, the same as on smol. An app
//! with an accept loop of its own spawns `wssd::Server::connection(stream.compat(), peer)`
//! for each connection (`tokio_util::compat` makes tokio's socket a futures-io stream).
//!
//! Run: `cargo run --example tokio_echo --features tokio,self-signed -- 127.0.0.1:8282 dev-ca`
//! then trust `dev-ca/ca.pem` and connect to `wss://localhost:8282`.

use std::sync::Arc;

use tokio::net::TcpListener;
use wssd::{Acceptor, Config, Connection, Data, Handler};

/// Sends every message back, same opcode, same payload.
struct Echo;

impl Handler for Echo {
    fn on_message(&self, conn: &Connection, msg: Data) {
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

    let listener = TcpListener::bind(addr.as_str()).await?;
    println!("serving wss://localhost:{}", listener.local_addr()?.port());
    // Every limit of the acceptor, 10,000 connections at most and 1,000 from one address.
    let server = wssd::Server::new(acceptor, Arc::new(Echo));
    wssd::tokio::serve(server, listener).await?;
    Ok(())
}
