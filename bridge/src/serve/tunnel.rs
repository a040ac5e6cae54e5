//! `GET /peer?addr=IP:PORT&enc=prefer|require|off`: one WebSocket is one TCP connection to a
//! peer; binary frames carry the byte stream both ways. No TCP connection is made before the
//! page's first bytes form a BitTorrent handshake. Each direction moves one chunk at a time and
//! waits for the other side to take it, so neither a slow tab nor a fast peer makes the bridge
//! buffer more than a chunk.
//!
//! With `enc=prefer` or `require` the bridge makes the MSE handshake towards the peer on the
//! page's behalf (`tunnel_mse`), with the page's handshake as its initial payload, and relays
//! through the negotiated cipher; the page's side stays plain BitTorrent. `prefer` falls back to
//! a plain handshake on a new connection, once, when the peer does not complete MSE; `require`
//! closes the tunnel instead, before anything of the page's reached the peer in the clear.

use super::tunnel_mse::{self, Negotiated, MSE_TIMEOUT};
use super::Shared;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::engine::Encryption;
use protocol::mse::{CipherHalf, Policy};
use protocol::wire::{Decoder, Handshake, DEFAULT_MAX_MESSAGE, HANDSHAKE_LEN};
use protocol::InfoHash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Close codes the page sees (`CloseEvent.code`), defined with the page's side of the contract;
/// a close the page starts is echoed (1000).
pub(super) mod code {
    use protocol::client::contract::TunnelClose;
    pub const REFUSED: u16 = TunnelClose::Refused.code();
    pub const TIMED_OUT: u16 = TunnelClose::TimedOut.code();
    pub const FORBIDDEN: u16 = TunnelClose::Forbidden.code();
    pub const NOT_BITTORRENT: u16 = TunnelClose::NotBitTorrent.code();
    pub const BUSY: u16 = TunnelClose::Busy.code();
    pub const PEER_CLOSED: u16 = TunnelClose::PeerClosed.code();
}

/// The page must send its handshake this soon after the upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the page to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP is read in chunks of up to this size; each becomes one binary frame. Every frame costs
/// Chromium a fixed amount in its network service, IPC and the page's message event: 256 KiB
/// frames cut the tab's CPU per byte by about a third against 64 KiB ones.
const CHUNK: usize = 256 * 1024;
/// The largest frame or message the page may send: a block message with room to spare. This is
/// also the most the page-to-peer direction holds at once.
pub const MAX_MESSAGE: usize = 1 << 20;

pub async fn handler(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = shared.refuse_websocket(&headers, client, "/peer") {
        return refused;
    }
    let parsed = query
        .as_deref()
        .and_then(protocol::client::contract::parse_peer_query);
    // The encryption the page asks for is made towards the peer (see `open`).
    let Some((addr, enc)) = parsed else {
        tracing::warn!("refused /peer from {client}: no valid addr=IP:PORT");
        return (StatusCode::BAD_REQUEST, "expected ?addr=IP:PORT\n").into_response();
    };
    // Decided before the upgrade, reported after it: the page only sees close codes.
    let verdict = shared
        .destinations
        .check(addr)
        .map_err(|why| (code::FORBIDDEN, format!("forbidden destination: {why}")))
        .and_then(|()| {
            shared
                .limits
                .acquire(client.ip())
                .map_err(|why| (code::BUSY, format!("bridge busy: {why}")))
        });
    let idle = shared.idle_timeout;
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .max_write_buffer_size(MAX_MESSAGE + CHUNK)
        .on_upgrade(move |mut socket| async move {
            match verdict {
                Err((code, why)) => {
                    tracing::warn!("refused tunnel {client} -> {addr}: {why}");
                    close(&mut socket, code, &why).await;
                }
                Ok(_permit) => tunnel(socket, client, addr, enc, idle).await,
            }
        })
}

/// How a tunnel ended.
enum End {
    /// Send this close frame to the page.
    Close(u16, String),
    /// The page closed or vanished: nothing more to say to it.
    PageGone,
}

async fn tunnel(
    mut socket: WebSocket,
    client: SocketAddr,
    addr: SocketAddr,
    enc: Encryption,
    idle: Duration,
) {
    let (handshake, first) = match read_handshake(&mut socket).await {
        Ok(b) => b,
        Err(End::Close(code, why)) => {
            tracing::warn!("refused tunnel {client} -> {addr}: {why}");
            close(&mut socket, code, &why).await;
            return;
        }
        Err(End::PageGone) => return,
    };
    let what = format!("tunnel {client} -> {addr}");
    match open(addr, handshake.info_hash, first, enc, &what).await {
        Ok((tcp, negotiated)) => {
            let (rd, wr) = tcp.into_split();
            relay_with(socket, rd, wr, &what, idle, negotiated).await;
        }
        Err((code, why)) => {
            tracing::debug!("{what} closed: {why}");
            close(&mut socket, code, &why).await;
        }
    }
}

