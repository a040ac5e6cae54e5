//! The Worker's single state: every torrent, the timer, and the commands from the page.
//!
//! JavaScript calls back into us from WebSocket events, timers and finished promises; each
//! callback borrows the app, does its work, and returns. Nothing here blocks.

use crate::announce::{self, Failure};
use crate::hasher;
use crate::js::{self, global, now_ms, post, Obj};
use crate::opfs::Opfs;
use crate::session::{Phase, Session, Task};
use crate::snapshot::download_name;
use crate::store::{self, Store};
use js_sys::{Array, Uint8Array};
use protocol::engine::ConnId;
use protocol::magnet::Magnet;
use protocol::metainfo::{Info, Metainfo};
use protocol::tracker::AnnounceResponse;
use protocol::{InfoHash, PeerId};
use std::cell::RefCell;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::spawn_local;

const SNAPSHOT_MS: u64 = 250;
/// Hashing a resumed torrent runs in slices this long, so messages and sockets get their turn.
const CHECK_SLICE_MS: u64 = 30;
/// A .torrent larger than this is refused before parsing.
const MAX_TORRENT_FILE: usize = 32 << 20;

thread_local! {
    static APP: RefCell<Option<App>> = const { RefCell::new(None) };
}

/// Runs `f` on the app; `None` before `start` or if a callback arrived while it was busy.
pub fn with<R>(f: impl FnOnce(&mut App) -> R) -> Option<R> {
    APP.with(|cell| match cell.try_borrow_mut() {
        Ok(mut guard) => guard.as_mut().map(f),
        Err(_) => {
            web_sys::console::error_1(&"bt: re-entrant callback dropped".into());
            None
        }
    })
}

pub struct App {
    opfs: Option<Opfs>,
    peer_id: PeerId,
    /// `ws://host` or `wss://host` of the bridge that served the page.
    ws_base: String,
    sessions: Vec<Session>,
    timer: Timer,
    /// Reused for every WebSocket frame copied into wasm memory.
    scratch: Vec<u8>,
    next_snapshot: u64,
}

/// One `setTimeout` at a time, armed for the earliest deadline of any torrent.
struct Timer {
    callback: Closure<dyn FnMut()>,
    armed: Option<(i32, u64)>,
}

impl Timer {
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

/// Opens storage, restores the torrents of an earlier visit, and starts the clock.
pub async fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        web_sys::console::error_1(&message.clone().into());
        post(
            Obj::new()
                .set("type", "fatal")
                .set("message", format!("The engine crashed: {message}")),
        );
    }));
    let opfs = Opfs::open().await;
    let relayed = crate::relay::start();
    let location = global().location();
    let scheme = if location.protocol() == "https:" {
        "wss"
    } else {
        "ws"
    };
    let app = App {
        opfs: opfs.clone(),
        peer_id: PeerId::generate(js::random_u64()),
        ws_base: format!("{scheme}://{}", location.host()),
        sessions: Vec::new(),
        timer: Timer {
            callback: Closure::new(|| {
                with(|app| {
                    app.timer.armed = None;
                    app.tick();
                });
            }),
            armed: None,
        },
        scratch: Vec::new(),
        next_snapshot: 0,
    };
    APP.with(|cell| *cell.borrow_mut() = Some(app));
    post(
        Obj::new()
            .set("type", "ready")
            .set("storage", if opfs.is_some() { "opfs" } else { "memory" })
            .set(
                "hash",
                if hasher::in_driver() {
                    "subtle"
                } else {
                    "wasm"
                },
            )
            .set("sockets", if relayed { "worker" } else { "direct" }),
    );
    if let Some(opfs) = opfs {
        restore(&opfs).await;
    }
    with(|app| app.tick());
}

