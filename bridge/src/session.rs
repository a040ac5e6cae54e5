//! The tokio driver of the client session (`protocol::client::Session`): it moves bytes between
//! sockets and the session, opens files, performs announces and keeps the clock. Every decision
//! (whom to dial, when to announce, what a status means) is the session's.
//!
//! The session is not `Send` (its stores are plain `Box<dyn Storage>`), so it lives in the future
//! the runtime blocks on; everything that waits on the network runs as tasks (`peers`, the
//! announces) that report back through channels.

use crate::file_storage::{Access, FileStorage};
use crate::peers::{IoEvent, Peers, ReadMsg};
use crate::progress::Progress;
use crate::tracker_client;
use anyhow::{anyhow, bail, Context, Result};
use protocol::client::{Action, AddTorrent, Config, Event, Prefill, Session};
use protocol::engine::{ConnId, Encryption, PeerSource};
use protocol::metainfo::Info;
use protocol::{InfoHash, PeerId};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Read chunks handled per wake-up before the session's output is flushed.
const READ_BATCH: usize = 256;
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
    pub encryption: Encryption,
}

/// A session seeding `info`, whose files lie under `root` and were just hashed into `info` by
/// the caller (so nothing is checked again).
pub fn seeding(
    info: Info,
    listener: TcpListener,
    root: PathBuf,
    trackers: Vec<Vec<String>>,
    show_progress: bool,
    encryption: Encryption,
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
        encryption,
    };
    Driver::new(listener, opts)
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

/// Randomness for the keys of encrypted connections, from the kernel.
fn entropy() -> Result<[u8; 32]> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("cannot read /dev/urandom")?;
    Ok(seed)
}

/// What the loop's own tasks report.
enum Ctl {
    Announced(
        String,
        Result<protocol::tracker::AnnounceResponse, protocol::tracker::TrackerError>,
    ),
}

/// How the loop was woken.
enum Wake {
    Read(ReadMsg),
    Io(IoEvent),
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
    peers: Peers,
    /// Goes back and forth with the session's send buffers (`poll_transmit`).
    tx_buf: Vec<u8>,
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
        let mut config = Config {
            listen: Some(listen_addr),
            ..Config::default()
        };
        config.engine.encryption = opts.encryption;
        config.engine.entropy = entropy()?;
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
            peers: Peers::new(),
            tx_buf: Vec::new(),
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
            self.peers.listen(listener);
        }
        let result = self.event_loop().await;
        self.progress.finish();
        self.peers.clear();
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
                Some(m) = self.peers.io_rx.recv() => Wake::Io(m),
                Some(m) = self.peers.data_rx.recv() => Wake::Read(m),
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
                Wake::Io(m) => self.on_io(m),
                Wake::Ctl(m) => self.on_ctl(m),
                Wake::Tick => self.on_tick()?,
                Wake::Timer => {}
            }
            // Batch: take whatever else is ready before producing output.
            while let Ok(m) = self.ctl_rx.try_recv() {
                self.on_ctl(m);
            }
            while let Ok(m) = self.peers.io_rx.try_recv() {
                self.on_io(m);
            }
            for _ in 0..READ_BATCH {
                match self.peers.data_rx.try_recv() {
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
            while let Some((_, conn)) = self.session.poll_transmit(now, &mut self.tx_buf) {
                any = true;
                self.peers.queue(conn, &mut self.tx_buf);
            }
            if !any {
                break;
            }
        }
        for conn in self.peers.flush() {
            self.drop_conn(conn, "peer does not read what we send");
        }
        Ok(done)
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::Connect { conn, addr, .. } => self.peers.connect(conn, addr),
            Action::Close { conn, reason, .. } => {
                if let Some(addr) = self.peers.remove(conn) {
                    info!("peer {addr} closed: {reason}");
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
                if self.peers.is_open(conn) {
                    let now = self.now_ms();
                    self.session.handle_data(now, self.id, conn, &data);
                }
            }
            ReadMsg::Closed(conn, reason) => self.drop_conn(conn, &reason),
        }
    }

    /// The connection ended on our side of the session: tell the session.
    fn drop_conn(&mut self, conn: ConnId, reason: &str) {
        if let Some(addr) = self.peers.remove(conn) {
            info!("peer {addr} closed: {reason}");
            let now = self.now_ms();
            self.session.handle_closed(now, self.id, conn, reason);
        }
    }

    fn on_io(&mut self, m: IoEvent) {
        let now = self.now_ms();
        match m {
            IoEvent::Connected(conn, stream) => {
                let Some(addr) = self.peers.connecting(conn) else {
                    return;
                };
                info!("peer {addr} connected");
                self.peers.open(conn, stream, addr);
                self.session.handle_connected(now, self.id, conn);
            }
            IoEvent::ConnectFailed(conn, reason) => {
                if let Some(addr) = self.peers.remove(conn) {
                    info!("peer {addr} connect failed: {reason}");
                    self.session.handle_closed(now, self.id, conn, &reason);
                }
            }
            IoEvent::Incoming(stream, addr) => {
                // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`.
                let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                match self.session.handle_incoming(now, self.id, addr) {
                    Some(conn) => {
                        info!("peer {addr} connected (incoming)");
                        self.peers.open(conn, stream, addr);
                    }
                    None => debug!("peer {addr} refused (full or banned)"),
                }
            }
            IoEvent::Sent(conn, buf) => {
                if self.peers.contains(conn) {
                    self.session.handle_sent(now, self.id, conn, buf.len());
                    self.peers.sent(conn, buf);
                }
            }
            IoEvent::WriteFailed(conn, reason) => self.drop_conn(conn, &reason),
        }
    }

    fn on_ctl(&mut self, m: Ctl) {
        let now = self.now_ms();
        match m {
            Ctl::Announced(url, result) => {
                self.session
                    .handle_announce(now, self.id, &url, result.map_err(Into::into));
            }
        }
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
