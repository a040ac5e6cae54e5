//! Loopback ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::wait::wait_until;

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it for a listener we
/// then closed). Prefer letting a program bind port 0 and report its port where it can.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_port_open(addr: SocketAddr, timeout: Duration) {
    wait_until(timeout, &format!("{addr} to accept connections"), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
