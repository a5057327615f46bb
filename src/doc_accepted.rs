// An accepted connection (its opening handshake read, the `101` not yet sent) for the doc
// examples of `Acceptor` and `Accepted`, included as a hidden line
// (`# let accepted = include!("doc_accepted.rs");`): a client on loopback that offers the
// subprotocol `chat` and reads until the end. Runs on smol's global executor; the block's
// value is the `Accepted`. Not a module: an expression, compiled only with the doc tests.
smol::block_on(async {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    smol::spawn(async move {
        let t = smol::net::TcpStream::connect(a).await.unwrap();
        let mut request = "ws://localhost/chat".into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "chat".parse().unwrap());
        if let Ok((mut ws, _)) = async_tungstenite::client_async(request, t).await {
            while futures_util::StreamExt::next(&mut ws).await.is_some() {}
        }
    })
    .detach();
    let (s, p) = l.accept().await.unwrap();
    wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap()
})
