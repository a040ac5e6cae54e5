//! Progress on stderr: a bar on a terminal, one plain line a second otherwise (logs, CI, tests).
//! Once everything is verified the session only seeds, and the plain line reports the upload, only
//! when it changed: an idle seed stays silent. Log lines go through [`LogWriter`] so that they
//! never tear the bar.

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::engine::Stats;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bar currently drawn, if any: log lines are printed around it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

pub struct Progress {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    /// Peers and bytes uploaded in the last seeding line printed.
    last_seeding: Option<(usize, u64)>,
    hidden: bool,
}

impl Progress {
    /// Shows nothing: for a session whose progress another interface shows (`serve --demo`).
    pub fn hidden() -> Self {
        Progress {
            bar: None,
            last_line: None,
            last_seeding: None,
            hidden: true,
        }
    }

    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        if let Ok(mut g) = BAR.lock() {
            *g = bar.clone();
        }
        Progress {
            bar,
            last_line: None,
            last_seeding: None,
            hidden: false,
        }
    }

    /// Called about once a second with the engine's figures.
    pub fn update(&mut self, stats: &Stats) {
        if self.hidden {
            return;
        }
        let seeding = stats.total > 0 && stats.verified >= stats.total;
        match &self.bar {
            Some(bar) => {
                bar.set_length(stats.total);
                bar.set_position(stats.verified);
                bar.set_message(match seeding {
                    true => format!(
                        "seeding to {} peers, {}/s up",
                        stats.peers_connected,
                        HumanBytes(stats.upload_rate as u64)
                    ),
                    false => format!("{} peers", stats.peers_connected),
                });
            }
            None => {
                let due = self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(950));
                if !due {
                    return;
                }
                if seeding {
                    let mark = (stats.peers_connected, stats.uploaded);
                    if self.last_seeding == Some(mark) {
                        return;
                    }
                    self.last_seeding = Some(mark);
                }
                self.last_line = Some(Instant::now());
                eprintln!(
                    "{}",
                    match seeding {
                        true => seeding_line(stats),
                        false => line(stats),
                    }
                );
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Ok(mut g) = BAR.lock() {
            *g = None;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

pub fn line(stats: &Stats) -> String {
    format!(
        "progress: {}/{} bytes, {} peers, {:.0} B/s",
        stats.verified, stats.total, stats.peers_connected, stats.download_rate
    )
}

pub fn seeding_line(stats: &Stats) -> String {
    format!(
        "seeding: {} peers, {} bytes uploaded, {:.0} B/s",
        stats.peers_connected, stats.uploaded, stats.upload_rate
    )
}

/// A tracing writer for stderr that hides the bar while it prints a line.
#[derive(Default)]
pub struct LogWriter {
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let bar = BAR.lock().ok().and_then(|g| g.clone());
        let print = || {
            let _ = std::io::stderr().write_all(&self.buf);
        };
        match bar {
            Some(b) => b.suspend(print),
            None => print(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_format() {
        let s = Stats {
            verified: 5,
            total: 10,
            peers_connected: 2,
            download_rate: 1234.4,
            ..Default::default()
        };
        assert_eq!(line(&s), "progress: 5/10 bytes, 2 peers, 1234 B/s");
    }

    #[test]
    fn seeding_line_format() {
        let s = Stats {
            verified: 10,
            total: 10,
            uploaded: 4096,
            peers_connected: 1,
            upload_rate: 99.6,
            ..Default::default()
        };
        assert_eq!(
            seeding_line(&s),
            "seeding: 1 peers, 4096 bytes uploaded, 100 B/s"
        );
    }
}
