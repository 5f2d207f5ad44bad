//! Reports of a scenario run: the terminal table shaped like the paper's main table, success
//! windows, the precision frontier, and the files (JSON lines, CSV) written atomically.

mod compare;
#[cfg(not(target_arch = "wasm32"))]
pub mod plots;
mod table;

pub use compare::{CompareSettings, Comparison, MetricSummary, OUTCOME_METRICS, compare};

pub use table::{
    SuccessWindow, main_table, precision_table, success_window_table, success_windows,
};

use crate::scenario::RunRecord;
use std::io::Write;
use std::path::Path;

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

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: readers see
/// the old file or the whole new one, never half of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
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
