//! Scenarios: what to run (TOML), the runner that runs it, and the result records it produces.

mod config;
mod record;
mod runner;
mod session;

pub use config::{
    AttackGrid, DEFAULT_SCENARIO, DataConfig, DefenseGrid, LrGrid, Scenario, SvdPlacement,
};
pub use record::{RECORD_SCHEMA, RunRecord, finite};
pub use runner::{
    DefenseSummary, LayerSigma, RunError, RunSettings, ScenarioOutcome, TaskData, run_scenario,
};
pub use session::ScenarioSession;
