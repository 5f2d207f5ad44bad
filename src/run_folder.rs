//! The result folder of a scenario, written by `specdef run --out DIR` and by the native app's
//! "Save results": `runs.jsonl`, `runs.csv`, `tables.txt`, `defense_training.csv` where baseline
//! defences were trained, the SVG plots and the marker
//! `specdef-results.json` that lists them, written as one set (`atomic_folder`): a reader sees
//! the old set or the new one, never a mix. The browser cannot write folders; it downloads the
//! JSON lines instead.

use crate::report;
use crate::scenario::{DefenseSummary, RunRecord};

/// The names of the files written before the plots, in order.
pub const RUNS_JSONL: &str = "runs.jsonl";
pub const RUNS_CSV: &str = "runs.csv";
pub const TABLES_TXT: &str = "tables.txt";
/// The baseline defences' training curves, where the run trained any.
pub const DEFENSE_TRAINING_CSV: &str = "defense_training.csv";

/// The tables the command line prints and writes to `tables.txt`: the main table, the success
/// windows, the slowdown, the defences ranked (with baselines), the adaptive attacks, the
/// immunisation report and the function-preservation errors of the defences (empty without
/// summaries).
pub fn tables(records: &[RunRecord], defenses: &[DefenseSummary]) -> String {
    if report::seeds::has_seeds(records) {
        return seed_tables(records);
    }
    let adaptive = report::adaptive_table(records).map_or(String::new(), |t| format!("\n{t}"));
    let slowdown = report::slowdown_table(records).map_or(String::new(), |t| format!("\n{t}"));
    let ranked = report::ranking_table(records).map_or(String::new(), |t| format!("\n{t}"));
    format!(
        "{}\n{}{slowdown}{ranked}{adaptive}\nimmunisation report:\n{}\nfunction preservation (relative output error against the undefended model in f64):\n{}",
        report::main_table(records),
        report::success_window_table(records),
        report::immunisation_table(records),
        report::precision_table(defenses)
    )
}

/// The most learning rates the seeds' main table shows as columns (a grid's; a random
/// search's rates are too many to be columns).
const SEED_GRID_COLUMNS: usize = 16;

/// A sweep's tables over seeds: each defence and optimiser summarised over the seeds, the main
/// table's cells over seeds where the learning rates form a grid, and the attacker's search.
fn seed_tables(records: &[RunRecord]) -> String {
    let lrs = report::distinct(records.iter().map(|r| r.lr.to_bits())).len();
    let grid = if lrs <= SEED_GRID_COLUMNS {
        format!("\n{}", report::seeds::seed_grid_table(records))
    } else {
        String::new()
    };
    format!(
        "{}{grid}\nthe attacker's search:\n{}",
        report::seeds::seed_table(records),
        report::trials::seed_trials_table(records)
    )
}

/// Why a result folder could not be written.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, thiserror::Error)]
pub enum RunFolderError {
    #[error(transparent)]
    Folder(#[from] crate::atomic_folder::FolderError),
    #[error("writing JSON lines: {0}")]
    Json(#[from] serde_json::Error),
}

/// What `publish` wrote: the files in order (the marker last), and a note per figure that could
/// not be drawn.
#[derive(Debug)]
pub struct Published {
    pub files: Vec<String>,
    pub skipped_figures: Vec<String>,
}

/// A result folder claimed before the work: locked against a second run into it, its place
/// checked writable, its old set kept until `publish` switches the new one in whole.
#[cfg(not(target_arch = "wasm32"))]
pub struct ResultFolder(crate::atomic_folder::FolderClaim);

#[cfg(not(target_arch = "wasm32"))]
impl ResultFolder {
    /// Claims `out`: refused while another process writes it, where it cannot be written, or
    /// where it is anything but a new or empty folder or a result set specdef wrote (its
    /// marker, `specdef-results.json`, lists every file in it).
    pub fn claim(out: &std::path::Path) -> Result<Self, RunFolderError> {
        Ok(Self(crate::atomic_folder::FolderClaim::claim(out)?))
    }

    /// Whether `out` could be claimed now, without claiming it: for a command that publishes
    /// only after long work (a sweep), so that a folder in the way is named before the work.
    pub fn check(out: &std::path::Path) -> Result<(), RunFolderError> {
        Ok(crate::atomic_folder::check_claimable(out)?)
    }

    /// Writes the set (the JSON lines, the CSV, the tables, then the plots) and switches it in:
    /// the folder then holds exactly these files and the marker. A figure that cannot be drawn
    /// is left out with a note, never at the cost of the records.
    pub fn publish(
        mut self,
        records: &[RunRecord],
        defenses: &[DefenseSummary],
    ) -> Result<Published, RunFolderError> {
        let jsonl = report::to_json_lines(records)?;
        let tables = tables(records, defenses);
        let training = report::defense_training_csv(defenses);
        let figures = report::plots::render_all(records);
        let plots = figures.drawn;
        let mut written = Vec::new();
        for (name, bytes) in [
            (RUNS_JSONL, jsonl.as_bytes()),
            (RUNS_CSV, report::to_csv(records).as_bytes()),
            (TABLES_TXT, tables.as_bytes()),
        ]
        .into_iter()
        .chain(
            training
                .as_ref()
                .map(|csv| (DEFENSE_TRAINING_CSV, csv.as_bytes())),
        )
        .chain(
            plots
                .iter()
                .map(|(name, svg)| (name.as_str(), svg.as_bytes())),
        ) {
            self.0.write(name, bytes)?;
            written.push(name.to_string());
        }
        self.0.publish()?;
        written.push(crate::atomic_folder::MARKER.to_string());
        Ok(Published {
            files: written,
            skipped_figures: figures.skipped,
        })
    }
}

/// Writes the result folder `out` of the records and the defences' summaries (those of a
/// `ScenarioOutcome`; none for a loaded results file) as one set: `ResultFolder::claim`, then
/// `publish`.
#[cfg(not(target_arch = "wasm32"))]
pub fn write(
    out: &std::path::Path,
    records: &[RunRecord],
    defenses: &[DefenseSummary],
) -> Result<Published, RunFolderError> {
    ResultFolder::claim(out)?.publish(records, defenses)
}
