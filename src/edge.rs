//! Edge-triggered readiness for smol::Server's connections (Linux).
//!
//! async-io registers every socket in one-shot mode: each wait for readiness re-arms it with
//! an `epoll_ctl`, one system call per message on a busy connection (and ten per wss
//! handshake). Here the server's connections (and its listener) are registered once,
//! edge-triggered, in an epoll instance of the server's own. Under `Server::run` the
//! executor's threads sleep in that instance when idle ([`Edge::block_on`], one thread at a
//! time) and wake the connections its events name, as tokio's workers do with their
//! driver: a nested epoll instance in async-io's reactor cost each wait five more system
//! calls and a walk of the nested ready list. Under `Server::serve` (the embedder's threads)
//! the instance is one source in async-io's reactor, and a task takes its events a batch at
//! a time. A connection's readiness is a flag that a read or write clears when the socket
//! would block (or a read comes up short: it took all the socket had), as tokio does.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_io::Async;
use atomic_waker::AtomicWaker;
use rustix::event::epoll;

/// Events taken from the epoll instance per `epoll_wait`.
const BATCH: usize = 256;

thread_local! {
    /// Room for a batch of events, kept by the thread that takes them: no allocation per
    /// batch. Per thread, not in [`Edge`]: an event (it may hold a pointer) is not `Send`.
    static EVENTS: RefCell<Vec<epoll::Event>> = const { RefCell::new(Vec::new()) };
}
const READABLE: u32 = 1;
const WRITABLE: u32 = 2;
/// The peer ended its side, or the connection hung up or failed (`EPOLLRDHUP`, `EPOLLHUP`,
/// `EPOLLERR`). Never cleared: a read that comes up short clears [`READABLE`], and the end
/// of stream that came with the last data must still wake the next read, since no event
/// will announce it again.
const READ_CLOSED: u32 = 4;
/// The connection hung up or failed (`EPOLLHUP`, `EPOLLERR`); never cleared.
const WRITE_CLOSED: u32 = 8;
/// Readiness words count the events delivered above the four flags.
const TICK: u32 = 16;

/// The sticky flag that also makes `flag` ready.
fn closed_for(flag: u32) -> u32 {
    match flag {
        READABLE => READ_CLOSED,
        _ => WRITE_CLOSED,
    }
}

/// The server's epoll instance and the connections registered in it.
pub(crate) struct Edge {
    epoll: Async<OwnedFd>,
    slots: Mutex<slab::Slab<Arc<Slot>>>,
    /// An eventfd in the epoll instance (edge-triggered, never read): a write ends the
    /// `epoll_wait` of the thread parked in [`Edge::block_on`].
    interrupt: OwnedFd,
    /// Held by the one thread of [`Edge::block_on`] that waits in `epoll_wait`; the others
    /// park on their thread.
    driver: Mutex<()>,
}

/// The epoll data of [`Edge::interrupt`]: no slot's key.
const INTERRUPT: u64 = u64::MAX;

/// What wakes a thread of [`Edge::block_on`]: its state, and how to end its sleep.
struct Parker {
    state: AtomicU8,
    edge: Arc<Edge>,
    thread: std::thread::Thread,
}

/// [`Parker::state`]: running, with no wake-up since its last look.
const RUNNING: u8 = 0;
/// Woken while running: it polls again before it sleeps.
const NOTIFIED: u8 = 1;
/// Asleep in `std::thread::park`.
const PARKED: u8 = 2;
/// Asleep in `epoll_wait` on the server's epoll instance.
const IN_EPOLL: u8 = 3;

impl std::task::Wake for Parker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.swap(NOTIFIED, Ordering::SeqCst) {
            PARKED => self.thread.unpark(),
            IN_EPOLL => {
                // A full counter (2^64 - 2 writes) refuses the write: it is pending anyway.
                let _ = rustix::io::write(&self.edge.interrupt, &1u64.to_ne_bytes());
            }
            _ => {}
        }
    }
}

