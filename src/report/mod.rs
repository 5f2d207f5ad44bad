//! Reports of a scenario run: the terminal table shaped like the paper's main table, success
//! windows, the precision frontier, and the files (JSON lines, CSV) written atomically.

mod adaptive_table;
pub mod claims;
mod compare;
#[cfg(not(target_arch = "wasm32"))]
pub mod cost_plot;
mod defense_training;
pub mod document;
#[cfg(not(target_arch = "wasm32"))]
pub mod heatmap;
mod immunisation;
#[cfg(not(target_arch = "wasm32"))]
pub mod plots;
mod precision;
mod ranking;
pub mod seeds;
#[cfg(not(target_arch = "wasm32"))]
pub mod sigma_plot;
mod slowdown;
#[cfg(not(target_arch = "wasm32"))]
mod slowdown_plot;
mod table;
pub mod trials;
#[cfg(not(target_arch = "wasm32"))]
pub mod trials_plot;
mod utility_bound;
#[cfg(not(target_arch = "wasm32"))]
pub mod window_plot;

pub use crate::atomic_file::write_atomically;
pub use adaptive_table::adaptive_table;
pub use compare::{CompareSettings, Comparison, MetricSummary, OUTCOME_METRICS, compare};
pub use defense_training::{DEFENSE_TRAINING_HEADER, defense_training_csv};
pub use immunisation::immunisation_table;
pub use precision::{Frontier, UTILITY_POINT, frontiers};
pub use ranking::{Ranked, UTILITY_BOUND, ranking, ranking_table};
pub use slowdown::{SlowdownPoint, slowdown_points, slowdown_table};
pub use trials::trials_table;
pub use utility_bound::{EPSILONS, strongest_within, utility_bound_table};

pub use table::{
    SuccessWindow, main_table, precision_table, success_window_table, success_windows,
};

use crate::record::RunRecord;

/// Distinct values in first-seen order (the row and series order of tables and plots).
pub(crate) fn distinct<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// How [`fastest_run`] chose its run, for a legend or a title to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChosenBy {
    /// The fewest steps to the target (ties: the lower final loss).
    FastestToTarget,
    /// No run reached the target: the lowest final loss instead.
    LowestFinalLoss,
}

/// The attack's best of `runs` (say, one optimiser's learning rates against one defence): the run
/// fastest to the target (fewest `steps_to_target`, ties broken by the lower final loss, then the
/// first), or, where none reached the target, the lowest final loss. None where no run reached
/// the target and none has a final loss (all diverged).
pub fn fastest_run<'a>(
    runs: impl IntoIterator<Item = &'a RunRecord>,
) -> Option<(&'a RunRecord, ChosenBy)> {
    let runs: Vec<&RunRecord> = runs.into_iter().collect();
    let loss = |r: &RunRecord| {
        r.final_loss
            .filter(|l| l.is_finite())
            .unwrap_or(f64::INFINITY)
    };
    let fastest = runs
        .iter()
        .filter_map(|&r| Some((r.steps_to_success()?, r)))
        .min_by(|(steps_a, a), (steps_b, b)| {
            steps_a.cmp(steps_b).then(loss(a).total_cmp(&loss(b)))
        });
    if let Some((_, run)) = fastest {
        return Some((run, ChosenBy::FastestToTarget));
    }
    runs.into_iter()
        .filter(|r| r.final_loss.is_some_and(f64::is_finite))
        .min_by(|a, b| loss(a).total_cmp(&loss(b)))
        .map(|run| (run, ChosenBy::LowestFinalLoss))
}

/// JSON lines: one record per line.
pub fn to_json_lines(records: &[RunRecord]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for record in records {
        out.push_str(&serde_json::to_string(record)?);
        out.push('\n');
    }
    Ok(out)
}

/// Parses JSON lines written by `to_json_lines`; errors name the line.
pub fn from_json_lines(text: &str) -> Result<Vec<RunRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let record: RunRecord =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            record
                .validate()
                .map_err(|e| format!("line {} (a {} run): {e}", i + 1, record.optimizer))?;
            Ok(record)
        })
        .collect()
}

pub fn to_csv(records: &[RunRecord]) -> String {
    let mut out = String::from(RunRecord::csv_header());
    out.push('\n');
    for record in records {
        out.push_str(&record.csv_row());
        out.push('\n');
    }
    out
}
