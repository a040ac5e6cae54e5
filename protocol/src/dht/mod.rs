//! The mainline DHT (BEP 5), sans-IO like the rest of the crate: datagrams and milliseconds in,
//! datagrams out.
//!
//! Every datagram comes from a stranger: decoding is bounded ([`krpc`]).

mod compact;
mod id;
pub mod krpc;

pub use compact::NodeInfo;
pub use id::NodeId;