/// One connection's readiness: the flags and a count of delivered events (so that a clear
/// never erases an event newer than what the clearer saw), and who waits on each.
struct Slot {
    /// Where the slot is in [`Edge`]'s slab, and the connection's epoll data.
    key: usize,
    ready: AtomicU32,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// The readiness flags an epoll event sets.
fn readiness(flags: epoll::EventFlags) -> u32 {
    use epoll::EventFlags as F;
    let mut ready = 0;
    if flags.intersects(F::IN) {
        ready |= READABLE;
    }
    if flags.intersects(F::RDHUP | F::HUP | F::ERR) {
        ready |= READABLE | READ_CLOSED;
    }
    if flags.intersects(F::OUT) {
        ready |= WRITABLE;
    }
    if flags.intersects(F::HUP | F::ERR) {
        ready |= WRITABLE | WRITE_CLOSED;
    }
    ready
}

impl Slot {
    /// Sets `flags` and wakes their waiters: only for a flag that was clear, since a
    /// waiter registers only after seeing its flag clear, and the delivery that set it
    /// since then woke it (a socket that stays writable gets no wake-up per event).
    fn deliver(&self, flags: u32) {
        let before = self
            .ready
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                Some((r | flags).wrapping_add(TICK))
            })
            .unwrap_or_else(|r| r);
        let set = flags & !before;
        if set & (READABLE | READ_CLOSED) != 0 {
            self.reader.wake();
        }
        if set & (WRITABLE | WRITE_CLOSED) != 0 {
            self.writer.wake();
        }
    }

    /// Clears `flag`, unless an event came after `seen` was read.
    fn clear(&self, seen: u32, flag: u32) {
        let _ = self
            .ready
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r / TICK == seen / TICK).then_some(r & !flag)
            });
    }

    /// The readiness word if `flag` (or the sticky end that goes with it) is set;
    /// otherwise `cx` waits for it.
    fn poll_ready(&self, flag: u32, cx: &mut Context<'_>) -> Poll<u32> {
        let want = flag | closed_for(flag);
        let r = self.ready.load(Ordering::Acquire);
        if r & want != 0 {
            return Poll::Ready(r);
        }
        match flag {
            READABLE => self.reader.register(cx.waker()),
            _ => self.writer.register(cx.waker()),
        }
        // An event delivered before the waker was in place: not lost.
        let r = self.ready.load(Ordering::Acquire);
        match r & want != 0 {
            true => Poll::Ready(r),
            false => Poll::Pending,
        }
    }
}

