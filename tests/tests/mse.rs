//! Our MSE initiator (`protocol::mse`) against python3-libtorrent seeders that refuse
//! unencrypted peers: the handshake completes, the seeder's BitTorrent handshake arrives through
//! the negotiated stream, and a requested block matches the file.

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use protocol::mse::{classify, CryptoMethod, Incoming, Policy};
use tests::data::{assert_same_tree, temp_dir, write_random_file};
use tests::libtorrent::{create_torrent, LtOptions, Torrent};
use tests::mse::{
    plain_handshake, plaintext_answer, EncLevel, EncPolicy, EncryptedConn, EncryptedPeer,
};
use tests::wait::wait_until;
use tests::InfoHash;

const TIMEOUT: Duration = Duration::from_secs(20);
const BLOCK: u32 = 16 * 1024;

const UNCHOKE: u8 = 1;
const INTERESTED: u8 = 2;
const NOT_INTERESTED: u8 = 3;
const BITFIELD: u8 = 5;
const REQUEST: u8 = 6;
const PIECE: u8 = 7;

/// What a test holds on to: the folder, the torrent, its bytes and the running seeder.
type Seeded = (tempfile::TempDir, Torrent, Vec<u8>, EncryptedPeer);

/// A v1 torrent of 1 MiB of random bytes in 256 KiB pieces, seeded with `policy` and `level`.
fn seeder(label: &str, policy: EncPolicy, level: EncLevel) -> Seeded {
    let dir = temp_dir(label);
    let save = dir.path().join("seed");
    let content = save.join("data.bin");
    write_random_file(&content, 1 << 20, 77);
    let torrent = create_torrent(&content, &dir.path().join("t.torrent"), Some(1 << 18), &[]);
    let seeder = EncryptedPeer::start(LtOptions::torrent(&torrent.path, &save), policy, level);
    seeder.wait_finished(Duration::from_secs(60));
    let bytes = fs::read(&content).expect("read the content");
    (dir, torrent, bytes, seeder)
}

/// Runs our initiator with our handshake as IA, then checks the seeder's handshake and one block
/// of the first piece, all through the connection's cipher.
fn fetch_block(
    seeder: &EncryptedPeer,
    ih: InfoHash,
    policy: Policy,
    begin: u32,
) -> (CryptoMethod, Vec<u8>) {
    let ia = plain_handshake(&ih, b"-BW0100-mse-interop1");
    let mut conn = EncryptedConn::connect(seeder.addr(), ih, policy, &ia, TIMEOUT)
        .unwrap_or_else(|e| panic!("MSE handshake with libtorrent failed: {e:?}"));
    let deadline = Instant::now() + TIMEOUT;

    let hs = conn
        .read_exact(68, deadline)
        .expect("the seeder's handshake");
    assert_eq!(hs[0], 19, "a BitTorrent handshake: {hs:?}");
    assert_eq!(&hs[1..20], b"BitTorrent protocol");
    assert_eq!(&hs[28..48], &ih.0, "the seeder answers for our torrent");

    conn.send_message(INTERESTED, &[]).unwrap();
    loop {
        let (id, _) = conn.next_message(deadline).expect("unchoke");
        if id == UNCHOKE {
            break;
        }
    }
    let mut request = 0u32.to_be_bytes().to_vec();
    request.extend_from_slice(&begin.to_be_bytes());
    request.extend_from_slice(&BLOCK.to_be_bytes());
    conn.send_message(REQUEST, &request).unwrap();
    loop {
        let (id, body) = conn.next_message(deadline).expect("the piece");
        if id == PIECE {
            assert_eq!(&body[..8], &request[..8], "the block we asked for");
            return (conn.method(), body[8..].to_vec());
        }
    }
}

#[test]
fn libtorrent_rc4_only_seeder_talks_to_our_initiator() {
    let (_dir, torrent, bytes, seeder) = seeder("mse-rc4", EncPolicy::Forced, EncLevel::Rc4);
    let ih = torrent.info_hash;

    // The control: this seeder refuses a plaintext handshake (closes without a byte).
    assert_eq!(plaintext_answer(seeder.addr(), &ih, TIMEOUT), b"");

    for (policy, begin) in [(Policy::RequireRc4, 0), (Policy::PreferRc4, BLOCK)] {
        let (method, block) = fetch_block(&seeder, ih, policy, begin);
        assert_eq!(method, CryptoMethod::Rc4);
        let at = begin as usize;
        assert!(
            block == bytes[at..at + BLOCK as usize],
            "the block at {begin} differs from the file"
        );
    }

    // Offering plaintext only, we get no method in common: libtorrent hangs up.
    let ia = plain_handshake(&ih, b"-BW0100-mse-interop2");
    match EncryptedConn::connect(seeder.addr(), ih, Policy::PlaintextOnly, &ia, TIMEOUT) {
        Err(tests::mse::HandshakeFailure::Closed { .. }) => {}
        Err(e) => panic!("expected libtorrent to close the connection, got {e:?}"),
        Ok(c) => panic!(
            "libtorrent selected {:?} though we offered plaintext only",
            c.method()
        ),
    }
}

