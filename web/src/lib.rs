//! The engine in a Web Worker (see DESIGN.md): the client session of `protocol`, one WebSocket
//! per peer through the bridge, one OPFS file per torrent, and snapshots for the page.
//!
//! `www/worker.js` loads this module, then calls [`start`] once and [`command`] for every
//! message from the page. Messages to the page: `ready`, `snapshot`, `file`, `removed`, `error`,
//! `fatal` (see `www/app.js`).
//!
//! Every browser event becomes an input in one queue (`inbox`) that the driver (`driver`) takes
//! in order; page commands are in `commands`, what survives a reload in `persist`.

mod announce;
mod commands;
mod driver;
mod hasher;
mod inbox;
mod js;
mod listen;
mod opfs;
mod persist;
mod relay;
mod snapshot;
mod socket;
mod store;
mod write_behind;

use inbox::Input;
use js::{global, post, Obj};
use protocol::client::{Config, Session};
use protocol::PeerId;
use wasm_bindgen::prelude::*;

/// Opens storage, restores saved torrents, and starts taking commands.
#[wasm_bindgen]
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
    let opfs = opfs::Opfs::open().await;
    let relayed = relay::start();
    let location = global().location();
    let scheme = if location.protocol() == "https:" {
        "wss"
    } else {
        "ws"
    };
    let ws_base = format!("{scheme}://{}", location.host());
    // The bridge accepts peers for us on a port of its own: that is the port to announce.
    let listen = match listen::Listen::open(&ws_base) {
        Ok(l) => Some(l),
        Err(e) => {
            web_sys::console::warn_1(&format!("bt: no /listen: {e}").into());
            None
        }
    };
    let port = match &listen {
        Some(l) => wait_for_port(l).await,
        None => None,
    };
    let mut config = Config::default();
    // The bridge limits tunnels per client; stay below where it answers "busy".
    config.engine.max_peers = 40;
    config.engine.driver_hashes = hasher::in_driver();
    // The tab's bytes are plain BitTorrent: the bridge makes any encryption towards the peer.
    config.engine.encryption = protocol::engine::Encryption::Off;
    // Without the bridge's port nobody can dial us: port 0 is announced.
    config.listen = port.map(|p| std::net::SocketAddr::from(([0, 0, 0, 0], p)));
    let session = Session::new(config, PeerId::generate(js::random_u64()), js::random_u64());
    inbox::start(Box::new(driver::Driver::new(
        session,
        opfs.clone(),
        ws_base,
        listen,
    )));
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
        for add in persist::restore(&opfs).await {
            inbox::push(Input::Restore(add));
        }
    }
    inbox::push(Input::Timer);
}

/// The bridge's port for our peers, which it says as soon as `/listen` opens; `None` if the socket
/// ends or says nothing within a few seconds (an older bridge).
async fn wait_for_port(listen: &listen::Listen) -> Option<u16> {
    const WAIT_MS: u64 = 3000;
    let start = js::now_ms();
    while js::now_ms() < start + WAIT_MS {
        if let Some(p) = listen.port() {
            return Some(p);
        }
        if listen.closed() {
            return None;
        }
        js::sleep(10).await;
    }
    None
}

/// One message from the page.
#[wasm_bindgen]
pub fn command(msg: JsValue) {
    inbox::push(Input::Command(msg));
}
