//! `[sweep]` in a scenario file: what `specdef sweep` runs beyond one scenario run. The settings
//! are the scenario's (so the scenario module never reads the sweep's); `sweep/` plans and runs
//! them. Several
//! seeds (each splits the data, initialises and pretrains the released model and orders the
//! batches anew), and the attack grid or a seeded random search. `specdef run` ignores it.

use crate::training::Schedule;
use serde::{Deserialize, Serialize};

/// The most runs one sweep may plan (seeds x targets x trials).
pub const MAX_SWEEP_RUNS: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The scenario's seed and the `seeds - 1` after it.
    #[serde(default = "one")]
    pub seeds: usize,
    /// A random search in place of the attack grid: every target runs the same trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomSearch>,
}

fn one() -> usize {
    1
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            seeds: 1,
            random: None,
        }
    }
}

/// `[sweep.random]`: each trial draws a learning rate log-uniformly, and a step budget, batch
/// size, schedule and warm-up uniformly from the lists (the attack grid's where a list is
/// absent), and its optimiser uniformly from the target's optimisers. The draws follow
/// `search_seed` alone, so trial t is the same attack on every target and every seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSearch {
    pub trials: usize,
    /// `[from, to]` for the learning rate; the attack grid's range where absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_sizes: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<ScheduleKind>>,
    /// Warm-up lengths for `linear-warmup`.
    #[serde(default = "default_warmups")]
    pub warmup_steps: Vec<usize>,
    #[serde(default)]
    pub search_seed: u64,
}

fn default_warmups() -> Vec<usize> {
    vec![10]
}

/// A schedule a trial may draw; `linear-warmup` draws its length from `warmup_steps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    Constant,
    Cosine,
    LinearWarmup,
}

impl ScheduleKind {
    pub fn with_warmup(self, warmup_steps: usize) -> Schedule {
        match self {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Cosine => Schedule::Cosine,
            ScheduleKind::LinearWarmup => Schedule::LinearWarmup { warmup_steps },
        }
    }
}

impl SweepConfig {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.seeds == 0 {
            return Err("sweep.seeds must be at least 1".to_string());
        }
        let Some(random) = &self.random else {
            return Ok(());
        };
        if random.trials == 0 || random.trials > MAX_SWEEP_RUNS {
            return Err(format!(
                "sweep.random.trials must be 1..={MAX_SWEEP_RUNS}, got {}",
                random.trials
            ));
        }
        let (min_lr, max_lr) = (super::MIN_LR, super::MAX_LR);
        if let Some([from, to]) = random.lr
            && !(from.is_finite() && to.is_finite() && min_lr <= from && from <= to && to <= max_lr)
        {
            return Err(format!(
                "sweep.random.lr needs {min_lr:e} <= from <= to <= {max_lr:e}, got [{from}, {to}]"
            ));
        }
        for (name, list, max) in [
            ("steps", &random.steps, crate::training::MAX_STEPS),
            (
                "batch_sizes",
                &random.batch_sizes,
                crate::training::MAX_BATCH,
            ),
        ] {
            match list {
                Some(list) if list.is_empty() || list.contains(&0) => {
                    return Err(format!(
                        "sweep.random.{name} must list at least one value, none of them 0"
                    ));
                }
                Some(list) if list.iter().any(|&v| v > max) => {
                    return Err(format!("sweep.random.{name}: each value at most {max}"));
                }
                _ => {}
            }
        }
        if random.schedules.as_ref().is_some_and(Vec::is_empty) {
            return Err("sweep.random.schedules is empty".to_string());
        }
        if (random.schedules.iter().flatten()).any(|s| *s == ScheduleKind::LinearWarmup)
            && (random.warmup_steps.is_empty()
                || random.warmup_steps.contains(&0)
                || random
                    .warmup_steps
                    .iter()
                    .any(|&w| w > crate::training::MAX_STEPS))
        {
            return Err(
                "sweep.random.warmup_steps must list at least one length, each 1..=1e7".to_string(),
            );
        }
        Ok(())
    }
}

impl super::Scenario {
    /// The runs `specdef sweep` plans: per seed, every target's grid or random-search trials.
    pub fn sweep_run_count(&self) -> usize {
        let per_seed: usize = (self.targets().iter())
            .map(|target| match &self.sweep.random {
                Some(random) => random.trials,
                None => {
                    (target.optimizers.len()).saturating_mul(self.attack.lr_grid.values().len())
                }
            })
            .fold(0usize, usize::saturating_add);
        per_seed.saturating_mul(self.sweep.seeds)
    }
}
