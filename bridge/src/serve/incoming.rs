//! A TCP port for the tab's torrents: peers dial it as they would any client's listening port.
//! The bridge reads each connection's BitTorrent handshake and offers the connection to a tab
//! that serves the info-hash it names (over that tab's `/listen` WebSocket); the tab takes it with
//! a WebSocket to `/accept?offer=N`, which starts with the handshake as received and then relays
//! like `/peer`. Guarded like everything else: only BitTorrent handshakes, only info-hashes a tab
//! serves, a bounded number of connections waiting, each for a few seconds.

use super::tunnel::{close, code, relay};
use super::Shared;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::client::contract::{
    decode_listen, encode_listen, parse_accept_query, FromBridge, FromTab,
};
use protocol::wire::{Decoder, DEFAULT_MAX_MESSAGE};
use protocol::InfoHash;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A peer must send its handshake this soon after connecting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An offer the tab does not take in this time is dropped (and its peer disconnected).
const OFFER_TTL: Duration = Duration::from_secs(10);
/// Connections waiting for a handshake or for their tab, at most.
const MAX_WAITING: usize = 64;
/// Info-hashes one `/listen` may serve.
const MAX_SERVED: usize = 256;

/// A peer that dialled in, waiting for its tab.
struct Offer {
    stream: TcpStream,
    /// What the peer sent so far: its handshake, maybe more.
    first: Vec<u8>,
    addr: SocketAddr,
    /// Counts against `MAX_WAITING` until the offer is taken or expires.
    _waiting: OwnedSemaphorePermit,
}

#[derive(Default)]
struct State_ {
    /// Each serving tab's channel, by the info-hashes it serves.
    tabs: HashMap<InfoHash, Vec<(u64, mpsc::Sender<FromBridge>)>>,
    offers: HashMap<u64, Offer>,
}

pub struct Hub {
    port: u16,
    state: Mutex<State_>,
    waiting: Arc<Semaphore>,
}

impl Hub {
    /// Offers a peer that dialled in for `ih` to a tab that serves it; the offer's id.
    fn offer(&self, ih: InfoHash, offer: Offer) -> Result<u64, &'static str> {
        let mut st = self.state.lock().map_err(|_| "bridge state poisoned")?;
        let tabs = st.tabs.get(&ih).ok_or("no tab serves this torrent")?;
        // Offer ids are random, so a page cannot take a connection it was not offered by guessing.
        let id = fastrand::u64(..);
        let msg = FromBridge::Incoming {
            offer: id,
            info_hash: ih.to_hex(),
            addr: offer.addr.to_string(),
        };
        let taken = tabs.iter().any(|(_, tx)| tx.try_send(msg.clone()).is_ok());
        if !taken {
            return Err("the tab serving this torrent is busy");
        }
        st.offers.insert(id, offer);
        Ok(id)
    }
}

/// Binds the port (`port` 0: any) on every address, IPv6 and IPv4, and starts accepting.
pub async fn start(port: u16) -> anyhow::Result<Arc<Hub>> {
    let listener = match crate::peers::listen("::".parse()?, port).await {
        Ok(l) => l,
        // The usual port may be taken by another client: any port serves as well.
        Err(e) if port != 0 => {
            tracing::warn!("{e:#}; the tab's peers get another port");
            crate::peers::listen("::".parse()?, 0).await?
        }
        Err(e) => return Err(e),
    };
    let hub = Arc::new(Hub {
        port: listener.local_addr()?.port(),
        state: Mutex::new(State_::default()),
        waiting: Arc::new(Semaphore::new(MAX_WAITING)),
    });
    tracing::info!("accepting the tab's peers on port {}", hub.port);
    tokio::spawn(accept_loop(listener, hub.clone()));
    Ok(hub)
}

async fn accept_loop(listener: TcpListener, hub: Arc<Hub>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("peer port: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let Ok(permit) = hub.waiting.clone().try_acquire_owned() else {
            tracing::warn!("peer port: refused {addr}: {MAX_WAITING} connections already wait");
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            match handshake(stream, addr, &hub, permit).await {
                Ok(id) => {
                    tracing::info!("peer port: {addr} offered to the tab (offer {id})");
                    tokio::time::sleep(OFFER_TTL).await;
                    let expired = hub.state.lock().ok().and_then(|mut s| s.offers.remove(&id));
                    if expired.is_some() {
                        tracing::info!("peer port: {addr} dropped: the tab did not take it");
                    }
                }
                Err(why) => tracing::info!("peer port: refused {addr}: {why}"),
            }
        });
    }
}

