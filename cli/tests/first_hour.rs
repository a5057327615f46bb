//! A new user's first hour (issue 12): rooms under the proxied path, subprotocols, the
//! `--listen` forms people type, and the log naming the proxy a client came through.

use wssd_testkit as common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use common::{Wssd, bounded};
use futures_util::StreamExt;
use smol::net::TcpStream;
use wssd::Message;

type Client = WebSocketStream<TcpStream>;

async fn connect_to(server: &Wssd, path: &str) -> Client {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let url = format!("ws://{}{path}", server.addr());
    async_tungstenite::client_async(url, tcp).await.unwrap().0
}

async fn next_text(ws: &mut Client) -> String {
    match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn rooms_live_under_the_configured_path_as_behind_nginx_location_wss() {
    let server = Wssd::start(&["--plain", "--path", "/wss", "--rooms"]);
    smol::block_on(bounded(async {
        let mut a = connect_to(&server, "/wss/room1?user=tom").await;
        let mut b = connect_to(&server, "/wss/room1").await;
        let mut c = connect_to(&server, "/wss/room2").await;
        let mut d = connect_to(&server, "/wss/room2").await;
        a.send(Message::text("to room1")).await.unwrap();
        assert_eq!(next_text(&mut b).await, "to room1");
        c.send(Message::text("to room2")).await.unwrap();
        // d's first message is room2's: room1's did not reach it.
        assert_eq!(next_text(&mut d).await, "to room2");
        b.send(Message::text("back")).await.unwrap();
        // a's first message is b's: its own was not echoed back to it.
        assert_eq!(next_text(&mut a).await, "back");
        d.send(Message::text("room2 again")).await.unwrap();
        assert_eq!(next_text(&mut c).await, "room2 again");
    }));
    // Outside the path, still 404, naming the path received.
    let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
    let request = upgrade_request().replacen("GET / ", "GET /other/room1 ", 1);
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        answer.contains("No WebSocket at path \"/other/room1\", the path this server received: connect to /wss (or below it)"),
        "{answer}"
    );
    // The log line names the flag that sets the path here, not the library's setting.
    let lines = server.wait_for_log("no WebSocket at path", 1);
    assert!(
        lines[0].contains("(check the client's URL against the server's path: --path)")
            && !lines[0].contains("Config::"),
        "{lines:?}"
    );
}

#[test]
fn the_first_offered_subprotocol_the_server_speaks_is_chosen() {
    let server = Wssd::start(&["--plain", "--subprotocol", "chat", "--subprotocol", "mqtt"]);
    smol::block_on(bounded(async {
        let offer = |protocols: &str| {
            let mut request = format!("ws://{}/", server.addr())
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.parse().unwrap());
            request
        };
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let (mut ws, response) =
            async_tungstenite::client_async(offer("graphql-ws, mqtt, chat"), tcp)
                .await
                .unwrap();
        // The client's order wins among the ones the server speaks.
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            "mqtt"
        );
        ws.send(Message::text("tom")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "tom");
    }));
    // An offer the server does not speak: 101 without a subprotocol (RFC 6455 section 4.2.2).
    let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
    let request = upgrade_request().replacen(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Protocol: graphql-ws\r\n\r\n",
        1,
    );
    tcp.write_all(request.as_bytes()).unwrap();
    let head = common::read_head_blocking(&mut tcp).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
}

fn upgrade_request() -> String {
    String::from_utf8(common::UPGRADE_REQUEST.to_vec()).unwrap()
}

/// Runs `wssd --plain --listen FORM`, and returns its URL line, or its stderr when it exits.
fn start_with_listen(form: &str) -> Result<(std::process::Child, u16), String> {
    let mut child = Command::new(common::wssd_bin())
        .args(["--plain", "--threads", "1", "--listen", form])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(url) = line.trim().strip_prefix("serving ") {
            let port = url.rsplit(':').next().unwrap().parse().unwrap();
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
            return Ok((child, port));
        }
        line.clear();
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    Err(stderr)
}