/// Checks what a resumed torrent's file already holds, hashing each piece with WebCrypto (the
/// wasm path is `Session::check`), then tells the session which pieces matched.
async fn check_pieces(id: InfoHash) {
    let hashes = with(|app| {
        app.find(id)
            .and_then(|s| s.engine.info().map(|i| i.piece_hashes.clone()))
    })
    .flatten();
    let Some(hashes) = hashes else { return };
    let mut buf = Vec::new();
    let mut have = Vec::with_capacity(hashes.len());
    for (i, want) in hashes.iter().enumerate() {
        let started = with(|app| {
            let s = app.find(id)?;
            Some(
                s.engine
                    .read_piece(i as u32, &mut buf)
                    .map_err(|e| format!("cannot read the downloaded data: {e}"))
                    .and_then(|()| hasher::start(&buf)),
            )
        })
        .flatten();
        let digest = match started {
            // Removed meanwhile.
            None => return,
            Some(Ok(promise)) => hasher::finish(promise).await,
            Some(Err(e)) => Err(e),
        };
        match digest {
            Ok(d) => have.push(d == *want),
            Err(e) => {
                with(|app| app.with_session(id, |s, _| s.fail(e)));
                return;
            }
        }
    }
    with(|app| app.with_session(id, |s, _| s.checked(&have)));
}

/// Finds the torrents saved in OPFS and adds them again.
async fn restore(opfs: &Opfs) {
    let names = match opfs.list().await {
        Ok(n) => n,
        Err(e) => return report_error(None, format!("cannot list saved torrents: {e}")),
    };
    for name in &names {
        let Some((hex, kind)) = name.split_once('.') else {
            continue;
        };
        let Some(id) = InfoHash::from_hex(hex) else {
            continue;
        };
        let paused = names.iter().any(|n| *n == format!("{hex}.paused"));
        let result = match kind {
            "torrent" => match opfs.read_small(name).await {
                Ok(Some(bytes)) => Metainfo::from_bytes(&bytes)
                    .map_err(|e| e.to_string())
                    .map(|m| (Some(m.info), m.trackers, None)),
                Ok(None) => continue,
                Err(e) => Err(e),
            },
            "magnet" => restore_magnet(opfs, hex, id).await,
            _ => continue,
        };
        match result {
            Ok((info, trackers, magnet)) => {
                with(|app| app.insert(id, info, trackers, magnet, paused));
            }
            Err(e) => report_error(None, format!("cannot restore saved torrent {hex}: {e}")),
        }
    }
}

type Restored = (Option<Info>, Vec<Vec<String>>, Option<Magnet>);

async fn restore_magnet(opfs: &Opfs, hex: &str, id: InfoHash) -> Result<Restored, String> {
    let uri = opfs
        .read_small(&format!("{hex}.magnet"))
        .await?
        .unwrap_or_default();
    let magnet = Magnet::parse(&String::from_utf8_lossy(&uri)).map_err(|e| e.to_string())?;
    // The metadata, if it had arrived before the reload.
    let info = match opfs.read_small(&format!("{hex}.info")).await? {
        Some(raw) => Info::from_metadata(&raw, id).ok(),
        None => None,
    };
    let trackers = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    Ok((info, trackers, Some(magnet)))
}

fn report_error(id: Option<&str>, message: String) {
    post(
        Obj::new()
            .set("type", "error")
            .set_opt("id", id)
            .set("message", message),
    );
}

/// A command from the page: `{type: "add", torrent: Uint8Array|ArrayBuffer, source?}`,
/// `{type: "add", magnet: string, quiet?}`, `{type: "pause"|"resume"|"remove", id}`,
/// `{type: "save", id, file}`.
pub fn command(msg: JsValue) {
    let kind = js::get(&msg, "type").as_string().unwrap_or_default();
    let id = js::get(&msg, "id").as_string().unwrap_or_default();
    let done = with(|app| match kind.as_str() {
        "add" => app.add(&msg),
        "pause" => app.pause(&id),
        "resume" => app.resume(&id),
        "remove" => app.remove(&id),
        "save" => app.save(&id, js::get(&msg, "file").as_f64()),
        other => report_error(None, format!("unknown command {other:?}")),
    });
    if done.is_none() {
        report_error(None, "the engine is not running".into());
    }
}

