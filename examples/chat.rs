//! A chat room: the URL path is the room (a Hub group), the nickname is the user.
//!
//! Run: `cargo run --example chat -- 127.0.0.1:8282`, then open http://localhost:8282/lobby
//! in two browser tabs. A message goes to everyone in the room; `/msg NICK text` goes to
//! every tab of one user. With `wssd::redis::link(&hub, url)`, rooms span instances.
//!
//! The page is served by wssd itself ([`wssd::Config::page`]) on a plain GET of any path;
//! it connects back to `ws://HOST/ROOM?user=NICK`. Each tab asks for its own nickname, shows
//! it, and can change it (it reconnects under the new one). Joins, leaves and the
//! connections themselves are logged to stderr (simple_logger; `RUST_LOG`-free: info level).

use std::sync::Arc;
use std::time::Duration;

use wssd::{Acceptor, CloseFrame, Config, Connection, Data, Handler, Hub};

/// Rooms and users on a Hub.
struct Chat(Hub);

fn nick(conn: &Connection) -> String {
    let query = conn.request().query.as_deref().unwrap_or("");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("user="))
        .filter(|n| !n.is_empty() && n.len() <= 32)
        .map_or_else(|| format!("guest{}", conn.id()), str::to_owned)
}

impl Handler for Chat {
    fn on_open(&self, conn: &Connection) {
        let (room, nick) = (&conn.request().path, nick(conn));
        log::info!(
            "{} joined {}",
            wssd::text::escape(&nick),
            wssd::text::escape(room)
        );
        self.0.add(conn);
        self.0.join(conn.id(), room);
        self.0.bind_user(conn.id(), &nick);
        self.0
            .send_to_group(room, &Data::text(format!("* {nick} joined {room}")), &[]);
    }

    fn on_message(&self, conn: &Connection, msg: Data) {
        let Data::Text(text) = msg else { return };
        let (room, nick) = (&conn.request().path, nick(conn));
        if let Some(rest) = text.strip_prefix("/msg ") {
            let (to, body) = rest.split_once(' ').unwrap_or((rest, ""));
            let line = Data::text(format!("[{nick} → {to}] {body}"));
            if self.0.send_to_user(to, &line) == 0 {
                let _ = conn.try_send(Data::text(format!("* {to} is not here")));
            } else if to != nick {
                let _ = conn.try_send(line);
            }
        } else {
            self.0
                .send_to_group(room, &Data::text(format!("[{nick}] {text}")), &[]);
        }
    }

    fn on_close(&self, conn: &Connection, _: Option<&CloseFrame>) {
        self.0.remove(conn.id());
        let (room, nick) = (&conn.request().path, nick(conn));
        log::info!(
            "{} left {}",
            wssd::text::escape(&nick),
            wssd::text::escape(room)
        );
        self.0
            .send_to_group(room, &Data::text(format!("* {nick} left")), &[]);
    }
}

fn main() -> std::io::Result<()> {
    // wssd logs through the `log` facade: without a logger installed, nothing is printed.
    simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Info)
        .init()
        .expect("the only logger");
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8282".into());
    let acceptor = Acceptor::new(Config::default().page(include_str!("chat.html")));
    let listener = smol::block_on(smol::net::TcpListener::bind(addr.as_str()))?;
    println!(
        "serving ws://localhost:{}/lobby",
        listener.local_addr()?.port()
    );
    let handler = Arc::new(Chat(Hub::default()));
    wssd::smol::Server::new(acceptor, handler)
        .threads(2)
        .shutdown_timeout(Duration::from_secs(5))
        .run(listener)
}
