//! `bridge download`: a .torrent or a magnet into a folder.

use crate::file_storage::Access;
use crate::session::{self, Mode, Options, Session};
use crate::UsageError;
use anyhow::Result;
use protocol::engine::{Config, Torrent};
use protocol::magnet::Magnet;
use protocol::metainfo::{Info, Metainfo};
use protocol::{InfoHash, PeerId};
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
    /// Address to accept peers on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Port to accept peers on (0 = any free port).
    #[arg(long, value_name = "N", default_value_t = 6881)]
    pub port: u16,
    /// Keep seeding after the download completes, until interrupted.
    #[arg(long)]
    pub seed: bool,
    /// An extra peer to connect to (repeatable).
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Fail when no peer is reachable or nothing arrives for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

/// What the source names.
struct Source {
    info_hash: InfoHash,
    info: Option<Info>,
    trackers: Vec<Vec<String>>,
    peers: Vec<SocketAddr>,
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
    })
}

pub async fn run(args: DownloadArgs) -> Result<()> {
    let src = load(&args.source)?;
    let listener = session::listen(args.bind, args.port).await?;
    let port = listener.local_addr()?.port();
    let peer_id = PeerId::generate(crate::random_seed());
    let config = Config {
        listen_port: Some(port),
        ..Config::default()
    };
    let torrent = Torrent::new(
        src.info_hash,
        src.info,
        peer_id,
        config,
        crate::random_seed(),
    );
    let opts = Options {
        output: args.output,
        access: Access::ReadWrite,
        trackers: src.trackers,
        manual_peers: args.peers,
        magnet_peers: src.peers,
        peer_id,
        mode: Mode::Download {
            seed_after: args.seed,
            timeout: Duration::from_secs(args.timeout),
        },
        show_progress: true,
    };
    let mut session = Session::new(torrent, listener, opts)?;
    tracing::info!("listening for peers on {}", session.listen_addr());
    session.prepare()?;
    session.run().await
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
