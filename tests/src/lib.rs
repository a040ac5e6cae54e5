//! Helpers shared by the end-to-end tests and the benchmark.
//!
//! Every test starts the real programs it needs (opentracker, python3-libtorrent, the `bridge`
//! binary) on 127.0.0.1 with free ports, and stops them: each process runs in its own process
//! group, killed when its [`Proc`] guard drops. Waits are conditions with deadlines.

pub mod bench;
pub mod bencode;
pub mod bridge;
pub mod browser;
pub mod data;
pub mod fake_peer;
pub mod libtorrent;
pub mod lt_dht;
pub mod mse;
pub mod net;
pub mod node_tracker;
pub mod page;
pub mod process;
pub mod swarm;
pub mod tracker;
pub mod wait;

pub use protocol::types::InfoHash;
