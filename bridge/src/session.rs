//! The tokio driver of one `Torrent`.
//!
//! The engine is not `Send` (its store is a plain `Box<dyn Storage>`), so it lives in the future
//! the runtime blocks on, and everything that waits on the network runs as tasks on the worker
//! threads: one reader and one writer per connection, connects, the listener, announces. They
//! talk to the engine through channels:
//! - readers send `(ConnId, Bytes)` through one bounded channel shared by all connections, so a
//!   fast swarm cannot outrun hashing and disk (memory stays bounded);
//! - everything else (connects, accepts, flushed byte counts, announces) goes through an unbounded
//!   control channel whose traffic is bounded by what the engine itself started, so a writer never
//!   waits on the engine while the engine waits on it.
//!
//! Outgoing bytes are coalesced per connection in `pending` and handed to the writer when its
//! small queue has room: the engine never blocks on a slow peer, and a peer that stops reading is
//! dropped once `MAX_PENDING` bytes pile up.

use crate::file_storage::{Access, FileStorage};
use crate::progress::Progress;
use crate::tracker_client;
use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use protocol::engine::{ConnId, Event, PeerSource, Torrent};
use protocol::tracker::{
    AnnounceEvent, AnnounceRequest, AnnounceResponse, Announcer, TrackerError,
};
use protocol::PeerId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// Bytes a reader asks the socket for at once.
const READ_BUF: usize = 64 * 1024;
/// Read chunks waiting for the engine, all connections together (at most ~4 MiB).
const READ_QUEUE: usize = 64;
/// Coalesced buffers waiting for one connection's writer.
const WRITE_QUEUE: usize = 2;
/// Unsent bytes for one peer beyond which it is considered stuck and dropped.
const MAX_PENDING: usize = 16 << 20;
/// Read chunks handled per wake-up before the engine's output is flushed.
const READ_BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shutdown waits this long for the `stopped` announce.
const STOP_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pieces hashed per loop turn while a magnet's resume check runs beside the network.
const CHECK_BATCH: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Download; then exit, or keep serving with `seed_after`. Fails when nothing moves for
    /// `timeout`.
    Download { seed_after: bool, timeout: Duration },
    /// Serve the data on disk until a signal.
    Seed,
}

pub struct Options {
    /// Folder the torrent's file paths are relative to.
    pub output: PathBuf,
    pub access: Access,
    pub trackers: Vec<Vec<String>>,
    /// Addresses given by the user (`--peer`) and by a magnet (`x.pe`).
    pub manual_peers: Vec<SocketAddr>,
    pub magnet_peers: Vec<SocketAddr>,
    pub peer_id: PeerId,
    pub mode: Mode,
    /// False where another interface shows the progress (`serve --demo`: the page).
    pub show_progress: bool,
}

/// A session seeding `info`, whose files lie under `root` and were just hashed into `info` by
/// the caller (so nothing is checked again).
pub fn seeding(
    info: protocol::metainfo::Info,
    listener: TcpListener,
    root: PathBuf,
    trackers: Vec<Vec<String>>,
    show_progress: bool,
) -> Result<Session> {
    let port = listener.local_addr()?.port();
    let peer_id = PeerId::generate(crate::random_seed());
    let config = protocol::engine::Config {
        listen_port: Some(port),
        ..Default::default()
    };
    let torrent = Torrent::new(
        info.info_hash,
        Some(info),
        peer_id,
        config,
        crate::random_seed(),
    );
    let opts = Options {
        output: root,
        access: Access::ReadOnly,
        trackers,
        manual_peers: Vec::new(),
        magnet_peers: Vec::new(),
        peer_id,
        mode: Mode::Seed,
        show_progress,
    };
    let mut session = Session::new(torrent, listener, opts)?;
    session.prepare()?;
    Ok(session)
}

/// Binds the peer listener. Done before the engine exists because its `Config` wants the port.
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
    Announced(String, Result<AnnounceResponse, TrackerError>),
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

