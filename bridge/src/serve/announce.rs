//! `GET /announce?url=...&info_hash=...`: the page's tracker announces, performed by the bridge
//! from structured parameters with the same client `download` uses. The page never makes the
//! bridge fetch a URL of its choosing: only the tracker's scheme, host, port and path come from it,
//! and the host must not be private unless `--allow-private`.

use super::Shared;
use crate::tracker_client::{self, Reach};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::client::contract;
use protocol::tracker::{AnnounceRequest, TrackerError};
use std::net::SocketAddr;
use std::sync::Arc;

/// Tracker URLs longer than this are refused (real ones are well under 200 bytes).
const MAX_URL: usize = 2048;

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
            json(StatusCode::OK, contract::answer_json(&resp), cors)
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

fn tracker_error(status: StatusCode, e: &TrackerError, cors: Option<String>) -> Response {
    json(status, contract::tracker_error_json(e), cors)
}

fn error(status: StatusCode, msg: &str, cors: Option<String>) -> Response {
    json(status, contract::refusal_json(msg), cors)
}

fn json(status: StatusCode, body: String, cors: Option<String>) -> Response {
    let resp = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    );
    with_cors(resp.into_response(), cors)
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
    let (url, req) = contract::parse_announce_query(query)?;
    Ok((tracker_url(&url)?, req))
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
        assert_eq!(r.event, Some(protocol::tracker::AnnounceEvent::Started));
        assert_eq!(r.numwant, Some(contract::MAX_NUMWANT));
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
