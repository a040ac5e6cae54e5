//! Sans-IO BitTorrent.
//!
//! Nothing in this crate opens a socket, reads a clock or spawns a task: drivers (the native
//! `bridge` and the wasm `web` crate) pass bytes and milliseconds in through `handle_*` calls and
//! take bytes, connection requests and events out through `poll_*` calls. That keeps one engine for
//! the terminal and the browser, and lets tests run whole swarms in memory on a virtual clock.

pub mod bencode;
pub mod client;
pub mod dht;
pub mod engine;
pub mod extension;
pub mod magnet;
pub mod metainfo;
pub mod mse;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod tracker;
pub mod types;
pub mod wire;

pub use types::{InfoHash, PeerId};