pub fn on_peer_open(id: InfoHash, conn: ConnId) {
    with(|app| app.with_session(id, |s, _| s.on_open(conn, now_ms())));
}

pub fn on_peer_data(id: InfoHash, conn: ConnId, data: &Uint8Array) {
    with(|app| {
        let mut scratch = std::mem::take(&mut app.scratch);
        scratch.resize(data.length() as usize, 0);
        data.copy_to(&mut scratch);
        app.with_session(id, |s, _| s.on_data(conn, &scratch, now_ms()));
        app.scratch = scratch;
    });
}

/// Bytes of a connection from the sockets' Worker, already copied out of its ring.
pub fn on_peer_bytes(id: InfoHash, conn: ConnId, data: &[u8]) {
    with(|app| app.with_session(id, |s, _| s.on_data(conn, data, now_ms())));
}

/// The sockets' Worker saw `n` more bytes of a connection go out.
pub fn on_peer_sent(id: InfoHash, conn: ConnId, n: u64) {
    with(|app| app.with_session(id, |s, _| s.on_sent(conn, n)));
}

pub fn on_peer_closed(id: InfoHash, conn: ConnId, code: u16, reason: String) {
    with(|app| app.with_session(id, |s, _| s.on_closed(conn, code, &reason, now_ms())));
}

