//! The binary's error lines and exit codes for bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .output()
        .expect("run bridge")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tempdir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("bridge-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn missing_torrent_file() {
    let o = bridge(&["download", "/nonexistent/dir/x.torrent", "--port", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: cannot read torrent file /nonexistent/dir/x.torrent"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn garbage_torrent_file() {
    let d = tempdir("garbage");
    let f = d.join("garbage.torrent");
    std::fs::write(&f, b"this is not bencode").unwrap();
    let o = bridge(&["download", f.to_str().unwrap(), "--port", "0"]);
    std::fs::remove_dir_all(&d).unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("error: {}: not a torrent file", f.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn malformed_magnet() {
    let o = bridge(&["download", "magnet:?dn=nohash", "--port", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: malformed magnet link:"), "{err}");
    assert!(err.contains("info-hash"), "{err}");
}

#[test]
fn seed_of_a_missing_path() {
    let o = bridge(&["seed", "/nonexistent/data", "--port", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: cannot read /nonexistent/data"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2() {
    let o = bridge(&["download"]);
    assert_eq!(o.status.code(), Some(2));
    let o = bridge(&["download", "x", "--peer", "not-an-address"]);
    assert_eq!(o.status.code(), Some(2));
}
