//! The Worker's driver of the client session: it takes inputs from the inbox, feeds them to the
//! session, and carries out what the session asks (sockets, files, hashing, announces), then
//! arms one timer for the session's next deadline. Every BitTorrent decision is the session's.

use crate::announce;
use crate::commands::{self, Command};
use crate::hasher;
use crate::inbox::{self, Handler, Input};
use crate::js::{global, now_ms, post, Obj};
use crate::listen::Listen;
use crate::opfs::Opfs;
use crate::persist::{self, report_error, SUFFIXES};
use crate::snapshot::{self, download_name};
use crate::socket::PeerSocket;
use crate::store::{self, Store};
use protocol::client::contract::{close_words, BRIDGE_GONE};
use protocol::client::{Action, AddError, AddTorrent, Event, Prefill, Session};
use protocol::engine::ConnId;
use protocol::InfoHash;
use std::collections::HashMap;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

/// The page gets a snapshot this often.
const SNAPSHOT_MS: u64 = 250;
/// While bytes wait in a socket's buffer we look at `bufferedAmount` this often.
const SENT_POLL_MS: u64 = 20;

pub struct Driver {
    session: Session,
    opfs: Option<Opfs>,
    /// `ws://host` or `wss://host` of the bridge that served the page.
    ws_base: String,
    /// Torrents in the order they were added: the page lists them so.
    order: Vec<InfoHash>,
    sockets: HashMap<(InfoHash, ConnId), PeerSocket>,
    stores: HashMap<InfoHash, Store>,
    /// Sockets closed by us, dropped on the next turn rather than inside their own callbacks.
    graveyard: Vec<PeerSocket>,
    /// Goes back and forth with the session's send buffers (`poll_transmit`).
    tx_buf: Vec<u8>,
    /// A piece read back for hashing; WebCrypto copies it, so one buffer serves every piece.
    hash_buf: Vec<u8>,
    timer: Timer,
    /// Peers that dial the bridge's port for our torrents; `None` if the bridge has none.
    listen: Option<Listen>,
    /// The timer fired since the last pump: held writes go out to the file.
    timer_fired: bool,
    next_snapshot: u64,
}

/// One `setTimeout` at a time, armed for the earliest deadline.
struct Timer {
    callback: Closure<dyn FnMut()>,
    armed: Option<(i32, u64)>,
}

impl Timer {
    fn new() -> Self {
        Timer {
            callback: Closure::new(|| inbox::push(Input::Timer)),
            armed: None,
        }
    }

    fn arm(&mut self, due: u64, now: u64) {
        if let Some((handle, at)) = self.armed {
            if at <= due {
                return;
            }
            global().clear_timeout_with_handle(handle);
        }
        let delay = due.saturating_sub(now).min(i32::MAX as u64) as i32;
        match global().set_timeout_with_callback_and_timeout_and_arguments_0(
            self.callback.as_ref().unchecked_ref(),
            delay,
        ) {
            Ok(handle) => self.armed = Some((handle, due)),
            Err(_) => self.armed = None,
        }
    }
}

impl Driver {
    pub fn new(
        session: Session,
        opfs: Option<Opfs>,
        ws_base: String,
        listen: Option<Listen>,
    ) -> Self {
        Driver {
            session,
            opfs,
            ws_base,
            order: Vec::new(),
            sockets: HashMap::new(),
            stores: HashMap::new(),
            graveyard: Vec::new(),
            hash_buf: Vec::new(),
            tx_buf: Vec::new(),
            timer: Timer::new(),
            listen,
            timer_fired: false,
            next_snapshot: 0,
        }
    }
}

