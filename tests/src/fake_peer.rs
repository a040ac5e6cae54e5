//! Hostile peers: TCP listeners that answer the BitTorrent handshake correctly and then misbehave.
//!
//! The wire format is written out by hand here rather than taken from the protocol crate, so the
//! tests do not trust the code they test. Each [`FakePeer`] owns a small tokio runtime; it serves
//! every connection until the peer closes it, and counts what happened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::InfoHash;

/// How a fake peer misbehaves after a valid handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Sends a message length prefix of 0xFFFF_FFF0, then nothing more.
    OversizedLength,
    /// Sends bytes that are no valid message stream.
    Garbage,
    /// Claims every piece, unchokes, and answers each request with wrong bytes.
    CorruptPieces { num_pieces: u32 },
}

/// What a fake peer saw, for assertions.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections whose handshake named our torrent.
    pub handshakes: AtomicU64,
    /// Requests answered with corrupt data.
    pub corrupt_blocks: AtomicU64,
    /// Connections the other side closed (EOF or reset).
    pub closed_by_peer: AtomicU64,
}

pub struct FakePeer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    _runtime: Runtime,
}

impl FakePeer {
    /// Listens on 127.0.0.1 (a free port) and serves every connection for `info_hash`.
    pub fn start(behaviour: Misbehaviour, info_hash: InfoHash) -> FakePeer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind a fake peer");
        let addr = listener.local_addr().expect("local_addr");
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let _ = serve(stream, behaviour, info_hash, &c).await;
                });
            }
        });
        FakePeer {
            addr,
            counters,
            _runtime: runtime,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn handshakes(&self) -> u64 {
        self.counters.handshakes.load(Ordering::Relaxed)
    }

    pub fn corrupt_blocks(&self) -> u64 {
        self.counters.corrupt_blocks.load(Ordering::Relaxed)
    }
}

/// The 68-byte BitTorrent handshake, with no extension bits.
pub fn handshake(info_hash: &InfoHash, peer_id: &[u8; 20]) -> Vec<u8> {
    let mut h = Vec::with_capacity(68);
    h.push(19);
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&info_hash.0);
    h.extend_from_slice(peer_id);
    h
}

async fn serve(
    mut s: TcpStream,
    behaviour: Misbehaviour,
    info_hash: InfoHash,
    c: &Counters,
) -> std::io::Result<()> {
    let mut theirs = [0u8; 68];
    s.read_exact(&mut theirs).await?;
    if theirs[..20] != handshake(&info_hash, &[0; 20])[..20] || theirs[28..48] != info_hash.0 {
        return Ok(());
    }
    c.handshakes.fetch_add(1, Ordering::Relaxed);
    s.write_all(&handshake(&info_hash, b"-FK0001-fakefakefake"))
        .await?;
    match behaviour {
        Misbehaviour::OversizedLength => {
            s.write_all(&0xFFFF_FFF0u32.to_be_bytes()).await?;
            s.write_all(&[7; 64]).await?;
        }
        Misbehaviour::Garbage => {
            let mut rng = fastrand::Rng::with_seed(0x6a7b);
            // A plausible start (a short message of an unknown id), then noise.
            let mut junk = vec![0, 0, 0, 3, 0xEE, 0xEE, 0xEE];
            junk.extend((0..4096).map(|_| rng.u8(..)));
            s.write_all(&junk).await?;
        }
        Misbehaviour::CorruptPieces { num_pieces } => {
            return serve_corrupt(s, num_pieces, c).await;
        }
    }
    drain(s, c).await
}

/// Reads until the other side closes, counting the close.
async fn drain(mut s: TcpStream, c: &Counters) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => {
                c.closed_by_peer.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Ok(_) => {}
        }
    }
}

async fn serve_corrupt(mut s: TcpStream, num_pieces: u32, c: &Counters) -> std::io::Result<()> {
    // bitfield with every piece, then unchoke.
    let bytes = num_pieces.div_ceil(8) as usize;
    let mut field = vec![0xFFu8; bytes];
    let spare = bytes * 8 - num_pieces as usize;
    if let Some(last) = field.last_mut() {
        *last = 0xFFu8 << spare;
    }
    let mut msg = ((1 + bytes) as u32).to_be_bytes().to_vec();
    msg.push(5);
    msg.extend_from_slice(&field);
    msg.extend_from_slice(&[0, 0, 0, 1, 1]);
    s.write_all(&msg).await?;
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).await.is_err() {
            c.closed_by_peer.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > (1 << 20) {
            return Ok(());
        }
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).await.is_err() {
            c.closed_by_peer.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // request: id 6, index, begin, length.
        if body.len() == 13 && body[0] == 6 {
            let index = &body[1..5];
            let begin = &body[5..9];
            let length = u32::from_be_bytes([body[9], body[10], body[11], body[12]]) as usize;
            if length > (1 << 17) {
                continue;
            }
            let mut piece = ((9 + length) as u32).to_be_bytes().to_vec();
            piece.push(7);
            piece.extend_from_slice(index);
            piece.extend_from_slice(begin);
            piece.resize(piece.len() + length, 0xA5);
            // Counted before the write: a reader may hold the block before `write_all` returns.
            c.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
            s.write_all(&piece).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn corrupt_peer_answers_requests_with_wrong_bytes() {
        let hash = InfoHash([9; 20]);
        let peer = FakePeer::start(Misbehaviour::CorruptPieces { num_pieces: 10 }, hash);
        let mut s = std::net::TcpStream::connect(peer.addr()).unwrap();
        s.write_all(&handshake(&hash, &[1; 20])).unwrap();
        let mut theirs = [0u8; 68];
        s.read_exact(&mut theirs).unwrap();
        assert_eq!(&theirs[28..48], &hash.0);
        let mut first = [0u8; 4 + 1 + 2 + 5];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first[..7], &[0, 0, 0, 3, 5, 0xFF, 0xC0]);
        assert_eq!(&first[7..], &[0, 0, 0, 1, 1]);
        let mut req = vec![0, 0, 0, 13, 6, 0, 0, 0, 2, 0, 0, 0, 0];
        req.extend_from_slice(&16384u32.to_be_bytes());
        s.write_all(&req).unwrap();
        let mut head = [0u8; 13];
        s.read_exact(&mut head).unwrap();
        assert_eq!(u32::from_be_bytes(head[..4].try_into().unwrap()), 9 + 16384);
        assert_eq!(head[4], 7);
        let mut block = vec![0u8; 16384];
        s.read_exact(&mut block).unwrap();
        assert!(block.iter().all(|&b| b == 0xA5));
        assert_eq!(peer.corrupt_blocks(), 1);
    }
}
