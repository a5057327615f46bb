// A `wssd::Server` for the doc examples of `Server` and `smol::Server`, included as a hidden
// line (`# let server = include!("doc_server.rs");`): plain ws, a handler that answers `ok`.
// Not a module: an expression, compiled only with the doc tests.
{
    struct ReplyOk;
    impl wssd::Handler for ReplyOk {
        fn on_message(&self, conn: &wssd::Connection, _: wssd::Data) {
            let _ = conn.try_send("ok");
        }
    }
    let acceptor = wssd::Acceptor::new(wssd::Config::default());
    wssd::Server::new(acceptor, std::sync::Arc::new(ReplyOk))
}
