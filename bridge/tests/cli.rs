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

#[test]
fn a_download_that_cannot_move_gives_up_only_at_the_users_timeout_and_says_what_it_tried() {
    let magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=x\
                  &tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce&x.pe=127.0.0.1%3A1";
    let d = tempdir("stall");
    let started = std::time::Instant::now();
    let o = bridge(&[
        "download",
        magnet,
        "--output",
        d.to_str().unwrap(),
        "--port",
        "0",
        "--timeout",
        "2",
    ]);
    let took = started.elapsed();
    std::fs::remove_dir_all(&d).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("error: no progress for 2 s: no peer connected"),
        "{err}"
    );
    assert!(line.contains("last attempt 127.0.0.1:1: "), "{line}");
    assert!(
        line.contains("tracker failed: http://127.0.0.1:1/announce: tracker unreachable"),
        "{line}"
    );
    assert!(
        took >= std::time::Duration::from_secs(2),
        "gave up after {took:?}"
    );
}

/// Kills the child when a test fails half-way.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn seed_then_download_a_folder_over_loopback() {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let d = tempdir("loop");
    let src = d.join("src").join("folder");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(src.join("sub/big"), &big).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("small"), b"hello").unwrap();

    let torrent = d.join("folder.torrent");
    let child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args([
            "seed",
            src.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--torrent-out",
        ])
        .arg(&torrent)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seed = Killed(child);
    let (tx, rx) = mpsc::channel();
    let out = seed.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (err_tx, err_rx) = mpsc::channel();
    let err = seed.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let mut magnet = None;
    let mut lines = Vec::new();
    while magnet.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("seed prints its magnet");
        magnet = line.strip_prefix("magnet: ").map(str::to_string);
        lines.push(line);
    }
    let pieces = lines[0]
        .strip_prefix("resume: ")
        .and_then(|l| l.strip_suffix(" pieces verified on disk"))
        .and_then(|l| l.split_once('/'))
        .filter(|(have, total)| have == total)
        .map(|(_, total)| total.to_string())
        .unwrap_or_else(|| panic!("seed verifies everything: {lines:?}"));
    let line = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(line, format!("torrent: {}", torrent.display()));
    let magnet = magnet.unwrap();
    assert!(magnet.contains("x.pe=127.0.0.1%3A"), "{magnet}");

    // From the magnet (metadata over ut_metadata, peer from x.pe), then again from the .torrent
    // into the same folder: everything is on disk already.
    let dl = d.join("dl");
    let runs = [
        (magnet.as_str(), format!("0/{pieces}")),
        (torrent.to_str().unwrap(), format!("{pieces}/{pieces}")),
    ];
    for (source, resume) in runs {
        let o = bridge(&[
            "download",
            source,
            "--output",
            dl.to_str().unwrap(),
            "--port",
            "0",
            "--timeout",
            "20",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[0],
            format!("resume: {resume} pieces verified on disk")
        );
        assert!(
            lines[1].starts_with("complete: folder, 300005 bytes, downloaded "),
            "{stdout}"
        );
    }
    assert_eq!(std::fs::read(dl.join("folder/sub/big")).unwrap(), big);
    assert_eq!(std::fs::read(dl.join("folder/small")).unwrap(), b"hello");
    assert_eq!(std::fs::metadata(dl.join("folder/empty")).unwrap().len(), 0);

    // The seed reports what it uploaded: the folder once (the second download found it all on
    // disk).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = err_rx.recv_timeout(left) else {
            panic!("no `seeding:` line with the whole folder uploaded: {seen:?}");
        };
        let uploaded = line
            .strip_prefix("seeding: ")
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|l| l.strip_suffix(" bytes uploaded"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = uploaded.filter(|&n| n >= 300_005) {
            // One leecher, one seed: no block is ever worth sending twice.
            assert_eq!(n, 300_005, "{line}");
            break;
        }
        seen.push(line);
    }
    drop(seed);
    std::fs::remove_dir_all(&d).unwrap();
}
