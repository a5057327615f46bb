//! The Hub over in-memory pipes: a 1,000-member group send, with one member that stops reading.

use wssd_testkit as common;

use std::rc::Rc;

use common::{duplex_with, peer};
use futures_lite::future;
use futures_util::StreamExt;
use wssd::{Acceptor, Config, Connection, Handler, Hub, Limits, Message, SendError};

/// Joins every connection to group "g" and hands it to the test.
struct Group(Hub, async_channel::Sender<Connection>);

impl Handler for Group {
    fn on_open(&self, conn: &Connection) {
        self.0.add(conn);
        self.0.join(conn.id(), "g");
        self.1.try_send(conn.clone()).unwrap();
    }
    fn on_message(&self, _: &Connection, _: wssd::Data) {}
    fn on_close(&self, conn: &Connection, _: Option<&wssd::CloseFrame>) {
        self.0.remove(conn.id());
    }
}

/// A client of `acceptor` over a 4 KiB pipe (a member that stops reading stalls its writer
/// quickly), served by `handler` on `ex`; its opening handshake done.
async fn member(
    ex: &smol::LocalExecutor<'_>,
    acceptor: &Acceptor,
    handler: &Rc<Group>,
) -> async_tungstenite::WebSocketStream<common::Duplex> {
    let (server_end, client_end) = duplex_with(4 << 10);
    let (acceptor, handler) = (acceptor.clone(), handler.clone());
    ex.spawn(async move {
        let accepted = acceptor.accept(server_end, peer()).await.unwrap();
        accepted.serve(&*handler).await;
    })
    .detach();
    async_tungstenite::client_async("ws://localhost/", client_end)
        .await
        .unwrap()
        .0
}

#[test]
fn a_thousand_member_group_send_completes_and_a_stalled_member_is_closed_alone() {
    const MEMBERS: usize = 1000;
    const MESSAGES: u8 = 100;
    let hub = Hub::default();
    let mut limits = Limits::default();
    limits.send_queue_bytes = 16 << 10;
    let acceptor = Acceptor::new(Config::default().limits(limits));
    let (opened_tx, opened) = async_channel::unbounded();
    let handler = Rc::new(Group(hub.clone(), opened_tx));
    let (ack_tx, acks) = async_channel::unbounded::<u8>();
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(common::bounded(async {
        let mut stalled_client = None;
        let mut members = Vec::new();
        for i in 0..MEMBERS {
            let mut ws = member(&ex, &acceptor, &handler).await;
            members.push(opened.recv().await.unwrap());
            if i == 0 {
                stalled_client = Some(ws); // never reads
                continue;
            }
            let ack = ack_tx.clone();
            ex.spawn(async move {
                for n in 0..MESSAGES {
                    let msg = ws.next().await.unwrap().unwrap();
                    assert_eq!(msg, Message::binary(vec![n; 1024]), "in order, whole");
                    ack.send(n).await.unwrap();
                }
                // Stay connected until the test ends (the executor drops this task).
                std::future::pending::<()>().await;
                drop(ws);
            })
            .detach();
        }
        assert_eq!(hub.group_members("g").len(), MEMBERS);

        for n in 0..MESSAGES {
            hub.send_to_group("g", &wssd::Data::binary(vec![n; 1024]), &[]);
            // Every reading member got message n before n + 1 is sent.
            for _ in 1..MEMBERS {
                assert_eq!(acks.recv().await.unwrap(), n);
            }
        }
        // The stalled member outgrew its 16 KiB queue and was closed (1013): sends to it
        // fail now, while every other member stays open.
        assert_eq!(
            members[0].try_send(wssd::Data::text("x")),
            Err(SendError::Closed)
        );
        for conn in &members[1..] {
            assert_eq!(conn.buffered_bytes(), 0);
            conn.try_send(wssd::Data::text("still open")).unwrap();
        }
        drop(stalled_client);
    })));
}

