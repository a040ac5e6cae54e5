//! MSE/PE towards the peer on the tab's behalf (`/peer?...&enc=prefer|require`): the bridge runs
//! `protocol::mse::Initiator` over the TCP connection with the tab's checked handshake as the
//! initial payload (IA), then the relay applies the negotiated RC4 halves. The tab's side of the
//! tunnel stays a plain BitTorrent stream; only the bridge and the peer see the cipher.
//!
//! Memory is bounded by the mse module (padding and lengths are checked before they are
//! buffered) and by reading the peer in chunks of [`READ_CHUNK`]; time by the caller's deadline.

use protocol::mse::{CipherHalf, CryptoMethod, Initiator, MseError, Policy, SEED_LEN};
use protocol::InfoHash;
use std::fmt;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The peer must complete the MSE handshake this soon after the TCP connection is made.
pub(super) const MSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The peer's handshake bytes are read this many at a time.
const READ_CHUNK: usize = 4096;

/// Why an MSE handshake did not complete: with `prefer` the tunnel falls back to a plain
/// handshake on a new connection, with `require` it closes.
#[derive(Debug)]
pub(super) enum Failure {
    /// The OS gave no randomness for the private key.
    Random(getrandom::Error),
    /// The peer closed or reset the connection, typically because it speaks no MSE.
    Closed {
        received: usize,
    },
    Mse(MseError),
    TimedOut,
    Io(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Random(e) => write!(f, "no randomness for the MSE key: {e}"),
            Failure::Closed { received } => write!(
                f,
                "the peer closed the connection during the MSE handshake (after {received} bytes)"
            ),
            Failure::Mse(e) => write!(f, "MSE handshake: {e}"),
            Failure::TimedOut => write!(f, "no MSE handshake within {} s", MSE_TIMEOUT.as_secs()),
            Failure::Io(e) => write!(f, "MSE handshake: {e}"),
        }
    }
}

/// What the relay applies after a completed handshake. The default is a plain tunnel.
#[derive(Debug, Default)]
pub(super) struct Negotiated {
    /// Page to peer; `None` when the peer selected plaintext.
    pub encrypt: Option<CipherHalf>,
    /// Peer to page; `None` when the peer selected plaintext.
    pub decrypt: Option<CipherHalf>,
    /// Peer bytes that came with the end of the handshake, already decrypted: the page's first.
    pub remainder: Vec<u8>,
}

impl Negotiated {
    /// In words, for log lines.
    pub fn describe(&self) -> &'static str {
        match self.encrypt.as_ref().map(CipherHalf::method) {
            Some(CryptoMethod::Rc4) => "MSE, RC4",
            Some(CryptoMethod::Plaintext) | None => "MSE, plaintext selected",
        }
    }
}

/// 32 bytes from the OS's cryptographic source for one handshake's private key and padding.
pub(super) fn seed() -> Result<[u8; SEED_LEN], Failure> {
    let mut seed = [0u8; SEED_LEN];
    getrandom::fill(&mut seed).map_err(Failure::Random)?;
    Ok(seed)
}

