//! `bridge serve` and its page, as a test sees them through a [`Browser`](crate::browser::Browser).
//!
//! The page's DOM (www/app.js): each torrent is a `section.torrent[data-infohash=HEX]` holding a
//! `.progress[role=progressbar]` whose `aria-valuenow` goes from 0 to 100, a `.message` and
//! `data-state`; a complete file gets a `button.save[data-file=N]`; page-wide errors go to
//! `#alerts`. `window.btTab.lastSaved` is the last file handed to the browser (`{id, file, name,
//! blob}`).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tempfile::TempDir;

use crate::bridge::bridge_bin;
use crate::process::{Proc, Stream};

/// Saved files are compared in slices of this size: a SHA-1 of each, computed in the page with
/// `crypto.subtle` and here from the source, so a large file never crosses WebDriver whole.
pub const DIGEST_CHUNK: usize = 16 << 20;

/// A running `bridge serve` on a port of 127.0.0.1 it chose itself.
pub struct Serve {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    pub port: u16,
    /// The bridge's `TMPDIR` (where `--demo` writes its sample), removed after the bridge is
    /// killed: a bridge killed outright cannot clean up after itself.
    pub tmp: TempDir,
}

impl Serve {
    /// `bridge serve --listen 127.0.0.1:0`, with `--allow-private` when asked (the tests' peers
    /// and tracker are on loopback).
    pub fn start(allow_private: bool) -> Serve {
        Serve::start_with(allow_private, "info,bridge=debug")
    }

    /// [`Serve::start`] with the bridge's log filter (`RUST_LOG`).
    pub fn start_with(allow_private: bool, log_filter: &str) -> Serve {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        if allow_private {
            args.push("--allow-private");
        }
        Serve::spawn(&args, log_filter)
    }

    /// `bridge --demo` as a newcomer runs it (no subcommand, no `--allow-private`), and the page
    /// URL it prints, which opens the demo's magnet.
    pub fn demo() -> (Serve, String) {
        let serve = Serve::spawn(&["--demo", "--listen", "127.0.0.1:0"], "info,bridge=debug");
        let url = serve.proc.wait_line(
            Stream::Stdout,
            Duration::from_secs(60),
            "the `demo:` line",
            |l| l.strip_prefix("demo: ").map(str::to_string),
        );
        (serve, url)
    }

    fn spawn(args: &[&str], log_filter: &str) -> Serve {
        let tmp = tempfile::Builder::new()
            .prefix("bridge-tmp-")
            .tempdir()
            .unwrap_or_else(|e| panic!("a TMPDIR for the bridge: {e}"));
        let mut cmd = Command::new(bridge_bin());
        cmd.args(args);
        cmd.env("RUST_BACKTRACE", "1")
            .env("RUST_LOG", log_filter)
            .env("TMPDIR", tmp.path());
        let proc = Proc::spawn("bridge serve", cmd);
        let url = proc.wait_line(
            Stream::Stdout,
            Duration::from_secs(60),
            "the `page:` line",
            |l| l.strip_prefix("page: ").map(str::to_string),
        );
        let port = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in the page URL {url:?}"));
        Serve {
            proc,
            url,
            port,
            tmp,
        }
    }

    /// Stderr lines that contain `needle` (the bridge logs each refusal with its reason).
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.proc
            .stderr()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }
}

/// One torrent as the page shows it.
#[derive(Clone, Debug, Deserialize)]
pub struct TorrentView {
    pub id: String,
    pub state: String,
    pub progress: u32,
    pub message: String,
    pub saves: Vec<u32>,
}

/// What the page shows: its torrents and its alerts.
#[derive(Clone, Debug, Deserialize)]
pub struct PageState {
    pub storage: Option<String>,
    /// Who hashes pieces: "subtle" (WebCrypto) or "wasm".
    pub hash: Option<String>,
    /// Who owns the peer WebSockets: "worker" (a Worker of their own, reading into shared
    /// memory) or "direct" (the engine's Worker).
    pub sockets: Option<String>,
    pub torrents: Vec<TorrentView>,
    pub alerts: Vec<String>,
}

impl PageState {
    pub fn torrent(&self, id: &str) -> Option<&TorrentView> {
        self.torrents.iter().find(|t| t.id == id)
    }
}

