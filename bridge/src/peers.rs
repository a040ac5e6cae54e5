//! The driver's peer sockets: one reader and one writer task per connection, connects and the
//! listener, each reporting back through channels.
//! - Readers send `(ConnId, Bytes)` through one bounded channel shared by all connections, so a
//!   fast swarm cannot outrun hashing and disk (memory stays bounded).
//! - Everything else (connects, accepts, flushed byte counts) goes through an unbounded channel
//!   whose traffic is bounded by what the session itself started, so a writer never waits on
//!   the loop while the loop waits on it.
//!
//! Outgoing bytes are coalesced per connection and handed to the writer when its small queue
//! has room: the loop never blocks on a slow peer, and a peer that stops reading is reported
//! stuck once `MAX_PENDING` bytes pile up. Buffers go round (session -> pending -> writer ->
//! back as the connection's spare) instead of being allocated per send.

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use protocol::engine::ConnId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

/// Bytes a reader asks the socket for at once.
const READ_BUF: usize = 64 * 1024;
/// Read chunks waiting for the loop, all connections together (at most ~4 MiB).
const READ_QUEUE: usize = 64;
/// Coalesced buffers waiting for one connection's writer.
const WRITE_QUEUE: usize = 2;
/// Unsent bytes for one peer beyond which it is considered stuck.
const MAX_PENDING: usize = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub enum ReadMsg {
    Data(ConnId, Bytes),
    /// Sent through the data channel so it arrives after the connection's last bytes.
    Closed(ConnId, String),
}

pub enum IoEvent {
    Connected(ConnId, TcpStream),
    ConnectFailed(ConnId, String),
    Incoming(TcpStream, SocketAddr),
    /// A buffer was written: its bytes are on their way, and it comes back for reuse.
    Sent(ConnId, Vec<u8>),
    WriteFailed(ConnId, String),
}

struct Conn {
    addr: SocketAddr,
    state: ConnState,
}

enum ConnState {
    Connecting(AbortHandle),
    Open {
        writer: mpsc::Sender<Vec<u8>>,
        pending: Vec<u8>,
        /// A written buffer, emptied, to become the next `pending`.
        spare: Vec<u8>,
        tasks: [AbortHandle; 2],
    },
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Aborting both halves' tasks drops the socket: forgetting a connection closes it.
        match &self.state {
            ConnState::Connecting(h) => h.abort(),
            ConnState::Open { tasks, .. } => tasks.iter().for_each(AbortHandle::abort),
        }
    }
}

pub struct Peers {
    conns: HashMap<ConnId, Conn>,
    data_tx: mpsc::Sender<ReadMsg>,
    pub data_rx: mpsc::Receiver<ReadMsg>,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    pub io_rx: mpsc::UnboundedReceiver<IoEvent>,
}

impl Default for Peers {
    fn default() -> Self {
        Self::new()
    }
}

impl Peers {
    pub fn new() -> Self {
        let (data_tx, data_rx) = mpsc::channel(READ_QUEUE);
        let (io_tx, io_rx) = mpsc::unbounded_channel();
        Peers {
            conns: HashMap::new(),
            data_tx,
            data_rx,
            io_tx,
            io_rx,
        }
    }

    /// Accepts peers on `listener` until the driver ends.
    pub fn listen(&self, listener: TcpListener) {
        tokio::spawn(accept_loop(listener, self.io_tx.clone()));
    }

