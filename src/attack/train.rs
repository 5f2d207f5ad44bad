//! The training loop shared by pretraining and attacks. Many optimisation steps are recorded
//! into one submission; the loss and the evaluation logits are read back every `eval_every`
//! steps only. Divergence (a non-finite loss, or one over the bound) is a measured outcome.

use super::{OptimizerKind, OptimizerState, Schedule};
use crate::data::Dataset;
use crate::engine::{Engine, EngineError, Recording};
use crate::model::{DeviceModel, Gradients, Trainable, Workspace, graph};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    pub steps: usize,
    /// Loss and evaluation accuracy are read back every this many steps.
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
    /// Mini-batch size; the whole training set when absent or larger than it.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Stop when evaluation accuracy reaches this (steps to target are then measured).
    #[serde(default)]
    pub target_accuracy: Option<f64>,
    /// A training loss above this counts as diverged (as does NaN or infinity).
    #[serde(default = "default_divergence_loss")]
    pub divergence_loss: f64,
    #[serde(default)]
    pub trainable: Trainable,
}

fn default_schedule() -> Schedule {
    Schedule::Constant
}

fn default_eval_every() -> usize {
    10
}

fn default_divergence_loss() -> f64 {
    1e3
}

/// What a training run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// (step, training-batch loss) at each evaluation.
    pub loss_curve: Vec<(usize, f64)>,
    /// (step, evaluation accuracy) at each evaluation.
    pub accuracy_curve: Vec<(usize, f64)>,
    /// The first evaluated step at which accuracy reached the target.
    pub steps_to_target: Option<usize>,
    /// The first evaluated step whose loss was non-finite or over the bound.
    pub diverged_at: Option<usize>,
    pub steps_run: usize,
    pub final_accuracy: f64,
    pub final_loss: f64,
}

/// Fraction of rows whose largest logit is at the label (NaN logits count as wrong).
pub fn accuracy(logits: &[f64], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let classes = logits.len() / labels.len();
    let correct = logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i);
            best == Some(**label)
        })
        .count();
    correct as f64 / labels.len() as f64
}

/// A data set uploaded as fixed batches (shuffled once by the seed, the remainder dropped).
struct Batches {
    inputs: Vec<crate::Tensor>,
    labels: Vec<crate::Tensor>,
    size: usize,
}

impl Batches {
    fn upload(
        engine: &mut dyn Engine,
        data: &Dataset,
        batch_size: Option<usize>,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let size = batch_size.unwrap_or(data.len()).clamp(1, data.len().max(1));
        let mut order: Vec<usize> = (0..data.len()).collect();
        if size < data.len() {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        let mut batches = Self {
            inputs: Vec::new(),
            labels: Vec::new(),
            size,
        };
        for chunk in order.chunks_exact(size) {
            let part = data.select(chunk);
            batches.inputs.push(engine.tensor_from(
                "batch.inputs",
                size,
                data.features,
                &part.inputs,
            )?);
            batches.labels.push(engine.tensor_from(
                "batch.labels",
                size,
                1,
                &part.label_values(),
            )?);
        }
        Ok(batches)
    }

    fn free(&self, engine: &mut dyn Engine) {
        self.inputs
            .iter()
            .chain(&self.labels)
            .for_each(|&t| engine.free(t));
    }
}

/// Trains `model` in place on `train_data` (cross-entropy), evaluating on `eval_data`.
pub fn train(
    engine: &mut dyn Engine,
    model: &DeviceModel,
    train_data: &Dataset,
    eval_data: &Dataset,
    settings: &TrainSettings,
    seed: u64,
) -> Result<TrainOutcome, EngineError> {
    for (label, data) in [("training set", train_data), ("evaluation set", eval_data)] {
        if data.is_empty() {
            return Err(EngineError::EmptyTensor {
                label: label.to_string(),
                rows: 0,
                cols: data.features,
            });
        }
    }
    let batches = Batches::upload(engine, train_data, settings.batch_size, seed)?;
    let workspace = Workspace::alloc(engine, model, batches.size, 1)?;
    let eval_ws = Workspace::alloc(engine, model, eval_data.len(), 1)?;
    engine.upload(eval_ws.inputs, &eval_data.inputs)?;
    let grads = Gradients::alloc(engine, model)?;
    let optimizer = OptimizerState::new(
        engine,
        settings.optimizer,
        grads.trainable_pairs(model, settings.trainable),
    )?;
    let result = run_steps(
        engine, model, &batches, &workspace, &eval_ws, eval_data, &grads, &optimizer, settings,
    );
    optimizer.free(engine);
    grads.free(engine);
    eval_ws.free(engine);
    workspace.free(engine);
    batches.free(engine);
    result
}

#[allow(clippy::too_many_arguments)]
fn run_steps(
    engine: &mut dyn Engine,
    model: &DeviceModel,
    batches: &Batches,
    workspace: &Workspace,
    eval_ws: &Workspace,
    eval_data: &Dataset,
    grads: &Gradients,
    optimizer: &OptimizerState,
    settings: &TrainSettings,
) -> Result<TrainOutcome, EngineError> {
    let mut outcome = TrainOutcome {
        loss_curve: Vec::new(),
        accuracy_curve: Vec::new(),
        steps_to_target: None,
        diverged_at: None,
        steps_run: 0,
        final_accuracy: 0.0,
        final_loss: f64::NAN,
    };
    let mut eval_forward = Recording::new();
    graph::forward(&mut eval_forward, model, eval_ws)?;
    let every = settings.eval_every.max(1);
    let mut step = 0;
    while step < settings.steps {
        let chunk_end = (step + every).min(settings.steps);
        let mut rec = Recording::new();
        for s in step..chunk_end {
            let b = s % batches.inputs.len();
            let ws = Workspace {
                inputs: batches.inputs[b],
                targets: batches.labels[b],
                ..workspace.clone()
            };
            graph::forward(&mut rec, model, &ws)?;
            graph::cross_entropy(&mut rec, &ws)?;
            graph::backward(&mut rec, model, &ws, grads, settings.trainable)?;
            let lr = settings.schedule.lr_at(settings.lr, s, settings.steps);
            optimizer.record_step(&mut rec, lr, s as u32 + 1)?;
        }
        rec.extend(&eval_forward);
        engine.run(&rec)?;
        let values = engine.read(&[workspace.loss_sum, eval_ws.logits()])?;
        step = chunk_end;
        let loss = values[0][0] / batches.size as f64;
        let acc = accuracy(&values[1], &eval_data.labels);
        outcome.loss_curve.push((step, loss));
        outcome.accuracy_curve.push((step, acc));
        outcome.steps_run = step;
        outcome.final_accuracy = acc;
        outcome.final_loss = loss;
        if !loss.is_finite() || loss > settings.divergence_loss {
            outcome.diverged_at = Some(step);
            break;
        }
        if let Some(target) = settings.target_accuracy
            && acc >= target
        {
            outcome.steps_to_target = Some(step);
            break;
        }
    }
    Ok(outcome)
}
