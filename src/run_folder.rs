//! The result folder of a scenario, written by `specdef run --out DIR` and by the native app's
//! "Save results": `runs.jsonl`, `runs.csv`, `tables.txt` and the SVG plots, each written
//! atomically. The browser cannot write folders; it downloads the JSON lines instead.

use crate::report;
use crate::scenario::{DefenseSummary, RunRecord};

/// The names of the files written before the plots, in order.
pub const RUNS_JSONL: &str = "runs.jsonl";
pub const RUNS_CSV: &str = "runs.csv";
pub const TABLES_TXT: &str = "tables.txt";

/// The tables the command line prints and writes to `tables.txt`: the main table, the success
/// windows and the function-preservation errors of the defences (empty without summaries).
pub fn tables(records: &[RunRecord], defenses: &[DefenseSummary]) -> String {
    format!(
        "{}\n{}\nfunction preservation (relative output error against the undefended model in f64):\n{}",
        report::main_table(records),
        report::success_window_table(records),
        report::precision_table(defenses)
    )
}

/// Why a result folder could not be written.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, thiserror::Error)]
pub enum RunFolderError {
    #[error("creating {}: {source}", path.display())]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("writing JSON lines: {0}")]
    Json(#[from] serde_json::Error),
    #[error("drawing plots: {0}")]
    Plot(String),
}

/// Writes the result folder `out` (created where missing) of the records and the defences'
/// summaries (those of a `ScenarioOutcome`; none for a loaded results file): the JSON lines, the
/// CSV and the tables, then the plots. Returns the names of the files written, in that order.
#[cfg(not(target_arch = "wasm32"))]
pub fn write(
    out: &std::path::Path,
    records: &[RunRecord],
    defenses: &[DefenseSummary],
) -> Result<Vec<String>, RunFolderError> {
    std::fs::create_dir_all(out).map_err(|source| RunFolderError::Create {
        path: out.to_path_buf(),
        source,
    })?;
    let write_file = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        report::write_atomically(&path, bytes)
            .map_err(|source| RunFolderError::Write { path, source })
    };
    let jsonl = report::to_json_lines(records)?;
    let tables = tables(records, defenses);
    let mut written = Vec::new();
    for (name, bytes) in [
        (RUNS_JSONL, jsonl.as_bytes()),
        (RUNS_CSV, report::to_csv(records).as_bytes()),
        (TABLES_TXT, tables.as_bytes()),
    ] {
        write_file(name, bytes)?;
        written.push(name.to_string());
    }
    let plots =
        report::plots::render_all(records).map_err(|e| RunFolderError::Plot(e.to_string()))?;
    for (name, svg) in plots {
        write_file(&name, svg.as_bytes())?;
        written.push(name);
    }
    Ok(written)
}
