//! The page and the wasm, embedded in the binary by build.rs: `www/*` at `/<name>`, the
//! wasm-bindgen output at `/pkg/...`.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// The embedded file at a request path, with its MIME type.
pub fn lookup(path: &str) -> Option<(&'static [u8], &'static str)> {
    let name = match path.strip_prefix('/')? {
        "" => "index.html",
        p => p,
    };
    generated::FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, bytes)| (*bytes, mime(n)))
}

fn mime(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "ts" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Every path that is not an API route.
pub async fn handler(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    match lookup(uri.path()) {
        Some((bytes, mime)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
                // The page and its wasm change with every build of the binary.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                // Cross-origin isolation, for SharedArrayBuffer: the engine's Worker then gives
                // the peer sockets a Worker of their own that reads them into shared memory
                // (web/src/relay.rs). The page loads nothing from other origins.
                (
                    header::HeaderName::from_static("cross-origin-opener-policy"),
                    HeaderValue::from_static("same-origin"),
                ),
                (
                    header::HeaderName::from_static("cross-origin-embedder-policy"),
                    HeaderValue::from_static("require-corp"),
                ),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_and_its_glue_are_embedded() {
        let (wasm, m) = lookup("/pkg/web_bg.wasm").expect("web_bg.wasm embedded");
        assert_eq!(m, "application/wasm");
        assert_eq!(wasm.get(..4), Some(&b"\0asm"[..]));
        assert_eq!(
            lookup("/pkg/web.js").unwrap().1,
            "text/javascript; charset=utf-8"
        );
        assert!(lookup("/pkg/missing.js").is_none());
        assert!(lookup("/../Cargo.toml").is_none());
        assert!(lookup("relative").is_none());
        assert_eq!(mime("a.CSS"), "text/css; charset=utf-8");
        assert_eq!(mime("noext"), "application/octet-stream");
    }
}
