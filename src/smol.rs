//! The listener loop on smol's multi-threaded executor (feature `smol`, on by default).
//!
//! This is the only module that knows which executor runs it. Embedders on
//! another runtime write their own accept loop around [`Acceptor::accept`] and
//! [`crate::session::serve`]; this module is a short example of one.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer, future};

use crate::{AcceptError, Acceptor, Handler, session};

/// Accepts connections on `listener` forever, running each on `executor`.
///
/// Each connection gets `TCP_NODELAY`, the handshake under
/// [`Limits::handshake_timeout`](crate::Limits::handshake_timeout), then the
/// session loop. One info line is logged per open and one per close (client IP and peer, path,
/// TLS version, duration in seconds, messages in and out, close code); a failed
/// handshake is one warn line. One bad client never affects another.
///
/// # Errors
/// None in practice: accept errors (such as running out of file descriptors) are
/// logged, and accepting resumes after 100 ms.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    acceptor: Acceptor,
    handler: Arc<H>,
    executor: Arc<Executor<'static>>,
) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("accept failed: {e} (too many open files? raise `ulimit -n`)");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, handler) = (acceptor.clone(), handler.clone());
        executor
            .spawn(connection(stream, peer, acceptor, handler))
            .detach();
    }
}

/// Runs [`serve`] on a new multi-threaded executor with `threads` threads (at least 1), blocking the calling thread.
///
/// # Errors
/// As [`serve`]; it only returns on error.
pub fn run<H: Handler>(
    listener: TcpListener,
    acceptor: Acceptor,
    handler: Arc<H>,
    threads: usize,
) -> io::Result<()> {
    let executor = Arc::new(Executor::new());
    for n in 1..threads.max(1) {
        let executor = executor.clone();
        std::thread::Builder::new()
            .name(format!("wssd-{n}"))
            .spawn(move || future::block_on(executor.run(future::pending::<()>())))?;
    }
    future::block_on(executor.run(serve(listener, acceptor, handler, executor.clone())))
}

async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Acceptor,
    handler: Arc<H>,
) {
    let _ = stream.set_nodelay(true);
    let limits = acceptor.config().limits;
    let started = Instant::now();
    let timeout = async {
        Timer::after(limits.handshake_timeout).await;
        None
    };
    let (ws, request) = match future::or(
        async { Some(acceptor.accept(stream, peer).await) },
        timeout,
    )
    .await
    {
        Some(Ok(accepted)) => accepted,
        // A connect that says nothing: a port probe or an L4 balancer's health check.
        Some(Err(AcceptError::Io(e))) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return log::debug!("{peer}: closed before sending anything");
        }
        Some(Err(e @ AcceptError::NotWebSocket { test_page: true })) => {
            return log::info!("{peer}: {e}");
        }
        Some(Err(e)) => return log::warn!("{peer}: {e}"),
        None => {
            return log::warn!(
                "{peer}: opening handshake not finished after {} s: closed (slow or stalled client)",
                limits.handshake_timeout.as_secs_f32()
            );
        }
    };
    let tls = request.tls.as_ref().map_or("plain", |t| t.version);
    let path = request.path.clone();
    let who = if request.client_ip == peer.ip() {
        peer.to_string()
    } else {
        format!("{} (via {peer})", request.client_ip)
    };
    log::info!("open {who} {path} {tls}");
    let summary = session::serve(ws, request, &*handler, &limits).await;
    let code = summary
        .close_code
        .map_or("none (dropped)".to_string(), |c| u16::from(c).to_string());
    log::info!(
        "close {who} {path} {tls} {:.1}s in={} out={} code={code}",
        started.elapsed().as_secs_f32(),
        summary.messages_in,
        summary.messages_out,
    );
    if let Some(error) = summary.error {
        log::warn!("{peer}: {error}");
    }
}
