//! Pure pieces of the page's snapshot, kept apart so they are tested natively.

/// At most this many cells in a piece map: the page draws one column per cell.
pub const MAX_CELLS: usize = 1000;

/// The piece map downsampled to at most `max_cells` cells, each the percentage (0..=100) of
/// verified pieces it covers. A torrent with fewer pieces gets one cell per piece.
pub fn piece_map(have: &[bool], max_cells: usize) -> Vec<u8> {
    let n = have.len();
    let cells = n.min(max_cells.max(1));
    (0..cells)
        .map(|i| {
            let start = i * n / cells;
            let end = ((i + 1) * n / cells).max(start + 1);
            let got = have[start..end].iter().filter(|&&h| h).count();
            (got * 100 / (end - start)) as u8
        })
        .collect()
}

/// Seconds left at `rate` bytes per second, if it can be told.
pub fn eta_secs(remaining: u64, rate: f64) -> Option<f64> {
    if remaining == 0 {
        return Some(0.0);
    }
    (rate >= 1.0).then(|| (remaining as f64 / rate).ceil())
}

/// The last component of a torrent path: a download cannot create folders.
pub fn download_name(path: &[String]) -> String {
    path.last()
        .cloned()
        .unwrap_or_else(|| "download".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_map_downsamples_and_keeps_small_maps_whole() {
        assert_eq!(piece_map(&[true, false, true], 1000), vec![100, 0, 100]);
        let have: Vec<bool> = (0..4000).map(|i| i < 1000 || i % 2 == 0).collect();
        let map = piece_map(&have, 1000);
        assert_eq!(map.len(), 1000);
        assert_eq!(map[0], 100);
        assert_eq!(map[999], 50);
        assert!(piece_map(&[], 1000).is_empty());
        assert_eq!(piece_map(&[true; 3], 0), vec![100]);
    }

    #[test]
    fn eta_needs_a_rate() {
        assert_eq!(eta_secs(0, 0.0), Some(0.0));
        assert_eq!(eta_secs(100, 0.0), None);
        assert_eq!(eta_secs(100, 30.0), Some(4.0));
    }
}
