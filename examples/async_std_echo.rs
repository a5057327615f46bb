//! Embedding wssd in an async-std app: plain ws behind a proxy, echoing every message.
//!
//! async-std is discontinued upstream; this example stays for apps that still run on it
//! (it is a dev-dependency only). New apps: see `smol_echo.rs`.
//!
//! Run: `cargo run --example async_std_echo -- 127.0.0.1:8282`

use std::sync::Arc;

use async_std::net::TcpListener;
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

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8282".into());
    let acceptor = Acceptor::new(Config::default());
    let handler = Arc::new(Echo);
    async_std::task::block_on(async {
        let listener = TcpListener::bind(addr.as_str()).await?;
        println!("serving ws://localhost:{}", listener.local_addr()?.port());
        loop {
            let (stream, peer) = listener.accept().await?;
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            // async-std's TcpStream speaks futures-io already: no adapter needed.
            async_std::task::spawn(async move {
                match acceptor.accept(stream, peer).await {
                    Ok(accepted) => {
                        // The acceptor's limits travel with `accepted`.
                        accepted.serve(&*handler).await;
                    }
                    Err(e) => eprintln!("{peer}: {e}"),
                }
            });
        }
    })
}
