//! Headless Chromium driven through chromedriver, for tests of the real page.
//!
//! Debian's `chromium` is started directly, in its own process group with a fresh profile and a
//! DevTools port the kernel picks; `chromedriver` then attaches to it (`debuggerAddress`) and
//! [`fantoccini`] speaks WebDriver to chromedriver. Starting Chromium ourselves, rather than
//! letting chromedriver do it, keeps every Chromium process in a group that [`Proc`] kills, and
//! gives the benchmark the process to sample memory from.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tempfile::TempDir;

use crate::data::temp_dir;
use crate::net::{free_port, wait_port_open};
use crate::process::{Proc, Stream};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// What Chromium needs to run headless as root in a container, without talking to anything but
/// loopback (see FACTS.md), and without throttling a tab that no one looks at.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
];

/// A running headless Chromium with a WebDriver session on its one tab. Every process it started
/// is killed when it drops.
pub struct Browser {
    pub client: Client,
    // Declared after the client: the session goes before the processes do.
    chromedriver: Proc,
    chromium: Proc,
    downloads: PathBuf,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium and chromedriver on free loopback ports and opens a WebDriver session.
    /// Start it from the test's own thread: its processes die with the thread that started them.
    pub async fn start() -> Browser {
        let profile = temp_dir("chromium");
        let downloads = profile.path().join("downloads");
        write_preferences(profile.path(), &downloads);

        let mut cmd = Command::new(CHROMIUM);
        // Extra flags for profiling by hand, e.g. `--js-flags=--perf-basic-prof` for perf.
        let extra = std::env::var("CHROMIUM_EXTRA_FLAGS").unwrap_or_default();
        cmd.args(FLAGS)
            .args(extra.split_whitespace())
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            // The profile holds everything else Chromium would write to the home folder.
            .env("HOME", profile.path());
        let chromium = Proc::spawn("chromium", cmd);
        let devtools = chromium.wait_line(
            Stream::Stderr,
            Duration::from_secs(60),
            "chromium's `DevTools listening on` line",
            devtools_port,
        );

        let port = free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"));
        let chromedriver = Proc::spawn("chromedriver", cmd);
        wait_port_open(([127, 0, 0, 1], port).into(), Duration::from_secs(30));

        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "debuggerAddress": format!("127.0.0.1:{devtools}") }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no WebDriver session: {e}\n{}\n{}",
                    chromedriver.tail(20),
                    chromium.tail(20)
                )
            });
        // Scripts may hash a large download in the page; page loads are quick on loopback.
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(600)),
                Some(Duration::from_secs(60)),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set WebDriver timeouts");
        Browser {
            client,
            chromedriver,
            chromium,
            downloads,
            _profile: profile,
        }
    }

    /// The process group of Chromium (its pid): every browser, renderer and utility process.
    pub fn chromium_pid(&self) -> u32 {
        self.chromium.pid()
    }

    /// Where Chromium puts files the page downloads.
    pub fn downloads(&self) -> &Path {
        &self.downloads
    }

    /// The tail of what Chromium and chromedriver printed, for failure messages.
    pub fn logs(&self) -> String {
        format!("{}{}", self.chromium.tail(20), self.chromedriver.tail(10))
    }

    /// Ends the WebDriver session, then kills both process groups.
    pub async fn close(self) {
        let Browser {
            client,
            chromedriver,
            chromium,
            ..
        } = self;
        // A session that is already gone is no reason to fail a test that passed.
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        drop(chromedriver);
        drop(chromium);
    }
}

/// `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/...`
fn devtools_port(line: &str) -> Option<u16> {
    let rest = line.split("DevTools listening on ws://").nth(1)?;
    let (_, rest) = rest.split_once(':')?;
    let port = rest.split('/').next()?;
    port.parse().ok()
}

/// Downloads go to a folder of the profile, without asking.
fn write_preferences(profile: &Path, downloads: &Path) {
    let default = profile.join("Default");
    fs::create_dir_all(&default).expect("create the profile folder");
    fs::create_dir_all(downloads).expect("create the downloads folder");
    let prefs = serde_json::json!({
        "download": {
            "default_directory": downloads,
            "prompt_for_download": false,
            "directory_upgrade": true,
        },
    });
    fs::write(default.join("Preferences"), prefs.to_string()).expect("write Preferences");
}

/// Resident memory of every process in Chromium's group, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChromiumMemory {
    /// `RssAnon` of the renderer processes: the tab's page, its Worker and their wasm memory.
    pub renderer_anon: u64,
    /// `RssAnon` of all Chromium processes together (browser, GPU, network and storage services
    /// too).
    pub total_anon: u64,
    /// `VmRSS` of all Chromium processes together (shared pages counted in each).
    pub total_rss: u64,
}

/// Samples `/proc` for the processes whose process group is `pgid`.
pub fn chromium_memory(pgid: u32) -> ChromiumMemory {
    let mut m = ChromiumMemory::default();
    let Ok(dir) = fs::read_dir("/proc") else {
        return m;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the reads: skip it.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(after) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        // state ppid pgrp ...
        if after.split_whitespace().nth(2).and_then(|s| s.parse().ok()) != Some(pgid) {
            continue;
        }
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let anon = status_kib(&status, "RssAnon:") * 1024;
        let rss = status_kib(&status, "VmRSS:") * 1024;
        // Zygote-forked processes rewrite their command line into one space-separated string.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline
            .split(|&b| b == 0 || b == b' ')
            .any(|arg| arg == b"--type=renderer")
        {
            m.renderer_anon += anon;
        }
        m.total_anon += anon;
        m.total_rss += rss;
    }
    m
}

/// A field of `/proc/PID/status` given in kB (`RssAnon:`, `VmHWM:`), in bytes; `None` once the
/// process is gone.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(status_kib(&status, field) * 1024)
}

fn status_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_devtools_line() {
        assert_eq!(
            devtools_port("\nDevTools listening on ws://127.0.0.1:38017/devtools/browser/ab-cd"),
            Some(38017)
        );
        assert_eq!(devtools_port("something else"), None);
    }

    #[test]
    fn reads_status_fields() {
        let s = "Name:\tx\nVmRSS:\t  2048 kB\nRssAnon:\t    100 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), 2048);
        assert_eq!(status_kib(s, "RssAnon:"), 100);
        assert_eq!(status_kib(s, "Nope:"), 0);
    }
}
