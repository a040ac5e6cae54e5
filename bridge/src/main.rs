//! `bridge`: the native side of the project. `download` and `seed` drive the `protocol` engine
//! over tokio TCP from the command line; `serve` (the default) is the browser tab's bridge.

mod dht_io;
mod download;
mod file_storage;
mod peers;
mod progress;
mod seed;
mod serve;
mod session;
mod tracker_client;

use clap::{Parser, Subcommand};
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "bridge",
    version,
    about = "BitTorrent from the command line and for the browser tab"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, the bridge serves the page (`bridge serve`'s options apply).
    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download a torrent from a .torrent file or a magnet link.
    Download(download::DownloadArgs),
    /// Build a torrent from a file or folder and seed it.
    Seed(seed::SeedArgs),
    /// Serve the page and bridge its WebSockets to peers (the default).
    Serve(serve::ServeArgs),
}

/// A problem with what the user asked for (exit code 2), as opposed to one met while running (1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A seed for the engine, ids and keys; fastrand seeds itself from the OS's hasher keys and time.
pub fn random_seed() -> u64 {
    fastrand::u64(..)
}

/// `--encryption prefer|require|off`.
pub fn parse_encryption(s: &str) -> Result<protocol::engine::Encryption, String> {
    protocol::engine::Encryption::parse(s)
        .ok_or_else(|| format!("{s:?} is not prefer, require or off"))
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(progress::LogWriter::default)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Some(Command::Download(args)) => download::run(args).await,
            Some(Command::Seed(args)) => seed::run(args).await,
            Some(Command::Serve(args)) => serve::run(args).await,
            None => serve::run(cli.serve).await,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_defaults_and_options() {
        let cli = Cli::try_parse_from(["bridge", "download", "x.torrent"]).unwrap();
        let Some(Command::Download(a)) = cli.command else {
            panic!("not download")
        };
        assert_eq!(a.source, "x.torrent");
        assert_eq!(a.output, std::path::PathBuf::from("."));
        assert_eq!(a.bind.to_string(), "::");
        assert_eq!(a.port, 6881);
        assert!(!a.seed);
        assert!(a.peers.is_empty());
        assert_eq!(a.timeout, None);
        assert!(!a.dht.no_dht && a.dht.dht_bootstrap.is_empty());

        let cli = Cli::try_parse_from([
            "bridge",
            "download",
            "magnet:?xt=urn:btih:00",
            "--output",
            "out",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "--peer",
            "127.0.0.1:1",
            "--peer",
            "[::1]:2",
            "--timeout",
            "5",
            "--dht-bootstrap",
            "127.0.0.1:6881",
            "--dht-bootstrap",
            "dht.example:7000",
        ])
        .unwrap();
        let Some(Command::Download(a)) = cli.command else {
            panic!("not download")
        };
        assert_eq!(a.output, std::path::PathBuf::from("out"));
        assert_eq!(a.port, 0);
        assert!(a.seed);
        assert_eq!(a.peers.len(), 2);
        assert_eq!(a.timeout, Some(5));
        assert_eq!(a.dht.dht_bootstrap, ["127.0.0.1:6881", "dht.example:7000"]);
        assert!(!a.dht.no_dht);
    }

    #[test]
    fn serve_is_the_default() {
        let cli = Cli::try_parse_from(["bridge"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:8080");
        assert!(!cli.serve.allow_private && !cli.serve.demo);
        let cli = Cli::try_parse_from(["bridge", "--demo", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(cli.serve.demo);
        let cli = Cli::try_parse_from([
            "bridge",
            "serve",
            "--allow-private",
            "--allow-origin",
            "http://a:1",
            "--allow-origin",
            "http://b:2",
        ])
        .unwrap();
        let Some(Command::Serve(a)) = cli.command else {
            panic!("not serve")
        };
        assert!(a.allow_private);
        assert_eq!(a.allow_origins.len(), 2);
        assert!(Cli::try_parse_from(["bridge", "--demo", "seed", "x"]).is_err());
    }

    #[test]
    fn seed_options_and_bad_values() {
        let cli = Cli::try_parse_from([
            "bridge",
            "seed",
            "dir",
            "--tracker",
            "http://t/a",
            "--tracker",
            "udp://t:1",
            "--torrent-out",
            "o.torrent",
            "--bind",
            "127.0.0.1",
            "--port",
            "7000",
        ])
        .unwrap();
        let Some(Command::Seed(a)) = cli.command else {
            panic!("not seed")
        };
        assert_eq!(a.trackers.len(), 2);
        assert_eq!(a.torrent_out, Some("o.torrent".into()));
        assert_eq!(a.port, 7000);
        assert!(!a.dht.no_dht && a.dht.dht_bootstrap.is_empty());
        let cli = Cli::try_parse_from(["bridge", "seed", "dir", "--no-dht"]).unwrap();
        let Some(Command::Seed(a)) = cli.command else {
            panic!("not seed")
        };
        assert!(a.dht.no_dht);
        let cli =
            Cli::try_parse_from(["bridge", "seed", "dir", "--dht-bootstrap", "[::1]:1"]).unwrap();
        let Some(Command::Seed(a)) = cli.command else {
            panic!("not seed")
        };
        assert_eq!(a.dht.dht_bootstrap, ["[::1]:1"]);
        let both = [
            "bridge",
            "download",
            "x",
            "--no-dht",
            "--dht-bootstrap",
            "h:1",
        ];
        assert!(Cli::try_parse_from(both).is_err());
        assert!(Cli::try_parse_from(["bridge", "download", "x", "--dht-bootstrap", "h"]).is_err());

        assert!(Cli::try_parse_from(["bridge", "download", "x", "--peer", "nohost"]).is_err());
        assert!(Cli::try_parse_from(["bridge", "download", "x", "--port", "70000"]).is_err());
        assert!(Cli::try_parse_from(["bridge", "download"]).is_err());
        assert!(Cli::try_parse_from(["bridge", "seed"]).is_err());
    }
}
