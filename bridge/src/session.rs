//! The tokio driver of the client session (`protocol::client::Session`): it moves bytes between
//! sockets and the session, opens files, performs announces and keeps the clock. Every decision
//! (whom to dial, when to announce, what a status means) is the session's.
//!
//! The session is not `Send` (its stores are plain `Box<dyn Storage>`), so it lives in the future
//! the runtime blocks on, and everything that waits on the network runs as tasks on the worker
//! threads: one reader and one writer per connection, connects, the listener, announces. They
//! talk to the loop through channels:
//! - readers send `(ConnId, Bytes)` through one bounded channel shared by all connections, so a
//!   fast swarm cannot outrun hashing and disk (memory stays bounded);
//! - everything else (connects, accepts, flushed byte counts, announces) goes through an unbounded
//!   control channel whose traffic is bounded by what the session itself started, so a writer
//!   never waits on the loop while the loop waits on it.
//!
//! Outgoing bytes are coalesced per connection in `pending` and handed to the writer when its
//! small queue has room: the loop never blocks on a slow peer, and a peer that stops reading is
//! dropped once `MAX_PENDING` bytes pile up.

use crate::file_storage::{Access, FileStorage};
use crate::progress::Progress;
use crate::tracker_client;
use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use protocol::client::{Action, AddTorrent, Config, Event, Prefill, Session};
use protocol::engine::{ConnId, PeerSource};
use protocol::metainfo::Info;
use protocol::{InfoHash, PeerId};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

/// Bytes a reader asks the socket for at once.
const READ_BUF: usize = 64 * 1024;
/// Read chunks waiting for the loop, all connections together (at most ~4 MiB).
const READ_QUEUE: usize = 64;
/// Coalesced buffers waiting for one connection's writer.
const WRITE_QUEUE: usize = 2;
/// Unsent bytes for one peer beyond which it is considered stuck and dropped.
const MAX_PENDING: usize = 16 << 20;
/// Read chunks handled per wake-up before the session's output is flushed.
const READ_BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shutdown waits this long for the `stopped` announces.
const STOP_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Download; then exit, or keep serving with `seed_after`. With `timeout`, fails when the
    /// download does not move for that long.
    Download {
        seed_after: bool,
        timeout: Option<Duration>,
    },
    /// Serve the data on disk (just hashed into the torrent) until a signal.
    Seed,
}

/// What to download or seed, and how.
pub struct Options {
    pub info_hash: InfoHash,
    /// `None` for a magnet.
    pub info: Option<Info>,
    /// A display name until the metadata comes (a magnet's `dn`).
    pub name: Option<String>,
    /// Folder the torrent's file paths are relative to.
    pub output: PathBuf,
    pub trackers: Vec<Vec<String>>,
    /// Addresses given by the user (`--peer`) and by a magnet (`x.pe`).
    pub peers: Vec<(SocketAddr, PeerSource)>,
    pub mode: Mode,
    /// False where another interface shows the progress (`serve --demo`: the page).
    pub show_progress: bool,
}

/// A session seeding `info`, whose files lie under `root` and were just hashed into `info` by
/// the caller (so nothing is checked again).
pub fn seeding(
    info: Info,
    listener: TcpListener,
    root: PathBuf,
    trackers: Vec<Vec<String>>,
    show_progress: bool,
) -> Result<Driver> {
    let opts = Options {
        info_hash: info.info_hash,
        info: Some(info),
        name: None,
        output: root,
        trackers,
        peers: Vec::new(),
        mode: Mode::Seed,
        show_progress,
    };
    Driver::new(listener, opts)
}

/// Binds the peer listener. Done before the session exists because it announces the port.
pub async fn listen(bind: IpAddr, port: u16) -> Result<TcpListener> {
    TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {}", SocketAddr::new(bind, port)))
}

enum ReadMsg {
    Data(ConnId, Bytes),
    /// Sent through the data channel so it arrives after the connection's last bytes.
    Closed(ConnId, String),
}

