//! The listener loop on tokio (feature `tokio`): the library's only tokio code.
//!
//! [`serve`] is a thin accept loop over [`crate::Server`], as
//! [`smol::Server`](crate::smol::Server) is on smol: the same connection caps, admission,
//! shutdown, log lines and counters. Each connection is a task of the tokio runtime running
//! [`crate::Server::connection`], its socket turned into a `futures-io` stream by
//! `tokio_util::compat`.

use std::io;

use tokio::net::TcpListener;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::Handler;

/// Accepts connections on `listener` until `server`'s shutdown is triggered, each one a task
/// (`tokio::spawn`) running [`crate::Server::connection`] after `TCP_NODELAY`; then returns
/// once they have all ended or the shutdown timeout passed ([`crate::Server::drain`]). Call
/// it inside a tokio runtime.
///
/// On shutdown: no new connections, and every live one is closed with 1001 (going away,
/// RFC 6455 section 7.4.1) after the messages already queued on it are written.
///
/// ```no_run
/// use std::sync::Arc;
/// use wssd::{Acceptor, Config, Connection, Handler, Message};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&self, conn: &Connection, msg: wssd::Data) {
///         let _ = conn.try_send(msg);
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8282").await?;
///     let server = wssd::Server::new(Acceptor::new(Config::default()), Arc::new(Echo))
///         .max_connections(1_000);
///     wssd::tokio::serve(server, listener).await
/// }
/// ```
///
/// # Errors
/// None today (accept errors, such as running out of file descriptors, are logged and
/// accepting resumes after 100 ms); the `Result` leaves room for a listener that fails.
pub async fn serve<H: Handler>(server: crate::Server<H>, listener: TcpListener) -> io::Result<()> {
    let start = |stream: tokio::net::TcpStream, peer| {
        let _ = stream.set_nodelay(true);
        tokio::spawn(server.connection(stream.compat(), peer));
    };
    server.accept_loop(|| listener.accept(), start).await;
    Ok(())
}