/// Connects to the peer and sends it the page's first bytes as `enc` says: in the clear (`off`,
/// or `prefer` after a failed MSE handshake), or behind an MSE handshake. Returns the connection
/// and what the relay applies, or the close code and reason for the page.
async fn open(
    addr: SocketAddr,
    info_hash: InfoHash,
    first: Vec<u8>,
    enc: Encryption,
    what: &str,
) -> Result<(TcpStream, Negotiated), (u16, String)> {
    let Some(policy) = enc.mse_policy() else {
        return open_plain(addr, &first, what).await;
    };
    let why = match open_encrypted(addr, info_hash, policy, &first, what).await {
        Ok(done) => return Ok(done),
        Err(Attempt::Close(code, why)) => return Err((code, why)),
        Err(Attempt::Mse(why)) => why,
    };
    if enc == Encryption::Require {
        // Nothing of the page's went out in the clear: IA is always RC4-encrypted.
        return Err((code::REFUSED, format!("encryption required: {why}")));
    }
    tracing::debug!("{what}: {why}; falling back to a plain handshake");
    open_plain(addr, &first, what).await
}

/// How an encrypted attempt failed.
enum Attempt {
    /// The peer could not be reached (or broke off after the handshake): no fallback helps.
    Close(u16, String),
    /// The MSE handshake failed: `prefer` falls back to a plain handshake.
    Mse(tunnel_mse::Failure),
}

/// Today's path: connect, write the page's bytes as they came.
async fn open_plain(
    addr: SocketAddr,
    first: &[u8],
    what: &str,
) -> Result<(TcpStream, Negotiated), (u16, String)> {
    let mut tcp = connect(addr).await?;
    if let Err(e) = tcp.write_all(first).await {
        return Err((code::PEER_CLOSED, format!("peer connection: {e}")));
    }
    tracing::debug!("{what} open (plain)");
    Ok((tcp, Negotiated::default()))
}

/// Connects and makes the MSE handshake with the page's handshake as IA; the page's bytes after
/// its handshake (if its first frames held more) go out through the negotiated cipher.
async fn open_encrypted(
    addr: SocketAddr,
    info_hash: InfoHash,
    policy: Policy,
    first: &[u8],
    what: &str,
) -> Result<(TcpStream, Negotiated), Attempt> {
    let seed = tunnel_mse::seed().map_err(Attempt::Mse)?;
    let mut tcp = connect(addr)
        .await
        .map_err(|(code, why)| Attempt::Close(code, why))?;
    // `read_handshake` returned at least the handshake; `min` only keeps this panic-free.
    let (ia, rest) = first.split_at(HANDSHAKE_LEN.min(first.len()));
    let deadline = Instant::now() + MSE_TIMEOUT;
    let mut negotiated = tunnel_mse::initiate(&mut tcp, info_hash, policy, seed, ia, deadline)
        .await
        .map_err(Attempt::Mse)?;
    if !rest.is_empty() {
        let mut rest = rest.to_vec();
        if let Some(e) = &mut negotiated.encrypt {
            e.apply(&mut rest);
        }
        if let Err(e) = tcp.write_all(&rest).await {
            return Err(Attempt::Close(
                code::PEER_CLOSED,
                format!("peer connection: {e}"),
            ));
        }
    }
    tracing::debug!("{what} open ({})", negotiated.describe());
    Ok((tcp, negotiated))
}

/// A TCP connection to the peer within [`CONNECT_TIMEOUT`], or the close code and reason.
async fn connect(addr: SocketAddr) -> Result<TcpStream, (u16, String)> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            // Requests are small and latency-bound; Nagle would hold them back.
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err((code::REFUSED, format!("connect failed: {e}"))),
        Err(_) => Err((code::TIMED_OUT, "connect timed out".into())),
    }
}

/// Carries bytes both ways between the page and a peer until one side ends or the tunnel idles,
/// then closes the page's side with the reason. `what` names the tunnel in log lines.
pub(super) async fn relay(
    socket: WebSocket,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    what: &str,
    idle: Duration,
) {
    relay_with(socket, rd, wr, what, idle, Negotiated::default()).await;
}

/// [`relay`] through an MSE cipher: what the peer sends is decrypted before the page sees it
/// (starting with the handshake's remainder), what the page sends is encrypted before the peer
/// does.
async fn relay_with(
    socket: WebSocket,
    rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    what: &str,
    idle: Duration,
    negotiated: Negotiated,
) {
    let Negotiated {
        encrypt,
        decrypt,
        remainder,
    } = negotiated;
    let (mut sink, mut stream) = socket.split();
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let touch = || activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let end = tokio::select! {
        e = peer_to_page(rd, &mut sink, &touch, decrypt, remainder) => e,
        e = page_to_peer(&mut stream, &mut wr, &touch, encrypt) => e,
        e = idle_timer(start, &activity, idle) => e,
    };
    let Ok(mut socket) = sink.reunite(stream) else {
        return;
    };
    match end {
        End::Close(code, why) => {
            tracing::debug!("{what} closed: {why}");
            // The peer need not wait for the page's close handshake.
            drop(wr);
            close(&mut socket, code, &why).await;
        }
        End::PageGone => {
            tracing::debug!("{what} closed by the page");
            // Flushes tungstenite's queued reply to the page's close frame.
            let _ = socket.close().await;
            let _ = wr.shutdown().await;
        }
    }
}