impl Handler for Driver {
    fn handle(&mut self, input: Input) {
        let now = now_ms();
        match input {
            Input::Command(msg) => match commands::parse(&msg) {
                Ok(cmd) => self.command(cmd),
                Err(e) => report_error(None, e),
            },
            // Already there: a page command added it while the restore was reading.
            Input::Restore(add) => {
                let _ = self.insert(add);
            }
            Input::PeerOpen { id, conn } => {
                if let Some(s) = self.sockets.get_mut(&(id, conn)) {
                    s.opened = true;
                    if !s.incoming {
                        self.session.handle_connected(now, id, conn);
                    }
                }
            }
            Input::Incoming { id, offer, addr } => {
                // Refused (full, banned, paused): the bridge drops the offer when it expires.
                if let Some(conn) = self.session.handle_incoming(now, id, addr) {
                    match PeerSocket::accept(&self.ws_base, id, conn, offer) {
                        Ok(sock) => {
                            self.sockets.insert((id, conn), sock);
                        }
                        Err(e) => self.session.handle_closed(now, id, conn, &e),
                    }
                }
            }
            Input::PeerData {
                id,
                conn,
                data,
                skip,
            } => {
                if self.sockets.contains_key(&(id, conn)) {
                    self.session.handle_data(now, id, conn, &data[skip..]);
                }
                inbox::recycle(data);
            }
            Input::PeerSent { id, conn, n } => {
                if let Some(s) = self.sockets.get_mut(&(id, conn)) {
                    s.on_sent(n);
                }
            }
            Input::PeerClosed {
                id,
                conn,
                code,
                reason,
            } => self.peer_closed(now, id, conn, code, &reason),
            Input::Timer => {
                self.timer.armed = None;
                self.timer_fired = true;
            }
            Input::StorageOpened { id, result } => self.storage_opened(now, id, result),
            Input::Hashed {
                id,
                piece,
                job,
                result,
            } => match result {
                Ok(d) => self.session.handle_piece_hash(now, id, piece, job, d),
                Err(e) => self
                    .session
                    .handle_failure(now, id, format!("hashing failed: {e}")),
            },
            Input::Announced { id, url, result } => {
                self.session.handle_announce(now, id, &url, result)
            }
        }
    }

    fn pump(&mut self) {
        self.pump_now();
    }
}

impl Driver {
    fn peer_closed(&mut self, now: u64, id: InfoHash, conn: ConnId, code: u16, reason: &str) {
        let Some(sock) = self.sockets.remove(&(id, conn)) else {
            return;
        };
        if code == BRIDGE_GONE {
            let what = if sock.opened {
                "a tunnel dropped without a close frame"
            } else {
                "a WebSocket to /peer could not open"
            };
            self.session.handle_bridge_error(now, id, what.into());
        }
        let words = close_words(code);
        let why = match reason {
            "" => words.to_string(),
            r => format!("{words} ({r})"),
        };
        sock.close();
        self.graveyard.push(sock);
        self.session.handle_closed(now, id, conn, &why);
    }

    fn storage_opened(&mut self, now: u64, id: InfoHash, result: Result<Store, String>) {
        match result {
            Ok(store) if self.session.contains(id) => {
                let prefill = match store.is_fresh() {
                    true => Prefill::Empty,
                    false => Prefill::Unknown,
                };
                self.session
                    .handle_storage(now, id, Ok((store.storage(), prefill)));
                self.stores.insert(id, store);
            }
            Err(e) => self.session.handle_storage(now, id, Err(e)),
            // Removed while its file was opening: let go of the file and delete it.
            Ok(store) => {
                store.close();
                if let Some(opfs) = self.opfs.clone() {
                    spawn_local(async move {
                        let _ = opfs.remove(&id.to_hex()).await;
                    });
                }
            }
        }
    }

