//! Results in and out of the app: saved natively as the result folder `specdef run --out` writes
//! (the library's `run_folder`), in the browser as a download of its JSON lines; and loaded back
//! for viewing from a file dropped on the window (or `specdef gui --open FILE`). Browsers read
//! dropped files asynchronously, so loads arrive through an inbox the app drains each frame.

use crate::record::RunRecord;
use crate::report;
use std::cell::RefCell;
use std::rc::Rc;

/// The names saved files get: the results' JSON lines (downloaded in the browser) and the
/// benchmark's.
#[cfg(target_arch = "wasm32")]
pub const RUNS_NAME: &str = "specdef-app-runs.jsonl";
pub const BENCH_NAME: &str = "specdef-app-bench.jsonl";
/// The folder the native app saves results in, unless told otherwise.
#[cfg(not(target_arch = "wasm32"))]
pub const RUNS_FOLDER: &str = "specdef-app-results";

/// What "Save results" saves, for its tooltip.
#[cfg(not(target_arch = "wasm32"))]
pub const RUNS_SAVED_AS: &str =
    "the folder `specdef run --out` writes: runs.jsonl, runs.csv, tables.txt and the plots";
#[cfg(target_arch = "wasm32")]
pub const RUNS_SAVED_AS: &str = "the JSON lines `specdef run` writes (runs.jsonl)";

/// Writes the result folder of `records` and `defenses` into `folder`, as `specdef run --out`
/// does; returns what to tell the user.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_runs(
    folder: &std::path::Path,
    records: &[RunRecord],
    defenses: &[crate::scenario::DefenseSummary],
) -> String {
    match crate::run_folder::write(folder, records, defenses) {
        Ok(written) => {
            let skipped = written.skipped_figures.join("; ");
            format!(
                "wrote {}/: {}{}",
                folder.display(),
                written.files.join(", "),
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" ({skipped})")
                }
            )
        }
        Err(e) => format!("could not save the results in {}: {e}", folder.display()),
    }
}

/// Writes `jsonl` as `name` (in the working directory natively, a download in the browser);
/// returns what to tell the user.
pub fn save(name: &str, jsonl: &str) -> String {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let path = std::path::Path::new(name);
        match report::write_atomically(path, jsonl.as_bytes()) {
            Ok(()) => format!("wrote {}", path.display()),
            Err(e) => format!("could not write {}: {e}", path.display()),
        }
    }
    #[cfg(target_arch = "wasm32")]
    match super::page::download(name, jsonl) {
        Ok(()) => format!("downloaded {name}"),
        Err(e) => format!("could not download {name}: {e}"),
    }
}

/// A results file read back, or why it could not be.
pub struct LoadedResults {
    pub name: String,
    pub records: Result<Vec<RunRecord>, String>,
}

impl LoadedResults {
    pub fn parse(name: String, bytes: Result<Vec<u8>, String>) -> Self {
        let records = bytes
            .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string()))
            .and_then(|text| report::from_json_lines(&text))
            .and_then(|records| {
                if records.is_empty() {
                    Err("no runs in the file".to_string())
                } else {
                    Ok(records)
                }
            })
            .map_err(|e| format!("{name}: {e}"));
        Self { name, records }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(path: &std::path::Path) -> Self {
        let bytes = crate::input_file::read_bounded(path, crate::input_file::MAX_RECORDS_BYTES)
            .map_err(|e| e.to_string());
        Self::parse(path.display().to_string(), bytes)
    }
}

/// Loaded files waiting for the app.
#[derive(Clone, Default)]
pub struct Inbox(Rc<RefCell<Vec<LoadedResults>>>);

impl Inbox {
    pub fn push(&self, loaded: LoadedResults) {
        self.0.borrow_mut().push(loaded);
    }

    pub fn drain(&self) -> Vec<LoadedResults> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    /// Starts reading the files dropped on the window this frame.
    pub fn receive_dropped(&self, ctx: &egui::Context) {
        let dropped = ctx.input(|input| input.raw.dropped_files.clone());
        for file in dropped {
            let name = file
                .path()
                .file_name()
                .map_or("dropped file".to_string(), |n| {
                    n.to_string_lossy().into_owned()
                });
            #[cfg(not(target_arch = "wasm32"))]
            self.push(LoadedResults::parse(name, file.bytes()));
            #[cfg(target_arch = "wasm32")]
            {
                let inbox = self.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let bytes = file.bytes_async().await;
                    inbox.push(LoadedResults::parse(name, bytes));
                });
            }
        }
    }
}