pub struct Session {
    torrent: Torrent,
    opts: Options,
    listener: Option<TcpListener>,
    listen_addr: SocketAddr,
    epoch: Instant,
    conns: HashMap<ConnId, Conn>,
    data_tx: mpsc::Sender<ReadMsg>,
    data_rx: mpsc::Receiver<ReadMsg>,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    announcer: Announcer,
    announcing: bool,
    tracker_key: u32,
    storage_attached: bool,
    /// A resume check runs in slices beside the network (a magnet whose metadata just came).
    checking: bool,
    progress: Progress,
    /// Start of the transfer, for the `complete:` line.
    started: Instant,
    /// Last time bytes moved or metadata arrived, and what had moved then.
    last_progress: Instant,
    progress_mark: (u64, u64, bool),
    ever_connected: bool,
    complete_reported: bool,
}

impl Session {
    pub fn new(torrent: Torrent, listener: TcpListener, opts: Options) -> Result<Self> {
        let listen_addr = listener
            .local_addr()
            .context("listener has no local address")?;
        let (data_tx, data_rx) = mpsc::channel(READ_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let announcer = Announcer::new(opts.trackers.clone(), crate::random_seed());
        let progress = match opts.show_progress {
            true => Progress::new(),
            false => Progress::hidden(),
        };
        let now = Instant::now();
        Ok(Session {
            torrent,
            opts,
            listener: Some(listener),
            listen_addr,
            epoch: now,
            conns: HashMap::new(),
            data_tx,
            data_rx,
            ctl_tx,
            ctl_rx,
            announcer,
            announcing: false,
            tracker_key: fastrand::u32(..),
            storage_attached: false,
            checking: false,
            progress,
            started: now,
            last_progress: now,
            progress_mark: (0, 0, false),
            ever_connected: false,
            complete_reported: false,
        })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Attaches the file store and checks what is already on disk, printing the `resume:` line.
    /// Without metadata yet (a magnet) this waits for `Event::MetadataReceived`.
    pub fn prepare(&mut self) -> Result<()> {
        if self.torrent.info().is_some() && !self.storage_attached {
            if self.attach_storage()? {
                while !self
                    .torrent
                    .check_existing(64)
                    .context("resume check failed")?
                {}
            }
            self.report_resume();
        }
        Ok(())
    }

    /// Returns true when the data on disk still has to be checked. Nothing is hashed for files
    /// just created, nor for a seed whose torrent was just built from these very files.
    fn attach_storage(&mut self) -> Result<bool> {
        let info = self
            .torrent
            .info()
            .ok_or_else(|| anyhow!("no metadata to store"))?;
        let pieces = info.num_pieces() as usize;
        let storage =
            FileStorage::new(&self.opts.output, info, self.opts.access).with_context(|| {
                format!("cannot prepare files under {}", self.opts.output.display())
            })?;
        let trusted = match self.opts.mode {
            Mode::Seed => Some(true),
            _ if storage.is_fresh() => Some(false),
            _ => None,
        };
        self.torrent.attach_storage(Box::new(storage));
        self.storage_attached = true;
        if let Some(have) = trusted {
            self.torrent.assume_checked(&vec![have; pieces]);
        }
        Ok(trusted.is_none())
    }

    fn report_resume(&mut self) {
        if self.opts.show_progress {
            let st = self.torrent.stats();
            println!(
                "resume: {}/{} pieces verified on disk",
                st.pieces_have, st.pieces_total
            );
        }
        self.started = Instant::now();
        self.last_progress = self.started;
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_self(&self, a: SocketAddr) -> bool {
        let ip = a.ip();
        a.port() == self.listen_addr.port()
            && (ip.is_loopback() || ip.is_unspecified() || ip == self.listen_addr.ip())
    }

    fn add_peers(&mut self, addrs: &[SocketAddr], source: PeerSource) {
        let list: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|&a| !self.is_self(a))
            .collect();
        if !list.is_empty() {
            self.torrent.add_peers(&list, source);
        }
    }

    /// Runs until the download completes (without `seed_after`), a signal, or a failure.
    pub async fn run(mut self) -> Result<()> {
        if let Some(listener) = self.listener.take() {
            tokio::spawn(accept_loop(listener, self.ctl_tx.clone()));
        }
        let manual = std::mem::take(&mut self.opts.manual_peers);
        let magnet = std::mem::take(&mut self.opts.magnet_peers);
        self.add_peers(&manual, PeerSource::Manual);
        self.add_peers(&magnet, PeerSource::Magnet);

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
            if self.flush_engine()? {
                return Ok(());
            }
            self.start_announce();

            let deadline = if self.checking {
                Some(self.epoch)
            } else {
                [self.torrent.poll_timeout(), self.announcer.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|ms| self.epoch + Duration::from_millis(ms))
            };
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
                    return match self.opts.mode {
                        Mode::Download { .. } if !self.torrent_complete() => {
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
            if self.torrent.poll_timeout().is_some_and(|t| t <= now) {
                self.torrent.handle_timeout(now);
            }
            if self.checking
                && self
                    .torrent
                    .check_existing(CHECK_BATCH)
                    .context("resume check failed")?
            {
                self.checking = false;
                self.report_resume();
            }
        }
    }

    fn torrent_complete(&self) -> bool {
        self.storage_attached && self.torrent.is_complete()
    }

    /// Drains the engine's events and bytes and hands the bytes to the writers. True when the
    /// session is done (download complete, no seeding after).
    fn flush_engine(&mut self) -> Result<bool> {
        let mut done = false;
        loop {
            let mut any = false;
            while let Some(ev) = self.torrent.poll_event() {
                any = true;
                done |= self.on_event(ev)?;
            }
            while let Some((conn, bytes)) = self.torrent.poll_transmit() {
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
        if !done && !self.complete_reported && self.torrent_complete() {
            // Everything was on disk already: the engine may have nothing to announce.
            done = self.on_complete();
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

    /// True when the session should end.
    fn on_event(&mut self, ev: Event) -> Result<bool> {
        match ev {
            Event::Connect { conn, addr } => {
                if self.is_self(addr) {
                    self.torrent.handle_closed(conn, self.now_ms());
                    return Ok(false);
                }
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
            Event::Close { conn, reason } => {
                if let Some(c) = self.conns.remove(&conn) {
                    info!("peer {} closed: {reason}", c.addr);
                }
            }
            Event::MetadataReceived => {
                info!(
                    "metadata received: {}",
                    self.torrent.info().map_or("", |i| i.name.as_str())
                );
                self.last_progress = Instant::now();
                if !self.storage_attached {
                    self.checking = self.attach_storage()?;
                    if !self.checking {
                        self.report_resume();
                    }
                }
            }
            // Natively the engine hashes itself (SHA-NI): `driver_hashes` stays off.
            Event::PieceVerified(_) | Event::HashPiece { .. } => {}
            Event::PieceFailed(i) => warn!("piece {i} failed its hash check"),
            Event::PeerBanned(addr) => {
                info!("peer {addr} banned: sent data that failed hash checks")
            }
            Event::Complete => {
                if !self.complete_reported {
                    return Ok(self.on_complete());
                }
            }
            // The engine has paused itself: nothing more can be done with this torrent.
            Event::StorageFailed(msg) => bail!("{msg}"),
        }
        Ok(false)
    }

    /// Prints the `complete:` line; true when the session should end.
    fn on_complete(&mut self) -> bool {
        self.complete_reported = true;
        if matches!(self.opts.mode, Mode::Download { .. }) {
            // A seed never downloaded anything: trackers would count a bogus completion.
            self.announcer.completed();
        }
        let st = self.torrent.stats();
        let secs = self.started.elapsed().as_secs_f64();
        let name = self
            .torrent
            .info()
            .map_or_else(String::new, |i| i.name.clone());
        match self.opts.mode {
            Mode::Download { seed_after, .. } => {
                if !seed_after {
                    self.progress.finish();
                }
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
            Mode::Seed => false,
        }
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
                    self.torrent.handle_data(conn, &data, now);
                }
            }
            ReadMsg::Closed(conn, reason) => self.drop_conn(conn, &reason),
        }
    }

    /// We end a connection (the engine did not ask for it): tell the engine.
    fn drop_conn(&mut self, conn: ConnId, reason: &str) {
        if let Some(c) = self.conns.remove(&conn) {
            info!("peer {} closed: {reason}", c.addr);
            self.torrent.handle_closed(conn, self.now_ms());
        }
    }

    fn on_ctl(&mut self, m: Ctl) {
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
                self.torrent.handle_connected(conn, self.now_ms());
            }
            Ctl::ConnectFailed(conn, reason) => {
                if let Some(c) = self.conns.remove(&conn) {
                    info!("peer {} connect failed: {reason}", c.addr);
                    self.torrent.handle_closed(conn, self.now_ms());
                }
            }
            Ctl::Incoming(stream, addr) => {
                match self.torrent.handle_incoming(addr, self.now_ms()) {
                    Some(conn) => {
                        info!("peer {addr} connected (incoming)");
                        self.open(conn, stream, addr);
                    }
                    None => debug!("peer {addr} refused (full or banned)"),
                }
            }
            Ctl::Sent(conn, n) => {
                if self.conns.contains_key(&conn) {
                    self.torrent.handle_sent(conn, n);
                }
            }
            Ctl::WriteFailed(conn, reason) => self.drop_conn(conn, &reason),
            Ctl::Announced(url, result) => {
                self.announcing = false;
                let now = self.now_ms();
                self.announcer.handle_response(&url, &result, now);
                match result {
                    Ok(resp) => {
                        info!("tracker {url}: {} peers", resp.peers.len());
                        if let Some(w) = &resp.warning {
                            warn!("tracker {url} warns: {w}");
                        }
                        self.add_peers(&resp.peers, PeerSource::Tracker);
                    }
                    Err(e) => warn!("tracker {url}: {e}"),
                }
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
        let st = self.torrent.stats();
        self.progress.update(&st);
        if st.peers_connected > 0 {
            self.ever_connected = true;
        }
        let mark = (st.downloaded, st.verified, self.torrent.info().is_some());
        if mark != self.progress_mark || self.checking {
            self.progress_mark = mark;
            self.last_progress = Instant::now();
        }
        if let Mode::Download { timeout, .. } = self.opts.mode {
            if !self.complete_reported && self.last_progress.elapsed() >= timeout {
                let secs = timeout.as_secs();
                if self.ever_connected {
                    bail!(
                        "no progress for {secs} s ({} peers connected)",
                        st.peers_connected
                    );
                }
                bail!("no peer reachable after {secs} s");
            }
        }
        Ok(())
    }

    fn request(&self, event: Option<AnnounceEvent>) -> AnnounceRequest {
        let st = self.torrent.stats();
        // Unknown size (a magnet): any non-zero `left` says we are a leecher and want seeders.
        let left = if self.torrent.info().is_some() {
            st.total.saturating_sub(st.verified)
        } else {
            1
        };
        AnnounceRequest {
            info_hash: self.torrent.info_hash(),
            peer_id: self.opts.peer_id,
            port: self.listen_addr.port(),
            uploaded: st.uploaded,
            downloaded: st.downloaded,
            left,
            event,
            numwant: Some(200),
            key: self.tracker_key,
            tracker_id: None,
        }
    }

    fn start_announce(&mut self) {
        if self.announcing || self.announcer.is_empty() {
            return;
        }
        let Some(p) = self.announcer.poll_announce(self.now_ms()) else {
            return;
        };
        self.announcing = true;
        let req = AnnounceRequest {
            tracker_id: p.tracker_id.clone(),
            ..self.request(p.event)
        };
        let ctl = self.ctl_tx.clone();
        debug!("announcing to {} ({:?})", p.url, p.event);
        tokio::spawn(async move {
            let result = tracker_client::announce(&p.url, &req).await;
            let _ = ctl.send(Ctl::Announced(p.url, result));
        });
    }

    async fn announce_stopped(&mut self) {
        if self.announcer.is_empty() {
            return;
        }
        let Some(p) = self.announcer.stopped() else {
            return;
        };
        let req = AnnounceRequest {
            tracker_id: p.tracker_id.clone(),
            ..self.request(Some(AnnounceEvent::Stopped))
        };
        match tokio::time::timeout(
            STOP_ANNOUNCE_TIMEOUT,
            tracker_client::announce(&p.url, &req),
        )
        .await
        {
            Ok(Ok(_)) => debug!("tracker {}: stopped", p.url),
            Ok(Err(e)) => debug!("tracker {}: stopped announce failed: {e}", p.url),
            Err(_) => debug!("tracker {}: stopped announce timed out", p.url),
        }
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
        // Reclaims the same allocation once the engine has dropped the previous chunk.
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
