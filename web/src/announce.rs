//! Announces through the bridge: the page cannot reach trackers itself (no UDP, no CORS), so
//! the bridge's `/announce` performs them from structured parameters. The query and the answer
//! are the contract in `protocol::client::contract`, which the bridge reads and writes too.

use crate::js::{err_text, global};
use js_sys::{ArrayBuffer, Uint8Array};
use protocol::client::contract::{announce_path, parse_answer, AnnounceError};
use protocol::tracker::{AnnounceRequest, AnnounceResponse};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Response;

/// A bridge answer larger than this is refused unread (a real one is a few KiB of JSON).
const MAX_ANSWER: u32 = 1 << 20;

/// Performs one announce of `req` to the tracker at `url` through the bridge.
pub async fn announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, AnnounceError> {
    let bridge = |msg: String| AnnounceError::Bridge(msg);
    let resp = JsFuture::from(global().fetch_with_str(&announce_path(url, req)))
        .await
        .map_err(|e| bridge(err_text(&e)))?;
    let resp: Response = resp
        .dyn_into()
        .map_err(|_| bridge("fetch returned no response".into()))?;
    let status = resp.status();
    let body = match resp.array_buffer() {
        Ok(p) => JsFuture::from(p).await.map_err(|e| bridge(err_text(&e)))?,
        Err(e) => return Err(bridge(err_text(&e))),
    };
    let body: ArrayBuffer = body
        .dyn_into()
        .map_err(|_| bridge("/announce answered without a body".into()))?;
    if body.byte_length() > MAX_ANSWER {
        return Err(bridge(format!(
            "/announce answered {} bytes",
            body.byte_length()
        )));
    }
    parse_answer(resp.ok(), status, &Uint8Array::new(&body).to_vec())
}
