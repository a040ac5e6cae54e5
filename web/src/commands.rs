//! Commands from the page, read into a typed [`Command`]: `{type: "add", torrent:
//! Uint8Array|ArrayBuffer, source?}`, `{type: "add", magnet: string, quiet?}`,
//! `{type: "pause"|"resume"|"remove", id}`, `{type: "save", id, file}`.

use crate::js;
use js_sys::Uint8Array;
use protocol::client::AddTorrent;
use protocol::magnet::Magnet;
use protocol::metainfo::Metainfo;
use wasm_bindgen::JsValue;

/// A .torrent larger than this is refused before parsing.
const MAX_TORRENT_FILE: usize = 32 << 20;

pub enum Command {
    Add {
        add: Box<AddTorrent>,
        /// The side file that brings it back after a reload: its suffix and bytes.
        saved_as: (&'static str, Vec<u8>),
        /// An add of a torrent already in the list is no error (a magnet in the address).
        quiet: bool,
        /// How the page named what it added, for its error messages.
        source: Option<String>,
    },
    Pause(String),
    Resume(String),
    Remove(String),
    Save {
        id: String,
        file: Option<f64>,
    },
}

/// The command in `msg`, or the words for the page's error.
pub fn parse(msg: &JsValue) -> Result<Command, String> {
    let kind = js::get(msg, "type").as_string().unwrap_or_default();
    let id = js::get(msg, "id").as_string().unwrap_or_default();
    match kind.as_str() {
        "add" => parse_add(msg),
        "pause" => Ok(Command::Pause(id)),
        "resume" => Ok(Command::Resume(id)),
        "remove" => Ok(Command::Remove(id)),
        "save" => Ok(Command::Save {
            id,
            file: js::get(msg, "file").as_f64(),
        }),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn parse_add(msg: &JsValue) -> Result<Command, String> {
    let source = js::get(msg, "source").as_string();
    let quiet = js::get(msg, "quiet").is_truthy();
    let fail = |what: String| add_failed(source.as_deref(), &what);
    if let Some(uri) = js::get(msg, "magnet").as_string() {
        let magnet = Magnet::parse(uri.trim()).map_err(|e| fail(e.to_string()))?;
        let bytes = magnet.to_uri().into_bytes();
        return Ok(Command::Add {
            add: Box::new(crate::persist::from_magnet(magnet, None, false)),
            saved_as: ("magnet", bytes),
            quiet,
            source,
        });
    }
    let data = js::get(msg, "torrent");
    if !data.is_object() {
        return Err(fail("no torrent file or magnet link was given".into()));
    }
    let bytes = Uint8Array::new(&data);
    if bytes.length() as usize > MAX_TORRENT_FILE {
        return Err(fail(format!(
            "the file is larger than {} MiB, too large for a .torrent",
            MAX_TORRENT_FILE >> 20
        )));
    }
    let bytes = bytes.to_vec();
    let meta = Metainfo::from_bytes(&bytes).map_err(|e| fail(e.to_string()))?;
    Ok(Command::Add {
        add: Box::new(crate::persist::from_metainfo(meta, false)),
        saved_as: ("torrent", bytes),
        quiet,
        source,
    })
}

/// What to say when an add fails for the session (the source, if the page named one).
pub fn add_failed(source: Option<&str>, what: &str) -> String {
    match source {
        Some(s) => format!("Could not add {s}: {what}"),
        None => format!("Could not add the torrent: {what}"),
    }
}