    /// Carries out everything the session asks until it has nothing more, then arms the timer
    /// for its next deadline (or the next snapshot).
    fn pump_now(&mut self) {
        let mut now = now_ms();
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        if std::mem::take(&mut self.timer_fired) {
            for (&id, store) in &self.stores {
                if let Err(e) = store.write_out() {
                    self.session
                        .handle_failure(now, id, format!("storage failed: {e}"));
                }
            }
        }
        let mut news = false;
        loop {
            let mut any = false;
            while let Some(action) = self.session.poll_action() {
                any = true;
                self.act(now, action);
            }
            while let Some(event) = self.session.poll_event() {
                any = true;
                news |= self.on_event(event);
            }
            while let Some((id, conn)) = self.session.poll_transmit(now, &mut self.tx_buf) {
                any = true;
                match self.sockets.get_mut(&(id, conn)) {
                    Some(sock) => sock.queue(&mut self.tx_buf),
                    None => self.tx_buf.clear(),
                }
            }
            for (&(id, conn), sock) in self.sockets.iter_mut() {
                sock.flush();
                let n = sock.drained();
                if n > 0 {
                    self.session.handle_sent(now, id, conn, n);
                    any = true;
                }
            }
            if !any {
                break;
            }
            now = now_ms();
        }
        self.graveyard.clear();
        if news {
            // A finished download shows as finished (and its Save buttons appear) at once, not
            // up to a snapshot period later.
            self.next_snapshot = now;
        }
        if now >= self.next_snapshot {
            self.post_snapshot(now);
        }
        let mut due = self.next_snapshot;
        if let Some(t) = self.session.poll_timeout() {
            due = due.min(t);
        }
        if self.sockets.values().any(PeerSocket::pending) {
            due = due.min(now + SENT_POLL_MS);
        }
        self.timer.arm(due.max(now), now);
    }

    fn post_snapshot(&mut self, now: u64) {
        self.next_snapshot = now + SNAPSHOT_MS;
        snapshot::send(&self.session, &self.order, now);
    }

    fn act(&mut self, now: u64, action: Action) {
        match action {
            Action::Connect {
                torrent,
                conn,
                addr,
            } => match PeerSocket::connect(&self.ws_base, torrent, conn, addr) {
                Ok(sock) => {
                    self.sockets.insert((torrent, conn), sock);
                }
                Err(e) => self.session.handle_closed(now, torrent, conn, &e),
            },
            Action::Close { torrent, conn, .. } => {
                if let Some(sock) = self.sockets.remove(&(torrent, conn)) {
                    sock.close();
                    self.graveyard.push(sock);
                }
            }
            Action::OpenStorage { torrent } => {
                let Some(info) = self.session.info(torrent) else {
                    return;
                };
                let (opfs, total) = (self.opfs.clone(), info.total_length);
                spawn_local(async move {
                    let result = store::open(opfs, &torrent.to_hex(), total).await;
                    inbox::push(Input::StorageOpened {
                        id: torrent,
                        result,
                    });
                });
            }
            Action::Announce {
                torrent,
                url,
                request,
            } => spawn_local(async move {
                let result = announce::announce(&url, &request).await;
                inbox::push(Input::Announced {
                    id: torrent,
                    url,
                    result,
                });
            }),
            Action::HashPiece {
                torrent,
                piece,
                job,
            } => {
                let started = self
                    .session
                    .read_piece(torrent, piece, &mut self.hash_buf)
                    .map_err(|e| format!("cannot read the downloaded data: {e}"))
                    .and_then(|()| hasher::start(&self.hash_buf));
                match started {
                    Ok(digest) => spawn_local(async move {
                        let result = hasher::finish(digest).await;
                        inbox::push(Input::Hashed {
                            id: torrent,
                            piece,
                            job,
                            result,
                        });
                    }),
                    Err(e) => self.session.handle_failure(now, torrent, e),
                }
            }
        }
    }

