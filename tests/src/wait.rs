//! Waiting on a condition with a deadline, never on a fixed sleep.

use std::thread;
use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it returns `Some`, and returns that. Panics with `what` at the
/// deadline.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = wait_until(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "timed out")]
    fn panics_at_the_deadline() {
        wait_until(Duration::from_millis(50), "never", || None::<()>);
    }
}
