//! The README's library example, as written there: wss on port 8282, `ok` to every message.
//! Its Cargo.toml needs `wssd` and `smol`; `examples/` has more (tokio, async-std, a chat).
use std::sync::Arc;
use wssd::{Acceptor, Config, Connection, Data, Handler, Server};

struct ReplyOk;

impl Handler for ReplyOk {
    fn on_message(&self, conn: &Connection, _msg: Data) {
        let _ = conn.try_send("ok"); // fails only when the client is gone or reads too slowly
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tls = wssd::tls::from_pem_files("server.pem", "server.key")?; // errors name the file
    let acceptor = Acceptor::new(Config::default().tls(tls).path("/wss"));
    let server = Server::new(acceptor, Arc::new(ReplyOk)); // caps, limits, logs, counters
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("0.0.0.0:8282").await?;
        loop {
            let (stream, peer) = listener.accept().await?;
            smol::spawn(server.connection(stream, peer)).detach(); // a task per connection
        }
    })
}