/// Runs the initiator's side over `stream` until the handshake completes, fails, or `deadline`
/// passes. `ia` rides encrypted in the third message (the tab's BitTorrent handshake).
pub(super) async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    info_hash: InfoHash,
    policy: Policy,
    seed: [u8; SEED_LEN],
    ia: &[u8],
    deadline: Instant,
) -> Result<Negotiated, Failure> {
    let run = async {
        let mut hs = Initiator::new(info_hash, policy, seed, ia).map_err(Failure::Mse)?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut received = 0;
        loop {
            while let Some(out) = hs.poll_transmit() {
                stream
                    .write_all(&out)
                    .await
                    .map_err(|e| io_failure(e, received))?;
            }
            let n = match stream.read(&mut buf).await {
                Ok(0) => return Err(Failure::Closed { received }),
                Ok(n) => n,
                Err(e) => return Err(io_failure(e, received)),
            };
            received += n;
            if let Some(outcome) = hs.handle_data(&buf[..n]).map_err(Failure::Mse)? {
                // The initiator has nothing more to say once message 3 is out; `Initiator`
                // queues nothing after it, so there is no final flush to make.
                let method = outcome.method;
                let (send, recv) = outcome.cipher.split();
                let (encrypt, decrypt) = match method {
                    CryptoMethod::Rc4 => (Some(send), Some(recv)),
                    CryptoMethod::Plaintext => (None, None),
                };
                return Ok(Negotiated {
                    encrypt,
                    decrypt,
                    remainder: outcome.remainder,
                });
            }
        }
    };
    tokio::time::timeout_at(deadline, run)
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

/// A reset or broken pipe is the peer hanging up, like a clean close.
fn io_failure(e: io::Error, received: usize) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Failure::Closed { received },
        _ => Failure::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::mse::Responder;
    use tokio::io::DuplexStream;

    const IA: &[u8] = b"\x13BitTorrent protocol the tab's handshake, 68 bytes in real life";

    /// Our protocol crate's responder on the other end of `peer`; once the handshake is done it
    /// sends `after` through the negotiated cipher and returns the IA it received.
    async fn respond(mut peer: DuplexStream, policy: Policy, after: &'static [u8]) -> Vec<u8> {
        let mut hs = Responder::new(&[InfoHash([5; 20])], policy, [3; SEED_LEN]);
        let mut buf = [0u8; 1024];
        loop {
            let n = peer.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "the initiator hung up");
            let done = hs.handle_data(&buf[..n]).unwrap();
            while let Some(out) = hs.poll_transmit() {
                peer.write_all(&out).await.unwrap();
            }
            if let Some(mut outcome) = done {
                let mut payload = after.to_vec();
                outcome.cipher.encrypt(&mut payload);
                peer.write_all(&payload).await.unwrap();
                return outcome.initial_payload;
            }
        }
    }

    async fn negotiate(ours: Policy, theirs: Policy) -> (Negotiated, Vec<u8>, DuplexStream) {
        let (mut near, far) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(respond(far, theirs, b"peer payload"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = initiate(
            &mut near,
            InfoHash([5; 20]),
            ours,
            seed().unwrap(),
            IA,
            deadline,
        )
        .await
        .unwrap();
        let ia = peer.await.unwrap();
        (got, ia, near)
    }

    /// What the peer sent after the handshake, decrypted, in however many reads it takes.
    async fn payload(got: &mut Negotiated, near: &mut DuplexStream, len: usize) -> Vec<u8> {
        let mut all = std::mem::take(&mut got.remainder);
        while all.len() < len {
            let mut buf = [0u8; 64];
            let n = near.read(&mut buf).await.unwrap();
            let chunk = &mut buf[..n];
            if let Some(d) = &mut got.decrypt {
                d.apply(chunk);
            }
            all.extend_from_slice(chunk);
        }
        all
    }

    #[tokio::test]
    async fn rc4_both_ways_with_the_ia_delivered() {
        let (mut got, ia, mut near) = negotiate(Policy::PreferRc4, Policy::PreferRc4).await;
        assert_eq!(ia, IA);
        assert_eq!(got.describe(), "MSE, RC4");
        assert!(got.encrypt.is_some());
        assert_eq!(payload(&mut got, &mut near, 12).await, b"peer payload");
    }

    #[tokio::test]
    async fn plaintext_selected_needs_no_cipher() {
        let (mut got, ia, mut near) = negotiate(Policy::PreferRc4, Policy::PlaintextOnly).await;
        assert_eq!(ia, IA);
        assert!(got.encrypt.is_none() && got.decrypt.is_none());
        assert_eq!(payload(&mut got, &mut near, 12).await, b"peer payload");
    }

    #[tokio::test]
    async fn requiring_rc4_from_a_plaintext_only_peer_fails() {
        let (mut near, far) = tokio::io::duplex(64 * 1024);
        // The responder finds no common method and drops the connection.
        let peer = tokio::spawn(async move {
            let mut far = far;
            let mut hs = Responder::new(&[InfoHash([5; 20])], Policy::PlaintextOnly, [3; 32]);
            let mut buf = [0u8; 1024];
            loop {
                let n = far.read(&mut buf).await.unwrap();
                match hs.handle_data(&buf[..n]) {
                    Ok(_) => {
                        while let Some(out) = hs.poll_transmit() {
                            far.write_all(&out).await.unwrap();
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = initiate(
            &mut near,
            InfoHash([5; 20]),
            Policy::RequireRc4,
            seed().unwrap(),
            IA,
            deadline,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Failure::Closed { .. }), "{err}");
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_a_silent_one_and_a_garbage_one_fail() {
        // Hangs up at once, as a plain-only client does on bytes that are not a handshake.
        let (mut near, far) = tokio::io::duplex(4096);
        drop(far);
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = initiate(
            &mut near,
            InfoHash([5; 20]),
            Policy::PreferRc4,
            [1; 32],
            IA,
            deadline,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Failure::Closed { received: 0 }), "{err}");

        // Listens and says nothing.
        let (mut near, _far) = tokio::io::duplex(4096);
        let deadline = Instant::now() + Duration::from_millis(300);
        let err = initiate(
            &mut near,
            InfoHash([5; 20]),
            Policy::PreferRc4,
            [1; 32],
            IA,
            deadline,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Failure::TimedOut), "{err}");
        assert!(err.to_string().contains("no MSE handshake within"));

        // Sends a key and then endless zeros: no verification constant within the padding.
        let (mut near, mut far) = tokio::io::duplex(64 * 1024);
        let junk = tokio::spawn(async move {
            let zeros = [0u8; 1024];
            while far.write_all(&zeros).await.is_ok() {}
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = initiate(
            &mut near,
            InfoHash([5; 20]),
            Policy::PreferRc4,
            [1; 32],
            IA,
            deadline,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Failure::Mse(MseError::VcNotFound)), "{err}");
        drop(near);
        junk.await.unwrap();
    }
}
