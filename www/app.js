// The page: adds torrents, shows the Worker's snapshots, and hands finished files to the browser.
// The engine itself runs in worker.js (wasm); this module only talks to it with messages.

const MAX_TORRENT_FILE = 32 << 20;

const STATE_LABELS = {
  metadata: 'Fetching metadata',
  checking: 'Checking',
  downloading: 'Downloading',
  seeding: 'Seeding',
  paused: 'Paused',
  error: 'Error',
};

const $ = (sel, root = document) => root.querySelector(sel);

/** Creates an element: `h('button', {class: 'save', 'data-file': 0}, 'Save')`. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
  node.append(...children);
  return node;
}

/** Sets text only when it changed, so the DOM (and screen readers) see no churn. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node, name, value) {
  const v = String(value);
  if (node.getAttribute(name) !== v) node.setAttribute(name, v);
}

export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatRate(n) {
  return `${formatBytes(Math.round(n || 0))}/s`;
}

export function formatEta(secs) {
  if (secs == null || !Number.isFinite(secs)) return '—';
  secs = Math.round(secs);
  if (secs < 60) return `${secs} s`;
  const m = Math.floor(secs / 60);
  if (m < 60) return `${m} min ${secs % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} days`;
}

// ---- alerts ------------------------------------------------------------------------------

const alerts = $('#alerts');

function showAlert(message) {
  for (const item of alerts.querySelectorAll('.alert-item')) {
    if (item.dataset.message === message) return;
  }
  const close = h('button', { type: 'button', class: 'dismiss', 'aria-label': 'Dismiss this message' }, '×');
  const item = h('p', { class: 'alert-item', 'data-message': message }, h('span', {}, message), close);
  close.addEventListener('click', () => {
    item.remove();
    $('#magnet-input').focus();
  });
  alerts.append(item);
}

// ---- the worker --------------------------------------------------------------------------

// For the benchmark's comparisons: `?hash=wasm` keeps piece hashing in wasm instead of WebCrypto,
// `?sockets=direct` keeps the WebSockets in the engine's Worker instead of a Worker of their own.
const pageQuery = new URLSearchParams(location.search);
const workerQuery = new URLSearchParams();
for (const key of ['hash', 'sockets']) {
  if (pageQuery.has(key)) workerQuery.set(key, pageQuery.get(key));
}
const worker = new Worker(
  workerQuery.size ? `/worker.js?${workerQuery}` : '/worker.js',
  { type: 'module' },
);
// For tests and the console: the last file handed to the browser, and the Worker's choices.
window.btTab = { worker, lastSaved: null, storage: null, hash: null, sockets: null };

worker.addEventListener('error', (e) => {
  showAlert(`The engine could not start: ${e.message || 'its script failed to load (is the bridge running?)'}`);
});

worker.addEventListener('message', (e) => {
  const msg = e.data;
  switch (msg?.type) {
    case 'ready':
      window.btTab.storage = msg.storage;
      window.btTab.hash = msg.hash;
      window.btTab.sockets = msg.sockets;
      if (msg.storage !== 'opfs') {
        showAlert('This browser has no Origin Private File System: downloads stay in memory and are lost on reload.');
      }
      break;
    case 'snapshot':
      render(msg.torrents);
      break;
    case 'file':
      download(msg);
      break;
    case 'removed':
      removeView(msg.id);
      break;
    case 'error':
    case 'fatal':
      showAlert(msg.message);
      break;
  }
});

function send(msg, transfer = []) {
  worker.postMessage(msg, transfer);
}

function download({ id, file, name, blob }) {
  window.btTab.lastSaved = { id, file, name, blob };
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own reference by then; the URL only needs to live until it starts.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// ---- adding torrents ---------------------------------------------------------------------

async function addFile(file) {
  if (file.size > MAX_TORRENT_FILE) {
    showAlert(`Could not add ${file.name}: it is too large to be a .torrent file.`);
    return;
  }
  try {
    const buf = await file.arrayBuffer();
    send({ type: 'add', torrent: new Uint8Array(buf), source: file.name }, [buf]);
  } catch (err) {
    showAlert(`Could not read ${file.name}: ${err.message}`);
  }
}

function addMagnet(text, quiet = false) {
  const magnet = text.trim();
  if (!magnet) {
    showAlert('Paste a magnet link (magnet:?xt=urn:btih:…) first.');
    return;
  }
  if (!magnet.toLowerCase().startsWith('magnet:')) {
    showAlert('Could not add the link: a magnet link starts with "magnet:?".');
    return;
  }
  send({ type: 'add', magnet, source: 'the magnet link', quiet });
}

$('#torrent-file').addEventListener('change', (e) => {
  for (const f of e.target.files) addFile(f);
  e.target.value = '';
});

$('#magnet-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('#magnet-input');
  addMagnet(input.value);
  input.value = '';
});

/** `#magnet:?xt=...` opens that magnet, so links to the page can be shared. */
function addFromHash() {
  let frag = location.hash.slice(1);
  if (/^magnet%3A/i.test(frag)) {
    try {
      frag = decodeURIComponent(frag);
    } catch {
      return;
    }
  }
  if (frag.toLowerCase().startsWith('magnet:')) addMagnet(frag, true);
}
addFromHash();
window.addEventListener('hashchange', addFromHash);