/// `Hub::send_to` keeps the one full-queue rule of every Hub send: outside `on_message` a
/// recipient whose queue is full is closed with 1013 (it is not left full for the caller).
#[test]
fn send_to_a_full_recipient_outside_on_message_closes_it_as_every_hub_send_does() {
    let hub = Hub::default();
    let mut limits = Limits::default();
    limits.send_queue_bytes = 4 << 10;
    let acceptor = Acceptor::new(Config::default().limits(limits));
    let (opened_tx, opened) = async_channel::unbounded();
    let handler = Rc::new(Group(hub.clone(), opened_tx));
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(common::bounded(async {
        let _never_reads = member(&ex, &acceptor, &handler).await;
        let conn = opened.recv().await.unwrap();
        let mut sent = 0;
        let refused = loop {
            match hub.send_to(conn.id(), vec![7u8; 1024]) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1000, "never full");
        };
        assert_eq!(refused, SendError::Full, "after {sent}");
        // Closed for it with 1013, as a group send would have.
        assert!(conn.is_closed());
        assert_eq!(conn.try_send(wssd::Data::text("x")), Err(SendError::Closed));
    })));
}

#[test]
fn a_client_cannot_see_its_connection_open_before_on_open_ran() {
    let hub = Hub::default();
    let acceptor = Acceptor::new(Config::default());
    let (opened_tx, _opened) = async_channel::unbounded();
    let handler = Rc::new(Group(hub.clone(), opened_tx));
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(common::bounded(async {
        let (server_end, client_end) = duplex_with(4 << 10);
        let (accepted_tx, accepted) = async_channel::bounded(1);
        let (release_tx, release) = async_channel::bounded::<()>(1);
        ex.spawn(async move {
            let accepted = acceptor.accept(server_end, peer()).await.unwrap();
            // The embedder's own async work between accept and serve (an auth lookup, say).
            accepted_tx.send(()).await.unwrap();
            release.recv().await.unwrap();
            accepted.serve(&*handler).await;
        })
        .detach();
        let mut client = Box::pin(async_tungstenite::client_async(
            "ws://localhost/",
            client_end,
        ));
        assert!(
            future::poll_once(&mut client).await.is_none(),
            "the request is sent, no answer yet"
        );
        accepted.recv().await.unwrap();
        // Accepted, but on_open has not run: the client must not have its 101 yet.
        assert!(
            future::poll_once(&mut client).await.is_none(),
            "the client saw its connection open before the handler registered it"
        );
        release_tx.send(()).await.unwrap();
        let (mut ws, _) = client.await.unwrap();
        // on_open joined "g" before the 101 went out: this group message cannot miss it.
        hub.send_to_group("g", &wssd::Data::text("welcome"), &[]);
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("welcome"));
    })));
}

/// Adds and joins, and never removes: the Hub must forget the connection by itself.
struct Forgetful(Hub);

impl Handler for Forgetful {
    fn on_open(&self, conn: &Connection) {
        self.0.add(conn);
        self.0.join(conn.id(), "room");
        self.0.bind_user(conn.id(), "ann");
    }
    fn on_message(&self, _: &Connection, _: wssd::Data) {}
}

/// Library v0.2: a connection leaves the Hub, its user and its groups when its session
/// ends, though the handler never calls `remove`.
#[test]
fn a_connection_leaves_the_hub_when_its_session_ends_without_remove() {
    let hub = Hub::default();
    let handler = Forgetful(hub.clone());
    let acceptor = Acceptor::new(Config::default());
    for _ in 0..3 {
        let (server_end, client_end) = duplex_with(64 << 10);
        let server = async {
            let accepted = acceptor.accept(server_end, peer()).await.unwrap();
            accepted.serve(&handler).await;
        };
        let client = async {
            let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
                .await
                .unwrap();
            assert_eq!(hub.count(), 1, "registered while open");
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        };
        future::block_on(common::bounded(future::zip(server, client)));
        assert_eq!(hub.count(), 0, "gone once the session ended");
        assert!(hub.group_members("room").is_empty());
        assert_eq!(hub.send_to_user("ann", &wssd::Data::text("hi")), 0);
    }
}