enum Ctl {
    Connected(ConnId, TcpStream),
    ConnectFailed(ConnId, String),
    Incoming(TcpStream, SocketAddr),
    Sent(ConnId, usize),
    WriteFailed(ConnId, String),
    Announced(
        String,
        Result<protocol::tracker::AnnounceResponse, protocol::tracker::TrackerError>,
    ),
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

/// How the loop was woken.
enum Wake {
    Read(ReadMsg),
    Ctl(Ctl),
    Timer,
    Tick,
    Signal(&'static str),
}

pub struct Driver {
    session: Session,
    id: InfoHash,
    output: PathBuf,
    mode: Mode,
    show_progress: bool,
    listener: Option<TcpListener>,
    listen_addr: SocketAddr,
    epoch: Instant,
    conns: HashMap<ConnId, Conn>,
    data_tx: mpsc::Sender<ReadMsg>,
    data_rx: mpsc::Receiver<ReadMsg>,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    progress: Progress,
    /// Start of the transfer, for the `complete:` line.
    started: Instant,
    complete_reported: bool,
}

impl Driver {
    pub fn new(listener: TcpListener, opts: Options) -> Result<Self> {
        let listen_addr = listener
            .local_addr()
            .context("listener has no local address")?;
        let config = Config {
            listen: Some(listen_addr),
            ..Config::default()
        };
        let mut session = Session::new(
            config,
            PeerId::generate(crate::random_seed()),
            crate::random_seed(),
        );
        let epoch = Instant::now();
        let add = AddTorrent {
            info_hash: opts.info_hash,
            info: opts.info,
            trackers: opts.trackers,
            peers: opts.peers,
            name: opts.name,
            paused: false,
        };
        let id = session
            .add(0, add)
            .map_err(|e| anyhow!("cannot add the torrent: {e}"))?;
        let (data_tx, data_rx) = mpsc::channel(READ_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let progress = match opts.show_progress {
            true => Progress::new(),
            false => Progress::hidden(),
        };
        Ok(Driver {
            session,
            id,
            output: opts.output,
            mode: opts.mode,
            show_progress: opts.show_progress,
            listener: Some(listener),
            listen_addr,
            epoch,
            conns: HashMap::new(),
            data_tx,
            data_rx,
            ctl_tx,
            ctl_rx,
            progress,
            started: epoch,
            complete_reported: false,
        })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Opens the data and does what needs no network, so that a seed's `resume:` line comes
    /// before anything its caller prints.
    pub fn prepare(&mut self) -> Result<()> {
        self.flush().map(|_| ())
    }

    /// Runs until the download completes (without `seed_after`), a signal, or a failure.
    pub async fn run(mut self) -> Result<()> {
        if let Some(listener) = self.listener.take() {
            tokio::spawn(accept_loop(listener, self.ctl_tx.clone()));
        }
        let result = self.event_loop().await;
        self.progress.finish();
        self.conns.clear();
        self.announce_stopped().await;
        result
    }

    async fn event_loop(&mut self) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);

        loop {
            if self.flush()? {
                return Ok(());
            }
            let deadline = self
                .session
                .poll_timeout()
                .map(|ms| self.epoch + Duration::from_millis(ms));
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                biased;
                _ = &mut ctrl_c => Wake::Signal("interrupted"),
                _ = sigterm.recv() => Wake::Signal("terminated"),
                Some(m) = self.ctl_rx.recv() => Wake::Ctl(m),
                Some(m) = self.data_rx.recv() => Wake::Read(m),
                _ = tick.tick() => Wake::Tick,
                _ = timer => Wake::Timer,
            };
            match wake {
                Wake::Signal(what) => {
                    info!("{what}: shutting down");
                    return match self.mode {
                        Mode::Download { .. } if !self.session.is_complete(self.id) => {
                            Err(anyhow!("{what} before the download completed"))
                        }
                        _ => Ok(()),
                    };
                }
                Wake::Read(m) => self.on_read(m),
                Wake::Ctl(m) => self.on_ctl(m),
                Wake::Tick => self.on_tick()?,
                Wake::Timer => {}
            }
            // Batch: take whatever else is ready before producing output.
            while let Ok(m) = self.ctl_rx.try_recv() {
                self.on_ctl(m);
            }
            for _ in 0..READ_BATCH {
                match self.data_rx.try_recv() {
                    Ok(m) => self.on_read(m),
                    Err(_) => break,
                }
            }
            let now = self.now_ms();
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
        }
    }

