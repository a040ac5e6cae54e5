//! `GET /announce?url=...&info_hash=...`: the page's tracker announces, performed by the bridge
//! from structured parameters with the same client `download` uses. The page never makes the
//! bridge fetch a URL of its choosing: only the tracker's scheme, host, port and path come from it,
//! and the host must not be private unless `--allow-private`.

use super::Shared;
use crate::tracker_client::{self, Reach};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::tracker::{AnnounceEvent, AnnounceRequest, AnnounceResponse, TrackerError};
use protocol::{InfoHash, PeerId};
use std::net::SocketAddr;
use std::sync::Arc;

/// Tracker URLs longer than this are refused (real ones are well under 200 bytes).
const MAX_URL: usize = 2048;
/// The page asks for peers; more than this is never useful to one tab.
const MAX_NUMWANT: u32 = 200;

pub async fn handler(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let cors = match shared.access.check_fetch(&headers) {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!("refused /announce from {client}: {why}");
            return error(StatusCode::FORBIDDEN, &why.to_string(), None);
        }
    };
    let (url, req) = match parse(query.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!("refused /announce from {client}: {why}");
            return error(StatusCode::BAD_REQUEST, &why, cors);
        }
    };
    let Ok(_slot) = shared.announces.clone().try_acquire_owned() else {
        tracing::warn!("refused /announce from {client}: too many announces at once");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "bridge busy: too many announces at once",
            cors,
        );
    };
    let reach = if shared.destinations.allow_private {
        Reach::Any
    } else {
        Reach::PublicOnly
    };
    match tracker_client::announce_within(url.as_str(), &req, reach).await {
        Ok(resp) => {
            tracing::debug!("announce to {url}: {} peers", resp.peers.len());
            with_cors((StatusCode::OK, Json(to_json(&resp))).into_response(), cors)
        }
        Err(e) => {
            tracing::debug!("announce to {url} failed: {e}");
            let status = match e {
                TrackerError::BadUrl(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            tracker_error(status, &e, cors)
        }
    }
}

fn to_json(r: &AnnounceResponse) -> serde_json::Value {
    let peers: Vec<String> = r.peers.iter().map(|p| p.to_string()).collect();
    serde_json::json!({
        "interval": r.interval,
        "min_interval": r.min_interval,
        "peers": peers,
        "warning": r.warning,
        "complete": r.complete,
        "incomplete": r.incomplete,
    })
}

/// The tracker's failure in words (`error`), and as `kind` and `detail` for the page to rebuild
/// the same `TrackerError`.
fn tracker_error(status: StatusCode, e: &TrackerError, cors: Option<String>) -> Response {
    let (kind, detail) = e.to_parts();
    let body = serde_json::json!({ "error": e.to_string(), "kind": kind, "detail": detail });
    with_cors((status, Json(body)).into_response(), cors)
}

fn error(status: StatusCode, msg: &str, cors: Option<String>) -> Response {
    with_cors(
        (status, Json(serde_json::json!({ "error": msg }))).into_response(),
        cors,
    )
}

/// A page of an `--allow-origin` origin needs CORS headers to read the answer.
fn with_cors(mut resp: Response, cors: Option<String>) -> Response {
    if let Some(v) = cors.and_then(|o| HeaderValue::from_str(&o).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// The query to a tracker URL and an announce, or a message naming the bad parameter.
fn parse(query: &str) -> Result<(url::Url, AnnounceRequest), String> {
    let mut url = None;
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let (mut uploaded, mut downloaded, mut left) = (0u64, 0u64, 0u64);
    let mut event = None;
    let mut numwant = None;
    let mut key = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let num = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{what} must be a non-negative integer, not {v:?}"))
        };
        match k.as_ref() {
            "url" => url = Some(v.to_string()),
            "info_hash" => {
                info_hash = Some(
                    InfoHash::from_hex(&v)
                        .ok_or_else(|| "info_hash must be 40 hex digits".to_string())?,
                )
            }
            "peer_id" => {
                // The same 40-hex-digit form as an info-hash.
                let h = InfoHash::from_hex(&v)
                    .ok_or_else(|| "peer_id must be 40 hex digits".to_string())?;
                peer_id = Some(PeerId(h.0));
            }
            "port" => {
                port = Some(
                    v.parse::<u16>()
                        .map_err(|_| format!("port must be 0-65535, not {v:?}"))?,
                )
            }
            "uploaded" => uploaded = num("uploaded")?,
            "downloaded" => downloaded = num("downloaded")?,
            "left" => left = num("left")?,
            "numwant" => {
                numwant = Some(
                    u32::try_from(num("numwant")?)
                        .unwrap_or(u32::MAX)
                        .min(MAX_NUMWANT),
                )
            }
            "key" => key = Some(u32::try_from(num("key")?).map_err(|_| "key must fit 32 bits")?),
            "event" => {
                event = match v.as_ref() {
                    "started" => Some(AnnounceEvent::Started),
                    "completed" => Some(AnnounceEvent::Completed),
                    "stopped" => Some(AnnounceEvent::Stopped),
                    "" | "empty" => None,
                    _ => return Err(format!("unknown event {v:?}")),
                }
            }
            _ => {}
        }
    }
    let url = url.ok_or("missing url")?;
    let url = tracker_url(&url)?;
    let info_hash = info_hash.ok_or("missing info_hash")?;
    let peer_id = peer_id.ok_or("missing peer_id")?;
    let port = port.ok_or("missing port")?;
    // Stable per peer id, so the tracker recognises the tab across announces.
    let key = key.unwrap_or_else(|| {
        peer_id.0.chunks(4).fold(0u32, |k, c| {
            k.rotate_left(5) ^ c.iter().fold(0, |a, b| a << 8 | u32::from(*b))
        })
    });
    let req = AnnounceRequest {
        info_hash,
        peer_id,
        port,
        uploaded,
        downloaded,
        left,
        event,
        numwant,
        key,
        tracker_id: None,
    };
    Ok((url, req))
}

/// Only http, https and udp trackers with a host and no credentials.
fn tracker_url(s: &str) -> Result<url::Url, String> {
    if s.len() > MAX_URL {
        return Err(format!("tracker URL longer than {MAX_URL} bytes"));
    }
    let u = url::Url::parse(s).map_err(|e| format!("bad tracker URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https" | "udp") {
        return Err(format!(
            "tracker URL scheme {:?} not supported (http, https, udp)",
            u.scheme()
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("tracker URL must not carry credentials".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("tracker URL has no host".into());
    }
    if u.scheme() == "udp" && u.port().is_none() {
        return Err("udp tracker URL has no port".into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IH: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn parses_a_full_announce() {
        let q = format!(
            "url=http%3A%2F%2Ft.example%3A6969%2Fannounce&info_hash={IH}&peer_id={IH}&port=6881\
             &uploaded=1&downloaded=2&left=3&event=started&numwant=5000"
        );
        let (u, r) = parse(&q).unwrap();
        assert_eq!(u.as_str(), "http://t.example:6969/announce");
        assert_eq!(r.info_hash.to_hex(), IH);
        assert_eq!((r.port, r.uploaded, r.downloaded, r.left), (6881, 1, 2, 3));
        assert_eq!(r.event, Some(AnnounceEvent::Started));
        assert_eq!(r.numwant, Some(MAX_NUMWANT));
        let (_, again) = parse(&q).unwrap();
        assert_eq!(r.key, again.key);
    }

    #[test]
    fn refuses_bad_parameters() {
        let base = format!("info_hash={IH}&peer_id={IH}&port=1");
        for (q, why) in [
            (format!("url=ftp://t/&{base}"), "scheme"),
            (format!("url=file:///etc/passwd&{base}"), "scheme"),
            (format!("url=http://u:p@t/&{base}"), "credentials"),
            (format!("url=udp://t/&{base}"), "port"),
            (format!("url=nonsense&{base}"), "bad tracker URL"),
            (base.clone(), "missing url"),
            (
                format!("url=http://t/&info_hash=12&peer_id={IH}&port=1"),
                "info_hash",
            ),
            (format!("url=http://t/&{base}&event=bogus"), "event"),
            (format!("url=http://t/&{base}&left=-1"), "left"),
            (
                format!("url=http://t/&info_hash={IH}&peer_id={IH}&port=70000"),
                "port",
            ),
        ] {
            let e = parse(&q).unwrap_err();
            assert!(e.contains(why), "{q}: {e}");
        }
    }
}
