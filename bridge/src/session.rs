//! The tokio driver of the client session (`protocol::client::Session`): it moves bytes between
//! sockets and the session, opens files, performs announces and keeps the clock. Every decision
//! (whom to dial, when to announce, what a status means) is the session's.
//!
//! The session is not `Send` (its stores are plain `Box<dyn Storage>`), so it lives in the future
//! the runtime blocks on; everything that waits on the network runs as tasks (`peers`, the
//! announces) that report back through channels.

use crate::dht_io::{
    bind_udp, load_dht_nodes, read_datagrams, recv_datagram, save_dht_nodes, DhtIo, DhtOptions,
    DATAGRAM_QUEUE,
};
use crate::file_storage::{Access, FileStorage};
use crate::peers::{IoEvent, Peers, ReadMsg};
use crate::progress::Progress;
use crate::tracker_client;
use anyhow::{anyhow, bail, Context, Result};
use protocol::client::{Action, AddTorrent, Config, DhtConfig, DhtEvent, Event, Prefill, Session};
use protocol::engine::{ConnId, Encryption, PeerSource};
use protocol::metainfo::Info;
use protocol::{InfoHash, PeerId};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// The DHT as a peer source; `None` keeps it off.
    pub dht: Option<DhtOptions>,
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
    seeding_with(
        info,
        listener,
        root,
        trackers,
        show_progress,
        encryption,
        None,
    )
}

/// `seeding`, with the DHT.
pub fn seeding_with(
    info: Info,
    listener: TcpListener,
    root: PathBuf,
    trackers: Vec<Vec<String>>,
    show_progress: bool,
    encryption: Encryption,
    dht: Option<DhtOptions>,
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
        dht,
    };
    Driver::new(listener, opts)
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
    Datagram(SocketAddr, Vec<u8>),
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
    dht: Option<DhtIo>,
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
        let mut dht = None;
        if let Some(d) = opts.dht {
            match bind_udp(listen_addr) {
                Ok(socket) => {
                    let saved = d.state_file.as_deref().and_then(load_dht_nodes);
                    let mut c = DhtConfig {
                        bootstrap: d.bootstrap,
                        ..DhtConfig::default()
                    };
                    if let Some((id, nodes)) = saved {
                        info!("DHT: {} nodes from the last run", nodes.len());
                        c.node.id = Some(id);
                        c.nodes = nodes;
                    }
                    if c.bootstrap.is_empty() && c.nodes.is_empty() {
                        warn!("DHT: no node to bootstrap from; it only answers those that find us");
                    }
                    config.dht = Some(c);
                    let socket = Arc::new(socket);
                    let (tx, rx) = mpsc::channel(DATAGRAM_QUEUE);
                    let reader = tokio::spawn(read_datagrams(socket.clone(), tx));
                    dht = Some(DhtIo {
                        socket,
                        rx,
                        reader,
                        state_file: d.state_file,
                        bootstrapped: false,
                    });
                }
                Err(e) => warn!("no DHT: cannot bind UDP {listen_addr}: {e}"),
            }
        }
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
            dht,
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
        self.save_dht();
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
                Some((from, data)) = recv_datagram(&mut self.dht) => Wake::Datagram(from, data),
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
                Wake::Datagram(from, data) => self.on_datagram(from, &data),
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
            while let Some((from, data)) = self.dht.as_mut().and_then(|d| d.rx.try_recv().ok()) {
                self.on_datagram(from, &data);
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
            while let Some((to, data)) = self.session.poll_datagram() {
                if let Some(d) = &self.dht {
                    d.send(to, &data);
                }
            }
            while let Some(ev) = self.session.poll_dht_event() {
                self.on_dht_event(ev);
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

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        // A dual-stack socket reports IPv4 senders as `::ffff:a.b.c.d`.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let now = self.now_ms();
        self.session.handle_datagram(now, from, data);
    }

    fn on_dht_event(&mut self, ev: DhtEvent) {
        match ev {
            DhtEvent::Bootstrapped { nodes } => {
                let first = self.dht.as_mut().is_some_and(|d| {
                    let first = !d.bootstrapped && nodes > 0;
                    d.bootstrapped |= nodes > 0;
                    first
                });
                if first {
                    info!("DHT bootstrapped: {nodes} nodes");
                } else {
                    debug!("DHT bootstrap over: {nodes} nodes");
                }
            }
            DhtEvent::Peers { peers, .. } => info!("DHT: found {peers} peers"),
            DhtEvent::LookupDone { announced, .. } => {
                debug!("DHT lookup over, announced to {announced} nodes")
            }
        }
    }

    /// Saves the DHT's routing table for the next run.
    fn save_dht(&self) {
        let Some(path) = self.dht.as_ref().and_then(|d| d.state_file.as_deref()) else {
            return;
        };
        let Some((id, nodes)) = self.session.dht_nodes() else {
            return;
        };
        if nodes.is_empty() {
            return;
        }
        match save_dht_nodes(path, id, &nodes) {
            Ok(()) => debug!("DHT: {} nodes saved to {}", nodes.len(), path.display()),
            Err(e) => warn!("DHT routing table not saved: {e:#}"),
        }
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
