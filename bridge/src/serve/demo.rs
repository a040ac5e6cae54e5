//! `--demo`: a sample torrent seeded by the native engine on loopback, so that a newcomer without
//! a swarm (or without the internet) watches a whole download in the tab.

use crate::session::{self, Driver};
use anyhow::{Context, Result};
use protocol::magnet::Magnet;
use protocol::metainfo::{piece_length_for, InfoBuilder};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

const NAME: &str = "bt-tab-demo.bin";
const SIZE: u64 = 8 << 20;
const CHUNK: usize = 1 << 20;

pub struct Demo {
    /// The seeder's address, the one loopback destination tunnels may reach without
    /// `--allow-private`.
    pub addr: SocketAddr,
    pub magnet: String,
    pub session: Driver,
    pub _dir: TempDir,
}

/// Removes the sample when the bridge exits.
pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes fresh random data (a new info-hash each run, so a tab that kept an earlier demo still
/// downloads) and starts seeding it.
pub async fn start() -> Result<Demo> {
    let seed = crate::random_seed();
    let dir = std::env::temp_dir().join(format!("bridge-demo-{}-{seed:016x}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = TempDir(dir);
    let path = dir.0.join(NAME);

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut builder = InfoBuilder::new(
        NAME,
        vec![(Vec::new(), SIZE)],
        piece_length_for(SIZE),
        false,
    );
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut chunk = vec![0u8; CHUNK];
    let mut left = SIZE;
    while left > 0 {
        let n = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
        rng.fill(&mut chunk[..n]);
        builder.update(&chunk[..n]);
        file.write_all(&chunk[..n])
            .with_context(|| format!("cannot write {}", path.display()))?;
        left -= n as u64;
    }
    file.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let info = builder.finish();
    let info_hash = info.info_hash;

    let listener = crate::peers::listen(Ipv4Addr::LOCALHOST.into(), 0).await?;
    let addr = listener
        .local_addr()
        .context("demo listener has no address")?;
    let session = session::seeding(
        info,
        listener,
        dir.0.clone(),
        Vec::new(),
        false,
        protocol::engine::Encryption::Prefer,
    )?;
    let magnet = Magnet {
        info_hash,
        name: Some(NAME.into()),
        trackers: Vec::new(),
        peers: vec![addr],
    }
    .to_uri();
    tracing::info!("demo: seeding {SIZE} bytes of sample data on {addr}");
    Ok(Demo {
        addr,
        magnet,
        session,
        _dir: dir,
    })
}