impl Edge {
    /// A new epoll instance, registered with async-io's reactor.
    ///
    /// # Errors
    /// When the kernel refuses an epoll instance (out of file descriptors).
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        use rustix::event::{EventfdFlags, eventfd};
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let interrupt = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &fd,
            &interrupt,
            epoll::EventData::new_u64(INTERRUPT),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        Ok(Arc::new(Edge {
            epoll: Async::new(fd)?,
            slots: Mutex::new(slab::Slab::new()),
            interrupt,
            driver: Mutex::new(()),
        }))
    }

    /// Runs `future` to completion on this thread, as `smol::block_on` does, except that
    /// the thread sleeps in `epoll_wait` on this instance (one thread at a time; the others
    /// park) and wakes the connections the events name itself: no task takes the events,
    /// and async-io's reactor is not involved (its thread serves the other sources). Under
    /// load the events are taken whenever `future` (an executor's `run`) comes back
    /// without work, or having yielded (async-executor does every 200 tasks).
    pub(crate) fn block_on<T>(self: &Arc<Self>, future: impl Future<Output = T>) -> T {
        let parker = Arc::new(Parker {
            state: AtomicU8::new(RUNNING),
            edge: self.clone(),
            thread: std::thread::current(),
        });
        let waker = std::task::Waker::from(parker.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            let state = &parker.state;
            if state.swap(RUNNING, Ordering::SeqCst) == NOTIFIED {
                // Woken while it ran: take what came meanwhile, and poll again.
                if let Ok(_driver) = self.driver.try_lock() {
                    self.take_events(false, || {});
                }
                continue;
            }
            match self.driver.try_lock() {
                Ok(_driver) => {
                    if state
                        .compare_exchange(RUNNING, IN_EPOLL, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        // Events, an interrupt, or both: awake from there on, so that the
                        // wake-ups of the connections it wakes cost no interrupt.
                        self.take_events(true, || {
                            state.swap(RUNNING, Ordering::SeqCst);
                        });
                        // The executor's notice of the connections just woken: the poll
                        // that comes next is the one it asks for.
                        state.store(RUNNING, Ordering::SeqCst);
                    }
                }
                Err(_) => {
                    if state
                        .compare_exchange(RUNNING, PARKED, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        while state.load(Ordering::SeqCst) == PARKED {
                            std::thread::park();
                        }
                    }
                }
            }
        }
    }

    /// [`Edge::take`] with the thread's room for events; a failed `epoll_wait` (it does not
    /// fail on a valid instance) is logged, and taken as no events.
    fn take_events(&self, block: bool, woke: impl FnOnce()) {
        let result = EVENTS.with_borrow_mut(|events| self.take(events, block, woke));
        if let Err(e) = result {
            log::error!("connection readiness: epoll_wait failed: {e}");
        }
    }

    /// Takes the epoll instance's events and wakes the connections they name, until
    /// `epoll_wait` fails (it does not on a valid instance).
    ///
    /// After a batch that woke several connections it yields, and takes the next batch
    /// straight after they have run: under load more events have come by then, and they are
    /// taken without a turn of async-io's reactor (five system calls: its own `epoll_wait`,
    /// its notifier's read and three re-arms). After a batch of one event or none (light
    /// load, where the retry would mostly find nothing) it waits on the reactor.
    pub(crate) async fn dispatch(self: Arc<Self>) {
        loop {
            if let Err(e) = self.epoll.readable().await {
                log::error!("connection readiness: waiting on epoll failed: {e}");
                return;
            }
            loop {
                match self.deliver() {
                    Ok(0 | 1) => break,
                    Ok(_) => futures_lite::future::yield_now().await,
                    Err(e) => {
                        log::error!("connection readiness: epoll_wait failed: {e}");
                        return;
                    }
                }
            }
        }
    }

    /// Takes every event waiting in the epoll instance, without blocking, and wakes the
    /// connections they name. Returns how many there were.
    fn deliver(&self) -> rustix::io::Result<usize> {
        EVENTS.with_borrow_mut(|events| self.take(events, false, || {}))
    }

    /// Takes the events waiting in the epoll instance, with `events` for room, and wakes
    /// the connections they name; returns how many there were. With `block`, waits for the
    /// first (for ever, or until [`Edge::interrupt`] is written), calling `woke` once the
    /// wait has returned, before any connection is woken.
    fn take(
        &self,
        events: &mut Vec<epoll::Event>,
        mut block: bool,
        woke: impl FnOnce(),
    ) -> rustix::io::Result<usize> {
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut woke = Some(woke);
        let mut taken = 0;
        loop {
            events.clear();
            events.reserve_exact(BATCH); // once per thread: the room stays
            match epoll::wait(
                self.epoll.get_ref(),
                rustix::buffer::spare_capacity(&mut *events),
                if block { None } else { Some(&now) },
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
            block = false; // the batches after the first are taken at once
            if let Some(woke) = woke.take() {
                woke();
            }
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            for event in events.iter() {
                let Some(slot) = slots.get(event.data.u64() as usize) else {
                    continue; // a connection that has just ended
                };
                slot.deliver(readiness(event.flags));
            }
            drop(slots);
            taken += events.len();
            if events.len() < BATCH {
                return Ok(taken);
            }
        }
    }

    /// Registers a listening socket (made non-blocking here), edge-triggered.
    ///
    /// # Errors
    /// As [`Edge::register`].
    pub(crate) fn listen(self: &Arc<Self>, listener: TcpListener) -> io::Result<Listening> {
        listener.set_nonblocking(true)?;
        let reg = self.add(&listener, epoll::EventFlags::IN)?;
        Ok(Listening { reg, listener })
    }

    /// Registers an accepted connection, non-blocking already ([`Listening::accept`]),
    /// edge-triggered.
    ///
    /// # Errors
    /// When the kernel refuses the registration (out of memory, or `max_user_watches`).
    pub(crate) fn register(self: &Arc<Self>, stream: TcpStream) -> io::Result<Tcp> {
        use epoll::EventFlags as F;
        let reg = self.add(&stream, F::IN | F::OUT | F::RDHUP)?;
        Ok(Tcp { reg, stream })
    }

    /// Adds `fd` to the epoll instance for `flags`, edge-triggered, with a new slot, ready
    /// (the first read and write try the socket).
    fn add(self: &Arc<Self>, fd: impl AsFd, flags: epoll::EventFlags) -> io::Result<Registration> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let entry = slots.vacant_entry();
            let slot = Arc::new(Slot {
                key: entry.key(),
                ready: AtomicU32::new(READABLE | WRITABLE),
                reader: AtomicWaker::new(),
                writer: AtomicWaker::new(),
            });
            entry.insert(slot.clone());
            slot
        };
        // Made first: a failed registration leaves the slab when it drops.
        let reg = Registration {
            slot,
            edge: self.clone(),
        };
        let data = epoll::EventData::new_u64(reg.slot.key as u64);
        epoll::add(
            self.epoll.get_ref(),
            fd,
            data,
            flags | epoll::EventFlags::ET,
        )?;
        Ok(reg)
    }
}

