// The peer sockets' Worker, started by the engine's Worker when the page is cross-origin
// isolated (web/src/relay.rs). Its only job is to take each WebSocket's bytes off Chromium's
// network pipe as soon as they arrive, while the engine's thread is busy with the previous ones,
// and put them in that connection's ring: a SharedArrayBuffer the engine's Worker reads.
//
// A ring is `HEADER` bytes of Int32 counters, then its data (a power of two in size):
//   [0] bytes written so far (wrapping), stored here;
//   [1] bytes read so far (wrapping), stored by the engine, which notifies on it;
//   [2] 1 once the engine has let go of the connection.
// A full ring blocks this Worker in Atomics.wait until the engine reads: then no pipe is drained,
// and Chromium and TCP push back on the peer as they would without us.
//
// From the engine: {type: 'open', slot, url, ring}, {type: 'send', slot, data: ArrayBuffer},
// {type: 'close', slot}. To the engine: {type: 'open', slot}, {type: 'data', slot} when a ring
// goes from empty to not empty, {type: 'sent', slot, n} for bytes that left `bufferedAmount`,
// {type: 'closed', slot, code, reason} after the last byte is in the ring.

const HEADER = 16;
/// How often we look at `bufferedAmount` while sent bytes wait in it.
const SENT_POLL_MS = 10;

const WORD = 8;
/// Reused by `alignedLike`; at most a ring plus 64 KiB, since one copy never exceeds the ring's room.
let stage = new Uint8Array(0);

const sockets = new Map();

self.onmessage = (event) => {
  const m = event.data;
  if (m.type === 'open') open(m.slot, m.url, m.ring);
  else if (m.type === 'send') send(m.slot, m.data);
  else if (m.type === 'close') close(m.slot);
};

function open(slot, url, ring) {
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (err) {
    self.postMessage({ type: 'closed', slot, code: 1006, reason: String(err?.message ?? err) });
    return;
  }
  ws.binaryType = 'arraybuffer';
  const s = {
    ws,
    ctrl: new Int32Array(ring, 0, 4),
    data: new Uint8Array(ring, HEADER),
    sent: 0,
    reported: 0,
    timer: 0,
  };
  sockets.set(slot, s);
  ws.onopen = () => self.postMessage({ type: 'open', slot });
  ws.onmessage = (e) => push(slot, s, new Uint8Array(e.data));
  // `error` is always followed by `close`.
  ws.onclose = (e) => {
    if (sockets.get(slot) !== s) return;
    sockets.delete(slot);
    clearTimeout(s.timer);
    self.postMessage({ type: 'closed', slot, code: e.code, reason: e.reason });
  };
}

/// Copies `bytes` into the slot's ring, waiting for room while it is full.
function push(slot, s, bytes) {
  const { ctrl, data } = s;
  const mask = data.length - 1;
  let off = 0;
  while (off < bytes.length) {
    if (Atomics.load(ctrl, 2) !== 0) return;
    const w = Atomics.load(ctrl, 0);
    const r = Atomics.load(ctrl, 1);
    const room = data.length - ((w - r) | 0);
    if (room === 0) {
      Atomics.wait(ctrl, 1, r, 1000);
      continue;
    }
    const n = Math.min(room, bytes.length - off);
    const at = w & mask;
    const first = Math.min(n, data.length - at);
    const src = alignedLike(bytes.subarray(off, off + n), at);
    data.set(src.subarray(0, first), at);
    if (n > first) data.set(src.subarray(first), 0);
    Atomics.store(ctrl, 0, (w + n) | 0);
    off += n;
    // Stored `write` before loading `read`, and the engine stores `read` before it loads `write`
    // again: one of us sees the other, so no data is left without a wake-up.
    if (Atomics.load(ctrl, 1) === w) self.postMessage({ type: 'data', slot });
  }
}

/// V8 copies into shared memory with relaxed atomic stores: a word at a time where source and
/// destination are aligned alike, else a byte at a time, several times slower. Ring offsets are
/// arbitrary, so bytes whose alignment differs from `at`'s are first moved (an ordinary memmove)
/// into a reused buffer at an offset that matches.
function alignedLike(bytes, at) {
  const skew = at & (WORD - 1);
  if ((bytes.byteOffset & (WORD - 1)) === skew) return bytes;
  if (stage.length < skew + bytes.length) stage = new Uint8Array(skew + bytes.length + (64 << 10));
  stage.set(bytes, skew);
  return stage.subarray(skew, skew + bytes.length);
}

function send(slot, buf) {
  const s = sockets.get(slot);
  if (!s) return;
  s.ws.send(buf);
  s.sent += buf.byteLength;
  report(slot, s);
}

function report(slot, s) {
  const gone = s.sent - s.ws.bufferedAmount - s.reported;
  if (gone > 0) {
    s.reported += gone;
    self.postMessage({ type: 'sent', slot, n: gone });
  }
  clearTimeout(s.timer);
  s.timer = s.ws.bufferedAmount > 0 ? setTimeout(() => report(slot, s), SENT_POLL_MS) : 0;
}

function close(slot) {
  const s = sockets.get(slot);
  if (!s) return;
  sockets.delete(slot);
  clearTimeout(s.timer);
  s.ws.onopen = s.ws.onmessage = s.ws.onclose = null;
  s.ws.close(1000);
}
