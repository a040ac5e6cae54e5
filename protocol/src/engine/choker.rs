//! Who we upload to: the fastest interested peers by rate (download from them while leeching,
//! upload to them while seeding), plus one optimistic slot so newcomers get a chance to prove
//! themselves.

use super::ConnId;

pub struct Candidate {
    pub conn: ConnId,
    pub rate: f64,
}

pub struct Decision {
    pub unchoked: Vec<ConnId>,
    pub optimistic: Option<ConnId>,
}

/// `candidates` are the interested peers; `keep_optimistic` is the current optimistic peer if it
/// should keep its slot this round.
pub fn choose(
    mut candidates: Vec<Candidate>,
    slots: usize,
    keep_optimistic: Option<ConnId>,
    rng: &mut fastrand::Rng,
) -> Decision {
    candidates.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.conn.cmp(&b.conn)));
    let mut unchoked: Vec<ConnId> = candidates.iter().take(slots).map(|c| c.conn).collect();
    let rest: Vec<ConnId> = candidates.iter().skip(slots).map(|c| c.conn).collect();
    let optimistic = match keep_optimistic {
        Some(c) if rest.contains(&c) => Some(c),
        _ if rest.is_empty() => None,
        _ => Some(rest[rng.usize(..rest.len())]),
    };
    unchoked.extend(optimistic);
    Decision {
        unchoked,
        optimistic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastest_win_and_one_optimistic() {
        let cands = (0..6)
            .map(|i| Candidate {
                conn: ConnId(i),
                rate: i as f64,
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(1);
        let d = choose(cands, 3, None, &mut rng);
        assert_eq!(&d.unchoked[..3], &[ConnId(5), ConnId(4), ConnId(3)]);
        let opt = d.optimistic.unwrap();
        assert!(opt.0 < 3);
        assert_eq!(d.unchoked.len(), 4);
    }
}
