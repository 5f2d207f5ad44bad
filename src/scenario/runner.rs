//! Runs a scenario: pretrain (cached) the released model on the utility task, apply each defence,
//! measure function preservation and utility, then attack each defended model with every
//! optimiser over the learning-rate grid, one result record per attack run.

use super::{RECORD_SCHEMA, RunRecord, Scenario, SvdPlacement, finite};
use crate::attack::{TrainOutcome, accuracy, train};
use crate::data::{DataError, Dataset, load_digits, stratified_split};
use crate::defense::{DefenseError, SpecDef, function_preservation};
use crate::engine::cpu::{CpuEngine32, CpuEngine64};
use crate::engine::{Engine, EngineError, EngineInfo};
use crate::linalg::{JACOBI_SWEEPS, jacobi_svd};
use crate::model::file::{self, ModelFileError};
use crate::model::{DeviceModel, HostModel, predict, predict_device};
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
    /// (engine, max, mean) relative output error against the undefended model in f64: the
    /// precision frontier of the defence, per backend.
    pub function_error: Vec<(String, f64, f64)>,
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

/// FNV-1a: a stable 64-bit hash for cache keys (std's hasher may change between releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn label_of(defense: &Option<SpecDef>) -> String {
    match defense {
        None => "none".to_string(),
        Some(d) if d.compensate => format!("specdef a={:.0e}", d.alpha),
        Some(d) => format!("specdef-ablation a={:.0e}", d.alpha),
    }
}

fn pretrain(
    engine: &mut dyn Engine,
    scenario: &Scenario,
    data: &TaskData,
    settings: &mut RunSettings<'_>,
) -> Result<(HostModel, bool), RunError> {
    let key_text = format!(
        "{}|{}|{}|{}|{}|{}",
        env!("CARGO_PKG_VERSION"),
        engine.info().engine,
        serde_json::to_string(&scenario.data).unwrap_or_default(),
        serde_json::to_string(&scenario.model).unwrap_or_default(),
        serde_json::to_string(&scenario.pretrain).unwrap_or_default(),
        scenario.seed
    );
    let cache_file = settings
        .cache_dir
        .as_ref()
        .map(|dir| dir.join(format!("pretrain-{:016x}.safetensors", fnv1a(&key_text))));
    if let Some(path) = &cache_file
        && path.exists()
    {
        match file::load(path) {
            Ok((model, _)) if model.spec == scenario.model => {
                (settings.log)(&format!("pretrained model from cache {}", path.display()));
                return Ok((model, true));
            }
            Ok(_) => (settings.log)(&format!("cache {} is stale: retraining", path.display())),
            Err(e) => (settings.log)(&format!("cache unreadable ({e}): retraining")),
        }
    }
    (settings.log)("pretraining the released model on the utility task");
    let host = HostModel::init(&scenario.model, scenario.seed);
    let device = DeviceModel::upload(engine, &host)?;
    let outcome = train(
        engine,
        &device,
        &data.utility_train,
        &data.utility_test,
        &scenario.pretrain,
        scenario.seed,
    );
    let trained = outcome.and_then(|_| device.download(engine));
    device.free(engine);
    let trained = trained?;
    if let Some(path) = &cache_file {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = file::save(path, &trained, "none") {
            (settings.log)(&format!("could not cache the pretrained model: {e}"));
        }
    }
    Ok((trained, false))
}

fn summarize_defense(
    engine: &mut dyn Engine,
    defense: &Option<SpecDef>,
    model: &HostModel,
    data: &TaskData,
    reference_logits: &[f64],
) -> Result<DefenseSummary, RunError> {
    let inputs = &data.utility_test.inputs;
    let mut function_error = Vec::new();
    let others: [&mut dyn Engine; 2] = [&mut CpuEngine64::new(), &mut CpuEngine32::new()];
    for e in std::iter::once(engine).chain(others) {
        let (max, mean) = function_preservation(e, model, inputs, reference_logits)?;
        function_error.push((e.info().engine, max, mean));
    }
    Ok(DefenseSummary {
        label: label_of(defense),
        defense: defense.clone(),
        parameter_count: model.parameter_count(),
        utility_after_defense: 0.0,
        function_error,
    })
}