const STATE_JS: &str = r#"
const q = (s, r = document) => Array.from(r.querySelectorAll(s));
return {
  storage: window.btTab?.storage ?? null,
  hash: window.btTab?.hash ?? null,
  sockets: window.btTab?.sockets ?? null,
  torrents: q('section.torrent').map((t) => ({
    id: t.dataset.infohash,
    state: t.dataset.state ?? '',
    progress: Number(t.querySelector('[role=progressbar]')?.getAttribute('aria-valuenow') ?? 0),
    message: t.querySelector('.message')?.textContent ?? '',
    saves: q('button.save', t).map((b) => Number(b.dataset.file)),
  })),
  alerts: q('#alerts .alert-item').map((a) => a.dataset.message ?? a.textContent),
};
"#;

/// The page in a browser tab.
pub struct Page<'a> {
    pub client: &'a Client,
}

impl<'a> Page<'a> {
    /// Navigates to `url` and waits until the engine's Worker is ready.
    pub async fn open(client: &'a Client, url: &str) -> Page<'a> {
        client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
        let page = Page { client };
        page.wait_ready().await;
        page
    }

    /// Waits until the Worker said it is ready (and which storage it uses).
    pub async fn wait_ready(&self) {
        self.wait_state(Duration::from_secs(60), "the engine to start", |s| {
            s.storage.is_some().then_some(())
        })
        .await;
    }

    pub async fn state(&self) -> PageState {
        self.eval(STATE_JS, vec![], "the page state").await
    }

    /// Runs `script` in the page and reads its result as a `T`; panics naming `what` if either
    /// fails.
    async fn eval<T: serde::de::DeserializeOwned>(
        &self,
        script: &str,
        args: Vec<Value>,
        what: &str,
    ) -> T {
        let v = self
            .client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("cannot read {what}: {e}"));
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what} {v}: {e}"))
    }

    /// Polls the page every 100 ms until `f` returns `Some`. Panics at the deadline with what
    /// the page showed last.
    pub async fn wait_state<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&PageState) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.state().await;
            if let Some(v) = f(&s) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}; the page shows {s:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until torrent `id` shows at least `pct` %. Panics early if it shows an error.
    pub async fn wait_progress(&self, id: &str, pct: u32, timeout: Duration) -> TorrentView {
        self.wait_state(timeout, &format!("{id} to reach {pct} %"), |s| {
            let t = s.torrent(id)?;
            assert!(
                t.state != "error",
                "torrent {id} failed: {:?}; the page shows {s:#?}",
                t.message
            );
            (t.progress >= pct).then(|| t.clone())
        })
        .await
    }

    /// Adds a `.torrent` file through the page's file input.
    pub async fn add_torrent_file(&self, path: &Path) {
        let input = self
            .client
            .find(Locator::Css("#torrent-file"))
            .await
            .expect("the page has a file input");
        input
            .send_keys(&path.to_string_lossy())
            .await
            .unwrap_or_else(|e| panic!("cannot pick {}: {e}", path.display()));
    }

    /// Presses Save for file `index` of torrent `id` and waits until the page handed it to the
    /// browser (`btTab.lastSaved`).
    pub async fn save(&self, id: &str, index: u32) {
        self.client
            .execute("window.btTab.lastSaved = null;", vec![])
            .await
            .expect("reset lastSaved");
        let css =
            format!("section.torrent[data-infohash=\"{id}\"] button.save[data-file=\"{index}\"]");
        let button = self
            .client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("no Save button {css}: {e}"));
        button.click().await.expect("click Save");
        self.wait_saved(id, index).await;
    }

    /// Waits until the page handed file `index` of torrent `id` to the browser
    /// (`btTab.lastSaved`), however Save was pressed.
    pub async fn wait_saved(&self, id: &str, index: u32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self
                .client
                .execute(
                    "const s = window.btTab.lastSaved; return s ? [s.id, s.file] : null;",
                    vec![],
                )
                .await
                .expect("read lastSaved");
            if v == json!([id, index]) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "Save did not hand file {index} of {id} to the browser (lastSaved: {v}); the page shows {:#?}",
                    self.state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The size of the last saved file and the SHA-1 of each [`DIGEST_CHUNK`] of it, computed
    /// in the page.
    pub async fn saved_digests(&self) -> (u64, Vec<String>) {
        const JS: &str = r#"
const [chunk, done] = arguments;
const s = window.btTab.lastSaved;
if (!s) { done({ error: 'nothing was saved' }); return; }
(async () => {
  const digests = [];
  for (let at = 0; at < s.blob.size; at += chunk) {
    const buf = await s.blob.slice(at, at + chunk).arrayBuffer();
    const d = new Uint8Array(await crypto.subtle.digest('SHA-1', buf));
    digests.push(Array.from(d, (b) => b.toString(16).padStart(2, '0')).join(''));
  }
  done({ size: s.blob.size, digests });
})().catch((e) => done({ error: String(e) }));
"#;
        let v = self
            .client
            .execute_async(JS, vec![json!(DIGEST_CHUNK)])
            .await
            .expect("hash the saved file in the page");
        if let Some(e) = v.get("error") {
            panic!("cannot hash the saved file: {e}");
        }
        let size = v["size"].as_u64().expect("a size");
        let digests = v["digests"]
            .as_array()
            .expect("digests")
            .iter()
            .map(|d| d.as_str().expect("hex").to_string())
            .collect();
        (size, digests)
    }

    /// Panics unless the last saved file holds exactly the bytes of `source`.
    pub async fn assert_saved_equals(&self, source: &Path) {
        let (size, got) = self.saved_digests().await;
        let (want_size, want) = file_digests(source);
        assert_eq!(
            size,
            want_size,
            "the saved file has {size} bytes, {} has {want_size}",
            source.display()
        );
        if let Some(i) = want.iter().zip(&got).position(|(a, b)| a != b) {
            panic!(
                "the saved file differs from {} in bytes {}..{}",
                source.display(),
                i * DIGEST_CHUNK,
                (i + 1) * DIGEST_CHUNK
            );
        }
        assert_eq!(got.len(), want.len());
    }

    /// Runs `script` (async: its last argument is the callback) and returns what it passed.
    pub async fn run_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }
}

