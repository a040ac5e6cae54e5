//! Commands from the page: `{type: "add", torrent: Uint8Array|ArrayBuffer, source?}`,
//! `{type: "add", magnet: string, quiet?}`, `{type: "pause"|"resume"|"remove", id}`,
//! `{type: "save", id, file}`.

use crate::driver::Driver;
use crate::js::{self, now_ms, post, Obj};
use crate::persist::{self, report_error, SUFFIXES};
use crate::snapshot::download_name;
use js_sys::Uint8Array;
use protocol::client::{AddError, AddTorrent};
use protocol::magnet::Magnet;
use protocol::metainfo::Metainfo;
use protocol::InfoHash;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

/// A .torrent larger than this is refused before parsing.
const MAX_TORRENT_FILE: usize = 32 << 20;

impl Driver {
    pub fn command(&mut self, msg: JsValue) {
        let kind = js::get(&msg, "type").as_string().unwrap_or_default();
        let id = js::get(&msg, "id").as_string().unwrap_or_default();
        match kind.as_str() {
            "add" => self.add_command(&msg),
            "pause" => self.pause(&id),
            "resume" => self.resume(&id),
            "remove" => self.remove(&id),
            "save" => self.save(&id, js::get(&msg, "file").as_f64()),
            other => report_error(None, format!("unknown command {other:?}")),
        }
    }

    /// Adds a torrent (new or restored) to the session and the page's list.
    pub fn insert(&mut self, add: AddTorrent) -> Result<(), AddError> {
        let now = now_ms();
        let id = self.session.add(now, add)?;
        self.order.push(id);
        self.post_snapshot(now);
        Ok(())
    }

    fn add_command(&mut self, msg: &JsValue) {
        let source = js::get(msg, "source").as_string();
        let quiet = js::get(msg, "quiet").is_truthy();
        let fail = |what: String| {
            let what = match &source {
                Some(s) => format!("Could not add {s}: {what}"),
                None => format!("Could not add the torrent: {what}"),
            };
            report_error(None, what);
        };
        let (add, ext, bytes) = if let Some(uri) = js::get(msg, "magnet").as_string() {
            let magnet = match Magnet::parse(uri.trim()) {
                Ok(m) => m,
                Err(e) => return fail(e.to_string()),
            };
            let bytes = magnet.to_uri().into_bytes();
            (persist::from_magnet(magnet, None, false), "magnet", bytes)
        } else {
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
            match Metainfo::from_bytes(&bytes) {
                Ok(meta) => (persist::from_metainfo(meta, false), "torrent", bytes),
                Err(e) => return fail(e.to_string()),
            }
        };
        let id = add.info_hash;
        match self.insert(add) {
            Ok(()) => persist::save(self.opfs.clone(), id, ext, bytes),
            Err(AddError::Duplicate) if quiet => {}
            Err(e) => fail(e.to_string()),
        }
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