    pub fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        let io = self.io_tx.clone();
        let task = tokio::spawn(async move {
            let msg = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => IoEvent::Connected(conn, s),
                Ok(Err(e)) => IoEvent::ConnectFailed(conn, e.to_string()),
                Err(_) => IoEvent::ConnectFailed(
                    conn,
                    format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
                ),
            };
            let _ = io.send(msg);
        });
        let state = ConnState::Connecting(task.abort_handle());
        self.conns.insert(conn, Conn { addr, state });
    }

    /// The address of a connection still being dialled.
    pub fn connecting(&self, conn: ConnId) -> Option<SocketAddr> {
        let c = self.conns.get(&conn)?;
        matches!(c.state, ConnState::Connecting(_)).then_some(c.addr)
    }

    pub fn is_open(&self, conn: ConnId) -> bool {
        matches!(
            self.conns.get(&conn),
            Some(Conn {
                state: ConnState::Open { .. },
                ..
            })
        )
    }

    pub fn contains(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Forgets (and so closes) a connection; its address, if it was known.
    pub fn remove(&mut self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.remove(&conn).map(|c| c.addr)
    }

    pub fn clear(&mut self) {
        self.conns.clear();
    }

    /// Starts the reader and writer of an established connection.
    pub fn open(&mut self, conn: ConnId, stream: TcpStream, addr: SocketAddr) {
        // Requests are tiny and latency-bound; coalescing is done here, not by Nagle.
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
        let r = tokio::spawn(read_loop(conn, rd, self.data_tx.clone())).abort_handle();
        let w = tokio::spawn(write_loop(conn, wr, wrx, self.io_tx.clone())).abort_handle();
        let state = ConnState::Open {
            writer: wtx,
            pending: Vec::new(),
            spare: Vec::new(),
            tasks: [r, w],
        };
        self.conns.insert(conn, Conn { addr, state });
    }

    /// Moves `bytes` to a connection's pending output, leaving `bytes` empty (with the capacity
    /// of a buffer that was free, so the session's next message needs no allocation).
    pub fn queue(&mut self, conn: ConnId, bytes: &mut Vec<u8>) {
        if let Some(Conn {
            state: ConnState::Open { pending, .. },
            ..
        }) = self.conns.get_mut(&conn)
        {
            if pending.is_empty() {
                std::mem::swap(pending, bytes);
            } else {
                pending.extend_from_slice(bytes);
            }
        }
        bytes.clear();
    }

    /// A writer is done with `buf`: keep it for the connection's next output.
    pub fn sent(&mut self, conn: ConnId, mut buf: Vec<u8>) {
        if let Some(Conn {
            state: ConnState::Open { spare, .. },
            ..
        }) = self.conns.get_mut(&conn)
        {
            if buf.capacity() > spare.capacity() {
                buf.clear();
                *spare = buf;
            }
        }
    }

    /// Hands pending output to the writers that have room; returns the connections whose peer
    /// stopped reading.
    pub fn flush(&mut self) -> Vec<ConnId> {
        let mut stuck = Vec::new();
        for (&id, conn) in &mut self.conns {
            let ConnState::Open {
                writer,
                pending,
                spare,
                ..
            } = &mut conn.state
            else {
                continue;
            };
            if pending.is_empty() {
                continue;
            }
            let next = std::mem::take(spare);
            match writer.try_send(std::mem::replace(pending, next)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(buf)) => {
                    *spare = std::mem::replace(pending, buf);
                    if pending.len() > MAX_PENDING {
                        stuck.push(id);
                    }
                }
                // The writer ended; its failure report is on the way.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        stuck
    }
}

async fn accept_loop(listener: TcpListener, io: mpsc::UnboundedSender<IoEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if io.send(IoEvent::Incoming(stream, addr)).is_err() {
                    return;
                }
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_loop(conn: ConnId, mut rd: OwnedReadHalf, tx: mpsc::Sender<ReadMsg>) {
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let reason = loop {
        // Reclaims the same allocation once the session has dropped the previous chunk.
        buf.reserve(READ_BUF);
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "peer closed the connection".to_string(),
            Ok(_) => {
                if tx
                    .send(ReadMsg::Data(conn, buf.split().freeze()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => break e.to_string(),
        }
    };
    let _ = tx.send(ReadMsg::Closed(conn, reason)).await;
}

async fn write_loop(
    conn: ConnId,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    io: mpsc::UnboundedSender<IoEvent>,
) {
    while let Some(buf) = rx.recv().await {
        if let Err(e) = wr.write_all(&buf).await {
            let _ = io.send(IoEvent::WriteFailed(conn, e.to_string()));
            return;
        }
        if io.send(IoEvent::Sent(conn, buf)).is_err() {
            return;
        }
    }
}

/// Binds the peer listener. Done before the session exists because it announces the port.
/// `::` listens dual-stack (IPv4 peers arrive as mapped addresses, which the driver turns back
/// into IPv4), falling back to `0.0.0.0` on a machine without IPv6.
pub async fn listen(bind: IpAddr, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::new(bind, port);
    let bound = match bind {
        IpAddr::V6(v6) if v6.is_unspecified() => match dual_stack(addr) {
            Ok(l) => Ok(l),
            Err(e) => {
                debug!("no IPv6 listener ({e}): IPv4 only");
                TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).await
            }
        },
        _ => TcpListener::bind(addr).await,
    };
    bound.with_context(|| format!("cannot listen on {addr}"))
}

/// A listener on `[::]:port` that takes IPv4 too, whatever the system's `bindv6only` says.
fn dual_stack(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
