//! `bridge serve` as a process on loopback: the embedded assets, the WebSocket tunnel and its
//! guards, and `/announce`'s parameter checks.

use futures_util::{SinkExt, StreamExt};
use protocol::wire::Handshake;
use protocol::{InfoHash, PeerId};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every wait in these tests ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(20);

struct Bridge {
    child: Child,
    /// `http://127.0.0.1:PORT` without the trailing slash: also the page's origin.
    origin: String,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bridge {
    fn start(extra: &[&str]) -> Bridge {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env(
                "RUST_LOG",
                "debug,hyper=info,tungstenite=info,tokio_tungstenite=info",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start bridge");
        let stdout = child.stdout.take().unwrap();
        // The line comes at once or the process died (EOF): no timeout needed.
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("page: "))
            .expect("bridge printed no page: line");
        let url = line.trim_start_matches("page: ").trim();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
            "{url}"
        );
        Bridge {
            child,
            origin: url.trim_end_matches('/').to_string(),
        }
    }

    async fn get(&self, path: &str, origin: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.origin));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("HTTP timed out")
            .expect("HTTP request")
    }

    async fn ws(
        &self,
        addr: SocketAddr,
        origin: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let url = format!("{}/peer?addr={addr}", self.origin.replace("http", "ws"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
        tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
            .await
            .expect("WebSocket connect timed out")
            .map(|(ws, _)| ws)
    }
}

fn handshake() -> [u8; 68] {
    Handshake::new(InfoHash([7; 20]), PeerId([9; 20])).encode()
}

/// Reads until the close frame; returns its code. Data frames before it are discarded.
async fn close_code(ws: &mut Ws) -> u16 {
    tokio::time::timeout(DEADLINE, async {
        while let Some(m) = ws.next().await {
            if let Message::Close(frame) = m.expect("WebSocket error before close") {
                return frame.map(|f| u16::from(f.code)).unwrap_or(1005);
            }
        }
        panic!("WebSocket ended without a close frame");
    })
    .await
    .expect("no close frame in time")
}

/// A listener that must never see a connection: checked without waiting, because the bridge
/// would have connected before it sent its close frame.
fn untouched_listener() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

fn assert_no_connection(l: &std::net::TcpListener) {
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the bridge connected: {other:?}"),
    }
}