/// A measurement, run by hand (`cargo test --release --test hub -- --ignored --nocapture`):
/// broadcasts to 10,000 members while another thread joins and leaves other groups, against
/// the same broadcasts without that churn. Sends read the Hub under a shared lock, so the
/// churn (which takes it to write, briefly) should cost the broadcasts little.
#[test]
#[ignore = "a measurement, not a check: run by hand"]
fn measure_broadcast_to_10000_members_while_others_join_and_leave() {
    const MEMBERS: usize = 10_000;
    let hub = Hub::default();
    let (opened_tx, opened) = async_channel::unbounded();
    let handler = Rc::new(Group(hub.clone(), opened_tx));
    let acceptor = Acceptor::new(Config::default());
    let ex = smol::LocalExecutor::new();
    let mut clients = Vec::new();
    smol::block_on(ex.run(async {
        for _ in 0..MEMBERS {
            let (server_end, mut client_end) = duplex_with(256);
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            ex.spawn(async move {
                let accepted = acceptor.accept(server_end, peer()).await.unwrap();
                accepted.serve(&*handler).await;
            })
            .detach();
            let _ = common::read_until_101(&mut client_end).await;
            opened.recv().await.unwrap();
            clients.push(client_end);
        }
    }));
    assert_eq!(hub.count(), MEMBERS);
    let msg = wssd::Data::text("x");
    let time = |hub: &Hub| {
        let started = std::time::Instant::now();
        for _ in 0..50 {
            hub.broadcast(&msg, &[]);
        }
        started.elapsed() / 50
    };
    let quiet = time(&hub);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ids = hub.group_members("g");
    let churn = {
        let (hub, stop) = (hub.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = ids[(n as usize) % ids.len()];
                hub.join(id, "other");
                hub.leave(id, "other");
                n += 1;
            }
            n
        })
    };
    let busy = time(&hub);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let changes = churn.join().unwrap();
    eprintln!(
        "figure: broadcast to {MEMBERS}: {quiet:?} each without churn, {busy:?} each while another \
         thread made {changes} joins and leaves"
    );
    drop(clients);
}

/// Hands each connection to the test; its `on_message` panics (a handler's bug).
struct Panics(Hub, async_channel::Sender<Connection>);

impl Handler for Panics {
    fn on_open(&self, conn: &Connection) {
        self.0.add(conn);
        self.1.try_send(conn.clone()).unwrap();
    }
    fn on_message(&self, _: &Connection, _: wssd::Data) {
        panic!("a handler's bug (this test's own panic)");
    }
}

#[test]
fn after_a_handler_panicked_and_the_executor_went_on_a_full_recipient_is_still_closed() {
    use futures_lite::FutureExt;
    let hub = Hub::default();
    let mut limits = Limits::default();
    limits.send_queue_bytes = 1024;
    let acceptor = Acceptor::new(Config::default().limits(limits));
    let (opened_tx, opened) = async_channel::unbounded();
    let handler = Rc::new(Panics(hub.clone(), opened_tx));
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(common::bounded(async {
        let mut clients = Vec::new();
        let (ended_tx, ended) = async_channel::unbounded();
        for _ in 0..2 {
            let (server_end, client_end) = duplex_with(4 << 10);
            let (acceptor, handler, ended) = (acceptor.clone(), handler.clone(), ended_tx.clone());
            ex.spawn(async move {
                let accepted = acceptor.accept(server_end, peer()).await.unwrap();
                // As tokio does with a task that panics: the panic ends the task only.
                let served = std::panic::AssertUnwindSafe(accepted.serve(&*handler))
                    .catch_unwind()
                    .await;
                ended.send(served.is_err()).await.unwrap();
            })
            .detach();
            let (ws, _) = async_tungstenite::client_async("ws://localhost/", client_end)
                .await
                .unwrap();
            clients.push(ws);
        }
        let (_panicking, full) = (opened.recv().await.unwrap(), opened.recv().await.unwrap());
        hub.join(full.id(), "full");
        // The first client's message makes its handler panic, on this thread.
        futures_util::SinkExt::send(&mut clients[0], Message::text("boom"))
            .await
            .unwrap();
        assert!(
            ended.recv().await.unwrap(),
            "the session ended in the panic"
        );
        // Outside any on_message: the first message fills the recipient's 1 KiB queue, the
        // second finds it full, and the recipient is closed (1013), not waited for.
        let big = wssd::Data::binary(vec![7; 1024]);
        assert_eq!(hub.send_to_group("full", &big, &[]), 1);
        assert_eq!(hub.send_to_group("full", &big, &[]), 0);
        assert_eq!(full.try_send(wssd::Data::text("x")), Err(SendError::Closed));
        drop(clients);
    })));
}
