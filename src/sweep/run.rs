//! Runs a sweep, or one shard of it, into its state folder: seed by seed, a scenario session
//! over the runs not yet recorded, each record stored the moment its run ends.

use super::folder::{Manifest, SweepFolder};
use super::plan::{PlannedRun, plan, seeds, with_seed};
use super::{Shard, SweepError};
use crate::engine::Engine;
use crate::scenario::{
    AttackRun, RunSettings, Scenario, ScenarioSession, SessionPlan, drive_to_end,
};
use std::path::{Path, PathBuf};

/// What a sweep process did.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepProgress {
    pub state_dir: PathBuf,
    /// This shard's runs, those recorded before it started (resumed), and those it ran.
    pub runs: usize,
    pub already_done: usize,
    pub ran: usize,
}

/// Where a shard keeps its state under `out`: `out` itself for the whole sweep, else
/// `out/shard-I-of-N`.
pub fn state_dir(out: &Path, shard: Shard) -> PathBuf {
    if shard.is_whole() {
        out.to_path_buf()
    } else {
        out.join(format!("shard-{}-of-{}", shard.index, shard.count))
    }
}

/// Runs the shard's runs that its folder does not hold yet.
pub fn run_sweep(
    engine: &mut dyn Engine,
    scenario: &Scenario,
    shard: Shard,
    out: &Path,
    settings: &mut RunSettings<'_>,
) -> Result<SweepProgress, SweepError> {
    let all = plan(scenario);
    let mine = shard.slice(&all);
    let dir = state_dir(out, shard);
    let manifest = Manifest::new(scenario, settings.variant.clone(), shard, mine.len());
    let folder = SweepFolder::open(&dir, &manifest)?;
    let finished = folder.finished()?;
    let pending: Vec<PlannedRun> = (mine.iter())
        .filter(|run| !finished.contains_key(&run.id()))
        .copied()
        .collect();
    let already_done = mine.len() - pending.len();
    if already_done > 0 {
        (settings.log)(&format!(
            "resuming {}: {already_done} of {} runs already recorded",
            dir.display(),
            mine.len()
        ));
    }
    let targets = scenario.targets().len();
    let mut ran = 0;
    for seed in seeds(scenario) {
        let of_seed: Vec<&PlannedRun> = pending.iter().filter(|r| r.seed == seed).collect();
        if of_seed.is_empty() {
            continue;
        }
        // The session runs targets in order and each target's runs in order: the plan's order,
        // so its k-th record is the k-th pending run of the seed.
        let mut runs: Vec<Vec<AttackRun>> = vec![Vec::new(); targets];
        for run in &of_seed {
            runs[run.target].push(run.run);
        }
        let seeded = with_seed(scenario, seed);
        let session = ScenarioSession::start_planned(
            engine,
            &seeded,
            settings.variant.clone(),
            settings.cache_dir.clone(),
            SessionPlan {
                runs,
                record_trials: true,
            },
        )?;
        let offset = already_done + ran;
        ran += of_seed.len();
        let mut ids = of_seed.iter().map(|r| r.id());
        let mut store = |record: &crate::scenario::RunRecord| {
            let id = ids.next().expect("a record per planned run");
            folder
                .store(&id, record)
                .map_err(|e| crate::scenario::RunError::Store(e.to_string()))
        };
        (settings.log)(&format!("seed {seed}: {} runs", of_seed.len()));
        let total = mine.len();
        let outer = &mut *settings.progress;
        let mut progress = |done: usize, _: usize, what: &str| {
            outer(offset + done, total, &format!("seed {seed}: {what}"));
        };
        let mut seed_settings = RunSettings {
            variant: settings.variant.clone(),
            cache_dir: settings.cache_dir.clone(),
            progress: &mut progress,
            log: &mut *settings.log,
        };
        drive_to_end(engine, session, &mut seed_settings, &mut store)?;
    }
    Ok(SweepProgress {
        state_dir: dir,
        runs: mine.len(),
        already_done,
        ran,
    })
}
