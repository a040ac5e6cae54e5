//! Transfer rates over a sliding window of whole seconds.

const WINDOW: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    buckets: [u64; WINDOW],
    /// The second the newest bucket belongs to.
    second: u64,
    total: u64,
    /// When the first bytes came: until the window is full, the rate is over the time since.
    first_ms: Option<u64>,
}

impl RateMeter {
    pub fn add(&mut self, bytes: u64, now_ms: u64) {
        self.first_ms.get_or_insert(now_ms);
        self.advance(now_ms);
        self.buckets[(self.second % WINDOW as u64) as usize] += bytes;
        self.total += bytes;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes per second over the last complete seconds and the current partial one.
    pub fn rate(&self, now_ms: u64) -> f64 {
        let sec = now_ms / 1000;
        if sec >= self.second + WINDOW as u64 {
            return 0.0;
        }
        // Buckets older than the window relative to `now` no longer count.
        let mut sum = 0;
        for back in 0..WINDOW as u64 {
            let s = match sec.checked_sub(back) {
                Some(s) => s,
                None => break,
            };
            if s <= self.second && self.second - s < WINDOW as u64 {
                sum += self.buckets[(s % WINDOW as u64) as usize];
            }
        }
        let window = (WINDOW - 1) as f64 + (now_ms % 1000) as f64 / 1000.0;
        // A young meter spans only the time since its first bytes (at least 100 ms, so one early
        // burst does not read as a huge rate).
        let young = self
            .first_ms
            .map_or(window, |f| now_ms.saturating_sub(f) as f64 / 1000.0);
        sum as f64 / window.min(young).max(0.1)
    }

    fn advance(&mut self, now_ms: u64) {
        let sec = now_ms / 1000;
        if sec <= self.second {
            return;
        }
        let steps = (sec - self.second).min(WINDOW as u64);
        for k in 1..=steps {
            self.buckets[((self.second + k) % WINDOW as u64) as usize] = 0;
        }
        self.second = sec;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_and_decay() {
        let mut m = RateMeter::default();
        for t in 0..10_000u64 {
            if t % 100 == 0 {
                m.add(10_000, t);
            }
        }
        let r = m.rate(10_000);
        assert!((80_000.0..=120_000.0).contains(&r), "{r}");
        assert_eq!(m.rate(60_000), 0.0);
        let mut young = RateMeter::default();
        young.add(100_000, 5_000);
        young.add(100_000, 5_500);
        let r = young.rate(6_000);
        assert!(
            (150_000.0..=250_000.0).contains(&r),
            "a young meter spans its own age: {r}"
        );
        assert_eq!(m.total(), 1_000_000);
    }
}
