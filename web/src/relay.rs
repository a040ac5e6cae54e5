//! The peer sockets' own Worker (`www/socket-worker.js`), used when the page is cross-origin
//! isolated so that SharedArrayBuffer exists.
//!
//! Chromium hands a WebSocket's received bytes to the Worker that owns it through a small pipe
//! that only that Worker's thread empties. Owned by this (the engine's) Worker, the pipe stays full
//! while the engine decodes, writes and hashes, and the network service waits. The sockets'
//! Worker does nothing but move each socket's bytes into a ring in shared memory (a few MiB per
//! connection), so the pipe keeps flowing while the engine works; we copy from the ring into wasm
//! memory when we run. A full ring stops the sockets' Worker, which bounds memory and pushes back
//! on the peer as before.
//!
//! Without cross-origin isolation (or with `?sockets=direct` in the page's address) the engine's
//! Worker owns its WebSockets itself (`socket.rs`).

use crate::inbox::{self, Input};
use crate::js::{self, global, Obj};
use js_sys::{Array, Atomics, Int32Array, SharedArrayBuffer, Uint8Array};
use protocol::engine::ConnId;
use protocol::InfoHash;
use std::cell::RefCell;
use std::collections::HashMap;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    ErrorEvent, MessageChannel, MessageEvent, MessagePort, Worker, WorkerOptions, WorkerType,
};

/// The ring's Int32 counters before its data; see `www/socket-worker.js`.
const HEADER: u32 = 16;
const WRITE: u32 = 0;
const READ: u32 = 1;
const CLOSED: u32 = 2;
/// Data bytes per connection's ring (a power of two). Its pages are touched as the ring wraps, so
/// this is memory per busy peer (80 MiB at the page's 40 peers): bench_tab gave 169, 172 and 179
/// MB/s with rings of 1, 2 and 4 MiB, within the runs' spread.
const RING: u32 = 2 << 20;
/// V8 copies to or from shared memory with relaxed atomic stores: a word at a time where source
/// and destination are aligned alike, else a byte at a time, several times slower. Ring offsets
/// are arbitrary, so copies out of the ring land at the same offset modulo a word.
const WORD: usize = 8;
/// The most bytes handed to the engine in one call.
const CHUNK: usize = 1 << 20;
/// The most bytes one task takes from one ring before it lets timers, promises and the other
/// connections have their turn.
const TASK_BUDGET: usize = 8 << 20;

thread_local! {
    static RELAY: RefCell<Option<Relay>> = const { RefCell::new(None) };
}

struct Relay {
    worker: Worker,
    /// Posts a slot's number to ourselves: drain it again in a later task.
    later: MessagePort,
    _later_rx: MessagePort,
    next_slot: u32,
    slots: HashMap<u32, Slot>,
    _onmessage: Closure<dyn FnMut(MessageEvent)>,
    _onerror: Closure<dyn FnMut(ErrorEvent)>,
    _onlater: Closure<dyn FnMut(MessageEvent)>,
}

struct Slot {
    id: InfoHash,
    conn: ConnId,
    ctrl: Int32Array,
    data: Uint8Array,
    /// Our copy of the ring's read counter.
    read: i32,
}

/// Starts the sockets' Worker where shared memory is available and the page did not ask for
/// `?sockets=direct`. Returns whether sockets go through it.
pub fn start() -> bool {
    let isolated = js::get(&global(), "crossOriginIsolated").is_truthy();
    let direct = js::query_has("sockets=direct");
    if !isolated || direct {
        return false;
    }
    match spawn() {
        Ok(relay) => {
            RELAY.with(|cell| *cell.borrow_mut() = Some(relay));
            true
        }
        Err(e) => {
            web_sys::console::warn_1(
                &format!("bt: no sockets Worker: {}", js::err_text(&e)).into(),
            );
            false
        }
    }
}

fn spawn() -> Result<Relay, JsValue> {
    let opts = WorkerOptions::new();
    opts.set_type(WorkerType::Module);
    let worker = Worker::new_with_options("/socket-worker.js", &opts)?;
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| on_message(e.data()));
    worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    // Only a script that failed to load or throws lands here: peers could not be reached.
    let onerror = Closure::<dyn FnMut(ErrorEvent)>::new(|e: ErrorEvent| {
        js::post(Obj::new().set("type", "error").set(
            "message",
            format!("The peer sockets' Worker failed: {}", e.message()),
        ));
    });
    worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
    let channel = MessageChannel::new()?;
    let onlater = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| {
        if let Some(slot) = e.data().as_f64() {
            drain(slot as u32, TASK_BUDGET);
        }
    });
    let rx = channel.port2();
    rx.set_onmessage(Some(onlater.as_ref().unchecked_ref()));
    Ok(Relay {
        worker,
        later: channel.port1(),
        _later_rx: rx,
        next_slot: 0,
        slots: HashMap::new(),
        _onmessage: onmessage,
        _onerror: onerror,
        _onlater: onlater,
    })
}

/// Whether `start` started the sockets' Worker.
pub fn active() -> bool {
    RELAY.with(|cell| cell.borrow().is_some())
}

fn post(relay: &Relay, msg: Obj, transfer: Option<&JsValue>) {
    let result = match transfer {
        Some(t) => relay
            .worker
            .post_message_with_transfer(&msg.into(), &Array::of1(t)),
        None => relay.worker.post_message(&msg.into()),
    };
    if let Err(e) = result {
        web_sys::console::error_1(&e);
    }
}