/// A socket's place in [`Edge`]: its slot, which leaves the slab when this drops.
struct Registration {
    slot: Arc<Slot>,
    edge: Arc<Edge>,
}

impl Registration {
    /// Tries `op` once `flag` is set, until it does not find the socket would block.
    fn poll_io<T>(
        &self,
        flag: u32,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let seen = std::task::ready!(self.slot.poll_ready(flag, cx));
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.slot.clear(seen, flag),
                done => return Poll::Ready(done),
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Declared before its socket: the socket leaves the epoll instance when it is
        // closed, right after this.
        let mut slots = self.edge.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.try_remove(self.slot.key);
    }
}

/// A listening socket, with its readiness from [`Edge`].
pub(crate) struct Listening {
    reg: Registration,
    listener: TcpListener,
}

impl Listening {
    /// The next connection, non-blocking (`accept4` with `SOCK_NONBLOCK`: no `ioctl` after it).
    ///
    /// # Errors
    /// `accept4`'s (too many open files, say).
    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, std::net::SocketAddr)> {
        use rustix::net::{SocketFlags, acceptfrom_with};
        let accept = || -> io::Result<_> {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            let (fd, peer) = acceptfrom_with(&self.listener, flags)?;
            let peer = peer
                .and_then(|peer| std::net::SocketAddr::try_from(peer).ok())
                .ok_or_else(|| io::Error::other("accept4 gave no IP peer address"))?;
            Ok((TcpStream::from(fd), peer))
        };
        std::future::poll_fn(|cx| self.reg.poll_io(READABLE, cx, accept)).await
    }
}

/// A TCP connection as a session reads and writes it, with its readiness from [`Edge`].
pub(crate) struct Tcp {
    reg: Registration,
    stream: TcpStream,
}

