//! Magnet URIs (BEP 9): `xt=urn:btih:` in hex or base32, `dn`, `tr`, `x.pe`.

use crate::InfoHash;
use std::net::SocketAddr;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MagnetError {
    #[error("not a magnet link (it must start with `magnet:?`)")]
    NotMagnet,
    #[error("magnet link has no `xt=urn:btih:` info-hash")]
    NoInfoHash,
    #[error("magnet info-hash {0:?} is neither 40 hex digits nor 32 base32 characters")]
    BadInfoHash(String),
    #[error("magnet link has a malformed parameter: {0}")]
    BadParam(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    /// `x.pe` peer addresses.
    pub peers: Vec<SocketAddr>,
}

impl Magnet {
    pub fn parse(uri: &str) -> Result<Self, MagnetError> {
        let _ = uri;
        todo!()
    }

    /// `magnet:?xt=urn:btih:<hex>&dn=..&tr=..&x.pe=..`, percent-encoded.
    pub fn to_uri(&self) -> String {
        todo!()
    }
}
