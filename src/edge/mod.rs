//! Readiness for smol::Server's sockets: on Linux an epoll instance of the server's own,
//! edge-triggered ([`epoll`]); elsewhere async-io's registration, as it is ([`portable`]).
//! Both have the same face (`Edge`, `Listening`, `Tcp`); the tests below run against both
//! on Linux, so CI compiles and runs the portable one too.

#[cfg(target_os = "linux")]
mod epoll;
#[cfg(target_os = "linux")]
pub(crate) use epoll::Edge;

#[cfg(any(test, not(target_os = "linux")))]
mod portable;
#[cfg(not(target_os = "linux"))]
pub(crate) use portable::Edge;

/// The tests of an implementation's face: accepting, reading, hang-ups and writing.
#[cfg(test)]
macro_rules! readiness_tests {
    ($name:ident, $imp:path) => {
        mod $name {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            use std::net::TcpStream;
            use std::sync::Arc;
            use std::time::Duration;
            use $imp::{Edge, Tcp};

            /// A registered connection (server side) and its client, on loopback.
            fn pair(edge: &Arc<Edge>) -> (Tcp, TcpStream) {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (server, _) = listener.accept().unwrap();
                server.set_nonblocking(true).unwrap();
                (edge.register(server).unwrap(), client)
            }

            /// Runs `test` twice: on one thread with the dispatcher task beside it, and on an
            /// executor that two threads run, as `Server::run` does. Fails after 30 s rather than
            /// hang, whatever wake-up is lost.
            fn with_edge<F: Future<Output = ()> + Send + 'static>(
                test: impl Fn(Arc<Edge>) -> F + Send + Sync + 'static,
            ) {
                let (done, finished) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    in_two_ways(test);
                    done.send(()).unwrap();
                });
                match finished.recv_timeout(Duration::from_secs(30)) {
                    Ok(()) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hung for 30 s"),
                    Err(_) => panic!("failed: see the panic above"),
                }
            }

            /// [`with_edge`]'s two runs; each fails after 10 s.
            fn in_two_ways<F: Future<Output = ()> + Send + 'static>(
                test: impl Fn(Arc<Edge>) -> F + Send + Sync + 'static,
            ) {
                let deadline = || async {
                    crate::timer::Timer::after(Duration::from_secs(10)).await;
                    panic!("no wake-up within 10 s");
                };
                let ex = smol::Executor::new();
                let edge = Edge::new().unwrap();
                let _dispatcher = ex.spawn(edge.clone().dispatch());
                smol::block_on(ex.run(futures_lite::future::or(test(edge), deadline())));

                let ex = Arc::new(smol::Executor::new());
                let edge = Edge::new().unwrap();
                let _dispatcher = ex.spawn(edge.clone().dispatch());
                let (stop, stopped) = async_channel::bounded::<()>(1);
                let other = {
                    let ex = ex.clone();
                    std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
                };
                // On the executor, so that either thread may run it.
                let task = ex.spawn(futures_lite::future::or(test(edge), deadline()));
                smol::block_on(ex.run(task));
                drop(stop);
                other.join().unwrap().unwrap_err();
            }

            #[test]
            fn a_listener_on_the_edge_accepts_a_connection_that_came_while_it_waited() {
                with_edge(|edge| async move {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = listener.local_addr().unwrap();
                    let listening = edge.listen(listener).unwrap();
                    let mut accept = std::pin::pin!(listening.accept());
                    assert!(futures_lite::future::poll_once(&mut accept).await.is_none());
                    let client = TcpStream::connect(addr).unwrap();
                    let (_, peer) = accept.await.unwrap();
                    assert_eq!(peer, client.local_addr().unwrap());
                });
            }

            #[test]
            fn a_read_that_waited_is_woken_by_data_and_then_by_the_peer_closing() {
                with_edge(|edge| async move {
                    let (mut tcp, mut client) = pair(&edge);
                    let mut buf = [0u8; 64];
                    {
                        // The socket is empty: the read waits for the dispatcher's wake-up.
                        let mut read = std::pin::pin!(tcp.read(&mut buf));
                        assert!(futures_lite::future::poll_once(&mut read).await.is_none());
                        std::io::Write::write_all(&mut client, b"hello").unwrap();
                        assert_eq!(read.await.unwrap(), 5);
                    }
                    assert_eq!(&buf[..5], b"hello");
                    let mut read = std::pin::pin!(tcp.read(&mut buf));
                    assert!(futures_lite::future::poll_once(&mut read).await.is_none());
                    drop(client);
                    assert_eq!(read.await.unwrap(), 0, "the peer's close reads as the end");
                });
            }

            #[test]
            #[cfg(target_os = "linux")]
            fn an_end_of_stream_that_came_with_the_last_data_is_not_lost_by_a_short_read() {
                for reset in [false, true] {
                    with_edge(move |edge| async move {
                        let (mut tcp, client) = pair(&edge);
                        std::io::Write::write_all(&mut &client, b"partial frame").unwrap();
                        if reset {
                            // SO_LINGER 0: the close sends RST.
                            rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO))
                                .unwrap();
                            drop(client);
                        } else {
                            client.shutdown(std::net::Shutdown::Write).unwrap();
                        }
                        // Data and end both in the socket before anything reads it: one event.
                        let fd = std::os::fd::AsFd::as_fd(tcp.get_ref());
                        let mut fds = [rustix::event::PollFd::new(
                            &fd,
                            rustix::event::PollFlags::RDHUP,
                        )];
                        rustix::event::poll(&mut fds, None).unwrap();
                        let mut buf = [0u8; 64];
                        let first = tcp.read(&mut buf).await;
                        if !reset {
                            assert_eq!(first.unwrap(), 13, "the data first");
                        }
                        // A short read took all the socket had; the end must still be read.
                        let mut outcome = Ok(1);
                        while let Ok(1..) = outcome {
                            outcome = tcp.read(&mut buf).await;
                        }
                        if !reset {
                            assert_eq!(outcome.unwrap(), 0, "the end of stream");
                        }
                    });
                }
            }

            #[test]
            fn a_write_that_would_block_resumes_once_the_peer_reads() {
                with_edge(|edge| async move {
                    let (mut tcp, client) = pair(&edge);
                    // Far more than the socket buffers hold: the writer must wait for writability.
                    let total = 32 << 20;
                    let reader = std::thread::spawn(move || {
                        let mut client = client;
                        let mut all = Vec::new();
                        std::io::Read::read_to_end(&mut client, &mut all).unwrap();
                        all.len()
                    });
                    let chunk = vec![7u8; 1 << 16];
                    let mut sent = 0;
                    while sent < total {
                        sent += tcp.write(&chunk).await.unwrap();
                    }
                    tcp.close().await.unwrap();
                    assert_eq!(reader.join().unwrap(), sent);
                });
            }
        }
    };
}

#[cfg(all(test, target_os = "linux"))]
readiness_tests!(epoll_tests, super::epoll);
#[cfg(test)]
readiness_tests!(portable_tests, super::portable);