/// Opens a WebSocket to `url` in the sockets' Worker; its events come back to `app` as those of
/// `conn` of torrent `id`. Returns the slot that names it.
pub fn open(id: InfoHash, conn: ConnId, url: &str) -> u32 {
    RELAY.with(|cell| {
        let mut guard = cell.borrow_mut();
        let relay = guard.as_mut().expect("relay::open without relay::start");
        let slot = relay.next_slot;
        relay.next_slot = relay.next_slot.wrapping_add(1);
        let ring = SharedArrayBuffer::new(HEADER + RING);
        let ctrl = Int32Array::new_with_byte_offset_and_length(&ring, 0, HEADER / 4);
        let data = Uint8Array::new_with_byte_offset_and_length(&ring, HEADER, RING);
        relay.slots.insert(
            slot,
            Slot {
                id,
                conn,
                ctrl,
                data,
                read: 0,
            },
        );
        post(
            relay,
            Obj::new()
                .set("type", "open")
                .set("slot", slot)
                .set("url", url)
                .set("ring", ring),
            None,
        );
        slot
    })
}

/// Hands `bytes` to the slot's WebSocket.
pub fn send(slot: u32, bytes: &[u8]) {
    RELAY.with(|cell| {
        if let Some(relay) = cell.borrow().as_ref() {
            let buf = Uint8Array::from(bytes).buffer();
            post(
                relay,
                Obj::new()
                    .set("type", "send")
                    .set("slot", slot)
                    .set("data", buf.clone()),
                Some(&buf),
            );
        }
    });
}

/// Closes the slot's WebSocket; nothing more is reported for it.
pub fn close(slot: u32) {
    RELAY.with(|cell| {
        let mut guard = cell.borrow_mut();
        let Some(relay) = guard.as_mut() else { return };
        if let Some(s) = relay.slots.remove(&slot) {
            // Wakes the sockets' Worker if it waits for room in this ring.
            let _ = Atomics::store(&s.ctrl, CLOSED, 1);
            let _ = Atomics::notify(&s.ctrl, READ);
            post(
                relay,
                Obj::new().set("type", "close").set("slot", slot),
                None,
            );
        }
    });
}

fn on_message(msg: JsValue) {
    let kind = js::get(&msg, "type").as_string().unwrap_or_default();
    let Some(slot) = js::get(&msg, "slot").as_f64().map(|s| s as u32) else {
        return;
    };
    let Some((id, conn)) = RELAY.with(|cell| {
        let guard = cell.borrow();
        let s = guard.as_ref()?.slots.get(&slot)?;
        Some((s.id, s.conn))
    }) else {
        return;
    };
    match kind.as_str() {
        "data" => drain(slot, TASK_BUDGET),
        "open" => inbox::push(Input::PeerOpen { id, conn }),
        "sent" => {
            let n = js::get(&msg, "n").as_f64().unwrap_or(0.0) as u64;
            inbox::push(Input::PeerSent { id, conn, n });
        }
        "closed" => {
            // Every byte before the close is in the ring: the engine sees them first.
            drain(slot, usize::MAX);
            let still_open = RELAY.with(|cell| {
                cell.borrow_mut()
                    .as_mut()
                    .and_then(|r| r.slots.remove(&slot))
                    .is_some()
            });
            if still_open {
                let code = js::get(&msg, "code").as_f64().unwrap_or(1006.0) as u16;
                let reason = js::get(&msg, "reason").as_string().unwrap_or_default();
                inbox::push(Input::PeerClosed {
                    id,
                    conn,
                    code,
                    reason,
                });
            }
        }
        _ => {}
    }
}

/// Hands the slot's ring to the engine, at most `budget` bytes now and the rest in a later task.
fn drain(slot: u32, budget: usize) {
    let mut done = 0;
    while done < budget {
        let Some((id, conn, mut bytes, skew, n)) = RELAY.with(|cell| {
            let mut guard = cell.borrow_mut();
            let relay = guard.as_mut()?;
            let s = relay.slots.get_mut(&slot)?;
            let write = Atomics::load(&s.ctrl, WRITE).ok()?;
            let avail = write.wrapping_sub(s.read) as u32 as usize;
            if avail == 0 {
                return None;
            }
            let cap = s.data.length() as usize;
            let at = (s.read as u32 as usize) & (cap - 1);
            let n = avail.min(cap - at).min(CHUNK);
            let mut bytes = inbox::buffer(n + WORD);
            let skew = aligned_skew(at, bytes.as_ptr() as usize);
            s.data
                .subarray(at as u32, (at + n) as u32)
                .copy_to(&mut bytes[skew..skew + n]);
            // Room for the sockets' Worker at once, while the engine works on these bytes.
            s.read = s.read.wrapping_add(n as i32);
            let _ = Atomics::store(&s.ctrl, READ, s.read);
            let _ = Atomics::notify(&s.ctrl, READ);
            Some((s.id, s.conn, bytes, skew, n))
        }) else {
            return;
        };
        done += n;
        bytes.truncate(skew + n);
        inbox::push(Input::PeerData {
            id,
            conn,
            data: bytes,
            skip: skew,
        });
    }
    RELAY.with(|cell| {
        if let Some(relay) = cell.borrow().as_ref() {
            let _ = relay.later.post_message(&slot.into());
        }
    });
}

/// Where in a buffer at address `dst` to copy bytes read from ring offset `at`, so that both sit
/// at the same offset modulo a word (the ring's data starts on a word boundary).
fn aligned_skew(at: usize, dst: usize) -> usize {
    at.wrapping_sub(dst) & (WORD - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_out_of_the_ring_keep_the_ring_offsets_alignment() {
        for at in 0..3 * WORD {
            for dst in 0..3 * WORD {
                let skew = aligned_skew(at, dst);
                assert!(skew < WORD);
                assert_eq!((dst + skew) % WORD, at % WORD, "at {at}, dst {dst}");
            }
        }
    }
}
