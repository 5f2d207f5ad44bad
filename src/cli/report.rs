//! `specdef report RESULTS`: the HTML page and its markdown twin from a result folder's (or a
//! JSON-lines file's) records, written beside them or into `--out`.

use anyhow::{Context, Result, bail};
use specdef::report::{self, document};
use specdef::run_folder::RUNS_JSONL;
use std::path::{Path, PathBuf};

pub const HTML_NAME: &str = "report.html";
pub const MARKDOWN_NAME: &str = "report.md";

/// The records file of `results`: the folder's runs.jsonl, or the file itself.
fn records_file(results: &Path) -> Result<PathBuf> {
    if results.is_dir() {
        let file = results.join(RUNS_JSONL);
        if !file.is_file() {
            bail!(
                "{} holds no {RUNS_JSONL}: give the folder `specdef run --out` wrote, or a \
                 JSON-lines file of run records",
                results.display()
            );
        }
        return Ok(file);
    }
    if !results.is_file() {
        bail!("{}: no such folder or file", results.display());
    }
    Ok(results.to_path_buf())
}

pub fn report(results: &Path, out: Option<&Path>) -> Result<()> {
    let file = records_file(results)?;
    let text =
        specdef::input_file::read_text_bounded(&file, specdef::input_file::MAX_RECORDS_BYTES)
            .with_context(|| format!("reading {}", file.display()))?;
    let records =
        report::from_json_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if records.is_empty() {
        bail!("{}: no run records", file.display());
    }
    let out = match out {
        Some(dir) => dir.to_path_buf(),
        None => file.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let rendered = report::plots::render_all(&records);
    for note in &rendered.skipped {
        eprintln!("note: {note}");
    }
    let figures = rendered.drawn;
    // Every file whole or not at all, added to the result set there (never over a file of the
    // user's); the figures first, so the markdown never links to a figure that is not there.
    let mut written: Vec<(String, Vec<u8>)> = (figures.iter())
        .map(|(name, svg)| (name.clone(), svg.clone().into_bytes()))
        .collect();
    written.push((
        MARKDOWN_NAME.to_string(),
        document::markdown(&records, &figures).into_bytes(),
    ));
    written.push((
        HTML_NAME.to_string(),
        document::html(&records, &figures).into_bytes(),
    ));
    specdef::atomic_folder::add_to_set(&out, &written)
        .with_context(|| format!("writing the report into {}", out.display()))?;
    let claims = report::claims::claims(&records);
    let count = |v| claims.iter().filter(|c| c.verdict == v).count();
    println!(
        "{} claims: {} held, {} did not hold, {} not measured; wrote {} and {} in {}",
        claims.len(),
        count(report::claims::Verdict::Held),
        count(report::claims::Verdict::DidNotHold),
        count(report::claims::Verdict::NotMeasured),
        HTML_NAME,
        MARKDOWN_NAME,
        out.display()
    );
    Ok(())
}
