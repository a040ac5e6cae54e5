//! What a torrent of the session looks like to a person: its name, state, status snapshot and
//! the words for what was tried.

use super::super::status::{
    self, eta_secs, piece_map, FileStatus, Reach, State, Status, MAX_CELLS,
};
use super::{Entry, Phase};
use crate::engine;

impl Entry {
    fn name(&self) -> String {
        match (self.engine.info(), &self.name_hint) {
            (Some(info), _) => info.name.clone(),
            (None, Some(n)) => n.clone(),
            _ => self.id.to_hex(),
        }
    }

    fn state(&self) -> State {
        match self.phase {
            Phase::Failed(_) => State::Failed,
            _ if self.paused => State::Paused,
            Phase::Metadata => State::Metadata,
            Phase::Opening | Phase::Checking => State::Checking,
            Phase::Ready if self.engine.is_complete() => State::Seeding,
            Phase::Ready => State::Downloading,
        }
    }

    /// The engine's counters, with its rates as of the latest time the session was given.
    pub(crate) fn stats(&self) -> engine::Stats {
        self.engine.stats(self.seen)
    }

    /// What was tried to find and reach peers, in words: for a driver that gives up.
    pub(crate) fn tried(&self, now: u64) -> String {
        let st = self.engine.stats(now);
        let mut parts = vec![match st.peers_connected {
            0 => "no peer connected".to_string(),
            n => format!("{n} peers connected"),
        }];
        parts.push(format!("{} peer addresses known", st.peers_known));
        if let Some(c) = &self.last_close {
            parts.push(format!("last attempt {c}"));
        }
        parts.push(match (&self.tracker_error, self.announcer.is_empty()) {
            (_, true) => "no trackers".to_string(),
            (Some(e), false) => format!("tracker failed: {e}"),
            (None, false) => "trackers answered".to_string(),
        });
        if self.dht_allowed() {
            parts.push("asked the DHT".to_string());
        }
        parts.join(", ")
    }

    pub(crate) fn status(&self, now: u64) -> Status {
        let st = self.engine.stats(now);
        let info = self.engine.info();
        let total = info.map_or(0, |i| i.total_length);
        let complete = self.is_complete();
        let progress = match total {
            0 if info.is_some() && complete => 1.0,
            0 => 0.0,
            _ => (st.verified as f64 / total as f64).clamp(0.0, 1.0),
        };
        let files = match info {
            Some(info) => {
                let done = self.engine.file_progress();
                info.files
                    .iter()
                    .enumerate()
                    .map(|(i, f)| FileStatus {
                        path: f.path.join("/"),
                        size: f.length,
                        done: done.get(i).copied().unwrap_or(0),
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let failed = matches!(self.phase, Phase::Failed(_));
        // Paused or complete, only the bridge's absence is worth a word.
        let quiet = !self.network_on() || complete;
        let reach = Reach {
            bridge_error: self.bridge_error.as_deref(),
            tracker_error: self.tracker_error.as_deref().filter(|_| !quiet),
            tracker_warning: self.tracker_warning.as_deref().filter(|_| !quiet),
            last_close: self.last_close.as_deref(),
            has_sources: !self.announcer.is_empty() || self.given_peers || self.dht_allowed(),
            has_trackers: !self.announcer.is_empty(),
            dht: self.dht_allowed(),
            alone_ms: (!quiet && st.peers_connected == 0)
                .then(|| now.saturating_sub(self.joined_at)),
            peers_known: st.peers_known,
        };
        let warning = if failed {
            None
        } else {
            status::warning(&reach)
        };
        Status {
            info_hash: self.id,
            name: self.name(),
            state: self.state(),
            error: match &self.phase {
                Phase::Failed(e) => Some(e.clone()),
                _ => None,
            },
            warning,
            total,
            verified: st.verified,
            progress,
            downloaded: st.downloaded,
            uploaded: st.uploaded,
            download_rate: st.download_rate,
            upload_rate: st.upload_rate,
            eta_secs: info
                .and_then(|_| eta_secs(total.saturating_sub(st.verified), st.download_rate)),
            peers_connected: st.peers_connected,
            peers_known: st.peers_known,
            peers: self.engine.peers(now),
            pieces_have: st.pieces_have,
            pieces_total: st.pieces_total,
            piece_map: piece_map(self.engine.have(), MAX_CELLS),
            files,
            stalled_ms: if self.network_on() && !complete {
                now.saturating_sub(self.last_progress)
            } else {
                0
            },
        }
    }
}
