//! One fine-tuning run of a target: its trial index in the target's list, its optimiser and
//! learning rate, and, where a random search drew them, its own budget and schedule. A scenario
//! run fine-tunes every target over the attack grid; a sweep hands the session any list.

use super::{Scenario, Target};
use crate::training::{OptimizerKind, Schedule, TrainSettings};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttackRun {
    /// The run's index in its target's list (the grid's optimiser-major order, or the random
    /// search's draw order): the same index names the same settings on every target and seed.
    pub trial: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    /// A random search's steps, batch size and schedule; the attack grid's where None.
    pub budget: Option<TrialBudget>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrialBudget {
    pub steps: usize,
    pub batch_size: Option<usize>,
    pub schedule: Schedule,
}

impl AttackRun {
    /// The attack grid's settings for this run's optimiser and rate, with its budget.
    pub fn settings(&self, scenario: &Scenario) -> TrainSettings {
        let mut settings = scenario.attack.settings(self.optimizer, self.lr);
        if let Some(budget) = self.budget {
            settings.steps = budget.steps;
            settings.batch_size = budget.batch_size;
            settings.schedule = budget.schedule;
        }
        settings
    }
}

impl Scenario {
    /// A target's grid: its optimisers over the attack grid's learning rates, optimiser-major.
    pub fn grid_runs(&self, target: &Target) -> Vec<AttackRun> {
        let lrs = self.attack.lr_grid.values();
        (target.optimizers.iter())
            .flat_map(|&optimizer| lrs.iter().map(move |&lr| (optimizer, lr)))
            .enumerate()
            .map(|(trial, (optimizer, lr))| AttackRun {
                trial,
                optimizer,
                lr,
                budget: None,
            })
            .collect()
    }
}