/// Reads the peer's handshake and offers the connection to a tab serving its info-hash.
async fn handshake(
    mut stream: TcpStream,
    addr: SocketAddr,
    hub: &Hub,
    waiting: OwnedSemaphorePermit,
) -> Result<u64, String> {
    let mut decoder = Decoder::new(DEFAULT_MAX_MESSAGE);
    let mut first = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let ih = loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err("no handshake in time".into()),
            Ok(Ok(0)) => return Err("closed before its handshake".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
        };
        decoder.push(&buf[..n]);
        first.extend_from_slice(&buf[..n]);
        match decoder.next_handshake() {
            Ok(Some(hs)) => break hs.info_hash,
            Ok(None) => {}
            Err(e) => return Err(format!("not a BitTorrent handshake: {e}")),
        }
    };
    let offer = Offer {
        stream,
        first,
        addr,
        _waiting: waiting,
    };
    hub.offer(ih, offer).map_err(|why| format!("{why} ({ih})"))
}

/// `GET /listen` (WebSocket): the tab's offers of peers that dialled in.
pub async fn listen_handler(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = shared.refuse_websocket(&headers, client, "/listen") {
        return refused;
    }
    let hub = shared.incoming.clone();
    ws.max_message_size(4096)
        .on_upgrade(move |socket| listen(socket, hub))
}

async fn listen(mut socket: WebSocket, hub: Arc<Hub>) {
    let port = encode_listen(&FromBridge::Port { port: hub.port });
    if socket.send(Message::Text(port.into())).await.is_err() {
        return;
    }
    let tab = fastrand::u64(..);
    let (tx, mut rx) = mpsc::channel::<FromBridge>(16);
    let mut served: Vec<InfoHash> = Vec::new();
    loop {
        tokio::select! {
            offer = rx.recv() => {
                let Some(offer) = offer else { break };
                if socket.send(Message::Text(encode_listen(&offer).into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => break,
                };
                let Ok(mut st) = hub.state.lock() else { break };
                match decode_listen::<FromTab>(&text) {
                    Some(FromTab::Serve { info_hash }) if served.len() < MAX_SERVED => {
                        if let Some(ih) = InfoHash::from_hex(&info_hash) {
                            served.push(ih);
                            st.tabs.entry(ih).or_default().push((tab, tx.clone()));
                        }
                    }
                    Some(FromTab::Unserve { info_hash }) => {
                        if let Some(ih) = InfoHash::from_hex(&info_hash) {
                            served.retain(|s| *s != ih);
                            unserve(&mut st, ih, tab);
                        }
                    }
                    _ => {
                        tracing::warn!("/listen: a message that is not serve or unserve");
                        break;
                    }
                }
            }
        }
    }
    if let Ok(mut st) = hub.state.lock() {
        for ih in served {
            unserve(&mut st, ih, tab);
        }
    }
}

fn unserve(st: &mut State_, ih: InfoHash, tab: u64) {
    if let Some(tabs) = st.tabs.get_mut(&ih) {
        tabs.retain(|(t, _)| *t != tab);
        if tabs.is_empty() {
            st.tabs.remove(&ih);
        }
    }
}

/// `GET /accept?offer=N` (WebSocket): the tunnel of a peer that dialled in.
pub async fn accept_handler(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = shared.refuse_websocket(&headers, client, "/accept") {
        return refused;
    }
    let offer = query
        .as_deref()
        .and_then(parse_accept_query)
        .and_then(|id| shared.incoming.state.lock().ok()?.offers.remove(&id));
    let Some(offer) = offer else {
        tracing::warn!("refused /accept from {client}: no such offer (taken or expired)");
        return (StatusCode::NOT_FOUND, "no such offer\n").into_response();
    };
    let permit = shared.limits.acquire(client.ip());
    let idle = shared.idle_timeout;
    ws.max_message_size(super::tunnel::MAX_MESSAGE)
        .max_frame_size(super::tunnel::MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            let _permit = match permit {
                Ok(p) => p,
                Err(why) => {
                    tracing::warn!("refused /accept from {client}: {why}");
                    return close(&mut socket, code::BUSY, &format!("bridge busy: {why}")).await;
                }
            };
            let addr = offer.addr;
            if socket
                .send(Message::Binary(offer.first.into()))
                .await
                .is_err()
            {
                return;
            }
            let _ = offer.stream.set_nodelay(true);
            let (rd, wr) = offer.stream.into_split();
            tracing::debug!("incoming {addr} -> tab {client} open");
            relay(
                socket,
                rd,
                wr,
                &format!("incoming {addr} -> tab {client}"),
                idle,
            )
            .await;
        })
}
