//! `poll_transmit` swaps send buffers with the driver instead of allocating one per send.

use super::*;

#[test]
fn send_buffers_go_back_and_forth_without_allocating() {
    let (data, info) = make_torrent(100_000, 16 * 1024, 15);
    let mut t = checked(&info, &vec![0; data.len()], 151);
    let conn = t
        .handle_incoming("10.1.1.3:6881".parse().unwrap(), 0)
        .unwrap();
    let hs = Handshake::new(info.info_hash, PeerId::generate(152)).encode();
    t.handle_data(conn, &hs, 0);
    let mut buf = Vec::with_capacity(4096);
    let given = buf.as_ptr();
    assert_eq!(t.poll_transmit(0, &mut buf), Some(conn));
    assert!(buf.starts_with(&hs[..20]), "our handshake comes first");
    assert_eq!(t.poll_transmit(0, &mut buf), None);
    assert!(
        !buf.is_empty(),
        "a poll without output leaves the buffer alone"
    );
    // The peer wrote its next message into the buffer it was given.
    let mut have_all = Vec::new();
    Message::HaveAll.encode(&mut have_all);
    t.handle_data(conn, &have_all, 0);
    assert_eq!(t.poll_transmit(0, &mut buf), Some(conn));
    assert_eq!(buf.as_ptr(), given);
    let mut decoder = Decoder::new(1 << 20);
    decoder.push(&buf);
    assert_eq!(decoder.next().unwrap(), Some(Message::Interested));
    // A buffer grown by an upload is not kept by the peer it goes to.
    let mut big = Vec::with_capacity(1 << 20);
    t.handle_data(conn, &have_all, 0);
    let mut unchoke = Vec::new();
    Message::Unchoke.encode(&mut unchoke);
    t.handle_data(conn, &unchoke, 0);
    assert_eq!(t.poll_transmit(0, &mut big), Some(conn));
    t.handle_timeout(60_000);
    assert_eq!(t.poll_transmit(60_000, &mut buf), Some(conn));
    assert!(buf.capacity() < 1 << 20, "{}", buf.capacity());
}
