//! `specdef sweep` and `specdef merge`: a scenario's seeds and search as one run list, run whole
//! or as one shard of it (the shard from `--shard` or the scheduler's environment), and the
//! shards' folders merged into one result folder.

use anyhow::{Result, bail};
use specdef::engine_choice::EngineChoice;
use specdef::run_folder::{self, ResultFolder};
use specdef::sweep::{self, Merged, Shard};
use std::path::{Path, PathBuf};

/// The result folder a whole sweep writes into its state folder.
pub const RESULTS: &str = "results";

/// Missing or duplicated runs listed in full up to this many.
const LISTED: usize = 20;

/// The shard `--shard` names, else the one the environment names, else the whole sweep.
fn shard(given: Option<Shard>, count: Option<usize>) -> Result<Shard> {
    let count =
        match count {
            Some(count) => Some(count),
            None => match std::env::var("SPECDEF_SHARD_COUNT") {
                Ok(v) if !v.is_empty() => Some(v.trim().parse().map_err(|_| {
                    anyhow::anyhow!("SPECDEF_SHARD_COUNT={v:?} is not a whole number")
                })?),
                _ => None,
            },
        };
    if let Some(shard) = given {
        if count.is_some_and(|c| c != shard.count) {
            bail!("--shard {shard} disagrees with the shard count {count:?}");
        }
        return Ok(shard);
    }
    let from_env =
        Shard::from_env(|name| std::env::var(name).ok(), count).map_err(anyhow::Error::msg)?;
    Ok(from_env.unwrap_or(Shard::WHOLE))
}

pub fn sweep(
    scenario_path: Option<&Path>,
    choice: EngineChoice,
    out: &Path,
    variant: Option<String>,
    given: Option<Shard>,
    count: Option<usize>,
) -> Result<()> {
    let scenario = crate::load_scenario(scenario_path, variant.as_deref())?;
    let shard = shard(given, count)?;
    let all = sweep::run_count(&scenario);
    // More shards than runs would leave shards with nothing to do (and a folder each).
    if shard.count > all.max(1) {
        bail!(
            "shard {shard}: the sweep has {all} runs, so at most {} shards; use fewer shards (--shard, \
             --shard-count, SPECDEF_SHARD_COUNT or the Slurm array's size)",
            all.max(1)
        );
    }
    let mine = shard.slice(&vec![(); all]).len();
    if shard.is_whole() {
        ResultFolder::check(&out.join(RESULTS))?;
    }
    let mut engine = crate::open(choice)?;
    let search = match &scenario.sweep.random {
        Some(random) => format!("random search of {} trials", random.trials),
        None => "the attack grid".to_string(),
    };
    println!(
        "sweep {}: {all} runs ({} seeds, {search}, {} targets); shard {shard}: {mine} runs on {}",
        scenario.name,
        scenario.sweep.seeds,
        scenario.targets().len(),
        engine.info()
    );
    let progress = crate::with_progress(variant, |settings| {
        sweep::run_sweep(engine.as_mut(), &scenario, shard, out, settings)
    })?;
    println!(
        "{}: {} runs recorded ({} before this process, {} by it)",
        progress.state_dir.display(),
        progress.runs,
        progress.already_done,
        progress.ran
    );
    if shard.is_whole() {
        merge(
            std::slice::from_ref(&progress.state_dir),
            &out.join(RESULTS),
            false,
        )
    } else {
        println!(
            "when every shard is done: specdef merge {} --out {}",
            out.display(),
            out.join(RESULTS).display()
        );
        Ok(())
    }
}

pub fn merge(folders: &[PathBuf], out: &Path, partial: bool) -> Result<()> {
    // Claimed first: a second merge into the folder is refused before any reading.
    let folder = ResultFolder::claim(out)?;
    let merged = sweep::merge(folders)?;
    report_gaps(&merged);
    if !merged.missing.is_empty() && !partial {
        bail!(
            "{} of the sweep's runs are missing (listed above): run the shards that hold them \
             (a shard run again resumes), or merge anyway with --partial",
            merged.missing.len()
        );
    }
    if merged.records.is_empty() {
        bail!("the folders hold no finished runs");
    }
    println!("\n{}", run_folder::tables(&merged.records, &[]));
    let written = folder.publish(&merged.records, &[])?;
    for note in &written.skipped_figures {
        eprintln!("note: {note}");
    }
    println!(
        "merged {} runs of {} folder(s) of scenario {}: wrote {}/: {}",
        merged.records.len(),
        merged.folders.len(),
        merged.scenario.name,
        out.display(),
        written.files.join(", ")
    );
    Ok(())
}

fn report_gaps(merged: &Merged) {
    let list = |ids: Vec<String>| {
        let shown = ids
            .iter()
            .take(LISTED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        match ids.len() {
            n if n > LISTED => format!("{shown} and {} more", n - LISTED),
            _ => shown,
        }
    };
    if !merged.duplicated.is_empty() {
        let differing = merged.duplicated.iter().filter(|d| d.2).count();
        eprintln!(
            "warning: {} runs are in more than one folder ({differing} with different outcomes; the first folder's kept): {}",
            merged.duplicated.len(),
            list(
                (merged.duplicated.iter())
                    .map(|(id, folders, _)| format!(
                        "{id} ({})",
                        folders
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .collect()
            )
        );
    }
    if !merged.missing.is_empty() {
        eprintln!(
            "missing: {} runs: {}",
            merged.missing.len(),
            list(merged.missing.clone())
        );
    }
}
