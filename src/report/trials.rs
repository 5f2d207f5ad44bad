//! What the attacker's search costs: per defence, the best harmful accuracy found after n
//! attack trials, and the trials until the first success. A grid's order is arbitrary, so both
//! are expectations over random orders of the defence's plain attack runs (every optimiser and
//! learning rate; the adaptive rewrites are reported on their own): a defence that only makes
//! the attacker search longer shows here and nowhere else.

use super::distinct;
use crate::record::{RunRecord, Success};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::fmt::Write;

/// Random orders averaged over.
const ORDERS: usize = 1000;

/// One defence's search.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    pub defense: String,
    pub trials: usize,
    pub successes: usize,
    /// Expected best final harmful accuracy after 1, 2, ... trials.
    pub best_after: Vec<f64>,
    /// Expected trials until the first run that reaches the target, None without one:
    /// (N + 1) / (S + 1) for S successes among N trials in random order.
    pub trials_to_success: Option<f64>,
}

/// The search on every defence of the records, in first-seen order; `seed` fixes the orders.
pub fn searches(records: &[RunRecord], seed: u64) -> Vec<Search> {
    let plain: Vec<&RunRecord> = (records.iter())
        .filter(|r| r.adaptive.is_none() && !r.is_benign())
        .collect();
    distinct(plain.iter().map(|r| r.defense_label()))
        .into_iter()
        .map(|defense| {
            let scores: Vec<f64> = (plain.iter())
                .filter(|r| r.defense_label() == defense)
                .map(|r| r.final_harmful_accuracy)
                .collect();
            let successes = (plain.iter())
                .filter(|r| r.defense_label() == defense && r.succeeded(Success::KeepingUtility))
                .count();
            let n = scores.len();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut sum = vec![0.0; n];
            let mut order = scores.clone();
            for _ in 0..ORDERS {
                order.shuffle(&mut rng);
                let mut best = f64::NEG_INFINITY;
                for (i, score) in order.iter().enumerate() {
                    best = best.max(*score);
                    sum[i] += best;
                }
            }
            Search {
                defense,
                trials: n,
                successes,
                best_after: sum.iter().map(|s| s / ORDERS as f64).collect(),
                trials_to_success: (successes > 0)
                    .then(|| (n as f64 + 1.0) / (successes as f64 + 1.0)),
            }
        })
        .collect()
}

pub fn trials_table(records: &[RunRecord]) -> String {
    let searches = searches(records, 0);
    let width = searches
        .iter()
        .map(|s| s.defense.len())
        .fold(18, usize::max);
    let mut out = format!(
        "{:<width$} {:>7} {:>10} {:>24} {:>20}\n",
        "defence", "trials", "successes", "trials to first success", "best after 5 trials"
    );
    for s in &searches {
        let first = s
            .trials_to_success
            .map_or("never".to_string(), |t| format!("{t:.1}"));
        let after = s.best_after.get(4.min(s.trials.saturating_sub(1))).copied();
        let _ = writeln!(
            out,
            "{:<width$} {:>7} {:>10} {first:>24} {:>20}",
            s.defense,
            s.trials,
            s.successes,
            after.map_or("-".to_string(), |a| format!("{a:.3}"))
        );
    }
    out.push_str(&format!(
        "expected over {ORDERS} random orders of each defence's plain attack runs (every optimiser \
         and learning rate); best: final harmful accuracy\n"
    ));
    out
}

/// One defence's search in each seed (the records' seeds in first-seen order).
#[derive(Clone, Debug, PartialEq)]
pub struct SeedSearches {
    pub defense: String,
    pub per_seed: Vec<Search>,
}

impl SeedSearches {
    /// Per trial count n: the (lowest, median, highest) expected best over seeds.
    pub fn best_after_spread(&self) -> Vec<(f64, f64, f64)> {
        let trials = self
            .per_seed
            .iter()
            .map(|s| s.best_after.len())
            .min()
            .unwrap_or(0);
        (0..trials)
            .map(|n| {
                let values: Vec<f64> = self.per_seed.iter().map(|s| s.best_after[n]).collect();
                let (lo, hi) = values
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                        (l.min(v), h.max(v))
                    });
                (lo, super::seeds::median(&values).unwrap_or(f64::NAN), hi)
            })
            .collect()
    }
}

/// The search on every defence, seed by seed: each seed's records searched on their own.
pub fn seed_searches(records: &[RunRecord]) -> Vec<SeedSearches> {
    let seeds = distinct(records.iter().map(|r| r.seed));
    let by_seed: Vec<Vec<Search>> = (seeds.iter())
        .map(|&seed| {
            let of_seed: Vec<RunRecord> = (records.iter())
                .filter(|r| r.seed == seed)
                .cloned()
                .collect();
            searches(&of_seed, 0)
        })
        .collect();
    let defenses = distinct(by_seed.iter().flatten().map(|s| s.defense.clone()));
    (defenses.into_iter())
        .map(|defense| SeedSearches {
            per_seed: (by_seed.iter())
                .filter_map(|searches| searches.iter().find(|s| s.defense == defense).cloned())
                .collect(),
            defense,
        })
        .collect()
}

/// The attacker's search over seeds: trials to the first success (median and range over the
/// seeds where some run succeeded) and the best after 5 trials (median over seeds).
pub fn seed_trials_table(records: &[RunRecord]) -> String {
    let searches = seed_searches(records);
    let width = searches
        .iter()
        .map(|s| s.defense.len())
        .fold(18, usize::max);
    let mut out = format!(
        "{:<width$} {:>12} {:>15} {:>30} {:>20}\n",
        "defence",
        "trials/seed",
        "seeds with one",
        "trials to first success",
        "best after 5 trials"
    );
    for s in &searches {
        let firsts: Vec<f64> = s
            .per_seed
            .iter()
            .filter_map(|p| p.trials_to_success)
            .collect();
        let first = match super::seeds::median(&firsts) {
            None => "never".to_string(),
            Some(m) => {
                let lo = firsts.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = firsts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{m:.1} [{lo:.1}, {hi:.1}]")
            }
        };
        let spread = s.best_after_spread();
        let after = spread.get(4.min(spread.len().saturating_sub(1)));
        let _ = writeln!(
            out,
            "{:<width$} {:>12} {:>15} {first:>30} {:>20}",
            s.defense,
            s.per_seed.first().map_or(0, |p| p.trials),
            format!("{}/{}", firsts.len(), s.per_seed.len()),
            after.map_or("-".to_string(), |a| format!("{:.3}", a.1))
        );
    }
    out.push_str(&format!(
        "per seed, expected over {ORDERS} random orders of its plain attack runs; trials to first \
         success: median [lowest, highest] over the seeds with a success\n"
    ));
    out
}
