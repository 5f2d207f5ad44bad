//! Reports of a scenario run: the terminal table shaped like the paper's main table, success
//! windows, the precision frontier, and the files (JSON lines, CSV) written atomically.

mod compare;
#[cfg(not(target_arch = "wasm32"))]
pub mod plots;
mod table;

pub use crate::atomic_file::write_atomically;
pub use compare::{CompareSettings, Comparison, MetricSummary, OUTCOME_METRICS, compare};

pub use table::{
    SuccessWindow, main_table, precision_table, success_window_table, success_windows,
};

use crate::scenario::RunRecord;

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
        .map(|(i, line)| serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1)))
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
