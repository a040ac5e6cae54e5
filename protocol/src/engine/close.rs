//! Why the engine closes a connection.

use std::fmt;

/// The reason of an [`Event::Close`](super::Event::Close). `Display` gives it in words, as a log
/// line or a page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// `Torrent::pause` closes every connection.
    Paused,
    /// An outgoing connection was not established in time.
    ConnectTimedOut,
    /// The peer's BitTorrent handshake did not arrive in time.
    HandshakeTimedOut,
    /// The peer sent nothing for `Config::peer_timeout_ms`.
    TimedOut,
    /// The peer sent data that failed its hash (pieces or metadata) and is banned.
    Banned,
    /// We have every piece and so does the peer.
    BothSeeds,
    /// The handshake named another torrent's info-hash.
    OtherTorrent,
    /// The handshake carried our own peer id: we dialled ourselves.
    Ourselves,
    /// The handshake carried the peer id of a peer banned before.
    BannedPeerId,
    /// Another connection to this peer id is open already.
    AlreadyConnected,
    /// The peer broke the protocol; the detail says how.
    Protocol(String),
}

impl CloseReason {
    pub(crate) fn protocol(detail: impl fmt::Display) -> Self {
        CloseReason::Protocol(detail.to_string())
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Paused => "paused",
            CloseReason::ConnectTimedOut => "connect timed out",
            CloseReason::HandshakeTimedOut => "handshake timed out",
            CloseReason::TimedOut => "timed out",
            CloseReason::Banned => "banned: sent bad data",
            CloseReason::BothSeeds => "both of us are seeds",
            CloseReason::OtherTorrent => "handshake for another torrent",
            CloseReason::Ourselves => "connected to ourselves",
            CloseReason::BannedPeerId => "banned peer",
            CloseReason::AlreadyConnected => "already connected to this peer",
            CloseReason::Protocol(detail) => detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::CloseReason;

    #[test]
    fn display_gives_the_words() {
        let cases = [
            (CloseReason::Paused, "paused"),
            (CloseReason::ConnectTimedOut, "connect timed out"),
            (CloseReason::HandshakeTimedOut, "handshake timed out"),
            (CloseReason::TimedOut, "timed out"),
            (CloseReason::Banned, "banned: sent bad data"),
            (CloseReason::BothSeeds, "both of us are seeds"),
            (CloseReason::OtherTorrent, "handshake for another torrent"),
            (CloseReason::Ourselves, "connected to ourselves"),
            (CloseReason::BannedPeerId, "banned peer"),
            (
                CloseReason::AlreadyConnected,
                "already connected to this peer",
            ),
            (
                CloseReason::protocol(format_args!("have for piece {} of {}", 9, 3)),
                "have for piece 9 of 3",
            ),
        ];
        for (reason, words) in cases {
            assert_eq!(reason.to_string(), words);
            assert_eq!(format!("{reason}"), words);
        }
    }
}
