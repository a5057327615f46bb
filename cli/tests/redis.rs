//! Cross-instance fan-out through a real Redis server (Debian's redis-server), started on a
//! loopback high port with its own directory. A plain `cargo test` runs them when
//! redis-server is on the PATH, and says each was skipped when it is not;
//! `scripts/interop` installs Redis and sets `WSSD_REQUIRE_REDIS=1`, so that there a missing
//! redis-server fails them instead.

use wssd_testkit as common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use async_tungstenite::WebSocketStream;
use common::{Wssd, bounded, duplex, peer};
use futures_util::StreamExt;
use smol::net::TcpStream;
use wssd::{Acceptor, Config, Connection, Handler, Hub, Message};

/// redis-server on 127.0.0.1:`port`, persistence off, in its own directory; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

/// Whether redis-server is installed; `false` says the test was skipped, unless
/// `WSSD_REQUIRE_REDIS` is set (scripts/interop), where its absence fails the test.
fn redis_installed(test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
    });
    if !found {
        assert!(
            std::env::var_os("WSSD_REQUIRE_REDIS").is_none(),
            "redis-server is not on the PATH, and WSSD_REQUIRE_REDIS is set"
        );
        eprintln!(
            "{test}: skipped: redis-server is not on the PATH (apt-get install redis-server)"
        );
    }
    found
}

impl Redis {
    fn start(port: u16) -> Redis {
        let dir = common::temp_dir("redis");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server is installed (scripts/interop installs it)");
        // Blocks until Redis says it is ready (or exits).
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("Ready to accept connections") {
                std::thread::spawn(move || lines.for_each(drop));
                return Redis { child, port };
            }
        }
        let status = child.wait();
        panic!("redis-server exited before it was ready: {status:?}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Client = WebSocketStream<TcpStream>;

async fn join(server: &Wssd, path: &str) -> Client {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let url = format!("ws://localhost:{}{path}", server.addr().port());
    async_tungstenite::client_async(url, tcp).await.unwrap().0
}

/// The next text message, skipping the server's pings.
async fn next_text(ws: &mut Client) -> String {
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Two `wssd --plain --rooms --redis` instances on one Redis, each subscribed.
fn two_instances(redis: &Redis) -> (Wssd, Wssd) {
    let url = redis.url();
    let a = Wssd::start(&["--plain", "--rooms", "--redis", &url]);
    let b = Wssd::start(&["--plain", "--rooms", "--redis", &url]);
    a.wait_for_log("redis: subscribed", 1);
    b.wait_for_log("redis: subscribed", 1);
    (a, b)
}

#[test]
fn a_group_message_from_instance_b_reaches_instance_a_exactly_once() {
    if !redis_installed("a_group_message_from_instance_b_reaches_instance_a_exactly_once") {
        return;
    }
    let redis = Redis::start(common::free_port());
    let (a, b) = two_instances(&redis);
    smol::block_on(bounded(async {
        let mut on_a = join(&a, "/g").await;
        let mut other_room = join(&a, "/h").await;
        let mut on_b = join(&b, "/g").await;
        on_b.send(Message::text("one")).await.unwrap();
        assert_eq!(next_text(&mut on_a).await, "one");
        on_b.send(Message::text("two")).await.unwrap();
        // Exactly once: the next message after "one" is "two", not "one" again.
        assert_eq!(next_text(&mut on_a).await, "two");
        // The sender does not get its own message, and room /h got neither: its first
        // message is the one sent to /h now.
        on_a.send(Message::text("to g from a")).await.unwrap();
        assert_eq!(next_text(&mut on_b).await, "to g from a");
        let mut on_b_h = join(&b, "/h").await;
        on_b_h.send(Message::text("to h")).await.unwrap();
        assert_eq!(next_text(&mut other_room).await, "to h");
    }));
}

#[test]
fn local_delivery_survives_a_redis_outage_and_cross_instance_delivery_resumes() {
    if !redis_installed(
        "local_delivery_survives_a_redis_outage_and_cross_instance_delivery_resumes",
    ) {
        return;
    }
    let port = common::free_port();
    let redis = Redis::start(port);
    let (a, b) = two_instances(&redis);
    let _dump = DumpOnPanic(&a, &b);
    smol::block_on(bounded(async {
        let mut a1 = join(&a, "/g").await;
        let mut a2 = join(&a, "/g").await;
        let mut b1 = join(&b, "/g").await;
        eprintln!("step: before");
        a1.send(Message::text("before")).await.unwrap();
        assert_eq!(next_text(&mut a2).await, "before");
        assert_eq!(next_text(&mut b1).await, "before");

        eprintln!("step: redis down");
        drop(redis);
        a.wait_for_log("redis: lost the subscription", 1);
        // Redis is gone: local delivery goes on.
        eprintln!("step: during");
        a1.send(Message::text("during")).await.unwrap();
        assert_eq!(next_text(&mut a2).await, "during");

        eprintln!("step: redis up");
        let _redis = Redis::start(port);
        a.wait_for_log("redis: subscribed", 2);
        b.wait_for_log("redis: subscribed", 2);
        eprintln!("step: after");
        a1.send(Message::text("after")).await.unwrap();
        assert_eq!(next_text(&mut a2).await, "after");
        // b1 gets "during" (queued while Redis was down, published on reconnection) and "after".
        eprintln!("step: b1 reads");
        let mut got = vec![next_text(&mut b1).await];
        if got[0] == "during" {
            got.push(next_text(&mut b1).await);
        }
        assert_eq!(got.last().unwrap(), "after", "{got:?}");
    }));
}

/// Prints both instances' logs if the test fails.
struct DumpOnPanic<'a>(&'a Wssd, &'a Wssd);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for line in self.0.log_lines() {
                eprintln!("A {line}");
            }
            for line in self.1.log_lines() {
                eprintln!("B {line}");
            }
        }
    }
}

