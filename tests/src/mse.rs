//! Protocol encryption (MSE/PE) against real peers: a python3-libtorrent seeder whose encryption
//! policy the test chooses (`tests/py/lt_enc_peer.py`), and a blocking client that runs
//! `protocol::mse::Initiator` over a `std::net::TcpStream`.
//!
//! After the MSE handshake the client frames BitTorrent messages by hand (4-byte length, id,
//! payload) instead of using the protocol crate's decoder: only the code under test is ours.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use protocol::mse::{CryptoMethod, Initiator, MseError, Outcome, Policy, Responder, SEED_LEN};

use crate::libtorrent::{wait_listening, Event, LtOptions, PYTHON, SCRIPT};
use crate::process::{Proc, Stream};
use crate::InfoHash;

pub const ENC_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/lt_enc_peer.py");

/// libtorrent's `allowed_enc_level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncLevel {
    Rc4,
    Plaintext,
    Both,
}

impl EncLevel {
    fn arg(self) -> &'static str {
        match self {
            EncLevel::Rc4 => "rc4",
            EncLevel::Plaintext => "plaintext",
            EncLevel::Both => "both",
        }
    }
}

/// libtorrent's `in_enc_policy` and `out_enc_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncPolicy {
    /// Only MSE peers.
    Forced,
    /// MSE and plain peers alike.
    Enabled,
}

impl EncPolicy {
    fn arg(self) -> &'static str {
        match self {
            EncPolicy::Forced => "forced",
            EncPolicy::Enabled => "enabled",
        }
    }
}

/// A libtorrent peer (seeder or leecher) on 127.0.0.1 with its encryption settings chosen.
pub struct EncryptedPeer {
    proc: Proc,
    port: u16,
}

impl EncryptedPeer {
    /// Starts the peer `opts` describes and returns once it listens.
    pub fn start(opts: LtOptions, policy: EncPolicy, level: EncLevel) -> EncryptedPeer {
        // lt_peer.py's own command line, run through the wrapper that adds the settings.
        let plain = opts.command();
        let mut cmd = Command::new(PYTHON);
        for arg in plain.get_args() {
            if arg == SCRIPT {
                cmd.arg(ENC_SCRIPT);
            } else {
                cmd.arg(arg);
            }
        }
        cmd.args(["--enc-policy", policy.arg(), "--enc-level", level.arg()]);
        let proc = Proc::spawn("lt encrypted peer", cmd);
        let port = wait_listening(&proc);
        EncryptedPeer { proc, port }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Waits until libtorrent has every piece verified and written.
    pub fn wait_finished(&self, timeout: Duration) {
        self.proc
            .wait_line(Stream::Stdout, timeout, "libtorrent to finish", |l| {
                matches!(serde_json::from_str(l), Ok(Event::Finished)).then_some(())
            });
    }
}

/// Why an MSE handshake over TCP did not complete.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The peer closed (or reset) the connection first.
    Closed {
        received: usize,
    },
    Mse(MseError),
    TimedOut,
    Io(io::Error),
}

/// A TCP connection with the MSE handshake done: BitTorrent messages go through its cipher.
pub struct EncryptedConn {
    stream: TcpStream,
    /// Its remainder is the inbox: decrypted bytes not yet taken as messages.
    outcome: Outcome,
}

/// A fresh seed for the handshake. Tests need no cryptographic randomness.
pub fn test_seed() -> [u8; SEED_LEN] {
    core::array::from_fn(|_| fastrand::u8(..))
}

/// Either side of the handshake, for [`run_handshake`].
trait Handshaking {
    fn handle(&mut self, data: &[u8]) -> Result<Option<Outcome>, MseError>;
    fn transmit(&mut self) -> Option<Vec<u8>>;
}

impl Handshaking for Initiator {
    fn handle(&mut self, data: &[u8]) -> Result<Option<Outcome>, MseError> {
        self.handle_data(data)
    }
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit()
    }
}

impl Handshaking for Responder {
    fn handle(&mut self, data: &[u8]) -> Result<Option<Outcome>, MseError> {
        self.handle_data(data)
    }
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit()
    }
}

/// Moves bytes between `stream` and `hs` until the handshake completes.
fn run_handshake(
    stream: &mut TcpStream,
    hs: &mut impl Handshaking,
    deadline: Instant,
) -> Result<Outcome, HandshakeFailure> {
    let mut received = 0;
    let mut done = None;
    loop {
        // Also after the last input: the responder's message 4 may come with its outcome.
        while let Some(out) = hs.transmit() {
            stream.write_all(&out).map_err(HandshakeFailure::Io)?;
        }
        if let Some(outcome) = done {
            return Ok(outcome);
        }
        let mut buf = [0u8; 4096];
        let n = match read_until(stream, &mut buf, deadline) {
            Ok(0) => return Err(HandshakeFailure::Closed { received }),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(HandshakeFailure::Closed { received })
            }
            Err(e) if is_timeout(&e) => return Err(HandshakeFailure::TimedOut),
            Err(e) => return Err(HandshakeFailure::Io(e)),
        };
        received += n;
        done = hs.handle(&buf[..n]).map_err(HandshakeFailure::Mse)?;
    }
}

