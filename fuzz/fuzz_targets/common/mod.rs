//! What the fuzz targets share: a client that is nothing but the fuzzer's bytes, over an
//! in-memory stream, through wssd's public accept path.
#![allow(dead_code)] // each target uses part of it

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use wssd::{Acceptor, Config, Connection, Data, Handler};

/// The client: `data` handed out at most `chunk` bytes per read, then the end of stream;
/// whatever the server writes is taken and dropped.
pub struct Peer {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl Peer {
    /// `data`, in reads of 1 to 256 bytes (chosen by `chunk`) or whole (`chunk` 0).
    pub fn new(data: Vec<u8>, chunk: u8) -> Peer {
        let chunk = if chunk == 0 { usize::MAX } else { usize::from(chunk) };
        Peer { data, at: 0, chunk }
    }
}

impl AsyncRead for Peer {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Peer {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Echoes every message, as the recipe's servers answer them.
pub struct Echo;

impl Handler for Echo {
    fn on_message(&self, conn: &Connection, msg: Data) {
        let _ = conn.try_send(msg);
    }
}

/// Accepts `peer` under `config` and, if it becomes a WebSocket, serves it to its end.
pub fn serve(config: &Config, peer: Peer) {
    let acceptor = Acceptor::new(config.clone());
    let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    futures_lite::future::block_on(async {
        if let Ok(accepted) = acceptor.accept(peer, addr).await {
            accepted.serve(&Echo).await;
        }
    });
}

/// A valid opening handshake (RFC 6455 section 4.1), offering permessage-deflate or not.
pub fn upgrade(deflate: bool) -> Vec<u8> {
    let mut request = b"GET /wss HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        .to_vec();
    if deflate {
        request.extend_from_slice(b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

/// The frames target, with or without permessage-deflate offered: a valid opening handshake,
/// then `data` after its first byte (which chooses the read size) as frames.
pub fn frames(data: &[u8], deflate: bool) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = upgrade(deflate);
    bytes.extend_from_slice(rest);
    serve(&config(), Peer::new(bytes, first));
}

/// wssd's configuration with permessage-deflate accepted (messages of any size).
pub fn config() -> Config {
    let mut config = Config::default();
    config.deflate.enabled = true;
    config.deflate.min_size = 0;
    config
}

/// A TLS configuration under wssd's own builder, made once.
pub fn tls() -> Arc<wssd::rustls::ServerConfig> {
    static TLS: OnceLock<Arc<wssd::rustls::ServerConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        wssd::tls::SelfSigned::generate()
            .expect("a certificate")
            .server_config()
            .expect("a configuration")
    })
    .clone()
}
