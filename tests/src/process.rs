//! Child processes that cannot outlive their test.
//!
//! A [`Proc`] starts its command in a new process group and kills the whole group when dropped,
//! so nothing a test started keeps running after it, whether it passes or panics. Its stdout and
//! stderr are read line by line on two threads, so a test can wait for a line with a deadline; when
//! a test panics the guard prints the tail of what the process said.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Which output stream of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Output {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Streams that reached end of file.
    closed: u8,
}

impl Output {
    fn lines(&self, stream: Stream) -> &[String] {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

struct Shared {
    output: Mutex<Output>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Output> {
        // A reader thread cannot panic while holding the lock, so poisoning only follows a panic
        // elsewhere; the data is still good to print.
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running child process, its process group killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    shared: Arc<Shared>,
}

impl Proc {
    /// Starts `cmd` in a new process group with stdin closed and stdout and stderr captured.
    ///
    /// The child also gets SIGKILL when the thread that started it ends (`PR_SET_PDEATHSIG`), so a
    /// test runner killed from outside leaves nothing behind; start processes from the test's own
    /// thread, not from a short-lived one.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let shared = Arc::new(Shared {
            output: Mutex::new(Output::default()),
            changed: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_reader(stdout, Stream::Stdout, Arc::clone(&shared));
        spawn_reader(stderr, Stream::Stderr, Arc::clone(&shared));
        Proc {
            name: name.to_string(),
            child,
            status: None,
            shared,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line the process wrote to `stream` so far.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.shared.lock().lines(stream).to_vec()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.lines(Stream::Stdout)
    }

    pub fn stderr(&self) -> Vec<String> {
        self.lines(Stream::Stderr)
    }

    /// Waits until `f` returns `Some` for a line of `stream` (lines already written count too) and
    /// returns it. Panics at the deadline or when the stream ends first.
    pub fn wait_line<T>(
        &self,
        stream: Stream,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut out = self.shared.lock();
        loop {
            let lines = out.lines(stream);
            for line in &lines[seen..] {
                if let Some(v) = f(line) {
                    return v;
                }
            }
            seen = lines.len();
            let ended = match stream {
                Stream::Stdout => out.closed & 1 != 0,
                Stream::Stderr => out.closed & 2 != 0,
            };
            let now = Instant::now();
            if ended || now >= deadline {
                drop(out);
                let why = if ended {
                    "its output ended"
                } else {
                    "timed out"
                };
                panic!(
                    "{}: {why} while waiting for {what} (deadline {timeout:?})\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            out = self
                .shared
                .changed
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a stdout line that contains `needle`, and returns it.
    pub fn wait_stdout_contains(&self, needle: &str, timeout: Duration) -> String {
        self.wait_line(Stream::Stdout, timeout, needle, |l| {
            l.contains(needle).then(|| l.to_string())
        })
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("{}: wait failed: {e}", self.name));
        }
        self.status
    }

    /// Waits for the process to exit by itself and for its output to be read to the end.
    /// Panics (after killing it) at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.try_status() {
                break s;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{}: still running after {timeout:?}\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // Both pipes close when the process (the only writer) exits; wait for the readers to
        // take the last lines.
        let mut out = self.shared.lock();
        while out.closed != 3 && Instant::now() < deadline + Duration::from_secs(5) {
            out = self
                .shared
                .changed
                .wait_timeout(out, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        status
    }

    /// Sends `signal` to the process group (unless the process was already reaped).
    pub fn signal(&mut self, signal: i32) {
        if self.try_status().is_none() {
            // SAFETY: plain syscall; the group id is our child's pid, which stays ours until we
            // reap it.
            unsafe {
                libc::killpg(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Kills the process group with SIGKILL and reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        if self.status.is_none() {
            self.status = Some(
                self.child
                    .wait()
                    .unwrap_or_else(|e| panic!("{}: wait failed: {e}", self.name)),
            );
        }
        self.status.expect("reaped above")
    }

    /// The last `n` lines of stdout and of stderr, for failure messages. Runs of similar lines
    /// (the same first 24 characters, like periodic status lines) are shortened to their last.
    pub fn tail(&self, n: usize) -> String {
        let out = self.shared.lock();
        let mut s = String::new();
        for (label, lines) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let kept = collapse_similar(lines);
            let skip = kept.len().saturating_sub(n);
            s.push_str(&format!(
                "--- {} {label} ({} lines; the last {} after collapsing repeats) ---\n",
                self.name,
                lines.len(),
                kept.len() - skip
            ));
            for line in &kept[skip..] {
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }
}

fn collapse_similar(lines: &[String]) -> Vec<String> {
    let key = |l: &str| l.chars().take(24).collect::<String>();
    let mut out: Vec<String> = Vec::new();
    let mut run = 0;
    for (i, line) in lines.iter().enumerate() {
        let same_as_next = lines.get(i + 1).is_some_and(|next| key(next) == key(line));
        if same_as_next {
            run += 1;
            continue;
        }
        if run > 0 {
            out.push(format!("[{run} similar lines]"));
            run = 0;
        }
        out.push(line.clone());
    }
    out
}

/// Describes an exit status in words, e.g. for assertion messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => format!("{status:?}"),
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("{}", self.tail(30));
        }
    }
}

fn spawn_reader(pipe: impl Read + Send + 'static, stream: Stream, shared: Arc<Shared>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // Lines are read as bytes: a process may print anything, and a bad byte must not
            // end the capture.
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    let mut out = shared.lock();
                    match stream {
                        Stream::Stdout => out.stdout.push(line),
                        Stream::Stderr => out.stderr.push(line),
                    }
                    drop(out);
                    shared.changed.notify_all();
                }
            }
        }
        shared.lock().closed |= match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        };
        shared.changed.notify_all();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_lines_and_exit_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; echo three; exit 3"]);
        let mut p = Proc::spawn("sh", cmd);
        let line = p.wait_stdout_contains("thr", Duration::from_secs(10));
        assert_eq!(line, "three");
        let status = p.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(3));
        assert_eq!(p.stdout(), vec!["one", "three"]);
        assert_eq!(p.stderr(), vec!["two"]);
    }

    #[test]
    fn drop_kills_the_whole_group() {
        let mut cmd = Command::new("sh");
        // The shell's child writes its pid and sleeps; killing only the shell would leave it.
        cmd.args(["-c", "sleep 1000 & echo $!; wait"]);
        let p = Proc::spawn("sh", cmd);
        let pid: i32 = p.wait_line(Stream::Stdout, Duration::from_secs(10), "a pid", |l| {
            l.parse().ok()
        });
        drop(p);
        crate::wait::wait_until(Duration::from_secs(10), "the grandchild to die", || {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
            (!alive || zombie).then_some(())
        });
    }

    #[test]
    fn collapses_runs_of_similar_lines() {
        let lines: Vec<String> = [
            "a",
            "status status status status 1",
            "status status status status 2",
            "status status status status 3",
            "b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = collapse_similar(&lines);
        assert_eq!(
            out,
            vec![
                "a",
                "[2 similar lines]",
                "status status status status 3",
                "b"
            ]
        );
    }
}
