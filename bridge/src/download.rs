//! `bridge download`: a .torrent or a magnet into a folder.

use crate::session::{Driver, Mode, Options};
use crate::UsageError;
use anyhow::Result;
use protocol::engine::{Encryption, PeerSource};
use protocol::magnet::Magnet;
use protocol::metainfo::{Info, Metainfo};
use protocol::InfoHash;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// A .torrent file or a magnet link.
    #[arg(value_name = "TORRENT-FILE|MAGNET")]
    pub source: String,
    /// Folder to download into: a multi-file torrent lands in <DIR>/<name>/, a single file in
    /// <DIR>/<name>.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// Address to accept peers on (default: every IPv6 and IPv4 address, or every IPv4 one
    /// where the machine has no IPv6).
    #[arg(long, value_name = "IP", default_value = "::")]
    pub bind: IpAddr,
    /// Port to accept peers on (0 = any free port).
    #[arg(long, value_name = "N", default_value_t = 6881)]
    pub port: u16,
    /// Message Stream Encryption: prefer (try it, fall back to plain with peers that refuse it;
    /// accept both), require (encrypted connections only) or off.
    #[arg(long, value_name = "MODE", default_value = "prefer", value_parser = crate::parse_encryption)]
    pub encryption: Encryption,
    /// Keep seeding after the download completes, until interrupted.
    #[arg(long)]
    pub seed: bool,
    /// An extra peer to connect to (repeatable).
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    #[command(flatten)]
    pub dht: crate::dht_io::DhtArgs,
    /// Give up when the download has not moved for this many seconds (default: keep trying,
    /// re-announcing as the trackers allow).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// What the source names.
struct Source {
    info_hash: InfoHash,
    info: Option<Info>,
    trackers: Vec<Vec<String>>,
    peers: Vec<SocketAddr>,
    name: Option<String>,
}

fn load(source: &str) -> Result<Source, UsageError> {
    if source
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
    {
        let m =
            Magnet::parse(source).map_err(|e| UsageError(format!("malformed magnet link: {e}")))?;
        return Ok(Source {
            info_hash: m.info_hash,
            info: None,
            trackers: m.trackers.into_iter().map(|t| vec![t]).collect(),
            peers: m.peers,
            name: m.name,
        });
    }
    let path = Path::new(source);
    let data = std::fs::read(path)
        .map_err(|e| UsageError(format!("cannot read torrent file {}: {e}", path.display())))?;
    let meta =
        Metainfo::from_bytes(&data).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    Ok(Source {
        info_hash: meta.info.info_hash,
        info: Some(meta.info),
        trackers: meta.trackers,
        peers: Vec::new(),
        name: None,
    })
}

pub async fn run(args: DownloadArgs) -> Result<()> {
    let src = load(&args.source)?;
    let listener = crate::peers::listen(args.bind, args.port).await?;
    let mut peers: Vec<(SocketAddr, PeerSource)> = args
        .peers
        .iter()
        .map(|&a| (a, PeerSource::Manual))
        .collect();
    peers.extend(src.peers.iter().map(|&a| (a, PeerSource::Magnet)));
    let opts = Options {
        info_hash: src.info_hash,
        info: src.info,
        name: src.name,
        output: args.output,
        trackers: src.trackers,
        peers,
        mode: Mode::Download {
            seed_after: args.seed,
            timeout: args.timeout.map(Duration::from_secs),
        },
        show_progress: true,
        encryption: args.encryption,
        dht: args.dht.options().await,
    };
    let driver = Driver::new(listener, opts)?;
    tracing::info!("listening for peers on {}", driver.listen_addr());
    driver.run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_a_usage_error_naming_the_file() {
        let e = load("/nonexistent/x.torrent").err().unwrap();
        assert!(
            e.0.contains("cannot read torrent file /nonexistent/x.torrent"),
            "{e}"
        );
    }
}
