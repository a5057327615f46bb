//! The built `wssd` binary on an ephemeral loopback port, over ws and wss.

use wssd_testkit as common;

use async_tungstenite::WebSocketStream;
use common::{Wssd, bounded};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::StreamExt;
use smol::net::TcpStream;
use wssd::Message;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Client = WebSocketStream<Box<dyn Io>>;

/// Connects to `server`, over TLS trusting `ca_pem` when given.
async fn connect(server: &Wssd, ca_pem: Option<&str>) -> Client {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let stream: Box<dyn Io> = match ca_pem {
        Some(ca) => Box::new(
            common::tls_connector(ca)
                .connect(common::localhost(), tcp)
                .await
                .unwrap(),
        ),
        None => Box::new(tcp),
    };
    async_tungstenite::client_async(server.url.as_str(), stream)
        .await
        .unwrap()
        .0
}

async fn round_trip(ws: &mut Client, msg: Message) -> Message {
    ws.send(msg).await.unwrap();
    ws.next().await.unwrap().unwrap()
}

async fn close(mut ws: Client) {
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

#[test]
fn wss_echo_with_a_reused_local_ca() {
    let dir = common::temp_dir("e2e-wss");
    let dir_arg = dir.to_str().unwrap();
    let server = Wssd::start(&["--self-signed-dir", dir_arg]);
    assert!(server.url.starts_with("wss://localhost:"), "{}", server.url);
    let ca = common::read(&dir.join("ca.pem"));
    smol::block_on(bounded(async {
        let mut ws = connect(&server, Some(&ca)).await;
        assert_eq!(
            round_trip(&mut ws, Message::text("tom")).await,
            Message::text("tom")
        );
        let binary = Message::binary(vec![0u8, 255, 7]);
        assert_eq!(round_trip(&mut ws, binary.clone()).await, binary);
        close(ws).await;
    }));
    drop(server);

    // A second start reuses the same CA: the same client trust still works.
    let server = Wssd::start(&["--self-signed-dir", dir_arg]);
    smol::block_on(bounded(async {
        let mut ws = connect(&server, Some(&ca)).await;
        assert_eq!(
            round_trip(&mut ws, Message::text("again")).await,
            Message::text("again")
        );
        close(ws).await;
    }));
    assert_eq!(common::read(&dir.join("ca.pem")), ca);
}

#[test]
fn plain_ws_echo_on_a_path() {
    let server = Wssd::start(&["--plain", "--path", "/wss"]);
    assert!(
        server.url.starts_with("ws://localhost:") && server.url.ends_with("/wss"),
        "{}",
        server.url
    );
    smol::block_on(bounded(async {
        let mut ws = connect(&server, None).await;
        assert_eq!(
            round_trip(&mut ws, Message::text("tom")).await,
            Message::text("tom")
        );
        close(ws).await;
    }));
}

#[test]
fn reply_ok_answers_every_message_with_ok() {
    let dir = common::temp_dir("e2e-reply");
    let server = Wssd::start(&["--self-signed-dir", dir.to_str().unwrap(), "--reply", "ok"]);
    let ca = common::read(&dir.join("ca.pem"));
    smol::block_on(bounded(async {
        let mut ws = connect(&server, Some(&ca)).await;
        assert_eq!(
            round_trip(&mut ws, Message::text("tom")).await,
            Message::text("ok")
        );
        assert_eq!(
            round_trip(&mut ws, Message::binary(vec![1u8])).await,
            Message::text("ok")
        );
        close(ws).await;
    }));
}

#[test]
fn broadcast_relays_to_every_other_client() {
    let server = Wssd::start(&["--plain", "--broadcast"]);
    smol::block_on(bounded(async {
        let mut a = connect(&server, None).await;
        let mut b = connect(&server, None).await;
        let mut c = connect(&server, None).await;
        // Each client's first message proves the hub has it registered.
        a.send(Message::text("hello from a")).await.unwrap();
        assert_eq!(
            b.next().await.unwrap().unwrap(),
            Message::text("hello from a")
        );
        assert_eq!(
            c.next().await.unwrap().unwrap(),
            Message::text("hello from a")
        );
        b.send(Message::text("hello from b")).await.unwrap();
        // a's next message is b's: its own was not echoed back to it.
        assert_eq!(
            a.next().await.unwrap().unwrap(),
            Message::text("hello from b")
        );
        assert_eq!(
            c.next().await.unwrap().unwrap(),
            Message::text("hello from b")
        );
        for ws in [a, b, c] {
            close(ws).await;
        }
    }));
}

#[test]
fn a_bad_certificate_path_stops_startup_with_the_file_named() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wssd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "/nonexistent/server.pem",
            "--key",
            "/nonexistent/server.key",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/server.pem: file not found"),
        "{stderr}"
    );
}
