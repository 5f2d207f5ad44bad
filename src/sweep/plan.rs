//! A sweep's run list, in one stable order every shard agrees on: seed, then target
//! (`Scenario::targets`), then trial. A run's id names that place (`s0-t003-r0012`); a shard is
//! a contiguous slice of the list, so it defends each target once and shares the seed's
//! pretrained model with the shards beside it through the cache.

use crate::scenario::RandomSearch;
use crate::scenario::{AttackRun, Scenario, Target, TrialBudget};
use crate::training::OptimizerKind;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedRun {
    pub seed: u64,
    /// The target's index in `Scenario::targets`.
    pub target: usize,
    pub run: AttackRun,
}

impl PlannedRun {
    /// The run's name in a sweep folder (and in reports of missing or duplicated runs).
    pub fn id(&self) -> String {
        format!("s{}-t{:03}-r{:04}", self.seed, self.target, self.run.trial)
    }
}

/// The sweep's seeds: the scenario's and the ones after it.
pub fn seeds(scenario: &Scenario) -> Vec<u64> {
    (0..scenario.sweep.seeds as u64)
        .map(|i| scenario.seed.wrapping_add(i))
        .collect()
}

/// The scenario with another seed (the data split, initialisation and batch order follow it).
pub fn with_seed(scenario: &Scenario, seed: u64) -> Scenario {
    Scenario {
        seed,
        ..scenario.clone()
    }
}

/// Every run of the sweep, in the stable order.
pub fn plan(scenario: &Scenario) -> Vec<PlannedRun> {
    let targets = scenario.targets();
    let per_target: Vec<Vec<AttackRun>> = (targets.iter())
        .map(|target| target_runs(scenario, target))
        .collect();
    seeds(scenario)
        .into_iter()
        .flat_map(|seed| {
            (per_target.iter().enumerate()).flat_map(move |(target, runs)| {
                runs.iter()
                    .map(move |&run| PlannedRun { seed, target, run })
            })
        })
        .collect()
}

/// How many runs the sweep plans, without listing them.
pub fn run_count(scenario: &Scenario) -> usize {
    scenario.sweep_run_count()
}

/// A target's runs: the attack grid, or the random search's trials.
fn target_runs(scenario: &Scenario, target: &Target) -> Vec<AttackRun> {
    match &scenario.sweep.random {
        None => scenario.grid_runs(target),
        Some(random) => random_trials(scenario, random, &target.optimizers),
    }
}

/// The random search's trials for a target with these optimisers. Every trial draws the same
/// six numbers in the same order whatever the lists hold, so trial t's learning rate does not
/// depend on the optimiser list of the target.
fn random_trials(
    scenario: &Scenario,
    random: &RandomSearch,
    optimizers: &[OptimizerKind],
) -> Vec<AttackRun> {
    let attack = &scenario.attack;
    let [from, to] = random
        .lr
        .unwrap_or([attack.lr_grid.from, attack.lr_grid.to]);
    let steps = random.steps.clone().unwrap_or_else(|| vec![attack.steps]);
    let batches: Vec<Option<usize>> = match &random.batch_sizes {
        Some(sizes) => sizes.iter().copied().map(Some).collect(),
        None => vec![attack.batch_size],
    };
    let mut rng = ChaCha8Rng::seed_from_u64(random.search_seed);
    (0..random.trials)
        .map(|trial| {
            let draws: [f64; 6] = std::array::from_fn(|_| rng.random());
            // The index a uniform draw picks from a list of `len`.
            let pick = |u: f64, len: usize| ((u * len as f64) as usize).min(len - 1);
            let exponent = from.log10() + draws[1] * (to.log10() - from.log10());
            let schedule = match &random.schedules {
                Some(kinds) => {
                    let warmups = &random.warmup_steps;
                    let warmup = warmups.get(pick(draws[5], warmups.len().max(1)));
                    kinds[pick(draws[4], kinds.len())].with_warmup(warmup.copied().unwrap_or(0))
                }
                None => attack.schedule,
            };
            AttackRun {
                trial,
                optimizer: optimizers[pick(draws[0], optimizers.len())],
                lr: three_digits(10f64.powf(exponent)),
                budget: Some(TrialBudget {
                    steps: steps[pick(draws[2], steps.len())],
                    batch_size: batches[pick(draws[3], batches.len())],
                    schedule,
                }),
            }
        })
        .collect()
}

/// Rounded to 3 significant digits, as the grid's rates are, so tables print them cleanly.
fn three_digits(value: f64) -> f64 {
    let digits = 10f64.powi(2 - value.log10().floor() as i32);
    (value * digits).round() / digits
}
