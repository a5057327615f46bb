//! A minimal app for `wssd --app`: answers each message event with the same message (text
//! or base64 binary) and every other event with `{}`. The fastest app there can be, to
//! measure what the bridge itself costs (scripts/bench-bridge).
//!
//! Usage: app-echo PORT

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    let reply = match event["event"].as_str() {
        Some("message") => match (event.get("text"), event.get("binary")) {
            (Some(text), _) => json!({ "send": [{ "text": text }] }),
            (_, Some(binary)) => json!({ "send": [{ "binary": binary }] }),
            _ => json!({}),
        },
        _ => json!({}),
    };
    Ok(Response::new(Full::new(Bytes::from(reply.to_string()))))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: app-echo PORT");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!("listening on 127.0.0.1:{port}");
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    hyper_util::rt::TokioIo::new(tcp),
                    hyper::service::service_fn(answer),
                )
                .await;
        });
    }
}
