//! What a torrent looks like to a person: the snapshot both the command line's bar and the page
//! render, and the words for what is wrong.

use crate::engine::PeerInfo;
use crate::InfoHash;

/// At most this many cells in a piece map: the page draws one column per cell.
pub const MAX_CELLS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A magnet waiting for its metadata from peers.
    Metadata,
    /// Opening the data and checking what it already holds.
    Checking,
    Downloading,
    /// Every piece is verified; uploading to whoever asks.
    Seeding,
    Paused,
    /// Stopped by an error (see `Status::error`).
    Failed,
}

impl State {
    /// The word the page shows and styles by.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Metadata => "metadata",
            State::Checking => "checking",
            State::Downloading => "downloading",
            State::Seeding => "seeding",
            State::Paused => "paused",
            State::Failed => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileStatus {
    /// The path inside the torrent, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Verified bytes of this file.
    pub done: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub info_hash: InfoHash,
    /// The torrent's name, else the magnet's `dn`, else the info-hash in hex.
    pub name: String,
    pub state: State,
    /// Why the torrent stopped, with `State::Failed`.
    pub error: Option<String>,
    /// What a person should know is wrong, the worst first (no peers, a tracker failing ...).
    pub warning: Option<String>,
    /// Bytes of the torrent (0 until a magnet's metadata came).
    pub total: u64,
    pub verified: u64,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// Payload bytes received and sent since the torrent was added.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes per second over the last few seconds.
    pub download_rate: f64,
    pub upload_rate: f64,
    /// Seconds left at the current rate, where that can be told.
    pub eta_secs: Option<f64>,
    pub peers_connected: usize,
    /// Peer addresses known (tracker, PEX, magnet ...), connected or not.
    pub peers_known: usize,
    pub peers: Vec<PeerInfo>,
    pub pieces_have: u32,
    pub pieces_total: u32,
    /// Verified share of each cell, 0..=100, at most `MAX_CELLS` cells.
    pub piece_map: Vec<u8>,
    pub files: Vec<FileStatus>,
    /// Milliseconds since the download last moved (0 when nothing is expected to move: paused,
    /// checking, complete).
    pub stalled_ms: u64,
}

/// The piece map downsampled to at most `max_cells` cells, each the percentage (0..=100) of
/// verified pieces it covers. A torrent with fewer pieces gets one cell per piece.
pub fn piece_map(have: &[bool], max_cells: usize) -> Vec<u8> {
    let n = have.len();
    let cells = n.min(max_cells.max(1));
    (0..cells)
        .map(|i| {
            let start = i * n / cells;
            let end = ((i + 1) * n / cells).max(start + 1);
            let got = have[start..end].iter().filter(|&&h| h).count();
            (got * 100 / (end - start)) as u8
        })
        .collect()
}

/// Seconds left at `rate` bytes per second, if it can be told.
pub fn eta_secs(remaining: u64, rate: f64) -> Option<f64> {
    if remaining == 0 {
        return Some(0.0);
    }
    (rate >= 1.0).then(|| (remaining as f64 / rate).ceil())
}

/// What the session knows of a torrent's reach, for the warning.
pub(super) struct Reach<'a> {
    pub bridge_error: Option<&'a str>,
    pub tracker_error: Option<&'a str>,
    pub tracker_warning: Option<&'a str>,
    pub last_close: Option<&'a str>,
    /// Any source of peers at all: trackers, the DHT, or addresses given with the torrent.
    pub has_sources: bool,
    /// The torrent lists trackers.
    pub has_trackers: bool,
    /// The DHT is asked for this torrent's peers.
    pub dht: bool,
    /// The network has been on this long without a peer connected.
    pub alone_ms: Option<u64>,
    pub peers_known: usize,
}

/// A torrent with no connected peer this long after it went to the swarm says so.
pub const NO_PEERS_AFTER_MS: u64 = 15_000;

/// What is wrong, in words, the worst first.
pub(super) fn warning(r: &Reach) -> Option<String> {
    if let Some(e) = r.bridge_error {
        return Some(format!(
            "Bridge unreachable: {e}. Is the bridge still running?"
        ));
    }
    if r.alone_ms.is_some_and(|ms| ms > NO_PEERS_AFTER_MS) {
        let mut msg = String::from("No peers");
        if !r.has_sources {
            msg.push_str(": this torrent lists no trackers");
        } else if let Some(e) = r.tracker_error {
            msg.push_str(&format!(": tracker failed: {e}"));
        } else if r.peers_known == 0 {
            msg.push_str(match (r.has_trackers, r.dht) {
                (true, true) => ": neither the trackers nor the DHT returned any",
                (false, true) => ": the DHT returned none",
                _ => ": the trackers returned none",
            });
        } else if let Some(c) = r.last_close {
            msg.push_str(&format!(": last attempt {c}"));
        }
        return Some(msg);
    }
    r.tracker_error.or(r.tracker_warning).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_map_downsamples_and_keeps_small_maps_whole() {
        assert_eq!(piece_map(&[true, false, true], 1000), vec![100, 0, 100]);
        let have: Vec<bool> = (0..4000).map(|i| i < 1000 || i % 2 == 0).collect();
        let map = piece_map(&have, 1000);
        assert_eq!(map.len(), 1000);
        assert_eq!(map[0], 100);
        assert_eq!(map[999], 50);
        assert!(piece_map(&[], 1000).is_empty());
        assert_eq!(piece_map(&[true; 3], 0), vec![100]);
    }

    #[test]
    fn eta_needs_a_rate() {
        assert_eq!(eta_secs(0, 0.0), Some(0.0));
        assert_eq!(eta_secs(100, 0.0), None);
        assert_eq!(eta_secs(100, 30.0), Some(4.0));
    }

    #[test]
    fn warnings_name_the_worst_problem_first() {
        let base = Reach {
            bridge_error: None,
            tracker_error: None,
            tracker_warning: None,
            last_close: None,
            has_sources: true,
            has_trackers: true,
            dht: false,
            alone_ms: Some(20_000),
            peers_known: 0,
        };
        assert_eq!(
            warning(&base).as_deref(),
            Some("No peers: the trackers returned none")
        );
        let w = warning(&Reach { dht: true, ..base });
        assert_eq!(
            w.as_deref(),
            Some("No peers: neither the trackers nor the DHT returned any")
        );
        let w = warning(&Reach {
            dht: true,
            has_trackers: false,
            ..base
        });
        assert_eq!(w.as_deref(), Some("No peers: the DHT returned none"));
        let w = warning(&Reach {
            bridge_error: Some("x"),
            ..base
        });
        assert!(w.unwrap().starts_with("Bridge unreachable: x."));
        let w = warning(&Reach {
            has_sources: false,
            ..base
        });
        assert_eq!(
            w.as_deref(),
            Some("No peers: this torrent lists no trackers")
        );
        let w = warning(&Reach {
            tracker_error: Some("t: down"),
            ..base
        });
        assert_eq!(w.as_deref(), Some("No peers: tracker failed: t: down"));
        let w = warning(&Reach {
            peers_known: 3,
            last_close: Some("1.2.3.4:5: refused"),
            ..base
        });
        assert_eq!(
            w.as_deref(),
            Some("No peers: last attempt 1.2.3.4:5: refused")
        );
        let w = warning(&Reach {
            alone_ms: Some(1_000),
            tracker_warning: Some("slow"),
            ..base
        });
        assert_eq!(w.as_deref(), Some("slow"));
        assert_eq!(
            warning(&Reach {
                alone_ms: None,
                ..base
            }),
            None
        );
    }
}
