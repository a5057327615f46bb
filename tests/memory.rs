//! What an idle connection holds on the heap, counted by a counting allocator: every byte
//! allocated and not freed while the server side (accept, then the session) is being
//! polled, per connection, once each connection has done its opening handshake and one
//! echo and sits idle. The client side, the in-memory pipes and the test's own bookkeeping
//! are not counted. The README's "Speed and footprint" section has the breakdown.

use wssd_testkit as common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::{duplex, peer, tls_connector};
use futures_lite::future;
use futures_util::StreamExt;
use wssd::{Acceptor, Config, Connection, Handler, Message};

/// Counts the live heap bytes allocated while [`Counted`] polls the server side.
struct Counting;

thread_local! {
    /// Counting on: this thread polls the server side.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// The heap bytes this thread allocated and has not freed while counting.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
    }
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

// SAFETY: defers every call to the system allocator unchanged; the counting only reads and
// writes thread-local cells (const-initialised: no allocation).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Polls `F` with counting on: what it allocates and keeps is the server's.
struct Counted<F>(Pin<Box<F>>);

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        COUNTING.with(|c| c.set(true));
        let out = self.0.as_mut().poll(cx);
        COUNTING.with(|c| c.set(false));
        out
    }
}

trait Stream: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin {}
impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin> Stream for T {}

struct Echo;

impl Handler for Echo {
    fn on_message(&self, conn: &Connection, msg: wssd::Data) {
        conn.try_send(msg).unwrap();
    }
}

const CONNS: usize = 200;

/// Opens [`CONNS`] connections (TLS when `tls`), one echo each, and returns the heap bytes
/// the server side holds per idle connection.
fn idle_bytes_per_connection(tls: bool) -> isize {
    let certs = wssd::tls::SelfSigned::generate().unwrap();
    let config = if tls {
        Config::default().tls(certs.server_config().unwrap())
    } else {
        Config::default()
    };
    let acceptor = Acceptor::new(config);
    let connector = tls_connector(&certs.ca_pem);
    let ex = smol::LocalExecutor::new();
    let (done, all_done) = async_channel::unbounded();
    let mut clients = Vec::new();
    let before = live();
    let mut task_bytes = 0;
    future::block_on(ex.run(common::bounded(async {
        for _ in 0..CONNS {
            let (server_end, client_end) = duplex();
            let acceptor = acceptor.clone();
            // As `wssd::smol::Server` runs a connection: the accept step on the heap only
            // while it runs, then the session.
            let server = async move {
                let accepted = Box::pin(acceptor.accept(server_end, peer())).await;
                accepted.unwrap().serve(&Echo).await;
            };
            // The task's own allocation, made before counting starts.
            task_bytes = std::mem::size_of_val(&server);
            ex.spawn(Counted(Box::pin(server))).detach();
            let connector = connector.clone();
            let done = done.clone();
            clients.push(ex.spawn(async move {
                let stream: Box<dyn Stream> = if tls {
                    Box::new(
                        connector
                            .connect(common::localhost(), client_end)
                            .await
                            .unwrap(),
                    )
                } else {
                    Box::new(client_end)
                };
                let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", stream)
                    .await
                    .unwrap();
                ws.send(Message::binary(vec![7u8; 16])).await.unwrap();
                assert_eq!(
                    ws.next().await.unwrap().unwrap(),
                    Message::binary(vec![7u8; 16])
                );
                done.send(()).await.unwrap();
                // Idle from here on, until the test ends.
                future::pending::<()>().await;
            }));
        }
        for _ in 0..CONNS {
            all_done.recv().await.unwrap();
        }
    })));
    let heap = (live() - before) / CONNS as isize;
    println!("per connection: the task's future {task_bytes} bytes, other heap {heap} bytes");
    heap + task_bytes as isize
}

// The bounds are the targets of 12 KiB per wss and 4 KiB per plain ws connection (today:
// wss 11,536 and ws 3,656 bytes with Rust 1.95).

#[test]
fn an_idle_wss_connection_holds_at_most_12_kib_of_heap() {
    let bytes = idle_bytes_per_connection(true);
    println!("idle wss connection: {bytes} heap bytes");
    assert!(bytes <= 12 * 1024, "{bytes} bytes per idle wss connection");
}

#[test]
fn an_idle_ws_connection_holds_at_most_4_kib_of_heap() {
    let bytes = idle_bytes_per_connection(false);
    println!("idle ws connection: {bytes} heap bytes");
    assert!(bytes <= 4 * 1024, "{bytes} bytes per idle ws connection");
}