// Drag and drop anywhere on the page.
const overlay = $('#drop-overlay');
let dragDepth = 0;

function dropAccepted(e) {
  const types = Array.from(e.dataTransfer?.types ?? []);
  return types.includes('Files') || types.includes('text/plain') || types.includes('text/uri-list');
}

document.addEventListener('dragenter', (e) => {
  if (!dropAccepted(e)) return;
  e.preventDefault();
  dragDepth++;
  overlay.hidden = false;
});
document.addEventListener('dragover', (e) => {
  if (!dropAccepted(e)) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
});
document.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) overlay.hidden = true;
});
document.addEventListener('drop', (e) => {
  e.preventDefault();
  dragDepth = 0;
  overlay.hidden = true;
  const files = Array.from(e.dataTransfer?.files ?? []);
  if (files.length) {
    files.forEach(addFile);
    return;
  }
  const text = e.dataTransfer?.getData('text/uri-list') || e.dataTransfer?.getData('text/plain') || '';
  const magnet = text.split(/\s+/).find((t) => t.toLowerCase().startsWith('magnet:'));
  if (magnet) addMagnet(magnet);
  else showAlert('Drop a .torrent file or a magnet link.');
});

// ---- torrents ----------------------------------------------------------------------------

const list = $('#torrents');
const views = new Map();

function render(torrents) {
  const seen = new Set();
  for (const t of torrents) {
    seen.add(t.id);
    let view = views.get(t.id);
    if (!view) {
      view = new TorrentView(t.id);
      views.set(t.id, view);
      list.append(view.root);
    }
    view.update(t);
  }
  for (const id of views.keys()) {
    if (!seen.has(id)) removeView(id);
  }
  $('#empty').hidden = views.size > 0;
}

function removeView(id) {
  const view = views.get(id);
  if (!view) return;
  const hadFocus = view.root.contains(document.activeElement);
  const next = view.root.nextElementSibling || view.root.previousElementSibling;
  view.root.remove();
  views.delete(id);
  $('#empty').hidden = views.size > 0;
  if (hadFocus) {
    const target = next?.matches?.('.torrent') ? next.querySelector('button:not([hidden])') : null;
    (target || $('#magnet-input')).focus();
  }
}