#[tokio::test]
async fn serves_embedded_assets_with_their_types() {
    let b = Bridge::start(&[]);
    let r = b.get("/pkg/web_bg.wasm", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/wasm");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..4], b"\0asm");

    let r = b.get("/pkg/web.js", None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    let index = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/index.html");
    if index.exists() {
        for path in ["/", "/index.html"] {
            let r = b.get(path, None).await;
            assert_eq!(r.status(), 200, "{path}");
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            assert_eq!(r.bytes().await.unwrap(), std::fs::read(&index).unwrap());
        }
    }
    for path in [
        "/nothing-here",
        "/pkg/",
        "/../Cargo.toml",
        "/www/index.html",
    ] {
        assert_eq!(b.get(path, None).await.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn foreign_origin_is_refused_before_the_upgrade() {
    let b = Bridge::start(&["--allow-private"]);
    let l = untouched_listener();
    match b.ws(l.local_addr().unwrap(), "http://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| "a WebSocket")),
    }
    // The same for /announce from a foreign page.
    let r = b
        .get(
            "/announce?url=http://t.example/",
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_no_connection(&l);
}

#[tokio::test]
async fn garbage_first_bytes_close_4003_without_connecting() {
    let b = Bridge::start(&["--allow-private"]);
    let l = untouched_listener();
    let mut ws = b.ws(l.local_addr().unwrap(), &b.origin).await.unwrap();
    ws.send(Message::Binary(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec().into(),
    ))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 4003);
    assert_no_connection(&l);

    // A valid start is not enough: the whole 68 bytes must be a handshake.
    let mut ws = b.ws(l.local_addr().unwrap(), &b.origin).await.unwrap();
    let mut hs = handshake();
    hs[..20].copy_from_slice(b"\x13BitTorrent protocoX");
    ws.send(Message::Binary(hs[..10].to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(hs[10..].to_vec().into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4003);
    assert_no_connection(&l);
}

#[tokio::test]
async fn private_destination_is_refused_without_allow_private() {
    let b = Bridge::start(&[]);
    let l = untouched_listener();
    let mut ws = b.ws(l.local_addr().unwrap(), &b.origin).await.unwrap();
    ws.send(Message::Binary(handshake().to_vec().into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4002);
    assert_no_connection(&l);
}

#[tokio::test]
async fn tunnel_carries_bytes_both_ways_and_reports_the_peer_closing() {
    let b = Bridge::start(&["--allow-private"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Larger than any buffer on the way, so backpressure has to work for it to arrive.
    const BIG: usize = 8 << 20;
    let pattern = |i: usize| (i % 251) as u8;

    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hs = [0u8; 68];
        s.read_exact(&mut hs).await.unwrap();
        assert_eq!(hs, handshake());
        // Echo the handshake, then a large stream, then read what the page sends.
        s.write_all(&hs).await.unwrap();
        let data: Vec<u8> = (0..BIG).map(pattern).collect();
        s.write_all(&data).await.unwrap();
        let mut up = vec![0u8; 1 << 20];
        s.read_exact(&mut up).await.unwrap();
        assert!(up.iter().enumerate().all(|(i, b)| *b == pattern(i + 7)));
        // Closing from the peer's side ends the tunnel with 4005.
    });

    let mut ws = b.ws(addr, &b.origin).await.unwrap();
    // The handshake split across frames, with the first upload bytes in the same frame as its end.
    let hs = handshake();
    ws.send(Message::Binary(hs[..30].to_vec().into()))
        .await
        .unwrap();
    let up: Vec<u8> = (0..1 << 20).map(|i| pattern(i + 7)).collect();
    let mut second = hs[30..].to_vec();
    second.extend_from_slice(&up[..1000]);
    ws.send(Message::Binary(second.into())).await.unwrap();

    let mut got = Vec::new();
    let want = 68 + BIG;
    tokio::time::timeout(DEADLINE, async {
        while got.len() < want {
            match ws.next().await.expect("tunnel ended early").unwrap() {
                Message::Binary(b) => got.extend_from_slice(&b),
                Message::Close(f) => panic!("closed early: {f:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("download through the tunnel timed out");
    assert_eq!(got.len(), want);
    assert_eq!(&got[..68], &hs[..]);
    assert!(got[68..].iter().enumerate().all(|(i, b)| *b == pattern(i)));

    for chunk in up[1000..].chunks(64 * 1024) {
        ws.send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    tokio::time::timeout(DEADLINE, peer)
        .await
        .expect("peer timed out")
        .expect("peer failed");
    assert_eq!(close_code(&mut ws).await, 4005);
}

#[tokio::test]
async fn tunnels_per_client_are_limited() {
    let b = Bridge::start(&["--allow-private", "--max-tunnels-per-client", "1"]);
    let l = untouched_listener();
    let addr = l.local_addr().unwrap();
    let _first = b.ws(addr, &b.origin).await.unwrap();
    let mut second = b.ws(addr, &b.origin).await.unwrap();
    assert_eq!(close_code(&mut second).await, 4004);
}

#[tokio::test]
async fn announce_refuses_bad_parameters() {
    let b = Bridge::start(&[]);
    let ih = "0123456789abcdef0123456789abcdef01234567";
    for (query, why) in [
        (
            format!("url=ftp://t.example/&info_hash={ih}&peer_id={ih}&port=1"),
            "scheme",
        ),
        (
            format!("url=file:///etc/passwd&info_hash={ih}&peer_id={ih}&port=1"),
            "scheme",
        ),
        (
            format!("url=http://t.example/&info_hash=zz&peer_id={ih}&port=1"),
            "info_hash",
        ),
        // A tracker on loopback needs --allow-private.
        (
            format!("url=http://127.0.0.1:1/a&info_hash={ih}&peer_id={ih}&port=1"),
            "private",
        ),
    ] {
        let r = b.get(&format!("/announce?{query}"), Some(&b.origin)).await;
        assert_eq!(r.status(), 400, "{query}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(why), "{query}: {msg}");
    }
}

#[tokio::test]
async fn refused_connect_idle_tunnel_and_page_close() {
    let b = Bridge::start(&["--allow-private", "--idle-timeout", "1"]);

    // Nothing listens on a port just freed: 4000.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = free.local_addr().unwrap();
    drop(free);
    let mut ws = b.ws(gone, &b.origin).await.unwrap();
    ws.send(Message::Binary(handshake().to_vec().into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4000);

    // A peer that says nothing after the handshake: the idle timeout closes with 4001.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut ws = b.ws(addr, &b.origin).await.unwrap();
    ws.send(Message::Binary(handshake().to_vec().into()))
        .await
        .unwrap();
    let (mut quiet, _) = listener.accept().await.unwrap();
    assert_eq!(close_code(&mut ws).await, 4001);
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, quiet.read_to_end(&mut rest))
        .await
        .expect("the bridge kept the idle connection open")
        .unwrap();
    assert_eq!(rest, handshake());

    // The page closing normally closes the peer's connection.
    let mut ws = b.ws(addr, &b.origin).await.unwrap();
    ws.send(Message::Binary(handshake().to_vec().into()))
        .await
        .unwrap();
    let (mut peer, _) = listener.accept().await.unwrap();
    let mut hs = [0u8; 68];
    peer.read_exact(&mut hs).await.unwrap();
    ws.close(None).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, peer.read_to_end(&mut rest))
        .await
        .expect("the bridge kept the peer connection open")
        .unwrap();
    assert!(rest.is_empty());
}