/// Binds each connection to the user named in its path (`/alice`) and records what arrives.
struct Users(Hub, async_channel::Sender<Connection>);

impl Handler for Users {
    fn on_open(&self, conn: &Connection) {
        self.0.add(conn);
        self.0
            .bind_user(conn.id(), conn.request().path.trim_start_matches('/'));
        self.1.try_send(conn.clone()).unwrap();
    }
    fn on_message(&self, _: &Connection, _: wssd::Data) {}
    fn on_close(&self, conn: &Connection, _: Option<&wssd::CloseFrame>) {
        self.0.remove(conn.id());
    }
}

#[test]
fn send_to_user_reaches_both_of_its_connections_on_two_instances_and_no_one_else() {
    if !redis_installed(
        "send_to_user_reaches_both_of_its_connections_on_two_instances_and_no_one_else",
    ) {
        return;
    }
    let redis = Redis::start(common::free_port());
    let (hub_a, hub_b) = (Hub::default(), Hub::default());
    let (link_a, task_a) = wssd::redis::link(&hub_a, &redis.url()).unwrap();
    let (link_b, task_b) = wssd::redis::link(&hub_b, &redis.url()).unwrap();
    smol::spawn(task_a).detach();
    smol::spawn(task_b).detach();
    let acceptor = Acceptor::new(Config::default());
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(bounded(async {
        link_a.subscribed().await;
        link_b.subscribed().await;
        let (opened_tx, opened) = async_channel::unbounded();
        let (users_a, users_b) = (
            Users(hub_a.clone(), opened_tx.clone()),
            Users(hub_b.clone(), opened_tx),
        );
        let (users_a, users_b) = (std::rc::Rc::new(users_a), std::rc::Rc::new(users_b));
        let mut clients = Vec::new();
        for (user, users) in [("alice", &users_a), ("alice", &users_b), ("bob", &users_b)] {
            let (server_end, client_end) = duplex();
            let (acceptor, users) = (acceptor.clone(), users.clone());
            ex.spawn(async move {
                let accepted = acceptor.accept(server_end, peer()).await.unwrap();
                accepted.serve(&*users).await;
            })
            .detach();
            let url = format!("ws://localhost/{user}");
            clients.push(
                async_tungstenite::client_async(url, client_end)
                    .await
                    .unwrap()
                    .0,
            );
            opened.recv().await.unwrap();
        }
        assert_eq!(
            hub_a.send_to_user("alice", &wssd::Data::text("for alice")),
            1
        );
        hub_b.send_to_user("bob", &wssd::Data::text("for bob"));
        let [alice_a, alice_b, bob] = &mut clients[..] else {
            unreachable!()
        };
        assert_eq!(
            alice_a.next().await.unwrap().unwrap(),
            Message::text("for alice")
        );
        assert_eq!(
            alice_b.next().await.unwrap().unwrap(),
            Message::text("for alice")
        );
        // bob's first message is his own: he never got alice's.
        assert_eq!(bob.next().await.unwrap().unwrap(), Message::text("for bob"));
        // alice on A gets nothing twice: the next thing she sees is a later message.
        hub_b.send_to_user("alice", &wssd::Data::text("second"));
        assert_eq!(
            alice_a.next().await.unwrap().unwrap(),
            Message::text("second")
        );
    })));
}
