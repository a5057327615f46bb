//! What each thread keeps for the connections it serves, in one place (as uWebSockets keeps
//! its `LoopData`). A connection holds no read buffer, no room for TLS records and no
//! (de)compressor between messages: it borrows these from the thread it runs on, for the
//! length of one step that does not wait, and an idle connection holds none of them. Each
//! grows to the largest step it served and stays (about 16 KiB per read buffer with the
//! default `Limits::read_buffer_size`); nothing here is shared between threads.
//!
//! Two more live beside the private types they hold, so that this module imports no other
//! of the crate's: the spare room of a frame queue (`frames::SPARE_FRAMES`) and the Hub
//! sends a handler's `on_message` deferred while it runs (`session::backpressure::DEFERRED`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use flate2::{Compress, Decompress};

use crate::Message;

thread_local! {
    /// Where plain reads land first (the frame codec parses them there).
    pub(crate) static READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where small frames are joined for one plain write.
    pub(crate) static JOINED_FRAMES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A send queue's room, left by the session that took its messages and wrote them, and
    /// taken by the next send into an empty queue on this thread.
    pub(crate) static SPARE_QUEUE: Cell<VecDeque<Message>> = const { Cell::new(VecDeque::new()) };
    /// Where ciphertext lands first (own record layer).
    pub(crate) static TLS_IN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where records are sealed before they are written.
    pub(crate) static TLS_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where the slices of a vectored write are joined, to seal them as whole records.
    pub(crate) static TLS_JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// One compressor per window size, reset after each message (permessage-deflate).
    pub(crate) static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
    /// Inflaters between messages (a few at most).
    pub(crate) static INFLATERS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
    /// Room for a batch of epoll events (smol::Server on Linux). Per thread, not in the
    /// server's epoll instance: an event (it may hold a pointer) is not `Send`.
    #[cfg(all(feature = "smol", target_os = "linux"))]
    pub(crate) static EPOLL_EVENTS: RefCell<Vec<rustix::event::epoll::Event>> = const { RefCell::new(Vec::new()) };
}
