//! Statistics over seeds, for sweeps: each seed splits the data, pretrains and orders batches
//! anew, so a cell of the main table is measured once per seed. Per defence, optimiser and
//! learning rate: how many seeds reached the target and the median steps; per defence and
//! optimiser: the best attack of each seed summarised (success rate and mean steps, each with a
//! bootstrap interval), and the success window's learning rates that worked in every seed and
//! in at least one.

use super::distinct;
use crate::record::{RunRecord, Success};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write;

/// Bootstrap resamples, and the interval's coverage.
const RESAMPLES: usize = 2000;
const COVERAGE: f64 = 0.95;

/// Whether the records hold more than one seed.
pub fn has_seeds(records: &[RunRecord]) -> bool {
    distinct(records.iter().map(|r| r.seed)).len() > 1
}

/// A mean and its percentile bootstrap interval (seeded, so the same records print the same).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

pub fn bootstrap_mean(values: &[f64], seed: u64) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - COVERAGE) / 2.0;
    let at = |q: f64| means[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    Some(Interval {
        mean,
        low: at(tail),
        high: at(1.0 - tail),
    })
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// One defence and optimiser over seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedRow {
    pub defense: String,
    pub optimizer: String,
    pub seeds: usize,
    /// Seeds in which some run (learning rate, trial) reached the target.
    pub successes: usize,
    pub success_rate: Interval,
    /// Each successful seed's fewest steps to target: median and mean with its interval.
    pub median_steps: Option<f64>,
    pub mean_steps: Option<Interval>,
    /// Learning rates whose run reached the target in every seed, and in at least one.
    pub every_seed: Vec<f64>,
    pub some_seed: Vec<f64>,
}

/// Plain and adaptive attacks, not benign fine-tuning (trainability has its own report).
fn attacks(records: &[RunRecord]) -> Vec<&RunRecord> {
    records.iter().filter(|r| !r.is_benign()).collect()
}

pub fn seed_rows(records: &[RunRecord]) -> Vec<SeedRow> {
    let attacks = attacks(records);
    let seeds = distinct(attacks.iter().map(|r| r.seed));
    distinct(
        attacks
            .iter()
            .map(|r| (r.defense_label(), r.optimizer.clone())),
    )
    .into_iter()
    .enumerate()
    .map(|(row, (defense, optimizer))| {
        let runs: Vec<&RunRecord> = (attacks.iter().copied())
            .filter(|r| r.defense_label() == defense && r.optimizer == optimizer)
            .collect();
        let best: Vec<Option<usize>> = (seeds.iter())
            .map(|&s| {
                (runs.iter().filter(|r| r.seed == s))
                    .filter(|r| r.succeeded(Success::KeepingUtility))
                    .filter_map(|r| r.steps_to_target)
                    .min()
            })
            .collect();
        let reached: Vec<f64> = best.iter().flatten().map(|&s| s as f64).collect();
        let indicator: Vec<f64> = (best.iter())
            .map(|b| if b.is_some() { 1.0 } else { 0.0 })
            .collect();
        // The same trial is the same learning rate (and budget) in every seed.
        let trials = distinct(runs.iter().map(|r| (r.trial, r.lr.to_bits())));
        let reached_in = |trial: &(Option<usize>, u64)| {
            (runs.iter())
                .filter(|r| {
                    (r.trial, r.lr.to_bits()) == *trial && r.succeeded(Success::KeepingUtility)
                })
                .count()
        };
        let lrs = |wanted: &dyn Fn(usize) -> bool| {
            let mut lrs: Vec<f64> = (trials.iter())
                .filter(|t| wanted(reached_in(t)))
                .map(|t| f64::from_bits(t.1))
                .collect();
            lrs.sort_by(f64::total_cmp);
            lrs.dedup();
            lrs
        };
        SeedRow {
            seeds: seeds.len(),
            successes: reached.len(),
            success_rate: bootstrap_mean(&indicator, row as u64).expect("a seed"),
            median_steps: median(&reached),
            mean_steps: bootstrap_mean(&reached, row as u64),
            every_seed: lrs(&|n| n == seeds.len()),
            some_seed: lrs(&|n| n > 0),
            defense,
            optimizer,
        }
    })
    .collect()
}