/// Reads frames until the first 68 bytes are in and form a handshake; refuses garbage as soon as
/// its first bytes differ. Returns the handshake and every byte received so far (the handshake
/// first), to be sent once connected.
async fn read_handshake(socket: &mut WebSocket) -> Result<(Handshake, Vec<u8>), End> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut decoder = Decoder::new(DEFAULT_MAX_MESSAGE);
    let mut first = Vec::new();
    loop {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                return Err(End::Close(
                    code::NOT_BITTORRENT,
                    format!(
                        "no BitTorrent handshake within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                ))
            }
            Ok(None) | Ok(Some(Err(_))) => return Err(End::PageGone),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Binary(b) => {
                decoder.push(&b);
                first.extend_from_slice(&b);
                match decoder.next_handshake() {
                    Ok(Some(hs)) => return Ok((hs, first)),
                    Ok(None) => {}
                    Err(e) => return Err(End::Close(code::NOT_BITTORRENT, e.to_string())),
                }
            }
            Message::Text(_) => {
                return Err(End::Close(
                    code::NOT_BITTORRENT,
                    "text frame: the tunnel carries binary frames".into(),
                ))
            }
            Message::Close(_) => return Err(End::PageGone),
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

/// TCP to WebSocket: read a chunk only after the previous one was written out to the page.
/// `pending` (decrypted bytes that came with the MSE handshake) goes first; `decrypt` is applied
/// to every chunk after it.
async fn peer_to_page(
    mut rd: OwnedReadHalf,
    sink: &mut SplitSink<WebSocket, Message>,
    touch: &impl Fn(),
    mut decrypt: Option<CipherHalf>,
    pending: Vec<u8>,
) -> End {
    if !pending.is_empty() {
        touch();
        if sink.send(Message::Binary(pending.into())).await.is_err() {
            return End::PageGone;
        }
    }
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(CHUNK);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return End::Close(code::PEER_CLOSED, "peer closed the connection".into()),
            Ok(_) => {}
            Err(e) => return End::Close(code::PEER_CLOSED, format!("peer connection: {e}")),
        }
        touch();
        let mut chunk = buf.split();
        if let Some(d) = &mut decrypt {
            d.apply(&mut chunk);
        }
        // `send` completes once the frame is flushed to the socket: that is the backpressure.
        if sink.send(Message::Binary(chunk.freeze())).await.is_err() {
            return End::PageGone;
        }
    }
}

/// WebSocket to TCP: take the next frame only after the previous one was written to the peer,
/// through `encrypt` if the MSE handshake chose RC4.
async fn page_to_peer(
    stream: &mut SplitStream<WebSocket>,
    wr: &mut OwnedWriteHalf,
    touch: &impl Fn(),
    mut encrypt: Option<CipherHalf>,
) -> End {
    // The encrypted copy of a frame; it holds at most MAX_MESSAGE bytes and is reused.
    let mut sealed = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(Message::Binary(b))) => {
                touch();
                let out: &[u8] = match &mut encrypt {
                    None => &b,
                    Some(e) => {
                        sealed.clear();
                        sealed.extend_from_slice(&b);
                        e.apply(&mut sealed);
                        &sealed
                    }
                };
                if let Err(e) = wr.write_all(out).await {
                    return End::Close(code::PEER_CLOSED, format!("peer connection: {e}"));
                }
            }
            Some(Ok(Message::Text(_))) => {
                return End::Close(
                    code::NOT_BITTORRENT,
                    "text frame: the tunnel carries binary frames".into(),
                )
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(e)) => {
                // Most often a message over MAX_MESSAGE; the page is told nothing more.
                tracing::warn!("tunnel: bad WebSocket data from the page: {e}");
                return End::PageGone;
            }
            Some(Ok(Message::Close(_))) | None => return End::PageGone,
        }
    }
}

async fn idle_timer(start: Instant, activity: &AtomicU64, idle: Duration) -> End {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let due = start + last + idle;
        if Instant::now() >= due {
            return End::Close(code::TIMED_OUT, format!("idle for {} s", idle.as_secs()));
        }
        tokio::time::sleep_until(due).await;
    }
}

/// Sends a close frame and waits (briefly) for the page's answer, so the close is clean.
pub(super) async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: truncate(reason, 123).into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// A close reason is at most 123 bytes; cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_frame() {
        assert_eq!(truncate("short", 123), "short");
        let long = "é".repeat(100);
        let t = truncate(&long, 123);
        assert!(t.len() <= 123 && t.len() >= 122);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
