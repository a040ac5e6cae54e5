//! The engine in a Web Worker (see DESIGN.md): one `protocol` engine per torrent, one WebSocket
//! per peer through the bridge, one OPFS file per torrent, and snapshots for the page.
//!
//! `www/worker.js` loads this module, then calls [`start`] once and [`command`] for every
//! message from the page. Messages to the page: `ready`, `snapshot`, `file`, `removed`, `error`,
//! `fatal` (see `www/app.js`).

mod announce;
mod app;
mod hasher;
mod js;
mod opfs;
mod relay;
mod session;
mod snapshot;
mod socket;
mod store;
mod write_behind;

use wasm_bindgen::prelude::*;

/// Opens storage and restores saved torrents; commands sent before it resolves must wait.
#[wasm_bindgen]
pub async fn start() {
    app::start().await;
}

/// One message from the page.
#[wasm_bindgen]
pub fn command(msg: JsValue) {
    app::command(msg);
}
