//! The Worker's one queue. Every browser event (a socket opened, bytes, a close, the timer, a
//! finished promise, a command from the page) becomes an [`Input`] pushed here; the driver takes
//! them in order and nothing else calls into it. A push while the driver runs (none is expected:
//! JavaScript delivers events between tasks) simply waits its turn in the queue.

use crate::store::Store;
use protocol::client::contract::AnnounceError;
use protocol::client::AddTorrent;
use protocol::engine::ConnId;
use protocol::tracker::AnnounceResponse;
use protocol::InfoHash;
use std::cell::RefCell;
use std::collections::VecDeque;
use wasm_bindgen::JsValue;

pub enum Input {
    /// A message from the page.
    Command(JsValue),
    /// A torrent of an earlier visit, read back from OPFS.
    Restore(AddTorrent),
    PeerOpen {
        id: InfoHash,
        conn: ConnId,
    },
    /// Bytes of a connection: `data[skip..]`, in a buffer from [`buffer`] (the sockets' Worker
    /// copies with a skew that keeps word alignment).
    PeerData {
        id: InfoHash,
        conn: ConnId,
        data: Vec<u8>,
        skip: usize,
    },
    /// The sockets' Worker saw `n` more bytes of a connection leave.
    PeerSent {
        id: InfoHash,
        conn: ConnId,
        n: u64,
    },
    PeerClosed {
        id: InfoHash,
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// The bridge offers a peer that dialled in for torrent `id`.
    Incoming {
        id: InfoHash,
        offer: u64,
        addr: std::net::SocketAddr,
    },
    Timer,
    StorageOpened {
        id: InfoHash,
        result: Result<Store, String>,
    },
    Hashed {
        id: InfoHash,
        piece: u32,
        job: u64,
        result: Result<[u8; 20], String>,
    },
    Announced {
        id: InfoHash,
        url: String,
        result: Result<AnnounceResponse, AnnounceError>,
    },
}

/// Buffers kept for received bytes, so a busy connection does not allocate per message.
const POOL: usize = 8;

thread_local! {
    static QUEUE: RefCell<VecDeque<Input>> = const { RefCell::new(VecDeque::new()) };
    static DRIVER: RefCell<Option<Box<dyn Handler>>> = const { RefCell::new(None) };
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// What takes the inputs: the driver. Behind a trait so that the queue knows nothing of it.
pub trait Handler {
    fn handle(&mut self, input: Input);
    /// After a batch of inputs: carry out what they led to.
    fn pump(&mut self);
}

/// Queues `input` and, unless the driver is already at work or not started, runs it.
pub fn push(input: Input) {
    QUEUE.with(|q| q.borrow_mut().push_back(input));
    run();
}

/// Installs the driver and takes what waited for it.
pub fn start(driver: Box<dyn Handler>) {
    DRIVER.with(|d| *d.borrow_mut() = Some(driver));
    run();
}

fn run() {
    DRIVER.with(|d| {
        // Busy: the running loop takes the new input before it returns.
        let Ok(mut guard) = d.try_borrow_mut() else {
            return;
        };
        let Some(driver) = guard.as_mut() else {
            return;
        };
        let mut any = false;
        while let Some(input) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
            driver.handle(input);
            any = true;
        }
        if any {
            driver.pump();
        }
    });
}

/// A buffer of `len` bytes for received data; it returns to the pool through [`recycle`].
pub fn buffer(len: usize) -> Vec<u8> {
    let mut buf = BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default();
    buf.resize(len, 0);
    buf
}

pub fn recycle(buf: Vec<u8>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOL {
            b.push(buf);
        }
    });
}
