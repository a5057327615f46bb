// A `wssd::smol::Server` for the doc examples of its settings, included as a hidden line
// (`# let server = include!("doc_smol_server.rs");`): plain ws, a handler that echoes.
// Not a module: an expression, compiled only with the doc tests.
{
    struct Echo;
    impl wssd::Handler for Echo {
        fn on_message(&self, conn: &wssd::Connection, msg: wssd::Data) {
            let _ = conn.try_send(msg);
        }
    }
    let acceptor = wssd::Acceptor::new(wssd::Config::default());
    wssd::smol::Server::new(acceptor, std::sync::Arc::new(Echo))
}