/// What a keyboard user has focused: `document.activeElement`, described.
#[derive(Clone, Debug, Deserialize)]
pub struct Focus {
    /// Lower-case tag name (`body` when nothing has focus).
    pub tag: String,
    pub id: String,
    pub class: String,
    /// Its accessible label as far as the test needs it: `aria-label`, else its text.
    pub label: String,
    /// The info-hash of the torrent section it is in, if any.
    pub torrent: Option<String>,
    /// It matches `:focus-visible` (the browser shows its focus ring).
    pub focus_visible: bool,
    /// Its computed `outline-style` and `outline-width` (the focus ring the page draws).
    pub outline: String,
    /// It has a box on screen (not `display: none`, not zero-sized).
    pub rendered: bool,
}

impl Focus {
    /// `tag#id.class "label"`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}{}{} {:?}",
            self.tag,
            if self.id.is_empty() {
                String::new()
            } else {
                format!("#{}", self.id)
            },
            if self.class.is_empty() {
                String::new()
            } else {
                format!(".{}", self.class.replace(' ', "."))
            },
            self.label
        )
    }
}

const FOCUS_JS: &str = r#"
const el = document.activeElement ?? document.body;
const cs = getComputedStyle(el);
const r = el.getBoundingClientRect();
return {
  tag: el.tagName.toLowerCase(),
  id: el.id ?? '',
  class: typeof el.className === 'string' ? el.className : '',
  label: (el.getAttribute('aria-label') ?? el.textContent ?? '').trim().slice(0, 80),
  torrent: el.closest('section.torrent')?.dataset.infohash ?? null,
  focus_visible: el.matches(':focus-visible'),
  outline: `${cs.outlineStyle} ${cs.outlineWidth}`,
  rendered: r.width > 0 && r.height > 0 && cs.visibility !== 'hidden',
};
"#;

/// Visible text of the elements matching a selector: `innerText` of each one that is rendered.
const VISIBLE_TEXT_JS: &str = r#"
const [sel] = arguments;
return Array.from(document.querySelectorAll(sel))
  .filter((el) => el.checkVisibility({ visibilityProperty: true, opacityProperty: true })
    && el.getBoundingClientRect().width > 0)
  .map((el) => el.innerText.trim())
  .filter((t) => t.length > 0);
"#;

/// Drags `files` (built in the page from the bytes given) over the page and drops them, with the
/// events a browser fires for a real drag from the desktop: `dragenter`, `dragover`, `drop`.
const DROP_JS: &str = r#"
const [files, selector] = arguments;
const dt = new DataTransfer();
for (const f of files) {
  dt.items.add(new File([new Uint8Array(f.bytes)], f.name, { type: 'application/x-bittorrent' }));
}
const target = document.querySelector(selector);
const fire = (type) => !target.dispatchEvent(
  new DragEvent(type, { bubbles: true, cancelable: true, composed: true, dataTransfer: dt }));
const overlay = document.querySelector('#drop-overlay');
const enter = fire('dragenter');
const over = fire('dragover');
const overlayShown = overlay ? !overlay.hidden && overlay.checkVisibility() : false;
const drop = fire('drop');
return {
  enter_prevented: enter,
  over_prevented: over,
  overlay_shown: overlayShown,
  drop_prevented: drop,
  overlay_hidden_after: overlay ? overlay.hidden : true,
};
"#;

