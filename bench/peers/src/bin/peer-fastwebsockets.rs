//! tokio + fastwebsockets + tokio-rustls echo server. The opening handshake is read with
//! httparse and answered directly (no HTTP framework), the leanest way to run fastwebsockets.

use base64::Engine;
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Option<()> {
    let mut buf = Vec::with_capacity(1024);
    let key = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(_) = req.parse(&buf).ok()? {
            let key = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))?;
            break key.value.to_vec();
        }
    };
    let mut sha = Sha1::new();
    sha.update(&key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.ok()
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let mut ws = FragmentCollector::new(WebSocket::after_handshake(stream, Role::Server));
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        match frame.opcode {
            OpCode::Close => return,
            OpCode::Text | OpCode::Binary => {
                let sent = ws.write_frame(frame).await;
                if sent.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() {
    let (listener, tls) = wssd_bench_peers::listen().await;
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(tcp).await {
                        echo(stream).await;
                    }
                }
                None => echo(tcp).await,
            }
        });
    }
}
