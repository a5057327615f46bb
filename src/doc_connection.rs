// A live connection for the doc examples of `Connection` and `Hub`, included by each of them
// as a hidden line (`# let conn = include!("doc_connection.rs");`): a client on loopback that
// reads until the end, and the server side served by a handler that hands over its
// `Connection`. Not a module: an expression, compiled only with the doc tests.
{
    struct Keep(async_channel::Sender<wssd::Connection>);
    impl wssd::Handler for Keep {
        fn on_open(&self, c: &wssd::Connection) {
            self.0.try_send(c.clone()).unwrap();
        }
        fn on_message(&self, _: &wssd::Connection, _: wssd::Data) {}
    }
    smol::block_on(async {
        let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        smol::spawn(async move {
            let t = smol::net::TcpStream::connect(a).await.unwrap();
            let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t)
                .await
                .unwrap();
            while futures_util::StreamExt::next(&mut ws).await.is_some() {}
        })
        .detach();
        let (s, p) = l.accept().await.unwrap();
        let (tx, rx) = async_channel::bounded(1);
        smol::spawn(async move {
            let acceptor = wssd::Acceptor::new(wssd::Config::default());
            let accepted = acceptor.accept(s, p).await.unwrap();
            accepted.serve(&Keep(tx)).await;
        })
        .detach();
        rx.recv().await.unwrap()
    })
}