/// `1e-3..1e-1 (3)`: a list of learning rates by its ends and count.
fn span(lrs: &[f64]) -> String {
    match (lrs.first(), lrs.last()) {
        (Some(lo), Some(hi)) => format!("{lo:.0e}..{hi:.0e} ({})", lrs.len()),
        _ => "none".to_string(),
    }
}

/// The attack over seeds, a row per defence and optimiser.
pub fn seed_table(records: &[RunRecord]) -> String {
    let rows = seed_rows(records);
    let width = rows.iter().map(|r| r.defense.len()).fold(18, usize::max);
    let mut out = format!(
        "{:<width$} {:<10} {:>9} {:>18} {:>8} {:>22} {:>22} {:>22}\n",
        "defence",
        "optimizer",
        "reached",
        "rate [95% CI]",
        "median",
        "mean steps [95% CI]",
        "lrs: every seed",
        "lrs: at least one"
    );
    for r in &rows {
        let rate = r.success_rate;
        let mean = r.mean_steps.map_or("-".to_string(), |m| {
            format!("{:.0} [{:.0}, {:.0}]", m.mean, m.low, m.high)
        });
        let _ = writeln!(
            out,
            "{:<width$} {:<10} {:>9} {:>18} {:>8} {mean:>22} {:>22} {:>22}",
            r.defense,
            r.optimizer,
            format!("{}/{}", r.successes, r.seeds),
            format!("{:.2} [{:.2}, {:.2}]", rate.mean, rate.low, rate.high),
            r.median_steps
                .map_or("-".to_string(), |m| format!("{m:.0}")),
            span(&r.every_seed),
            span(&r.some_seed),
        );
    }
    let _ = writeln!(
        out,
        "over {} seeds: reached = seeds in which some learning rate reached the target; steps: each \
         such seed's fewest; intervals: percentile bootstrap ({RESAMPLES} resamples of the seeds)",
        rows.first().map_or(0, |r| r.seeds)
    );
    out
}

/// The main table over seeds (grids only: a random search's rates do not form columns): per
/// learning rate, `k/S:m`, the seeds that reached the target and their median steps.
pub fn seed_grid_table(records: &[RunRecord]) -> String {
    let attacks = attacks(records);
    let lrs = distinct(attacks.iter().map(|r| r.lr.to_bits()));
    let rows = distinct(
        attacks
            .iter()
            .map(|r| (r.defense_label(), r.optimizer.clone())),
    );
    let width = rows.iter().map(|r| r.0.len()).fold(18, usize::max);
    let mut out = format!("{:<width$} {:<10}", "defence", "optimizer");
    for lr in &lrs {
        let _ = write!(out, " {:>9}", format!("{:.0e}", f64::from_bits(*lr)));
    }
    out.push('\n');
    for (defense, optimizer) in rows {
        let _ = write!(out, "{defense:<width$} {optimizer:<10}");
        for lr in &lrs {
            let runs: Vec<&RunRecord> = (attacks.iter().copied())
                .filter(|r| {
                    r.defense_label() == defense
                        && r.optimizer == optimizer
                        && r.lr.to_bits() == *lr
                })
                .collect();
            let steps: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.steps_to_success())
                .map(|s| s as f64)
                .collect();
            let text = match (runs.len(), median(&steps)) {
                (0, _) => "-".to_string(),
                (n, Some(m)) => format!("{}/{n}:{m:.0}", steps.len()),
                (n, None) => format!("0/{n}"),
            };
            let _ = write!(out, " {text:>9}");
        }
        out.push('\n');
    }
    out.push_str("cells: k/S:m = k of S seeds reached the target, median m steps among them\n");
    out
}
