//! Tracker messages: HTTP announces (BEP 3, BEP 23 compact, BEP 7 `peers6`), UDP announces
//! (BEP 15) and tiers of trackers (BEP 12). The drivers do the I/O: the bridge over tokio, the
//! browser through the bridge's `/announce`.

pub mod announcer;
pub mod http;
pub mod udp;

use crate::{InfoHash, PeerId};
use std::net::SocketAddr;
use thiserror::Error;

pub use announcer::Announcer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    Started,
    Completed,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<AnnounceEvent>,
    pub numwant: Option<u32>,
    /// Random per-session key so a tracker recognises us across IP changes.
    pub key: u32,
    /// The `tracker id` this tracker sent in an earlier answer: BEP 3 asks for it back.
    pub tracker_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce.
    pub interval: u32,
    pub min_interval: Option<u32>,
    pub peers: Vec<SocketAddr>,
    pub warning: Option<String>,
    pub complete: Option<u32>,
    pub incomplete: Option<u32>,
    pub tracker_id: Option<String>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TrackerError {
    /// The tracker answered with `failure reason`.
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("tracker sent a malformed response: {0}")]
    Malformed(String),
    #[error("tracker did not answer in time")]
    Timeout,
    #[error("tracker URL not supported: {0}")]
    BadUrl(String),
    /// Transport errors reported by the driver.
    #[error("tracker unreachable: {0}")]
    Io(String),
}

impl TrackerError {
    /// The error as a kind and its detail, so that a driver can carry it across a boundary (the
    /// bridge's `/announce` answers in JSON) and `from_parts` rebuilds the same error there.
    pub fn to_parts(&self) -> (&'static str, String) {
        match self {
            TrackerError::Failure(d) => ("failure", d.clone()),
            TrackerError::Malformed(d) => ("malformed", d.clone()),
            TrackerError::Timeout => ("timeout", String::new()),
            TrackerError::BadUrl(d) => ("bad_url", d.clone()),
            TrackerError::Io(d) => ("io", d.clone()),
        }
    }

    /// The inverse of `to_parts`; an unknown kind reads as a transport error.
    pub fn from_parts(kind: &str, detail: String) -> TrackerError {
        match kind {
            "failure" => TrackerError::Failure(detail),
            "malformed" => TrackerError::Malformed(detail),
            "timeout" => TrackerError::Timeout,
            "bad_url" => TrackerError::BadUrl(detail),
            _ => TrackerError::Io(detail),
        }
    }
}

/// At most this many peers are taken from one response: a tracker's list is untrusted.
pub const MAX_PEERS_PER_RESPONSE: usize = 1000;