impl App {
    fn find(&mut self, id: InfoHash) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.id == id)
    }

    /// Runs `f` on one torrent, then drives it and re-arms the timer.
    fn with_session(&mut self, id: InfoHash, f: impl FnOnce(&mut Session, &str)) {
        let now = now_ms();
        let mut tasks = Vec::new();
        let ws_base = self.ws_base.clone();
        if let Some(s) = self.find(id) {
            f(s, &ws_base);
            s.drive(now, &ws_base, &mut tasks);
        }
        self.run(id, tasks);
        self.reschedule(now);
    }

    fn tick(&mut self) {
        let now = now_ms();
        let check_until = now + CHECK_SLICE_MS;
        let mut all = Vec::new();
        for s in &mut self.sessions {
            let mut tasks = Vec::new();
            s.tick(now, check_until, &self.ws_base, &mut tasks);
            all.push((s.id, tasks));
        }
        for (id, tasks) in all {
            self.run(id, tasks);
        }
        if now >= self.next_snapshot {
            self.post_snapshot(now);
        }
        self.reschedule(now);
    }

    fn post_snapshot(&mut self, now: u64) {
        self.next_snapshot = now + SNAPSHOT_MS;
        let torrents = Array::new();
        for s in &self.sessions {
            torrents.push(&s.snapshot(now));
        }
        post(Obj::new().set("type", "snapshot").set("torrents", torrents));
    }

    fn reschedule(&mut self, now: u64) {
        let news = self
            .sessions
            .iter_mut()
            .fold(false, |n, s| s.take_news() | n);
        if news {
            // A finished download shows as finished (and its Save buttons appear) on the next
            // turn of the event loop, not up to a snapshot period later.
            self.next_snapshot = now;
        }
        let mut due = self.next_snapshot;
        for s in &self.sessions {
            if let Some(d) = s.deadline(now) {
                due = due.min(d);
            }
        }
        self.timer.arm(due.max(now), now);
    }

    /// Starts the asynchronous work a session asked for.
    fn run(&self, id: InfoHash, tasks: Vec<Task>) {
        for task in tasks {
            let hex = id.to_hex();
            match task {
                Task::OpenStorage { total } => {
                    let opfs = self.opfs.clone();
                    spawn_local(async move {
                        let result = store::open(opfs, &hex, total).await;
                        with(|app| app.storage_opened(id, result));
                    });
                }
                Task::PersistInfo(raw) => {
                    if let Some(opfs) = self.opfs.clone() {
                        spawn_local(async move {
                            if let Err(e) = opfs.write_small(&format!("{hex}.info"), &raw).await {
                                report_error(
                                    Some(&hex),
                                    format!("cannot save the torrent's metadata: {e}"),
                                );
                            }
                        });
                    }
                }
                Task::Hash { piece, job, digest } => spawn_local(async move {
                    let result = hasher::finish(digest).await;
                    with(|app| {
                        app.with_session(id, |s, _| match result {
                            Ok(d) => s.engine.handle_piece_hash(piece, job, d),
                            Err(e) => s.fail(format!("hashing failed: {e}")),
                        })
                    });
                }),
                Task::Announce { url, path } => spawn_local(async move {
                    let result = announce::announce(path).await;
                    with(|app| app.announced(id, &url, result));
                }),
            }
        }
    }

    fn storage_opened(&mut self, id: InfoHash, result: Result<Store, String>) {
        match (self.find(id), result) {
            (Some(s), Ok(store)) => {
                s.attach(store);
                if s.phase == Phase::Checking && hasher::in_driver() {
                    spawn_local(check_pieces(id));
                }
            }
            (Some(s), Err(e)) => s.fail(e),
            // Removed while its file was opening: let go of the file and delete it.
            (None, Ok(store)) => {
                store.close();
                if let Some(opfs) = self.opfs.clone() {
                    spawn_local(async move {
                        let _ = opfs.remove(&id.to_hex()).await;
                    });
                }
            }
            (None, Err(_)) => {}
        }
        self.with_session(id, |_, _| {});
    }

    fn announced(&mut self, id: InfoHash, url: &str, result: Result<AnnounceResponse, Failure>) {
        self.with_session(id, |s, _| s.on_announce(url, result, now_ms()));
    }

    /// Adds a session (new or restored) and opens its data file if its metadata is known.
    fn insert(
        &mut self,
        id: InfoHash,
        info: Option<Info>,
        trackers: Vec<Vec<String>>,
        magnet: Option<Magnet>,
        paused: bool,
    ) {
        let total = info.as_ref().map(|i| i.total_length);
        let session = Session::new(
            id,
            info,
            trackers,
            magnet,
            self.peer_id,
            js::random_u64(),
            paused,
        );
        self.sessions.push(session);
        if let Some(total) = total {
            self.run(id, vec![Task::OpenStorage { total }]);
        }
        self.with_session(id, |_, _| {});
        self.post_snapshot(now_ms());
    }

    fn add(&mut self, msg: &JsValue) {
        let source = js::get(msg, "source").as_string();
        let quiet = js::get(msg, "quiet").is_truthy();
        let fail = |what: String| {
            let what = match &source {
                Some(s) => format!("Could not add {s}: {what}"),
                None => format!("Could not add the torrent: {what}"),
            };
            report_error(None, what);
        };
        if let Some(uri) = js::get(msg, "magnet").as_string() {
            let magnet = match Magnet::parse(uri.trim()) {
                Ok(m) => m,
                Err(e) => return fail(e.to_string()),
            };
            let id = magnet.info_hash;
            if self.find(id).is_some() {
                if !quiet {
                    fail("it is already in the list".into());
                }
                return;
            }
            self.persist(id, "magnet", magnet.to_uri().into_bytes());
            let trackers = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
            self.insert(id, None, trackers, Some(magnet), false);
            return;
        }
        let data = js::get(msg, "torrent");
        if !data.is_object() {
            return fail("no torrent file or magnet link was given".into());
        }
        let bytes = Uint8Array::new(&data);
        if bytes.length() as usize > MAX_TORRENT_FILE {
            return fail(format!(
                "the file is larger than {} MiB, too large for a .torrent",
                MAX_TORRENT_FILE >> 20
            ));
        }
        let bytes = bytes.to_vec();
        let meta = match Metainfo::from_bytes(&bytes) {
            Ok(m) => m,
            Err(e) => return fail(e.to_string()),
        };
        let id = meta.info.info_hash;
        if self.find(id).is_some() {
            if !quiet {
                fail("it is already in the list".into());
            }
            return;
        }
        self.persist(id, "torrent", bytes);
        self.insert(id, Some(meta.info), meta.trackers, None, false);
    }

    /// Writes a side file (`<hex>.<ext>`) so a reload finds the torrent again.
    fn persist(&self, id: InfoHash, ext: &'static str, bytes: Vec<u8>) {
        let Some(opfs) = self.opfs.clone() else {
            return;
        };
        spawn_local(async move {
            let hex = id.to_hex();
            if let Err(e) = opfs.write_small(&format!("{hex}.{ext}"), &bytes).await {
                report_error(
                    Some(&hex),
                    format!("cannot save the torrent for later visits: {e}"),
                );
            }
        });
    }

    fn id_of(&self, id: &str) -> Option<InfoHash> {
        let ih = InfoHash::from_hex(id)?;
        self.sessions.iter().any(|s| s.id == ih).then_some(ih)
    }

    fn pause(&mut self, id: &str) {
        let Some(ih) = self.id_of(id) else { return };
        self.with_session(ih, |s, _| s.pause());
        self.persist(ih, "paused", Vec::new());
        self.post_snapshot(now_ms());
    }

    fn resume(&mut self, id: &str) {
        let Some(ih) = self.id_of(id) else { return };
        self.with_session(ih, |s, _| s.resume(now_ms()));
        if let Some(opfs) = self.opfs.clone() {
            let name = format!("{id}.paused");
            spawn_local(async move {
                let _ = opfs.remove(&name).await;
            });
        }
        self.post_snapshot(now_ms());
    }

    fn remove(&mut self, id: &str) {
        let Some(ih) = self.id_of(id) else { return };
        let Some(pos) = self.sessions.iter().position(|s| s.id == ih) else {
            return;
        };
        let mut s = self.sessions.remove(pos);
        let stopped = s.stopped_announce();
        s.shutdown();
        let hex = s.hex.clone();
        let opfs = self.opfs.clone();
        spawn_local(async move {
            // The files first: a tracker that is slow to answer must not leave them behind
            // for a reload to bring the torrent back.
            if let Some(opfs) = opfs {
                for ext in ["", ".torrent", ".magnet", ".info", ".paused"] {
                    if let Err(e) = opfs.remove(&format!("{hex}{ext}")).await {
                        report_error(Some(&hex), format!("cannot delete {hex}{ext}: {e}"));
                    }
                }
            }
            if let Some(path) = stopped {
                let _ = announce::announce(path).await;
            }
        });
        // The socket closures of a removed session must outlive this call: `s` drops here, after
        // its sockets were detached from their handlers by `shutdown`.
        drop(s);
        post(Obj::new().set("type", "removed").set("id", id));
        self.post_snapshot(now_ms());
    }

    fn save(&mut self, id: &str, file: Option<f64>) {
        let Some(ih) = self.id_of(id) else { return };
        let Some(s) = self.find(ih) else { return };
        let (Some(info), Some(store)) = (s.engine.info(), s.store.clone()) else {
            return report_error(Some(id), "the torrent's data is not ready yet".into());
        };
        let index = file
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as usize);
        let Some((index, entry)) = index.and_then(|i| info.files.get(i).map(|e| (i, e))) else {
            return report_error(Some(id), "there is no such file in this torrent".into());
        };
        let done = s.engine.file_progress().get(index).copied().unwrap_or(0);
        if done < entry.length {
            return report_error(
                Some(id),
                format!("{} is not complete yet", entry.path.join("/")),
            );
        }
        let (offset, len, name) = (entry.offset, entry.length, download_name(&entry.path));
        let stable = s.engine.is_complete();
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
