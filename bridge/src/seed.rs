//! `bridge seed`: builds a torrent from a file or folder, writes the .torrent, prints the magnet
//! and serves the data from where it lies.

use crate::session;
use crate::UsageError;
use anyhow::{Context, Result};
use protocol::engine::Encryption;
use protocol::magnet::Magnet;
use protocol::metainfo::{piece_length_for, torrent_file_bytes, Info, InfoBuilder};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Data is hashed in reads of this size.
const CHUNK: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The file or folder to seed.
    pub path: PathBuf,
    /// Tracker announce URL (repeatable; each becomes its own tier).
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Where to write the .torrent (default: <name>.torrent in the current folder).
    #[arg(long, value_name = "FILE")]
    pub torrent_out: Option<PathBuf>,
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
    #[command(flatten)]
    pub dht: crate::dht_io::DhtArgs,
}

/// The files to seed, in torrent order.
#[derive(Debug)]
struct Tree {
    name: String,
    /// The folder the torrent's paths (`[name, ...]`) are relative to.
    parent: PathBuf,
    /// Absolute path, path below the root (empty for a single file), length.
    files: Vec<(PathBuf, Vec<String>, u64)>,
}

fn utf8_name(path: &Path, name: Option<&std::ffi::OsStr>) -> Result<String, UsageError> {
    let name = name.ok_or_else(|| UsageError(format!("{} has no file name", path.display())))?;
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| UsageError(format!("file name {name:?} is not UTF-8")))
}

/// Regular files under `path`, sorted by name at each level. Symbolic links are skipped, so
/// nothing outside the tree is ever read.
fn walk(path: &Path) -> Result<Tree, UsageError> {
    let root = std::fs::canonicalize(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    let meta = std::fs::metadata(&root)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    let name = utf8_name(&root, root.file_name())?;
    let parent = root
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut files = Vec::new();
    if meta.is_file() {
        files.push((root.clone(), Vec::new(), meta.len()));
    } else if meta.is_dir() {
        walk_dir(&root, &mut Vec::new(), &mut files)?;
        if files.is_empty() {
            return Err(UsageError(format!(
                "nothing to seed: {} holds no regular files",
                path.display()
            )));
        }
    } else {
        return Err(UsageError(format!(
            "{} is neither a file nor a folder",
            path.display()
        )));
    }
    Ok(Tree {
        name,
        parent,
        files,
    })
}

fn walk_dir(
    dir: &Path,
    rel: &mut Vec<String>,
    out: &mut Vec<(PathBuf, Vec<String>, u64)>,
) -> Result<(), UsageError> {
    let read_err =
        |e: std::io::Error| UsageError(format!("cannot read folder {}: {e}", dir.display()));
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", p.display())))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            tracing::warn!("skipping symbolic link {}", p.display());
            continue;
        }
        if !ft.is_dir() && !ft.is_file() {
            continue;
        }
        rel.push(utf8_name(&p, p.file_name())?);
        if ft.is_dir() {
            walk_dir(&p, rel, out)?;
        } else {
            out.push((p.clone(), rel.clone(), meta.len()));
        }
        rel.pop();
    }
    Ok(())
}

/// Hashes the files into the `info` dictionary.
fn build_info(tree: &Tree) -> Result<Info> {
    let total: u64 = tree.files.iter().map(|f| f.2).sum();
    let piece_length = piece_length_for(total);
    let list = tree
        .files
        .iter()
        .map(|(_, rel, len)| (rel.clone(), *len))
        .collect();
    let mut builder = InfoBuilder::new(&tree.name, list, piece_length, false);
    let mut buf = vec![0u8; CHUNK];
    for (path, _, len) in &tree.files {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = file.take(*len);
        let mut done = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            builder.update(&buf[..n]);
            done += n as u64;
        }
        if done != *len {
            anyhow::bail!(
                "{} shrank from {len} to {done} bytes while it was read",
                path.display()
            );
        }
    }
    Ok(builder.finish())
}

pub async fn run(args: SeedArgs) -> Result<()> {
    let tree = walk(&args.path)?;
    let started = std::time::Instant::now();
    let info = build_info(&tree)?;
    tracing::info!(
        "hashed {} files, {} bytes in {:.1} s",
        tree.files.len(),
        info.total_length,
        started.elapsed().as_secs_f64()
    );

    let tiers: Vec<Vec<String>> = args.trackers.iter().map(|t| vec![t.clone()]).collect();
    let out = args
        .torrent_out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", tree.name)));
    std::fs::write(&out, torrent_file_bytes(&info, &tiers))
        .with_context(|| format!("cannot write {}", out.display()))?;

    let listener = crate::peers::listen(args.bind, args.port).await?;
    let port = listener.local_addr()?.port();
    let info_hash = info.info_hash;
    let dht = args.dht.options().await;
    let mut session = session::seeding_with(
        info,
        listener,
        tree.parent.clone(),
        tiers,
        true,
        args.encryption,
        dht,
    )?;
    session.prepare()?;

    let magnet = Magnet {
        info_hash,
        name: Some(tree.name.clone()),
        trackers: args.trackers.clone(),
        peers: vec![SocketAddr::new(reachable_ip(args.bind), port)],
    };
    println!("magnet: {}", magnet.to_uri());
    println!("torrent: {}", out.display());
    tracing::info!("seeding {} on {}", tree.name, session.listen_addr());
    session.run().await
}

/// The address a local peer can reach us on: the bound one, or IPv4 loopback for a wildcard
/// bind (a dual-stack `::` takes IPv4 too, and every client speaks IPv4).
fn reachable_ip(bind: IpAddr) -> IpAddr {
    match bind {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "bridge-seed-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn walks_sorted_regular_files_and_skips_links() {
        let d = tempdir("walk");
        let root = d.join("data");
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("b/c/z"), b"zz").unwrap();
        std::fs::write(root.join("b/y"), b"y").unwrap();
        std::fs::write(root.join("a/empty"), b"").unwrap();
        std::fs::write(root.join("top"), b"1234").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let t = walk(&root).unwrap();
        assert_eq!(t.name, "data");
        assert_eq!(t.parent, std::fs::canonicalize(&d).unwrap());
        let rels: Vec<(String, u64)> = t.files.iter().map(|(_, r, l)| (r.join("/"), *l)).collect();
        assert_eq!(
            rels,
            vec![
                ("a/empty".into(), 0),
                ("b/c/z".into(), 2),
                ("b/y".into(), 1),
                ("top".into(), 4)
            ]
        );

        let single = walk(&root.join("top")).unwrap();
        assert_eq!(single.name, "top");
        assert_eq!(single.files[0].1, Vec::<String>::new());

        std::fs::create_dir_all(d.join("hollow/sub")).unwrap();
        assert!(walk(&d.join("hollow"))
            .unwrap_err()
            .0
            .contains("nothing to seed"));
        assert!(walk(&d.join("missing"))
            .unwrap_err()
            .0
            .contains("cannot read"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn wildcard_binds_advertise_loopback() {
        assert_eq!(
            reachable_ip("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            reachable_ip("::".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(reachable_ip("::1".parse().unwrap()).to_string(), "::1");
        assert_eq!(
            reachable_ip("10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1"
        );
    }
}