class TorrentView {
  constructor(id) {
    this.id = id;
    const nameId = `name-${id}`;
    this.name = h('h2', { class: 'name', id: nameId });
    this.size = h('span', { class: 'size' });
    this.state = h('span', { class: 'state' });
    this.bar = h('div', { class: 'bar' });
    this.progress = h(
      'div',
      {
        class: 'progress',
        role: 'progressbar',
        'aria-valuemin': 0,
        'aria-valuemax': 100,
        'aria-valuenow': 0,
        'aria-labelledby': nameId,
      },
      this.bar,
    );
    this.percent = h('span', { class: 'percent' });
    this.down = h('span', { class: 'down-rate' });
    this.up = h('span', { class: 'up-rate' });
    this.eta = h('span', { class: 'eta' });
    this.peerCount = h('span', { class: 'peer-count' });
    this.message = h('p', { class: 'message', role: 'alert' });

    this.pauseBtn = h('button', { type: 'button', class: 'pause' }, 'Pause');
    this.resumeBtn = h('button', { type: 'button', class: 'resume', hidden: true }, 'Resume');
    this.removeBtn = h('button', { type: 'button', class: 'remove', title: 'Remove the torrent and delete its data' }, 'Remove');
    this.pauseBtn.addEventListener('click', () => this.toggle(true));
    this.resumeBtn.addEventListener('click', () => this.toggle(false));
    this.removeBtn.addEventListener('click', () => send({ type: 'remove', id }));

    this.canvas = h('canvas', { class: 'pieces', width: 1, height: 1, role: 'img', 'aria-label': 'Piece map' });
    this.files = h('ul', { class: 'files' });
    this.fileRows = [];
    this.pending = null;
    this.peerBody = h('tbody');
    this.peerSummary = h('summary', {}, 'Peers');

    this.root = h(
      'section',
      { class: 'torrent', 'data-infohash': id, 'aria-labelledby': nameId },
      h('header', { class: 'head' }, this.name, h('span', { class: 'meta' }, this.size, ' · ', this.state)),
      this.progress,
      h(
        'p',
        { class: 'stats' },
        this.percent,
        h('span', { class: 'sep' }, ' · '),
        h('span', { 'aria-label': 'download rate' }, '↓ '),
        this.down,
        h('span', { class: 'sep' }, ' · '),
        h('span', { 'aria-label': 'upload rate' }, '↑ '),
        this.up,
        h('span', { class: 'sep' }, ' · ETA '),
        this.eta,
        h('span', { class: 'sep' }, ' · '),
        this.peerCount,
      ),
      this.message,
      h('div', { class: 'actions' }, this.pauseBtn, this.resumeBtn, this.removeBtn),
      this.canvas,
      h('details', { class: 'files-box', open: true }, h('summary', {}, 'Files'), this.files),
      h(
        'details',
        { class: 'peers-box' },
        this.peerSummary,
        h(
          'table',
          { class: 'peers' },
          h(
            'thead',
            {},
            h('tr', {}, ...['Address', 'Client', 'Down', 'Up', 'Has'].map((c) => h('th', { scope: 'col' }, c))),
          ),
          this.peerBody,
        ),
      ),
    );
  }

  toggle(pause) {
    send({ type: pause ? 'pause' : 'resume', id: this.id });
    this.pending = { paused: pause, until: Date.now() + 1500 };
    this.showPaused(pause, false);
  }

  /** Shows Resume or Pause; the keyboard focus follows to the button that replaces it. */
  showPaused(paused, failed) {
    // Chromium drops the focus of an element as soon as it is hidden (activeElement is the body
    // by the time we look), so remember which button had it before hiding either.
    const focused = document.activeElement;
    const hadFocus = focused === this.pauseBtn || focused === this.resumeBtn;
    this.pauseBtn.hidden = paused || failed;
    this.resumeBtn.hidden = !paused;
    if (hadFocus && focused.hidden) {
      (paused ? this.resumeBtn : failed ? this.removeBtn : this.pauseBtn).focus();
    }
  }