    /// True when the page should hear of it at once.
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::MetadataReceived { torrent } => {
                if let Some(info) = self.session.info(torrent) {
                    persist::metadata(self.opfs.clone(), torrent, info.raw.clone());
                }
                true
            }
            Event::Complete { .. } | Event::Failed { .. } | Event::Checked { .. } => true,
            Event::Announced { .. }
            | Event::AnnounceFailed { .. }
            | Event::PieceFailed { .. }
            | Event::PeerBanned { .. } => false,
        }
    }

    /// Forgets a torrent's sockets and store (the session has let go of it).
    fn forget(&mut self, id: InfoHash) {
        let conns: Vec<(InfoHash, ConnId)> = self
            .sockets
            .keys()
            .filter(|(t, _)| *t == id)
            .copied()
            .collect();
        for key in conns {
            if let Some(sock) = self.sockets.remove(&key) {
                sock.close();
                self.graveyard.push(sock);
            }
        }
        if let Some(store) = self.stores.remove(&id) {
            store.close();
        }
        self.order.retain(|t| *t != id);
        if let Some(l) = &self.listen {
            l.serve(id, false);
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                add,
                saved_as: (ext, bytes),
                quiet,
                source,
            } => {
                let id = add.info_hash;
                match self.insert(*add) {
                    Ok(()) => persist::save(self.opfs.clone(), id, ext, bytes),
                    Err(AddError::Duplicate) if quiet => {}
                    Err(e) => report_error(
                        None,
                        commands::add_failed(source.as_deref(), &e.to_string()),
                    ),
                }
            }
            Command::Pause(id) => self.pause(&id),
            Command::Resume(id) => self.resume(&id),
            Command::Remove(id) => self.remove(&id),
            Command::Save { id, file } => self.save(&id, file),
        }
    }

    /// Adds a torrent (new or restored) to the session and the page's list.
    fn insert(&mut self, add: AddTorrent) -> Result<(), AddError> {
        let now = now_ms();
        let id = self.session.add(now, add)?;
        self.order.push(id);
        if let Some(l) = &self.listen {
            l.serve(id, true);
        }
        self.post_snapshot(now);
        Ok(())
    }

    fn id_of(&self, id: &str) -> Option<InfoHash> {
        InfoHash::from_hex(id).filter(|ih| self.session.contains(*ih))
    }

    fn pause(&mut self, id: &str) {
        let Some(ih) = self.id_of(id) else { return };
        let now = now_ms();
        self.session.pause(now, ih);
        persist::save(self.opfs.clone(), ih, "paused", Vec::new());
        self.post_snapshot(now);
    }

    fn resume(&mut self, id: &str) {
        let Some(ih) = self.id_of(id) else { return };
        let now = now_ms();
        self.session.resume(now, ih);
        persist::unsave(self.opfs.clone(), format!("{id}.paused"));
        self.post_snapshot(now);
    }

    fn remove(&mut self, id: &str) {
        let Some(ih) = self.id_of(id) else { return };
        let now = now_ms();
        // The session closes the connections and queues the `stopped` announce.
        self.session.remove(now, ih);
        self.forget(ih);
        let hex = ih.to_hex();
        if let Some(opfs) = self.opfs.clone() {
            spawn_local(async move {
                for ext in SUFFIXES {
                    if let Err(e) = opfs.remove(&format!("{hex}{ext}")).await {
                        report_error(Some(&hex), format!("cannot delete {hex}{ext}: {e}"));
                    }
                }
            });
        }
        post(Obj::new().set("type", "removed").set("id", id));
        self.post_snapshot(now);
    }

    /// Hands one complete file of the torrent to the page as a download.
    fn save(&mut self, id: &str, file: Option<f64>) {
        let Some(ih) = self.id_of(id) else { return };
        let now = now_ms();
        let (Some(info), Some(store), Some(status)) = (
            self.session.info(ih),
            self.stores.get(&ih).cloned(),
            self.session.status(now, ih),
        ) else {
            return report_error(Some(id), "the torrent's data is not ready yet".into());
        };
        let index = file
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as usize);
        let Some((index, entry)) = index.and_then(|i| info.files.get(i).map(|e| (i, e))) else {
            return report_error(Some(id), "there is no such file in this torrent".into());
        };
        let done = status.files.get(index).map_or(0, |f| f.done);
        if done < entry.length {
            return report_error(
                Some(id),
                format!("{} is not complete yet", entry.path.join("/")),
            );
        }
        let (offset, len, name) = (entry.offset, entry.length, download_name(&entry.path));
        let stable = self.session.is_complete(ih);
        let id = id.to_string();
        spawn_local(async move {
            match store.export(offset, len, &name, stable).await {
                Ok(blob) => post(
                    Obj::new()
                        .set("type", "file")
                        .set("id", id)
                        .set("file", index as u32)
                        .set("name", name)
                        .set("blob", blob),
                ),
                Err(e) => report_error(Some(&id), format!("cannot save {name}: {e}")),
            }
        });
    }
}