#[test]
fn libtorrent_plaintext_level_seeder_selects_plaintext_after_the_obfuscated_handshake() {
    let (_dir, torrent, bytes, seeder) =
        seeder("mse-plain", EncPolicy::Forced, EncLevel::Plaintext);
    let ih = torrent.info_hash;
    assert_eq!(
        plaintext_answer(seeder.addr(), &ih, TIMEOUT),
        b"",
        "pe_forced refuses unencrypted handshakes whatever the level"
    );
    let (method, block) = fetch_block(&seeder, ih, Policy::PreferRc4, 0);
    assert_eq!(method, CryptoMethod::Plaintext);
    assert!(
        block == bytes[..BLOCK as usize],
        "the block differs from the file"
    );
}

/// The control's control: a seeder that allows plain peers answers the same plaintext handshake,
/// so the refusals above are the encryption policy at work, not a broken probe.
#[test]
fn libtorrent_enabled_seeder_answers_plaintext_and_prefers_rc4() {
    let (_dir, torrent, bytes, seeder) = seeder("mse-enabled", EncPolicy::Enabled, EncLevel::Both);
    let ih = torrent.info_hash;
    let answer = plaintext_answer(seeder.addr(), &ih, TIMEOUT);
    assert_eq!(answer.len(), 68, "a plaintext handshake back: {answer:?}");
    assert_eq!(&answer[28..48], &ih.0);
    let (method, block) = fetch_block(&seeder, ih, Policy::PreferRc4, 0);
    assert_eq!(method, CryptoMethod::Rc4, "prefer_rc4 is on");
    assert!(
        block == bytes[..BLOCK as usize],
        "the block differs from the file"
    );
}

/// The other way round: libtorrent, which only speaks MSE, dials our responder and downloads the
/// whole torrent from it through RC4.
#[test]
fn libtorrent_initiator_downloads_through_our_responder() {
    let dir = temp_dir("mse-responder");
    let content = dir.path().join("seed").join("data.bin");
    write_random_file(&content, 1 << 20, 78);
    let bytes = fs::read(&content).unwrap();
    let torrent = create_torrent(&content, &dir.path().join("t.torrent"), Some(1 << 18), &[]);
    let ih = torrent.info_hash;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let leech = dir.path().join("leech");
    let opts = LtOptions::torrent(&torrent.path, &leech).peer(listener.local_addr().unwrap());
    let leecher = EncryptedPeer::start(opts, EncPolicy::Forced, EncLevel::Rc4);
    let stream = wait_until(TIMEOUT, "libtorrent to dial us", || {
        listener.accept().ok().map(|(s, _)| s)
    });
    stream.set_nonblocking(false).unwrap();
    // Each peek gives up after a second, so the wait below keeps its deadline.
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();

    let mut first = [0u8; 20];
    let seen = wait_until(TIMEOUT, "libtorrent's first bytes", || {
        stream.peek(&mut first).ok().filter(|&n| n == first.len())
    });
    assert_eq!(classify(&first[..seen]), Incoming::Encrypted);

    let mut conn = EncryptedConn::accept(
        stream,
        &[InfoHash([7; 20]), ih],
        Policy::RequireRc4,
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("our responder failed against libtorrent: {e:?}"));
    assert_eq!(conn.method(), CryptoMethod::Rc4);
    assert_eq!(conn.info_hash(), ih);
    let ia = conn.initial_payload();
    assert_eq!(ia.len(), 68, "libtorrent's handshake rides in IA");
    assert_eq!(&ia[..20], b"\x13BitTorrent protocol");
    assert_eq!(&ia[28..48], &ih.0);

    conn.send(&plain_handshake(&ih, b"-BW0100-mse-respond1"))
        .unwrap();
    let pieces = torrent.num_pieces as usize;
    let mut bitfield = vec![0u8; pieces.div_ceil(8)];
    for i in 0..pieces {
        bitfield[i / 8] |= 0x80 >> (i % 8);
    }
    conn.send_message(BITFIELD, &bitfield).unwrap();
    conn.send_message(UNCHOKE, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut served = 0;
    loop {
        let (id, body) = match conn.next_message(deadline) {
            Ok(m) => m,
            // A finished libtorrent drops its connections to seeds, and we said we are one.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("libtorrent's next message: {e}"),
        };
        match id {
            REQUEST => {
                let word = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().unwrap());
                let (index, begin, len) = (word(0), word(4), word(8));
                let at = index as usize * torrent.piece_length as usize + begin as usize;
                let mut piece = body[..8].to_vec();
                piece.extend_from_slice(&bytes[at..at + len as usize]);
                conn.send_message(PIECE, &piece).unwrap();
                served += len as usize;
            }
            // Or it says so first.
            NOT_INTERESTED => break,
            _ => {}
        }
    }
    assert_eq!(served, bytes.len(), "every block requested once");
    leecher.wait_finished(TIMEOUT);
    assert_same_tree(&content, &leech.join("data.bin"));
}