    /// Carries out what the session asks and hands its bytes to the writers. True when the
    /// driver is done (download complete, no seeding after).
    fn flush(&mut self) -> Result<bool> {
        let mut done = false;
        loop {
            let mut any = false;
            while let Some(action) = self.session.poll_action() {
                any = true;
                self.on_action(action);
            }
            while let Some(event) = self.session.poll_event() {
                any = true;
                done |= self.on_event(event)?;
            }
            let now = self.now_ms();
            while let Some((_, conn, bytes)) = self.session.poll_transmit(now) {
                any = true;
                if let Some(Conn {
                    state: ConnState::Open { pending, .. },
                    ..
                }) = self.conns.get_mut(&conn)
                {
                    if pending.is_empty() {
                        *pending = bytes;
                    } else {
                        pending.extend_from_slice(&bytes);
                    }
                }
            }
            if !any {
                break;
            }
        }
        let mut stuck = Vec::new();
        for (&id, conn) in &mut self.conns {
            let ConnState::Open {
                writer, pending, ..
            } = &mut conn.state
            else {
                continue;
            };
            if pending.is_empty() {
                continue;
            }
            match writer.try_send(std::mem::take(pending)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(buf)) => {
                    *pending = buf;
                    if pending.len() > MAX_PENDING {
                        stuck.push(id);
                    }
                }
                // The writer ended; its failure report is on the way.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        for id in stuck {
            self.drop_conn(id, "peer does not read what we send");
        }
        Ok(done)
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::Connect { conn, addr, .. } => {
                let ctl = self.ctl_tx.clone();
                let task = tokio::spawn(async move {
                    let msg = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                        .await
                    {
                        Ok(Ok(s)) => Ctl::Connected(conn, s),
                        Ok(Err(e)) => Ctl::ConnectFailed(conn, e.to_string()),
                        Err(_) => Ctl::ConnectFailed(
                            conn,
                            format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
                        ),
                    };
                    let _ = ctl.send(msg);
                });
                self.conns.insert(
                    conn,
                    Conn {
                        addr,
                        state: ConnState::Connecting(task.abort_handle()),
                    },
                );
            }
            Action::Close { conn, reason, .. } => {
                if let Some(c) = self.conns.remove(&conn) {
                    info!("peer {} closed: {reason}", c.addr);
                }
            }
            Action::OpenStorage { torrent } => {
                let now = self.now_ms();
                let result = self.open_storage(torrent);
                self.session.handle_storage(now, torrent, result);
            }
            Action::Announce {
                torrent,
                url,
                request,
            } => {
                let ctl = self.ctl_tx.clone();
                debug!("announcing to {url} ({:?})", request.event);
                if torrent == self.id {
                    tokio::spawn(async move {
                        let result = tracker_client::announce(&url, &request).await;
                        let _ = ctl.send(Ctl::Announced(url, result));
                    });
                }
            }
            // Natively the engine hashes itself (SHA-NI): `driver_hashes` stays off.
            Action::HashPiece { .. } => {}
        }
    }

    fn open_storage(
        &self,
        id: InfoHash,
    ) -> Result<(Box<dyn protocol::storage::Storage>, Prefill), String> {
        let info = self.session.info(id).ok_or("no metadata to store")?;
        let access = match self.mode {
            Mode::Seed => Access::ReadOnly,
            Mode::Download { .. } => Access::ReadWrite,
        };
        let storage = FileStorage::new(&self.output, info, access)
            .map_err(|e| format!("cannot prepare files under {}: {e}", self.output.display()))?;
        let prefill = match self.mode {
            Mode::Seed => Prefill::Complete,
            _ if storage.is_fresh() => Prefill::Empty,
            _ => Prefill::Unknown,
        };
        Ok((Box::new(storage), prefill))
    }

    /// True when the driver should end.
    fn on_event(&mut self, event: Event) -> Result<bool> {
        match event {
            Event::MetadataReceived { torrent } => info!(
                "metadata received: {}",
                self.session.info(torrent).map_or("", |i| i.name.as_str())
            ),
            Event::Checked { have, total, .. } => {
                if self.show_progress {
                    println!("resume: {have}/{total} pieces verified on disk");
                }
                self.started = Instant::now();
            }
            Event::Complete { .. } => {
                if !self.complete_reported {
                    return Ok(self.on_complete());
                }
            }
            Event::Announced {
                url,
                peers,
                warning,
                ..
            } => {
                info!("tracker {url}: {peers} peers");
                if let Some(w) = warning {
                    warn!("tracker {url} warns: {w}");
                }
            }
            Event::AnnounceFailed { url, error, .. } => warn!("tracker {url}: {error}"),
            Event::PieceFailed { piece, .. } => warn!("piece {piece} failed its hash check"),
            Event::PeerBanned { addr, .. } => {
                info!("peer {addr} banned: sent data that failed hash checks")
            }
            // The torrent has stopped: nothing more can be done with it.
            Event::Failed { error, .. } => bail!("{error}"),
        }
        Ok(false)
    }

    /// Prints the `complete:` line; true when the driver should end.
    fn on_complete(&mut self) -> bool {
        self.complete_reported = true;
        let Mode::Download { seed_after, .. } = self.mode else {
            return false;
        };
        if !seed_after {
            self.progress.finish();
        }
        let Some(st) = self.session.stats(self.id) else {
            return true;
        };
        let secs = self.started.elapsed().as_secs_f64();
        let name = self
            .session
            .info(self.id)
            .map_or_else(String::new, |i| i.name.clone());
        let rate = if secs > 0.0 {
            st.downloaded as f64 / secs / 1e6
        } else {
            0.0
        };
        println!(
            "complete: {name}, {} bytes, downloaded {} bytes in {secs:.2} s ({rate:.1} MB/s)",
            st.total, st.downloaded
        );
        if seed_after {
            info!("seeding until interrupted");
        }
        !seed_after
    }

