//! Runs a scenario to the end (the blocking driver of `ScenarioSession`), and what a run produces:
//! the data sets, per-defence summaries, and one result record per attack run.

use super::{RECORD_SCHEMA, RunRecord, Scenario, ScenarioSession, finite};
use crate::attack::TrainOutcome;
use crate::data::{DataError, Dataset, load_digits, stratified_split};
use crate::defense::{DefenseError, SpecDef};
use crate::engine::{Engine, EngineError, EngineInfo};
use crate::linalg::faer_svd;
use crate::model::file::ModelFileError;
use crate::model::{HostModel, Matrix};
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Defense(#[from] DefenseError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error("SVD of a layer for sigma_1: {0}")]
    Svd(String),
}

/// The four data sets of a scenario.
pub struct TaskData {
    pub utility_train: Dataset,
    pub utility_test: Dataset,
    pub harmful_train: Dataset,
    pub harmful_test: Dataset,
}

impl TaskData {
    pub fn load(scenario: &Scenario) -> Result<Self, DataError> {
        let digits = load_digits()?.dataset;
        let (train_idx, test_idx) =
            stratified_split(&digits.labels, scenario.data.test_fraction, scenario.seed);
        let (train, test) = (digits.select(&train_idx), digits.select(&test_idx));
        let (utility, harmful) = (
            &scenario.data.utility_classes,
            &scenario.data.harmful_classes,
        );
        Ok(Self {
            utility_train: train.with_classes(utility),
            utility_test: test.with_classes(utility),
            harmful_train: train.with_classes(harmful),
            harmful_test: test.with_classes(harmful),
        })
    }
}

/// What one defence did before any attack.
#[derive(Clone, Debug, PartialEq)]
pub struct DefenseSummary {
    pub label: String,
    pub defense: Option<SpecDef>,
    pub parameter_count: usize,
    pub utility_after_defense: f64,
    /// (engine, max, mean) relative output error against the undefended model in f64, the run
    /// engine first: the precision frontier of the defence, per backend.
    pub function_error: Vec<(String, f64, f64)>,
    /// Per layer, the largest singular value of the function's weight (`C W~`, equal to `W`)
    /// and of the stored weight `W~` the attacker's gradient steps move: `alpha` apart where
    /// SpecDef defends the layer.
    pub sigma_1: Vec<LayerSigma>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerSigma {
    pub layer: usize,
    pub effective: f64,
    pub stored: f64,
}

/// sigma_1 of every layer's effective and stored weight, in f64.
pub fn layer_sigmas(model: &HostModel) -> Result<Vec<LayerSigma>, String> {
    let sigma_1 = |m: &Matrix| faer_svd(m).map(|svd| svd.s.first().copied().unwrap_or(0.0));
    model
        .layers
        .iter()
        .enumerate()
        .map(|(layer, l)| {
            Ok(LayerSigma {
                layer,
                effective: sigma_1(&l.effective_weight())?,
                stored: sigma_1(&l.weight)?,
            })
        })
        .collect()
}

pub struct ScenarioOutcome {
    pub scenario: Scenario,
    pub variant: Option<String>,
    pub engine: EngineInfo,
    pub utility_before_defense: f64,
    pub pretrain_from_cache: bool,
    pub defenses: Vec<DefenseSummary>,
    pub records: Vec<RunRecord>,
}

/// Where the pretrained model is cached, and progress reporting.
pub struct RunSettings<'a> {
    pub variant: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// Called after each attack run with (runs done, runs in all, description).
    pub progress: &'a mut dyn FnMut(usize, usize, &str),
    /// Called with one-line notes (cache hits, phases).
    pub log: &'a mut dyn FnMut(&str),
}

pub(super) fn label_of(defense: &Option<SpecDef>) -> String {
    match defense {
        None => "none".to_string(),
        Some(d) if d.compensate => format!("specdef a={:.0e}", d.alpha),
        Some(d) => format!("specdef-ablation a={:.0e}", d.alpha),
    }
}

/// Runs a scenario to the end, blocking: the `ScenarioSession` state machine driven with blocking
/// readbacks, reporting progress and notes through `settings`.
pub fn run_scenario(
    engine: &mut dyn Engine,
    scenario: &Scenario,
    settings: &mut RunSettings<'_>,
) -> Result<ScenarioOutcome, RunError> {
    let mut session = ScenarioSession::start(
        engine,
        scenario,
        settings.variant.clone(),
        settings.cache_dir.clone(),
    )?;
    let mut reported = 0;
    loop {
        for note in session.drain_notes() {
            (settings.log)(&note);
        }
        let (done, total) = session.progress();
        if done > reported {
            reported = done;
            (settings.progress)(done, total, &session.describe());
        }
        if session.is_done() {
            break;
        }
        session.advance(engine, true)?;
    }
    Ok(session.into_outcome())
}

/// The record of one attack run; the function error is the run engine's (the summary's first).
#[allow(clippy::too_many_arguments)]
pub(super) fn record(
    scenario: &Scenario,
    variant: Option<String>,
    info: &EngineInfo,
    summary: &DefenseSummary,
    (optimizer, lr): (&str, f64),
    attack: &crate::attack::TrainSettings,
    outcome: TrainOutcome,
    (utility_before_defense, utility_after_attack): (f64, f64),
    wall_ms: f64,
) -> RunRecord {
    let defense = summary.defense.as_ref();
    let (_, function_error_max, function_error_mean) = summary.function_error[0].clone();
    RunRecord {
        schema: RECORD_SCHEMA.to_string(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        scenario: scenario.name.clone(),
        variant,
        seed: scenario.seed,
        engine: info.engine.clone(),
        backend: info.backend.clone(),
        adapter: info.adapter.clone(),
        driver: info.driver.clone(),
        device_type: info.device_type.clone(),
        defense: match defense {
            None => "none".to_string(),
            Some(d) if d.compensate => "specdef".to_string(),
            Some(_) => "specdef-ablation".to_string(),
        },
        alpha: defense.map(|d| d.alpha),
        k: defense.map(|d| d.k),
        layers: defense.map(|d| d.layers.to_string()),
        parameter_count: summary.parameter_count,
        function_error_max,
        function_error_mean,
        optimizer: optimizer.to_string(),
        lr,
        schedule: format!("{:?}", attack.schedule).to_lowercase(),
        steps: attack.steps,
        batch_size: attack.batch_size,
        eval_every: attack.eval_every,
        target_accuracy: attack.target_accuracy.unwrap_or(f64::NAN),
        train_weights: attack.trainable.weights,
        train_biases: attack.trainable.biases,
        train_compensation: attack.trainable.compensation,
        reached_target: outcome.steps_to_target.is_some(),
        steps_to_target: outcome.steps_to_target,
        diverged: outcome.diverged_at.is_some(),
        diverged_at: outcome.diverged_at,
        steps_run: outcome.steps_run,
        final_harmful_accuracy: outcome.final_accuracy,
        final_loss: finite(outcome.final_loss),
        utility_before_defense,
        utility_after_defense: summary.utility_after_defense,
        utility_after_attack,
        wall_ms,
        loss_curve: outcome
            .loss_curve
            .iter()
            .map(|&(step, loss)| (step, finite(loss)))
            .collect(),
        accuracy_curve: outcome.accuracy_curve,
    }
}
