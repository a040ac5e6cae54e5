//! SHA-1 of downloaded pieces through WebCrypto, off the Worker's thread.
//!
//! In wasm the engine's own SHA-1 runs at about 250 MB/s on the Worker's thread, the same thread
//! that copies every frame in and writes every block out; `crypto.subtle.digest` is about twice
//! as fast and Chromium runs it on another thread (see BENCHMARKS.md). So by default the engine
//! asks us to hash each finished piece (`Config::driver_hashes`). `?hash=wasm` in the page's
//! address keeps the hashing in wasm, for comparison, as does a browser without `crypto.subtle`.

use crate::js::{err_text, global, query_has};
use js_sys::{ArrayBuffer, Promise, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::SubtleCrypto;

thread_local! {
    /// Chosen once: the Worker's address does not change.
    static SUBTLE: Option<SubtleCrypto> = choose();
}

/// Whether pieces are hashed here (WebCrypto) rather than by the engine in wasm.
pub fn in_driver() -> bool {
    SUBTLE.with(Option::is_some)
}

/// WebCrypto, unless the page asked for wasm hashing or the browser has none.
fn choose() -> Option<SubtleCrypto> {
    if query_has("hash=wasm") {
        return None;
    }
    global().crypto().ok().map(|c| c.subtle())
}

/// Starts hashing `data`. WebCrypto copies the bytes before this returns, so the caller may
/// reuse its buffer at once.
pub fn start(data: &[u8]) -> Result<Promise, String> {
    SUBTLE.with(|subtle| {
        subtle
            .as_ref()
            .ok_or_else(|| "WebCrypto is not available".to_string())?
            .digest_with_str_and_u8_array("SHA-1", data)
            .map_err(|e| err_text(&e))
    })
}

/// The digest a `start` promise resolves to.
pub async fn finish(digest: Promise) -> Result<[u8; 20], String> {
    let buf = JsFuture::from(digest).await.map_err(|e| err_text(&e))?;
    let buf: ArrayBuffer = buf
        .dyn_into()
        .map_err(|_| "digest is not an ArrayBuffer".to_string())?;
    let bytes = Uint8Array::new(&buf);
    let mut out = [0u8; 20];
    if bytes.length() != 20 {
        return Err(format!("digest of {} bytes", bytes.length()));
    }
    bytes.copy_to(&mut out);
    Ok(out)
}
