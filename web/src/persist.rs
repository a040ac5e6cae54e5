//! What survives a reload: beside each torrent's data file (`<hex>`) in OPFS lie `<hex>.torrent`
//! or `<hex>.magnet` (how it was added), `<hex>.info` (a magnet's metadata once it came) and
//! `<hex>.paused`. At start-up they are read back and the torrents added again.

use crate::js::{post, Obj};
use crate::opfs::Opfs;
use protocol::client::AddTorrent;
use protocol::engine::PeerSource;
use protocol::magnet::Magnet;
use protocol::metainfo::{Info, Metainfo};
use protocol::InfoHash;
use wasm_bindgen_futures::spawn_local;

/// Every file a torrent may leave, by suffix.
pub const SUFFIXES: [&str; 5] = ["", ".torrent", ".magnet", ".info", ".paused"];

pub fn report_error(id: Option<&str>, message: String) {
    post(
        Obj::new()
            .set("type", "error")
            .set_opt("id", id)
            .set("message", message),
    );
}

/// Writes a side file (`<hex>.<ext>`) so a reload finds the torrent again.
pub fn save(opfs: Option<Opfs>, id: InfoHash, ext: &'static str, bytes: Vec<u8>) {
    let Some(opfs) = opfs else {
        return;
    };
    spawn_local(async move {
        let hex = id.to_hex();
        if let Err(e) = opfs.write_small(&format!("{hex}.{ext}"), &bytes).await {
            report_error(
                Some(&hex),
                format!("cannot save the torrent for later visits: {e}"),
            );
        }
    });
}

/// A magnet's metadata, so a reload need not fetch it again.
pub fn metadata(opfs: Option<Opfs>, id: InfoHash, raw: Vec<u8>) {
    save(opfs, id, "info", raw);
}

pub fn unsave(opfs: Option<Opfs>, name: String) {
    if let Some(opfs) = opfs {
        spawn_local(async move {
            let _ = opfs.remove(&name).await;
        });
    }
}

/// The torrent to add for a magnet.
pub fn from_magnet(magnet: Magnet, info: Option<Info>, paused: bool) -> AddTorrent {
    AddTorrent {
        info_hash: magnet.info_hash,
        info,
        trackers: magnet.trackers.iter().map(|t| vec![t.clone()]).collect(),
        peers: magnet
            .peers
            .iter()
            .map(|&a| (a, PeerSource::Magnet))
            .collect(),
        name: magnet.name,
        paused,
    }
}

pub fn from_metainfo(meta: Metainfo, paused: bool) -> AddTorrent {
    AddTorrent {
        info_hash: meta.info.info_hash,
        info: Some(meta.info),
        trackers: meta.trackers,
        peers: Vec::new(),
        name: None,
        paused,
    }
}

/// The torrents saved in OPFS by an earlier visit.
pub async fn restore(opfs: &Opfs) -> Vec<AddTorrent> {
    let names = match opfs.list().await {
        Ok(n) => n,
        Err(e) => {
            report_error(None, format!("cannot list saved torrents: {e}"));
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for name in &names {
        let Some((hex, kind)) = name.split_once('.') else {
            continue;
        };
        let Some(id) = InfoHash::from_hex(hex) else {
            continue;
        };
        let paused = names.iter().any(|n| *n == format!("{hex}.paused"));
        let result = match kind {
            "torrent" => match opfs.read_small(name).await {
                Ok(Some(bytes)) => Metainfo::from_bytes(&bytes)
                    .map_err(|e| e.to_string())
                    .map(|m| from_metainfo(m, paused)),
                Ok(None) => continue,
                Err(e) => Err(e),
            },
            "magnet" => restore_magnet(opfs, hex, id, paused).await,
            _ => continue,
        };
        match result {
            Ok(add) => found.push(add),
            Err(e) => report_error(None, format!("cannot restore saved torrent {hex}: {e}")),
        }
    }
    found
}

async fn restore_magnet(
    opfs: &Opfs,
    hex: &str,
    id: InfoHash,
    paused: bool,
) -> Result<AddTorrent, String> {
    let uri = opfs
        .read_small(&format!("{hex}.magnet"))
        .await?
        .unwrap_or_default();
    let magnet = Magnet::parse(&String::from_utf8_lossy(&uri)).map_err(|e| e.to_string())?;
    // The metadata, if it had arrived before the reload.
    let info = match opfs.read_small(&format!("{hex}.info")).await? {
        Some(raw) => Info::from_metadata(&raw, id).ok(),
        None => None,
    };
    Ok(from_magnet(magnet, info, paused))
}