pub fn run_scenario(
    engine: &mut dyn Engine,
    scenario: &Scenario,
    settings: &mut RunSettings<'_>,
) -> Result<ScenarioOutcome, RunError> {
    let info = engine.info();
    let data = TaskData::load(scenario)?;
    let (base, from_cache) = pretrain(engine, scenario, &data, settings)?;
    let utility_before = accuracy(
        &predict(engine, &base, &data.utility_test.inputs)?,
        &data.utility_test.labels,
    );
    let reference_logits = predict(&mut CpuEngine64::new(), &base, &data.utility_test.inputs)?;

    let defenses = scenario.defense.defenses();
    let lrs = scenario.attack.lr_grid.values();
    let total = defenses.len() * scenario.attack.optimizers.len() * lrs.len();
    let mut summaries = Vec::new();
    let mut records = Vec::with_capacity(total);
    for defense in &defenses {
        let model = match (defense, scenario.defense.svd) {
            (None, _) => base.clone(),
            (Some(d), SvdPlacement::Host) => d.apply(&base, scenario.seed)?,
            (Some(d), SvdPlacement::Engine) => d.apply_with(&base, scenario.seed, &mut |w| {
                jacobi_svd(&mut *engine, w, JACOBI_SWEEPS).map_err(|e| e.to_string())
            })?,
        };
        let mut summary = summarize_defense(engine, defense, &model, &data, &reference_logits)?;
        summary.utility_after_defense = accuracy(
            &predict(engine, &model, &data.utility_test.inputs)?,
            &data.utility_test.labels,
        );
        (settings.log)(&format!(
            "{}: utility {:.3}, {} parameters",
            summary.label, summary.utility_after_defense, summary.parameter_count
        ));
        for &optimizer in &scenario.attack.optimizers {
            for &lr in &lrs {
                let attack = scenario.attack.settings(optimizer, lr);
                let start = std::time::Instant::now();
                let device = DeviceModel::upload(engine, &model)?;
                let outcome = train(
                    engine,
                    &device,
                    &data.harmful_train,
                    &data.harmful_test,
                    &attack,
                    scenario.seed,
                )
                .and_then(|outcome| {
                    let logits = predict_device(engine, &device, &data.utility_test.inputs)?;
                    Ok((outcome, accuracy(&logits, &data.utility_test.labels)))
                });
                device.free(engine);
                let (outcome, utility_after_attack) = outcome?;
                let (_, max_error, mean_error) = summary.function_error[0].clone();
                records.push(record(
                    scenario,
                    settings.variant.clone(),
                    &info,
                    &summary,
                    (max_error, mean_error),
                    (optimizer.name(), lr),
                    &attack,
                    outcome,
                    (utility_before, utility_after_attack),
                    start.elapsed().as_secs_f64() * 1e3,
                ));
                let description = format!("{} {} lr={lr:e}", summary.label, optimizer.name());
                (settings.progress)(records.len(), total, &description);
            }
        }
        summaries.push(summary);
    }
    Ok(ScenarioOutcome {
        scenario: scenario.clone(),
        variant: settings.variant.clone(),
        engine: info,
        utility_before_defense: utility_before,
        pretrain_from_cache: from_cache,
        defenses: summaries,
        records,
    })
}

#[allow(clippy::too_many_arguments)]
fn record(
    scenario: &Scenario,
    variant: Option<String>,
    info: &EngineInfo,
    summary: &DefenseSummary,
    (function_error_max, function_error_mean): (f64, f64),
    (optimizer, lr): (&str, f64),
    attack: &crate::attack::TrainSettings,
    outcome: TrainOutcome,
    (utility_before_defense, utility_after_attack): (f64, f64),
    wall_ms: f64,
) -> RunRecord {
    let defense = summary.defense.as_ref();
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