impl EncryptedConn {
    /// Connects to `addr` and runs our initiator with `ia` (usually our BitTorrent handshake) as
    /// the initial payload, until the handshake completes or `timeout` passes.
    pub fn connect(
        addr: SocketAddr,
        info_hash: InfoHash,
        policy: Policy,
        ia: &[u8],
        timeout: Duration,
    ) -> Result<EncryptedConn, HandshakeFailure> {
        let deadline = Instant::now() + timeout;
        let mut stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(HandshakeFailure::Io)?;
        let mut hs =
            Initiator::new(info_hash, policy, test_seed(), ia).map_err(HandshakeFailure::Mse)?;
        let outcome = run_handshake(&mut stream, &mut hs, deadline)?;
        Ok(EncryptedConn { stream, outcome })
    }

    /// Runs our responder on an accepted connection, for any of `info_hashes`.
    pub fn accept(
        mut stream: TcpStream,
        info_hashes: &[InfoHash],
        policy: Policy,
        timeout: Duration,
    ) -> Result<EncryptedConn, HandshakeFailure> {
        let deadline = Instant::now() + timeout;
        let mut hs = Responder::new(info_hashes, policy, test_seed());
        let outcome = run_handshake(&mut stream, &mut hs, deadline)?;
        Ok(EncryptedConn { stream, outcome })
    }

    /// The torrent the handshake was for.
    pub fn info_hash(&self) -> InfoHash {
        self.outcome.info_hash
    }

    /// The initiator's IA, decrypted (empty when we initiated).
    pub fn initial_payload(&self) -> &[u8] {
        &self.outcome.initial_payload
    }

    /// The method the peer selected.
    pub fn method(&self) -> CryptoMethod {
        self.outcome.method
    }

    /// Encrypts and sends `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut buf = bytes.to_vec();
        self.outcome.cipher.encrypt(&mut buf);
        self.stream.write_all(&buf)
    }

    /// Sends one message: length prefix, `id`, `payload`.
    pub fn send_message(&mut self, id: u8, payload: &[u8]) -> io::Result<()> {
        let mut msg = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        msg.push(id);
        msg.extend_from_slice(payload);
        self.send(&msg)
    }

    /// The next `n` decrypted bytes.
    pub fn read_exact(&mut self, n: usize, deadline: Instant) -> io::Result<Vec<u8>> {
        while self.outcome.remainder.len() < n {
            let mut buf = [0u8; 16384];
            let got = read_until(&mut self.stream, &mut buf, deadline)?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut chunk = buf[..got].to_vec();
            self.outcome.cipher.decrypt(&mut chunk);
            self.outcome.remainder.extend_from_slice(&chunk);
        }
        Ok(self.outcome.remainder.drain(..n).collect())
    }

    /// The next message as `(id, payload)`, keep-alives skipped. Refuses lengths over 1 MiB.
    pub fn next_message(&mut self, deadline: Instant) -> io::Result<(u8, Vec<u8>)> {
        loop {
            let len = self.read_exact(4, deadline)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if len > 1 << 20 {
                return Err(io::Error::other(format!("message length {len}")));
            }
            if len == 0 {
                continue;
            }
            let mut body = self.read_exact(len, deadline)?;
            let id = body.remove(0);
            return Ok((id, body));
        }
    }
}

/// One read with the time left until `deadline` as its timeout.
fn read_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    stream.read(buf)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// A BitTorrent handshake written out by hand: no reserved bits, `peer_id` as given.
pub fn plain_handshake(info_hash: &InfoHash, peer_id: &[u8; 20]) -> Vec<u8> {
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&info_hash.0);
    hs.extend_from_slice(peer_id);
    hs
}

/// What a peer answers to a plaintext handshake on a fresh connection: the bytes it sent before
/// closing, or up to 68 of them if it keeps the connection open.
pub fn plaintext_answer(addr: SocketAddr, info_hash: &InfoHash, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).expect("connect to the peer");
    stream
        .write_all(&plain_handshake(info_hash, b"-PL0001-plaintext-pe"))
        .expect("send a plaintext handshake");
    let mut got = Vec::new();
    let mut buf = [0u8; 68];
    while got.len() < 68 {
        match read_until(&mut stream, &mut buf[..68 - got.len()], deadline) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer and no close within {timeout:?}: {e}"),
        }
    }
    got
}
