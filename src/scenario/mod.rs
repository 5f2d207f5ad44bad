//! Scenarios: what to run (TOML), the runner that runs it, and the result records it produces.

mod attack_run;
mod cache;
mod config;
mod outcome;
mod release;
mod runner;
mod session;
mod sweep_settings;
mod targets;
mod task;

pub use attack_run::{AttackRun, TrialBudget};
pub use cache::{ModelCache, default_cache_dir};
pub use config::{
    AdaptiveGrid, AttackGrid, DEFAULT_SCENARIO, DataConfig, DefenseGrid, LrGrid, MAX_ALPHA,
    MAX_TOTAL_STEPS, MIN_LR, Scenario, SvdPlacement, TrainabilityGrid, parse_with_variant,
};
pub use outcome::{
    DefenseSummary, LayerSigma, RecordParts, RunError, ScenarioOutcome, UtilityMeasured,
    layer_sigmas, layer_sigmas_of, record_of,
};
// Records live in their own leaf module; the runner that writes them re-exports them.
pub use crate::record::{
    COLLAPSE_MARGIN, MAX_LR, RECORD_SCHEMA, RunRecord, Success, finite, is_collapse,
};
pub use release::{Release, suppression_set};
pub use runner::{RunSettings, drive_to_end, run_scenario};
pub use session::{ScenarioSession, SessionPlan};
pub use sweep_settings::{MAX_SWEEP_RUNS, RandomSearch, ScheduleKind, SweepConfig};
pub use targets::{Target, Task};
pub use task::TaskData;