  update(t) {
    this.root.dataset.state = t.state;
    setText(this.name, t.name);
    setText(this.size, t.size ? formatBytes(t.size) : 'size unknown');
    setText(this.state, STATE_LABELS[t.state] ?? t.state);

    const pct = Math.max(0, Math.min(100, Math.floor(t.progress * 100)));
    setAttr(this.progress, 'aria-valuenow', pct);
    setAttr(this.progress, 'aria-valuetext', `${pct} %, ${formatBytes(t.progress * t.size)} of ${formatBytes(t.size)}`);
    this.bar.style.transform = `scaleX(${t.progress.toFixed(4)})`;
    setText(this.percent, `${pct} %`);
    setText(this.down, formatRate(t.downRate));
    setText(this.up, formatRate(t.upRate));
    setText(this.eta, t.state === 'downloading' ? formatEta(t.eta) : '—');
    setText(this.peerCount, `${t.peerCount} ${t.peerCount === 1 ? 'peer' : 'peers'}`);

    const message = t.error ? `Error: ${t.error}` : t.warning || '';
    setText(this.message, message);
    this.message.hidden = !message;

    // Right after a click the worker's next snapshot may still show the old state: trust the
    // click for a moment.
    let paused = t.state === 'paused';
    if (this.pending && Date.now() < this.pending.until && paused !== this.pending.paused) {
      paused = this.pending.paused;
    } else {
      this.pending = null;
    }
    this.showPaused(paused, t.state === 'error');

    this.drawPieces(t.pieces, pct);
    this.updateFiles(t);
    this.updatePeers(t.peers);
  }

  drawPieces(cells, pct) {
    const n = Math.max(1, cells?.length ?? 0);
    if (this.canvas.width !== n) this.canvas.width = n;
    setAttr(this.canvas, 'aria-label', `Piece map: ${pct} % of the data verified`);
    const ctx = this.canvas.getContext('2d');
    const img = ctx.createImageData(n, 1);
    for (let i = 0; i < n; i++) {
      const v = (cells?.[i] ?? 0) / 100;
      // From the empty colour (#dfe3e8) to the done colour (#2e7d32).
      img.data[i * 4] = 223 + (46 - 223) * v;
      img.data[i * 4 + 1] = 227 + (125 - 227) * v;
      img.data[i * 4 + 2] = 232 + (50 - 232) * v;
      img.data[i * 4 + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  updateFiles(t) {
    t.files.forEach((f, i) => {
      let row = this.fileRows[i];
      if (!row) {
        row = {
          li: h('li', { class: 'file', 'data-file': i }),
          path: h('span', { class: 'path' }),
          size: h('span', { class: 'file-size' }),
          fill: h('span', { class: 'file-fill' }),
          pct: h('span', { class: 'file-percent' }),
          save: null,
        };
        row.li.append(row.path, row.size, h('span', { class: 'file-bar', 'aria-hidden': 'true' }, row.fill), row.pct);
        this.files.append(row.li);
        this.fileRows[i] = row;
      }
      setText(row.path, f.path);
      setText(row.size, formatBytes(f.size));
      const frac = f.size > 0 ? f.done / f.size : 1;
      row.fill.style.width = `${(frac * 100).toFixed(1)}%`;
      setText(row.pct, `${Math.floor(frac * 100)} %`);
      const complete = f.done >= f.size;
      row.li.dataset.complete = complete;
      if (complete && !row.save) {
        const name = f.path.split('/').pop();
        row.save = h('button', { type: 'button', class: 'save', 'data-file': i, 'aria-label': `Save ${name}` }, 'Save');
        row.save.addEventListener('click', () => send({ type: 'save', id: this.id, file: i }));
        row.li.append(row.save);
      }
    });
  }

  updatePeers(peers) {
    setText(this.peerSummary, `Peers (${peers.length})`);
    if (!this.root.querySelector('.peers-box').open) return;
    const rows = peers.map((p) =>
      h(
        'tr',
        {},
        h('td', {}, p.addr),
        h('td', {}, p.client || '?'),
        h('td', {}, formatRate(p.down)),
        h('td', {}, formatRate(p.up)),
        h('td', {}, `${Math.floor(p.progress * 100)} %`),
      ),
    );
    this.peerBody.replaceChildren(...rows);
  }
}
