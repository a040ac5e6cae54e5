//! One WebSocket to the bridge per peer connection: the bridge turns it into one TCP connection
//! and carries the byte stream in binary frames.

use crate::inbox::{self, Input};
use crate::relay;
use js_sys::{ArrayBuffer, Uint8Array};
use protocol::client::contract::{accept_path, peer_path};
use protocol::engine::ConnId;
use protocol::InfoHash;
use std::collections::VecDeque;
use std::net::SocketAddr;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

/// We hand the browser more bytes only while fewer than this wait in `bufferedAmount`.
const MAX_BUFFERED: u64 = 1 << 20;
/// The largest WebSocket message we send: the bridge refuses messages over 1 MiB, and the
/// engine's output for one peer can be a little more than that (its 1 MiB upload window plus a
/// block).
const MAX_SEND: usize = 256 * 1024;

pub struct PeerSocket {
    link: Link,
    /// Dialled in through the bridge's port: the session knows it since `handle_incoming`.
    pub incoming: bool,
    pub opened: bool,
    /// Bytes from the engine not yet given to the browser (over `MAX_BUFFERED`, or not open yet).
    backlog: VecDeque<Vec<u8>>,
    /// Bytes of the backlog's front already sent.
    front_sent: usize,
    /// Bytes given to `send` and not yet reported to the engine as sent.
    in_flight: u64,
    /// Through the sockets' Worker: bytes it saw leave `bufferedAmount`, not yet in `drained`.
    acked: u64,
}

/// Who owns the WebSocket.
enum Link {
    /// This Worker, with our handlers on it.
    Direct {
        ws: WebSocket,
        _onopen: Closure<dyn FnMut(Event)>,
        _onmessage: Closure<dyn FnMut(MessageEvent)>,
        _onclose: Closure<dyn FnMut(CloseEvent)>,
    },
    /// The sockets' Worker (`relay.rs`), by slot.
    Relay(u32),
}

/// `ws://host/peer?addr=..&enc=prefer` for the page's own bridge: the bridge makes the MSE
/// handshake towards the peer and falls back to a plain one if the peer does not speak it, as
/// users of other clients expect by default. (A page setting comes later.)
pub fn peer_url(ws_base: &str, addr: SocketAddr) -> String {
    format!(
        "{ws_base}{}",
        peer_path(addr, protocol::engine::Encryption::Prefer)
    )
}

impl PeerSocket {
    pub fn connect(
        ws_base: &str,
        id: InfoHash,
        conn: ConnId,
        addr: SocketAddr,
    ) -> Result<Self, String> {
        Self::open(&peer_url(ws_base, addr), id, conn, false)
    }

    /// The tunnel of a peer that dialled the bridge's port for us (`offer` from `/listen`).
    pub fn accept(ws_base: &str, id: InfoHash, conn: ConnId, offer: u64) -> Result<Self, String> {
        Self::open(&format!("{ws_base}{}", accept_path(offer)), id, conn, true)
    }

    fn open(url: &str, id: InfoHash, conn: ConnId, incoming: bool) -> Result<Self, String> {
        let url = url.to_string();
        let link = if relay::active() {
            Link::Relay(relay::open(id, conn, &url))
        } else {
            direct(&url, id, conn)?
        };
        Ok(PeerSocket {
            link,
            incoming,
            opened: false,
            backlog: VecDeque::new(),
            front_sent: 0,
            in_flight: 0,
            acked: 0,
        })
    }

    /// Sends `data` now as far as the browser's buffer has room, and keeps the rest. `data` is
    /// left empty; in the common case (nothing waiting, room to send) it keeps its capacity, so
    /// the session's next message needs no allocation.
    pub fn queue(&mut self, data: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        self.flush();
        if self.backlog.is_empty() && self.opened {
            let sent = self.send_from(data, 0);
            if sent == data.len() {
                data.clear();
                return;
            }
            self.front_sent = sent;
        }
        self.backlog.push_back(std::mem::take(data));
    }

