//! What a scenario run produces: the per-defence summaries, one record per attack run (built
//! here from a summary and a training outcome), the outcome of the whole run, and the errors
//! that stop one.

use super::{RECORD_SCHEMA, RunRecord, Scenario, finite};
use crate::data::DataError;
use crate::defense::{Defense, DefenseError};
use crate::engine::{EngineError, EngineInfo};
use crate::linalg::faer_svd;
use crate::model::file::ModelFileError;
use crate::model::{FactorRole, HostLayer, HostModel, Matrix};
use crate::training::{Curve, TrainOutcome, TrainSettings};
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
    #[error("adaptive attack on {target}: {message}")]
    Adaptive { target: String, message: String },
    /// The caller could not keep a finished run's record (a sweep's folder).
    #[error("storing a record: {0}")]
    Store(String),
}

/// What one defence did before any attack.
#[derive(Clone, Debug, PartialEq)]
pub struct DefenseSummary {
    pub label: String,
    pub defense: Defense,
    /// The curves of the baseline training the defence holds (a stack's included); none for
    /// SpecDef alone and the undefended model.
    pub training: Vec<Curve>,
    /// The adaptive attacker's rewrite, as records name it (`factorisation p=4`).
    pub adaptive: Option<String>,
    /// Parameters the rewrite added to the defended model.
    pub adaptive_overhead: Option<i64>,
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
    layer_sigmas_of(&model.layers)
}

/// sigma_1 of each layer chain's effective and stored weight (an MLP's layers, or an
/// encoder's linear maps), in f64.
pub fn layer_sigmas_of(layers: &[HostLayer]) -> Result<Vec<LayerSigma>, String> {
    let sigma_1 = |m: &Matrix| faer_svd(m).map(|svd| svd.s.first().copied().unwrap_or(0.0));
    layers
        .iter()
        .enumerate()
        .map(|(layer, l)| {
            Ok(LayerSigma {
                layer,
                effective: sigma_1(&l.effective_weight())?,
                stored: sigma_1(l.matrix(FactorRole::Weight).unwrap_or(&l.factors[0].matrix))?,
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

/// The utility test set's accuracy and mean cross-entropy on the released model and after the
/// attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UtilityMeasured {
    pub accuracy_before_defense: f64,
    pub loss_before_defense: f64,
    pub accuracy_after_attack: f64,
    pub loss_after_attack: f64,
}

/// What one attack run's record is made of, whichever scenario ran it.
pub struct RecordParts<'a> {
    pub scenario: &'a str,
    pub variant: Option<String>,
    pub seed: u64,
    pub info: &'a EngineInfo,
    /// The attacked model; its function error is the run engine's (the summary's first).
    pub summary: &'a DefenseSummary,
    /// The singular values scaled per defended layer (`0:25 1:25`), where defended.
    pub k_per_layer: Option<String>,
    pub task: super::Task,
    /// The run's optimiser (its name) and learning rate.
    pub run: (&'a str, f64),
    pub attack: &'a TrainSettings,
    /// The linear maps' trained groups, and every trained part as the record names it.
    pub trained: (crate::model::Trainable, String),
    pub outcome: TrainOutcome,
    pub utility: UtilityMeasured,
    pub wall_ms: f64,
}

/// The record of one attack run of the digits scenario.
#[allow(clippy::too_many_arguments)]
pub(super) fn record(
    scenario: &Scenario,
    variant: Option<String>,
    info: &EngineInfo,
    summary: &DefenseSummary,
    run: (&str, f64),
    task: super::Task,
    attack: &TrainSettings,
    outcome: TrainOutcome,
    utility: UtilityMeasured,
    wall_ms: f64,
) -> RunRecord {
    let defense = summary.defense.spec_def();
    record_of(RecordParts {
        scenario: &scenario.name,
        variant,
        seed: scenario.seed,
        info,
        summary,
        k_per_layer: defense.map(|d| d.k_per_layer(&scenario.model, scenario.seed)),
        task,
        run,
        attack,
        trained: (attack.trainable, attack.trainable.describe()),
        outcome,
        utility,
        wall_ms,
    })
}

/// A run's record from its parts; what a scenario knows besides (the release, the held-out
/// accuracy, the cache) it sets on the record after.
pub fn record_of(parts: RecordParts<'_>) -> RunRecord {
    let RecordParts {
        scenario,
        variant,
        seed,
        info,
        summary,
        k_per_layer,
        task,
        run: (optimizer, lr),
        attack,
        trained: (trainable, trained),
        outcome,
        utility,
        wall_ms,
    } = parts;
    let defense = summary.defense.spec_def();
    let (_, function_error_max, function_error_mean) = summary.function_error[0].clone();
    RunRecord {
        schema: RECORD_SCHEMA.to_string(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        scenario: scenario.to_string(),
        variant,
        seed,
        trial: None,
        engine: info.engine.clone(),
        backend: info.backend.clone(),
        adapter: info.adapter.clone(),
        driver: info.driver.clone(),
        device_type: info.device_type.clone(),
        defense: summary.defense.name().to_string(),
        defense_params: Some(summary.defense.params()),
        compensation_form: defense
            .filter(|d| d.compensate)
            .map(|d| d.compensation.name().to_string()),
        alpha: defense.map(|d| d.alpha),
        k: defense.map(|d| d.k),
        k_per_layer,
        layers: defense.map(|d| d.layers.to_string()),
        parameter_count: summary.parameter_count,
        adaptive: summary.adaptive.clone(),
        adaptive_overhead: summary.adaptive_overhead,
        function_error_max,
        function_error_mean,
        task: task.name().to_string(),
        optimizer: optimizer.to_string(),
        lr,
        schedule: format!("{:?}", attack.schedule).to_lowercase(),
        beta1: Some(attack.hyper.beta1),
        beta2: Some(attack.hyper.beta2),
        eps: Some(attack.hyper.eps),
        momentum: Some(attack.hyper.momentum),
        weight_decay: Some(attack.hyper.weight_decay_for(attack.optimizer)),
        optimizer_groups: serde_json::to_string(&attack.groups).unwrap_or_default(),
        second_order: (attack.second_order).describe(attack.optimizer, &attack.hyper),
        steps: attack.steps,
        batch_size: attack.batch_size,
        eval_every: attack.eval_every,
        target_accuracy: attack.target_accuracy.unwrap_or(f64::NAN),
        train_weights: trainable.weights,
        train_biases: trainable.biases,
        train_compensation: trainable.compensation,
        trainable: trained,
        reached_target: outcome.steps_to_target.is_some(),
        steps_to_target: outcome.steps_to_target,
        diverged: outcome.diverged_at.is_some(),
        diverged_at: outcome.diverged_at,
        steps_run: outcome.steps_run,
        final_harmful_accuracy: outcome.final_accuracy,
        heldout_harmful_accuracy: None,
        final_loss: finite(outcome.final_loss),
        release: None,
        harmful_accuracy_released: None,
        utility_before_defense: utility.accuracy_before_defense,
        utility_after_defense: summary.utility_after_defense,
        utility_after_attack: utility.accuracy_after_attack,
        utility_loss_before_defense: Some(utility.loss_before_defense),
        utility_loss_after_attack: finite(utility.loss_after_attack),
        collapsed: Some(super::is_collapse(
            utility.loss_before_defense,
            finite(utility.loss_after_attack),
        )),
        pretrain_from_cache: None,
        wall_ms,
        loss_curve: outcome
            .loss_curve
            .iter()
            .map(|&(step, loss)| (step, finite(loss)))
            .collect(),
        accuracy_curve: outcome.accuracy_curve,
    }
}