#[test]
fn the_listen_forms_people_type_are_accepted_and_a_refusal_lists_them() {
    // Port 0: the system picks a free one, which the URL line names.
    for form in ["localhost:0", ":0", "0", "127.0.0.1:0", "[::]:0"] {
        let (mut child, port) = start_with_listen(form).unwrap_or_else(|e| panic!("{form}: {e}"));
        let connected = std::net::TcpStream::connect(("127.0.0.1", port));
        child.kill().unwrap();
        child.wait().unwrap();
        connected.unwrap_or_else(|e| panic!("{form}: port {port}: {e}"));
    }
    for bad in ["localhost", "127.0.0.1:99999", "[::]9003"] {
        let stderr = start_with_listen(bad).err().unwrap();
        assert!(
            stderr.contains("use 127.0.0.1:8282 or localhost:8282 (this machine only), 0.0.0.0:8282 or [::]:8282 (every interface), or :8282 or 8282"),
            "{bad}: {stderr}"
        );
    }
    let out = Command::new(common::wssd_bin())
        .args(["--log-level", "verbose"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr
            .contains("\"verbose\" is not a log level: use off, error, warn, info, debug or trace"),
        "{stderr}"
    );
}

#[test]
fn a_client_on_the_proxy_s_own_address_is_still_logged_via_the_proxy() {
    let server = Wssd::start(&["--plain"]);
    let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
    let local = tcp.local_addr().unwrap();
    let request = upgrade_request().replacen("\r\n\r\n", "\r\nX-Real-IP: 127.0.0.1\r\n\r\n", 1);
    tcp.write_all(request.as_bytes()).unwrap();
    let head = common::read_head_blocking(&mut tcp).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lines = server.wait_for_log("] open ", 1);
    assert!(
        lines[0].contains(&format!("open 127.0.0.1 (via {local})")),
        "{lines:?}"
    );
}

/// The spellings people type: `-h` for help (its usage wrapped), `--version` and `-V`, and a
/// URL given to `--listen` gets "drop the scheme", not a failed name lookup.
#[test]
fn h_version_and_a_scheme_in_listen_get_what_was_meant() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::wssd_bin())
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, help) = run(&["-h"]);
    assert!(ok && help.starts_with("Usage: wssd"), "{help}");
    // The usage, wrapped: no line of it over 100 columns.
    let usage = help.split("\n\n").next().unwrap();
    assert!(usage.lines().count() > 1, "{usage}");
    assert!(usage.lines().all(|l| l.len() <= 100), "{usage}");
    for flag in ["--version", "-V"] {
        let (ok, version) = run(&[flag]);
        assert!(ok, "{flag}: {version}");
        assert_eq!(
            version.trim(),
            format!("wssd {}", env!("CARGO_PKG_VERSION"))
        );
    }
    let (ok, error) = run(&["--listen", "wss://chat.example.com:8282"]);
    assert!(!ok);
    assert!(
        error.contains("drop the scheme (wss://), as in --listen chat.example.com:8282"),
        "{error}"
    );
}

/// Nothing is printed as serving that is not: a flag that is wrong, or a port that is
/// taken, fails before the banner (`serving ...`), with what to fix.
#[test]
fn a_wrong_app_or_api_fails_before_the_banner() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let app = ["--plain", "--listen", "127.0.0.1:0", "--app"];
    for (args, fix) in [
        (vec!["127.0.0.1:8000"], "give an http:// URL"),
        (
            vec!["http://127.0.0.1:9/", "--api", "0.0.0.0:0"],
            "without --api-token-file, the push API listens on loopback only",
        ),
        (
            vec!["http://127.0.0.1:9/", "--api", &taken],
            "cannot listen there",
        ),
    ] {
        let out = std::process::Command::new(common::wssd_bin())
            .args(app.iter().chain(&args))
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{args:?}");
        assert!(!stdout.contains("serving"), "{args:?}: {stdout}");
        assert!(stderr.contains(fix), "{args:?}: {stderr}");
    }
}

/// The banner fits the deployment: with a certificate for a real name, the URL and snippet
/// use that name (a browser checks it against the certificate), and a loopback address gets
/// one line on how to listen publicly.
#[test]
fn the_banner_names_what_the_certificate_covers_and_how_to_listen_publicly() {
    use std::io::BufRead;
    let dir = common::temp_dir("banner");
    let made = rcgen::generate_simple_self_signed(vec!["chat.example.com".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut child = std::process::Command::new(common::wssd_bin())
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    while !banner
        .iter()
        .any(|l: &String| l.contains("--listen 0.0.0.0:"))
    {
        match lines.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) => banner.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = banner.join("\n");
    assert!(
        banner[0].starts_with("serving wss://chat.example.com:"),
        "{text}"
    );
    assert!(
        text.contains("new WebSocket(\"wss://chat.example.com:"),
        "{text}"
    );
    assert!(
        text.contains("Only this machine reaches 127.0.0.1:"),
        "{text}"
    );
}