    /// Sends from the backlog while the browser's buffer has room.
    pub fn flush(&mut self) {
        if !self.opened {
            return;
        }
        while let Some(front) = self.backlog.pop_front() {
            let sent = self.send_from(&front, self.front_sent);
            if sent < front.len() {
                self.front_sent = sent;
                self.backlog.push_front(front);
                break;
            }
            self.front_sent = 0;
        }
    }

    /// Sends `buf[from..]` in messages while the browser's buffer has room; returns how far it got.
    fn send_from(&mut self, buf: &[u8], mut from: usize) -> usize {
        while from < buf.len() && self.buffered() < MAX_BUFFERED {
            let end = buf.len().min(from + MAX_SEND);
            let chunk = &buf[from..end];
            match &self.link {
                Link::Direct { ws, .. } => {
                    if ws.send_with_u8_array(chunk).is_err() {
                        break;
                    }
                }
                Link::Relay(slot) => relay::send(*slot, chunk),
            }
            self.in_flight += (end - from) as u64;
            from = end;
        }
        from
    }

    /// Bytes handed to the browser that it has not put on the wire yet.
    fn buffered(&self) -> u64 {
        match &self.link {
            Link::Direct { ws, .. } => u64::from(ws.buffered_amount()),
            Link::Relay(_) => self.in_flight.saturating_sub(self.acked),
        }
    }

    /// The sockets' Worker saw `n` more bytes leave `bufferedAmount`.
    pub fn on_sent(&mut self, n: u64) {
        self.acked += n;
    }

    /// Bytes that left `bufferedAmount` since the last call: they are on the wire.
    pub fn drained(&mut self) -> usize {
        let gone = self.in_flight.saturating_sub(self.buffered());
        self.in_flight -= gone;
        if let Link::Relay(_) = self.link {
            self.acked = 0;
        }
        gone as usize
    }

    /// True while bytes wait in the backlog or in the browser's buffer.
    pub fn pending(&self) -> bool {
        self.in_flight > 0 || !self.backlog.is_empty()
    }

    /// Closes without reporting back: the engine already forgot this connection.
    pub fn close(&self) {
        match &self.link {
            Link::Direct { ws, .. } => {
                ws.set_onopen(None);
                ws.set_onmessage(None);
                ws.set_onclose(None);
                let _ = ws.close_with_code(1000);
            }
            Link::Relay(slot) => relay::close(*slot),
        }
    }
}

/// A WebSocket of this Worker's own, its events going to `app`.
fn direct(url: &str, id: InfoHash, conn: ConnId) -> Result<Link, String> {
    let ws = WebSocket::new(url).map_err(|e| crate::js::err_text(&e))?;
    ws.set_binary_type(BinaryType::Arraybuffer);
    let onopen =
        Closure::<dyn FnMut(Event)>::new(move |_| inbox::push(Input::PeerOpen { id, conn }));
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Ok(buf) = e.data().dyn_into::<ArrayBuffer>() {
            let bytes = Uint8Array::new(&buf);
            let mut data = inbox::buffer(bytes.length() as usize);
            bytes.copy_to(&mut data);
            inbox::push(Input::PeerData {
                id,
                conn,
                data,
                skip: 0,
            });
        }
    });
    // `error` is always followed by `close`, so `close` alone reports the end.
    let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
        inbox::push(Input::PeerClosed {
            id,
            conn,
            code: e.code(),
            reason: e.reason(),
        });
    });
    ws.set_onopen(Some(onopen.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    ws.set_onclose(Some(onclose.as_ref().unchecked_ref()));
    Ok(Link::Direct {
        ws,
        _onopen: onopen,
        _onmessage: onmessage,
        _onclose: onclose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_url_escapes_v6_brackets_and_colons() {
        assert_eq!(
            peer_url("ws://h:1", "1.2.3.4:5".parse().unwrap()),
            "ws://h:1/peer?addr=1.2.3.4%3A5&enc=prefer"
        );
        assert_eq!(
            peer_url("wss://h", "[::1]:80".parse().unwrap()),
            "wss://h/peer?addr=%5B%3A%3A1%5D%3A80&enc=prefer"
        );
    }
}