    fn on_read(&mut self, m: ReadMsg) {
        match m {
            ReadMsg::Data(conn, data) => {
                if matches!(
                    self.conns.get(&conn),
                    Some(Conn {
                        state: ConnState::Open { .. },
                        ..
                    })
                ) {
                    let now = self.now_ms();
                    self.session.handle_data(now, self.id, conn, &data);
                }
            }
            ReadMsg::Closed(conn, reason) => self.drop_conn(conn, &reason),
        }
    }

    /// The connection ended on our side of the session: tell the session.
    fn drop_conn(&mut self, conn: ConnId, reason: &str) {
        if let Some(c) = self.conns.remove(&conn) {
            info!("peer {} closed: {reason}", c.addr);
            let now = self.now_ms();
            self.session.handle_closed(now, self.id, conn, reason);
        }
    }

    fn on_ctl(&mut self, m: Ctl) {
        let now = self.now_ms();
        match m {
            Ctl::Connected(conn, stream) => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if !matches!(c.state, ConnState::Connecting(_)) {
                    return;
                }
                let addr = c.addr;
                info!("peer {addr} connected");
                self.open(conn, stream, addr);
                self.session.handle_connected(now, self.id, conn);
            }
            Ctl::ConnectFailed(conn, reason) => {
                if let Some(c) = self.conns.remove(&conn) {
                    info!("peer {} connect failed: {reason}", c.addr);
                    self.session.handle_closed(now, self.id, conn, &reason);
                }
            }
            Ctl::Incoming(stream, addr) => match self.session.handle_incoming(now, self.id, addr) {
                Some(conn) => {
                    info!("peer {addr} connected (incoming)");
                    self.open(conn, stream, addr);
                }
                None => debug!("peer {addr} refused (full or banned)"),
            },
            Ctl::Sent(conn, n) => {
                if self.conns.contains_key(&conn) {
                    self.session.handle_sent(now, self.id, conn, n);
                }
            }
            Ctl::WriteFailed(conn, reason) => self.drop_conn(conn, &reason),
            Ctl::Announced(url, result) => {
                self.session
                    .handle_announce(now, self.id, &url, result.map_err(Into::into));
            }
        }
    }

    fn open(&mut self, conn: ConnId, stream: TcpStream, addr: SocketAddr) {
        // Requests are tiny and latency-bound; coalescing is done here, not by Nagle.
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
        let r = tokio::spawn(read_loop(conn, rd, self.data_tx.clone())).abort_handle();
        let w = tokio::spawn(write_loop(conn, wr, wrx, self.ctl_tx.clone())).abort_handle();
        self.conns.insert(
            conn,
            Conn {
                addr,
                state: ConnState::Open {
                    writer: wtx,
                    pending: Vec::new(),
                    tasks: [r, w],
                },
            },
        );
    }

    fn on_tick(&mut self) -> Result<()> {
        if let Some(st) = self.session.stats(self.id) {
            self.progress.update(&st);
        }
        let Mode::Download {
            timeout: Some(limit),
            ..
        } = self.mode
        else {
            return Ok(());
        };
        let now = self.now_ms();
        if let Some(st) = self.session.status(now, self.id) {
            if st.stalled_ms >= limit.as_millis() as u64 {
                let what = self.session.tried(now, self.id).unwrap_or_default();
                bail!("no progress for {} s: {what}", limit.as_secs());
            }
        }
        Ok(())
    }

    /// Says `stopped` to the trackers that answered, waiting a little for them.
    async fn announce_stopped(&mut self) {
        let now = self.now_ms();
        self.session.shutdown(now);
        let mut set = JoinSet::new();
        while let Some(action) = self.session.poll_action() {
            if let Action::Announce { url, request, .. } = action {
                set.spawn(async move {
                    match tokio::time::timeout(
                        STOP_ANNOUNCE_TIMEOUT,
                        tracker_client::announce(&url, &request),
                    )
                    .await
                    {
                        Ok(Ok(_)) => debug!("tracker {url}: stopped"),
                        Ok(Err(e)) => debug!("tracker {url}: stopped announce failed: {e}"),
                        Err(_) => debug!("tracker {url}: stopped announce timed out"),
                    }
                });
            }
        }
        while set.join_next().await.is_some() {}
    }
}

async fn accept_loop(listener: TcpListener, ctl: mpsc::UnboundedSender<Ctl>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if ctl.send(Ctl::Incoming(stream, addr)).is_err() {
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
    ctl: mpsc::UnboundedSender<Ctl>,
) {
    while let Some(buf) = rx.recv().await {
        if let Err(e) = wr.write_all(&buf).await {
            let _ = ctl.send(Ctl::WriteFailed(conn, e.to_string()));
            return;
        }
        if ctl.send(Ctl::Sent(conn, buf.len())).is_err() {
            return;
        }
    }
}