#[cfg(test)]
impl Tcp {
    /// The socket.
    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl futures_io::AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let slot = &this.reg.slot;
        loop {
            let seen = std::task::ready!(slot.poll_ready(READABLE, cx));
            match (&this.stream).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => slot.clear(seen, READABLE),
                Ok(n) => {
                    // Short: it took all the socket had (not with `poll_io`, for this).
                    if n > 0 && n < buf.len() {
                        slot.clear(seen, READABLE);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl futures_io::AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.reg.poll_io(WRITABLE, cx, || (&self.stream).write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.reg
            .poll_io(WRITABLE, cx, || (&self.stream).write_vectored(bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    fn slot() -> Slot {
        Slot {
            key: 0,
            ready: AtomicU32::new(0),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        }
    }

    #[test]
    fn a_clear_keeps_an_event_delivered_after_what_the_clearer_saw() {
        let slot = slot();
        slot.deliver(READABLE);
        let seen = slot.ready.load(Ordering::Acquire);
        slot.deliver(READABLE); // data came after the read that found the socket empty
        slot.clear(seen, READABLE);
        assert_ne!(slot.ready.load(Ordering::Acquire) & READABLE, 0);
        let seen = slot.ready.load(Ordering::Acquire);
        slot.clear(seen, READABLE);
        assert_eq!(slot.ready.load(Ordering::Acquire) & READABLE, 0);
    }

    #[test]
    fn a_short_read_keeps_the_end_of_stream_that_came_with_the_last_data() {
        use epoll::EventFlags as F;
        for flags in [F::IN | F::RDHUP, F::IN | F::HUP | F::ERR | F::RDHUP] {
            let slot = slot();
            slot.deliver(readiness(flags)); // the last data and the FIN (or RST): one event
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let Poll::Ready(seen) = slot.poll_ready(READABLE, &mut cx) else {
                panic!("not readable after {flags:?}")
            };
            slot.clear(seen, READABLE); // the read came up short: it took all the data
            // No event will come again: the next read must go to the socket for the end.
            assert!(slot.poll_ready(READABLE, &mut cx).is_ready(), "{flags:?}");
        }
    }

    /// Counts its wake-ups.
    struct Count(AtomicU32);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiter_is_woken_by_the_event_that_sets_its_flag_and_by_no_other() {
        let slot = slot();
        let count = Arc::new(Count(AtomicU32::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(slot.poll_ready(READABLE, &mut cx).is_pending());
        slot.deliver(WRITABLE); // not what it waits for
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        slot.deliver(READABLE | WRITABLE);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(slot.poll_ready(READABLE, &mut cx).is_ready());
        // Read to the end: the flag is cleared, the waiter registers again.
        slot.clear(slot.ready.load(Ordering::Acquire), READABLE);
        assert!(slot.poll_ready(READABLE, &mut cx).is_pending());
        slot.deliver(READABLE);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // While the flag stays set nobody waits on it: more events wake nobody.
        slot.deliver(READABLE | WRITABLE);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(slot.poll_ready(WRITABLE, &mut cx).is_ready());
    }

    /// A registered connection (server side) and its client, on loopback.
    fn pair(edge: &Arc<Edge>) -> (Tcp, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (edge.register(server).unwrap(), client)
    }

    /// Runs `test` three times: with the edge's dispatcher task beside it (`Server::serve`),
    /// on [`Edge::block_on`] (`Server::run`, one thread), and on it with a second thread
    /// running the executor too. Fails after 30 s rather than hang, whatever wake-up is lost.
    fn with_edge<F: Future<Output = ()> + Send + 'static>(
        test: impl Fn(Arc<Edge>) -> F + Send + Sync + 'static,
    ) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            in_three_ways(test);
            done.send(()).unwrap();
        });
        match finished.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hung for 30 s"),
            Err(_) => panic!("failed: see the panic above"),
        }
    }

    /// [`with_edge`]'s three runs; each fails after 10 s.
    fn in_three_ways<F: Future<Output = ()> + Send + 'static>(
        test: impl Fn(Arc<Edge>) -> F + Send + Sync + 'static,
    ) {
        let deadline = || async {
            smol::Timer::after(std::time::Duration::from_secs(10)).await;
            panic!("no wake-up within 10 s");
        };
        let ex = smol::Executor::new();
        let edge = Edge::new().unwrap();
        let _dispatcher = ex.spawn(edge.clone().dispatch());
        let run = futures_lite::future::or(test(edge), deadline());
        smol::block_on(ex.run(run));

        let ex = Arc::new(smol::Executor::new());
        let edge = Edge::new().unwrap();
        edge.block_on(ex.run(futures_lite::future::or(test(edge.clone()), deadline())));

        let ex = Arc::new(smol::Executor::new());
        let edge = Edge::new().unwrap();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (ended, end) = std::sync::mpsc::channel();
        {
            let (ex, edge) = (ex.clone(), edge.clone());
            std::thread::spawn(move || {
                let _ = edge.block_on(ex.run(stopped.recv()));
                ended.send(()).unwrap();
            });
        }
        // On the executor, so that either thread may run it.
        let task = ex.spawn(futures_lite::future::or(test(edge.clone()), deadline()));
        edge.block_on(ex.run(task));
        // Its wake-up reaches the other thread wherever it sleeps.
        drop(stop);
        let stopped = end.recv_timeout(std::time::Duration::from_secs(10));
        assert!(stopped.is_ok(), "the other thread was not woken to stop");
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
    fn an_end_of_stream_that_came_with_the_last_data_is_not_lost_by_a_short_read() {
        for reset in [false, true] {
            with_edge(move |edge| async move {
                let (mut tcp, client) = pair(&edge);
                std::io::Write::write_all(&mut &client, b"partial frame").unwrap();
                if reset {
                    // SO_LINGER 0: the close sends RST.
                    rustix::net::sockopt::set_socket_linger(
                        &client,
                        Some(std::time::Duration::ZERO),
                    )
                    .unwrap();
                    drop(client);
                } else {
                    client.shutdown(std::net::Shutdown::Write).unwrap();
                }
                // Data and end both in the socket before anything reads it: one event.
                let fd = tcp.get_ref().as_fd();
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
