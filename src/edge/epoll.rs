//! Edge-triggered readiness on Linux: smol::Server's own epoll instance.
//!
//! async-io registers every socket in one-shot mode: each wait for readiness re-arms it with
//! an `epoll_ctl`, one system call per message on a busy connection (14 % more server CPU per
//! 32-byte wss echo on this project's benchmark). Here the server's connections (and its
//! listener) are registered once, edge-triggered, in an epoll instance of the server's own.
//! That instance is one source in async-io's reactor, and one task ([`Edge::dispatch`])
//! takes its events a batch at a time and wakes the connections they name: no thread of
//! ours sleeps in it, and the executor is smol's, as it is. A connection's readiness is a
//! flag that a read or write clears when the socket would block (or a read comes up short:
//! it took all the socket had), as tokio does; a hang-up is a flag that is never cleared.
//!
//! On rustix's safe epoll, not the `polling` crate's edge mode: registering a source with
//! `polling` is `unsafe` (the caller must deregister it before it is closed), and this crate
//! forbids `unsafe`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_io::Async;
use atomic_waker::AtomicWaker;
use rustix::event::epoll;

/// Events taken from the epoll instance per `epoll_wait`.
const BATCH: usize = 256;

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
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Arc::new(Edge {
            epoll: Async::new(fd)?,
            slots: Mutex::new(slab::Slab::new()),
        }))
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
        crate::per_thread::EPOLL_EVENTS.with_borrow_mut(|events| self.take(events))
    }

    /// Takes the events waiting in the epoll instance, without blocking, with `events` for
    /// room, and wakes the connections they name; returns how many there were.
    fn take(&self, events: &mut Vec<epoll::Event>) -> rustix::io::Result<usize> {
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut taken = 0;
        loop {
            events.clear();
            events.reserve_exact(BATCH); // once per thread: the room stays
            match epoll::wait(
                self.epoll.get_ref(),
                rustix::buffer::spare_capacity(&mut *events),
                Some(&now),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e),
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
}
