//! The push API's answers to bad input: each a 4xx with the reason, none of them able to
//! stall or stop the server. (Pushes reaching browsers, with a real PHP app, are in
//! scripts/interop's bridge.py.)

use wssd_testkit as common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::Wssd;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// One HTTP/1.1 request; the status and body of the answer.
fn request(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let length = if head.contains("Content-Length") {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let _ = tcp.write_all(
        format!("{head}\r\nHost: localhost\r\n{length}Connection: close\r\n\r\n").as_bytes(),
    );
    let _ = tcp.write_all(body);
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

#[test]
fn bad_requests_get_a_4xx_with_the_reason() {
    let dir = common::temp_dir("api");
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let api = common::free_port();
    let server = Wssd::start(&[
        "--plain",
        "--app",
        "http://127.0.0.1:9/",
        "--api",
        &format!("127.0.0.1:{api}"),
        "--api-token-file",
        token.to_str().unwrap(),
    ]);
    server.wait_for_log("push API on http://", 1);
    let post = |path: &str, body: &[u8]| {
        request(api, &format!("POST {path} HTTP/1.1\r\n{}", auth()), body)
    };

    let (status, body) = request(api, "GET /count HTTP/1.1", b"");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    let (status, body) = request(
        api,
        "GET /count HTTP/1.1\r\nAuthorization: Bearer nope",
        b"",
    );
    assert_eq!(status, 401, "{body}");

    let (status, body) = post("/send", b"{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not the JSON this endpoint takes"), "{body}");
    let (status, body) = post("/send", br#"{"id": 42, "text": "hi"}"#);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no connection 42 on this instance"), "{body}");
    let (status, body) = post("/send", br#"{"user": "a", "group": "b", "text": "hi"}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = post("/send", br#"{"all": true, "binary": "***"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not base64"), "{body}");
    let (status, body) = post("/close", br#"{"id": 1, "code": 1006}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("3000 to 4999"), "{body}");
    // Refused on its Content-Length, before the body is sent.
    let (status, body) = request(
        api,
        &format!(
            "POST /send HTTP/1.1\r\n{}\r\nContent-Length: {}",
            auth(),
            4 << 20
        ),
        b"",
    );
    assert_eq!(status, 413, "{body}");
    let (status, body) = request(api, &format!("DELETE /send HTTP/1.1\r\n{}", auth()), b"");
    assert_eq!(status, 405, "{body}");
    let (status, body) = request(api, &format!("GET /nothing HTTP/1.1\r\n{}", auth()), b"");
    assert_eq!(status, 404, "{body}");

    // Still serving, and counting.
    let (status, body) = post("/send", br#"{"all": true, "text": "hi"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"sent\":0"), "{body}");
    let (status, body) = request(api, &format!("GET /metrics HTTP/1.1\r\n{}", auth()), b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nwssd_connections_open 0\n"), "{body}");
    assert!(
        body.contains("# TYPE wssd_handshakes_total counter"),
        "{body}"
    );
}

#[test]
fn without_a_token_the_api_stays_on_loopback() {
    let out = std::process::Command::new(common::wssd_bin())
        .args([
            "--plain",
            "--listen",
            "127.0.0.1:0",
            "--app",
            "http://127.0.0.1:9/",
            "--api",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("without --api-token-file, the push API listens on loopback only"),
        "{err}"
    );
}
