//! The page's view of the session: each torrent's `Status` as the plain object `www/app.js`
//! renders.

use crate::js::{self, Obj};
use js_sys::{Array, Uint8Array};
use protocol::client::{Session, Status};
use protocol::InfoHash;
use wasm_bindgen::JsValue;

/// Posts `{type: "snapshot", torrents: [...]}` in the page's order.
pub fn send(session: &Session, order: &[InfoHash], now: u64) {
    let torrents = Array::new();
    for id in order {
        if let Some(st) = session.status(now, *id) {
            torrents.push(&object(&st));
        }
    }
    js::post(Obj::new().set("type", "snapshot").set("torrents", torrents));
}

fn object(st: &Status) -> JsValue {
    let peers = Array::new();
    for p in &st.peers {
        peers.push(
            &Obj::new()
                .set("addr", p.addr.to_string())
                .set("client", p.client.clone())
                .set("down", p.download_rate)
                .set("up", p.upload_rate)
                .set("progress", p.progress)
                .into(),
        );
    }
    let files = Array::new();
    for f in &st.files {
        files.push(
            &Obj::new()
                .set("path", f.path.clone())
                .set("size", f.size as f64)
                .set("done", f.done as f64)
                .into(),
        );
    }
    Obj::new()
        .set("id", st.info_hash.to_hex())
        .set("name", st.name.clone())
        .set("size", st.total as f64)
        .set("progress", st.progress)
        .set("downloaded", st.downloaded as f64)
        .set("uploaded", st.uploaded as f64)
        .set("downRate", st.download_rate)
        .set("upRate", st.upload_rate)
        .set_opt("eta", st.eta_secs)
        .set("state", st.state.as_str())
        .set_opt("error", st.error.clone())
        .set_opt("warning", st.warning.clone())
        .set("peerCount", st.peers_connected as u32)
        .set("peers", peers)
        .set("pieceCount", st.pieces_total)
        .set("pieces", Uint8Array::from(&st.piece_map[..]))
        .set("files", files)
        .into()
}

/// The last component of a torrent path: a download cannot create folders.
pub fn download_name(path: &[String]) -> String {
    path.last()
        .cloned()
        .unwrap_or_else(|| "download".to_string())
}
