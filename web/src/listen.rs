//! The tab's `/listen` WebSocket to its bridge: the bridge accepts peers on a TCP port for the
//! tab, says which (the port the tab announces), and offers each peer that dials in for a torrent
//! the tab serves. The tab says which torrents it serves.

use crate::inbox::{self, Input};
use protocol::client::contract::{decode_listen, encode_listen, FromBridge, FromTab, LISTEN_PATH};
use protocol::InfoHash;
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

pub struct Listen {
    ws: WebSocket,
    /// The bridge's port for our peers, once it said.
    port: Rc<Cell<Option<u16>>>,
    /// The socket ended (or never opened): no port will come.
    closed: Rc<Cell<bool>>,
    _onmessage: Closure<dyn FnMut(MessageEvent)>,
    _onclose: Closure<dyn FnMut(CloseEvent)>,
}

impl Listen {
    pub fn open(ws_base: &str) -> Result<Listen, String> {
        let ws = WebSocket::new(&format!("{ws_base}{LISTEN_PATH}"))
            .map_err(|e| crate::js::err_text(&e))?;
        let port = Rc::new(Cell::new(None));
        let closed = Rc::new(Cell::new(false));
        let seen = port.clone();
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let Some(text) = e.data().as_string() else {
                return;
            };
            match decode_listen::<FromBridge>(&text) {
                Some(FromBridge::Port { port }) => seen.set(Some(port)),
                Some(FromBridge::Incoming {
                    offer,
                    info_hash,
                    addr,
                }) => {
                    let (Some(id), Ok(addr)) = (InfoHash::from_hex(&info_hash), addr.parse())
                    else {
                        return;
                    };
                    inbox::push(Input::Incoming { id, offer, addr });
                }
                None => web_sys::console::warn_1(&"bt: /listen sent something unknown".into()),
            }
        });
        let ended = closed.clone();
        let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |_| ended.set(true));
        ws.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        ws.set_onclose(Some(onclose.as_ref().unchecked_ref()));
        Ok(Listen {
            ws,
            port,
            closed,
            _onmessage: onmessage,
            _onclose: onclose,
        })
    }

    pub fn port(&self) -> Option<u16> {
        self.port.get()
    }

    pub fn closed(&self) -> bool {
        self.closed.get()
    }

    /// Peers that dial in for `id` are to be offered to us (or no longer).
    pub fn serve(&self, id: InfoHash, serve: bool) {
        let info_hash = id.to_hex();
        let msg = match serve {
            true => FromTab::Serve { info_hash },
            false => FromTab::Unserve { info_hash },
        };
        // Before the socket opens a send throws; `start` waits for the port, so this is rare,
        // and the torrent then only misses peers that dial in.
        let _ = self.ws.send_with_str(&encode_listen(&msg));
    }
}