/// What the page did with a drag and drop ([`Page::drop_files`]).
#[derive(Clone, Debug, Deserialize)]
pub struct DropOutcome {
    /// The page called `preventDefault` on `dragenter`, `dragover` and `drop`: a browser only
    /// lets a drop happen (and skips opening the file itself) when `dragover` is cancelled.
    pub enter_prevented: bool,
    pub over_prevented: bool,
    pub drop_prevented: bool,
    /// The "Drop to add" overlay was on screen during the drag, and gone after the drop.
    pub overlay_shown: bool,
    pub overlay_hidden_after: bool,
}

impl Page<'_> {
    /// The visible text of each element matching `selector` that is on screen (hidden ones and
    /// empty ones left out): what a user reads there.
    pub async fn visible_texts(&self, selector: &str) -> Vec<String> {
        self.eval(
            VISIBLE_TEXT_JS,
            vec![json!(selector)],
            &format!("the text of {selector}"),
        )
        .await
    }

    /// The message shown on torrent `id`'s card, if one is on screen.
    pub async fn visible_message(&self, id: &str) -> Option<String> {
        let sel = format!("section.torrent[data-infohash=\"{id}\"] .message");
        self.visible_texts(&sel).await.into_iter().next()
    }

    /// Waits until torrent `id` shows a message on screen for which `f` is true, and returns it.
    pub async fn wait_message(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let m = self.visible_message(id).await;
            if let Some(m) = &m {
                if f(m) {
                    return m.clone();
                }
            }
            if seen.last() != Some(&m) {
                seen.push(m);
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for torrent {id} to show {what}; its \
                     messages were {seen:?}; the page shows {:#?}",
                    self.state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drops `files` (`(name, bytes)`) on the element `selector` (see [`DropOutcome`]).
    pub async fn drop_files(&self, selector: &str, files: &[(&str, &[u8])]) -> DropOutcome {
        let files: Vec<Value> = files
            .iter()
            .map(|(name, bytes)| json!({ "name": name, "bytes": bytes }))
            .collect();
        self.eval(
            DROP_JS,
            vec![json!(files), json!(selector)],
            &format!("the outcome of dropping files on {selector}"),
        )
        .await
    }

    /// What has the keyboard focus.
    pub async fn focus(&self) -> Focus {
        self.eval(FOCUS_JS, vec![], "the focus").await
    }

    /// Presses and releases each key of `keys` in turn on the keyboard (WebDriver actions: the
    /// browser sends them to whatever has the focus, as for a user typing). Special keys are
    /// [`fantoccini::key::Key`]s turned into `char`s.
    pub async fn press_keys(&self, keys: impl IntoIterator<Item = char>) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".into());
        for k in keys {
            actions = actions
                .then(KeyAction::Down { value: k })
                .then(KeyAction::Up { value: k });
        }
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("cannot press keys: {e}"));
    }

    /// Presses Tab until `want` accepts what has the focus, at most `max` times. Returns that
    /// focus; panics with every stop on the way if it never comes.
    pub async fn tab_to(&self, max: usize, what: &str, want: impl Fn(&Focus) -> bool) -> Focus {
        let mut path = Vec::new();
        for _ in 0..max {
            self.press_keys([char::from(fantoccini::key::Key::Tab)])
                .await;
            let f = self.focus().await;
            path.push(format!(
                "{}{}",
                f.describe(),
                if f.rendered { "" } else { " (not on screen)" }
            ));
            if want(&f) {
                return f;
            }
        }
        panic!("{max} presses of Tab never reached {what}; the focus went {path:#?}");
    }
}

/// The size of `path` and the SHA-1 of each [`DIGEST_CHUNK`] of it.
pub fn file_digests(path: &Path) -> (u64, Vec<String>) {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; DIGEST_CHUNK];
    let mut size = 0u64;
    let mut out = Vec::new();
    loop {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => panic!("read {}: {e}", path.display()),
            }
        }
        if n == 0 {
            break;
        }
        size += n as u64;
        let d = Sha1::digest(&buf[..n]);
        out.push(d.iter().map(|b| format!("{b:02x}")).collect());
        if n < buf.len() {
            break;
        }
    }
    (size, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_cover_every_chunk() {
        let dir = crate::data::temp_dir("digests");
        let p = dir.path().join("f");
        crate::data::write_random_file(&p, DIGEST_CHUNK as u64 + 5, 1);
        let (size, d) = file_digests(&p);
        assert_eq!(size, DIGEST_CHUNK as u64 + 5);
        assert_eq!(d.len(), 2);
        let empty = dir.path().join("e");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(file_digests(&empty), (0, vec![]));
    }
}
