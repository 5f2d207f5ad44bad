//! The training loop shared by pretraining and attacks. Many optimisation steps are recorded
//! into one submission; the loss and the evaluation logits are read back every `eval_every`
//! steps only. Divergence (a non-finite loss, or one over the bound) is a measured outcome.

use super::objective::{Objective, TrainRows, gather};
use super::run::{Chunked, TrainRun};
use super::{
    GroupSettings, OptimizerConfig, OptimizerHyper, OptimizerKind, OptimizerState, Schedule,
    SecondOrderConfig, SecondOrderHyper, SecondOrderState,
};
use crate::data::Dataset;
use crate::engine::{Allocation, Engine, EngineError, Owned, ReadTicket, Recording};
use crate::model::{DeviceModel, Gradients, Loss, ParamGroup, Trainable, Workspace, graph};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most optimisation steps of one run (pretraining or an attack): each step is recorded
/// before it runs, so the budget is bounded like every other allocation.
pub const MAX_STEPS: usize = 10_000_000;

/// The largest mini-batch (a batch larger than the training set is the whole set).
pub const MAX_BATCH: usize = 1 << 20;

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
    /// The optimiser's hyper-parameters (the reference implementations' by default).
    #[serde(default)]
    pub hyper: OptimizerHyper,
    /// Parameter groups trained with another optimiser, learning-rate scale or hyper-parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<ParamGroup, GroupSettings>,
    /// The second-order optimisers' hyper-parameters (the reference implementations' by
    /// default; left out of the serialised settings then, so cache keys stay as they were).
    #[serde(default, skip_serializing_if = "SecondOrderHyper::is_default")]
    pub second_order: SecondOrderHyper,
}

impl TrainSettings {
    /// Checks every field before any work, naming it as `{table}.{field}` (`pretrain.lr`,
    /// `attack.batch_size`): a run with a zero batch, a NaN target or a negative learning rate
    /// is refused, never run as something else.
    pub fn validate(&self, table: &str) -> Result<(), String> {
        let positive = |field: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{table}.{field} must be a positive number, got {value}"
                ))
            }
        };
        positive("lr", self.lr)?;
        let max_lr = crate::scenario::MAX_LR;
        if self.lr > max_lr {
            return Err(format!(
                "{table}.lr = {:e} is above {max_lr:e}, the largest learning rate the suite runs",
                self.lr
            ));
        }
        let at_least_one = |field: &str, value: usize| {
            if value >= 1 {
                Ok(())
            } else {
                Err(format!("{table}.{field} must be at least 1, got {value}"))
            }
        };
        at_least_one("steps", self.steps)?;
        if self.steps > MAX_STEPS {
            return Err(format!(
                "{table}.steps = {} is above {MAX_STEPS}, the most one run may take",
                self.steps
            ));
        }
        at_least_one("eval_every", self.eval_every)?;
        if let Some(batch) = self.batch_size {
            at_least_one("batch_size", batch)?;
            if batch > MAX_BATCH {
                return Err(format!(
                    "{table}.batch_size = {batch} is above {MAX_BATCH} (a batch larger than the \
                     training set is the whole set: leave batch_size out for that)"
                ));
            }
        }
        if ParamGroup::ALL.iter().all(|&g| !self.trainable.trains(g)) {
            return Err(format!(
                "{table}.trainable: every group is false, so nothing would train"
            ));
        }
        if let Some(target) = self.target_accuracy
            && !(0.0..=1.0).contains(&target)
        {
            return Err(format!(
                "{table}.target_accuracy must be in [0, 1], got {target}"
            ));
        }
        if self.divergence_loss.is_nan() || self.divergence_loss < MIN_DIVERGENCE_LOSS {
            return Err(format!(
                "{table}.divergence_loss must be at least {MIN_DIVERGENCE_LOSS} (below that a \
                 model still learning counts as diverged; inf: only non-finite losses diverge), \
                 got {}",
                self.divergence_loss
            ));
        }
        if let Schedule::LinearWarmup { warmup_steps } = self.schedule
            && warmup_steps > MAX_STEPS
        {
            return Err(format!(
                "{table}.schedule.warmup_steps = {warmup_steps} is above {MAX_STEPS}"
            ));
        }
        self.hyper
            .validate()
            .map_err(|e| format!("{table}.hyper: {e}"))?;
        self.second_order
            .validate()
            .map_err(|e| format!("{table}.second_order.{e}"))?;
        if self.optimizer.is_second_order() && !self.groups.is_empty() {
            let names: Vec<&str> = self.groups.keys().map(|g| g.name()).collect();
            return Err(format!(
                "{table}.groups ({}) cannot be combined with the second-order optimiser {}: it \
                 updates the whole model as one (Muon already trains biases with AdamW); remove \
                 the groups or use a first-order optimiser",
                names.join(", "),
                self.optimizer.name()
            ));
        }
        for (group, settings) in &self.groups {
            let field = format!("{table}.groups.{}", group.name());
            if !self.trainable.trains(*group) {
                return Err(format!(
                    "{field}: the {} group does not train ({table}.trainable.{} = false, or the \
                     attack freezes it), so its settings would never apply",
                    group.name(),
                    group.name()
                ));
            }
            if settings.optimizer.is_second_order() {
                return Err(format!(
                    "{field}.optimizer: {} is a second-order optimiser, which trains the whole \
                     model or nothing; a group takes sgd, momentum, nesterov, adam or adamw",
                    settings.optimizer.name()
                ));
            }
            if !(settings.lr_scale.is_finite() && settings.lr_scale > 0.0) {
                return Err(format!(
                    "{field}.lr_scale must be positive, got {}",
                    settings.lr_scale
                ));
            }
            let (min_lr, group_lr) = (crate::scenario::MIN_LR, self.lr * settings.lr_scale);
            if !(min_lr..=max_lr).contains(&group_lr) {
                return Err(format!(
                    "{field}.lr_scale = {:e} makes the group's learning rate {group_lr:e} at \
                     lr {:e}; learning rates must lie in {min_lr:e}..{max_lr:e}",
                    settings.lr_scale, self.lr
                ));
            }
            if let Some(hyper) = &settings.hyper {
                hyper
                    .validate()
                    .map_err(|e| format!("{field}.hyper: {e}"))?;
            }
        }
        Ok(())
    }

    pub fn optimizer_config(&self) -> OptimizerConfig {
        OptimizerConfig {
            kind: Some(self.optimizer),
            hyper: self.hyper,
            groups: self.groups.clone(),
        }
    }

    /// The state settings of a second-order run (probes and sampled labels drawn from `seed`).
    pub fn second_order_config(&self, seed: u64) -> SecondOrderConfig {
        SecondOrderConfig {
            kind: self.optimizer,
            hyper: self.hyper,
            second_order: self.second_order,
            trainable: self.trainable,
            seed,
        }
    }
}

/// The smallest divergence threshold: ln 2, the loss of a uniform guess between two classes.
pub const MIN_DIVERGENCE_LOSS: f64 = std::f64::consts::LN_2;

/// The defaults of a training run's settings, which the scenario's attack grid shares.
pub(crate) fn default_schedule() -> Schedule {
    Schedule::Constant
}

pub(crate) fn default_eval_every() -> usize {
    10
}

pub(crate) fn default_divergence_loss() -> f64 {
    1e3
}

/// What a training run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// (step, training-batch loss) at step 0 (before any update) and each evaluation; the loss
    /// at step s is the one the s-th step's forward pass computed, before its update.
    pub loss_curve: Vec<(usize, f64)>,
    /// (step, evaluation accuracy) at step 0 (before any update) and each evaluation.
    pub accuracy_curve: Vec<(usize, f64)>,
    /// The first evaluated step at which accuracy reached the target.
    pub steps_to_target: Option<usize>,
    /// The first evaluated step whose loss was non-finite or over the bound.
    pub diverged_at: Option<usize>,
    pub steps_run: usize,
    pub final_accuracy: f64,
    pub final_loss: f64,
}

impl TrainOutcome {
    /// Nothing measured yet.
    pub fn empty() -> Self {
        Self {
            loss_curve: Vec::new(),
            accuracy_curve: Vec::new(),
            steps_to_target: None,
            diverged_at: None,
            steps_run: 0,
            final_accuracy: 0.0,
            final_loss: f64::NAN,
        }
    }

    /// Takes an evaluation at `step` (the training loss, the evaluation accuracy) and says
    /// whether the run ends there: diverged, target reached, or out of steps.
    pub fn take(&mut self, step: usize, loss: f64, acc: f64, settings: &TrainSettings) -> bool {
        self.loss_curve.push((step, loss));
        self.accuracy_curve.push((step, acc));
        self.steps_run = step;
        self.final_accuracy = acc;
        self.final_loss = loss;
        if !loss.is_finite() || loss > settings.divergence_loss {
            self.diverged_at = Some(step);
        } else if let Some(target) = settings.target_accuracy
            && acc >= target
        {
            self.steps_to_target = Some(step);
        }
        self.diverged_at.is_some() || self.steps_to_target.is_some() || step >= settings.steps
    }
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

/// The mean softmax cross-entropy of the rows against their labels, in f64 (log-sum-exp with
/// the row's maximum subtracted). Non-finite logits give a non-finite loss: a model that lost
/// its function has no loss to report.
pub fn mean_cross_entropy(logits: &[f64], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    let classes = logits.len() / labels.len();
    let total: f64 = (logits.chunks(classes).zip(labels))
        .map(|(row, &label)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            max + sum.ln() - row[label]
        })
        .sum();
    total / labels.len() as f64
}

/// A data set uploaded as fixed batches (shuffled once by the seed, the remainder dropped): the
/// inputs, and the columns the loss reads (labels first for cross-entropy).
pub(super) struct Batches {
    pub(super) inputs: Vec<crate::Tensor>,
    pub(super) columns: Vec<Vec<crate::Tensor>>,
    pub(super) size: usize,
    _owner: Allocation,
}

impl Batches {
    pub(super) fn upload(
        engine: &mut dyn Engine,
        rows: TrainRows,
        batch_size: Option<usize>,
        seed: u64,
    ) -> Result<Self, EngineError> {
        Self::upload_grouped(engine, rows, batch_size, 1, seed)
    }

    /// The same with the rows in groups of `group` consecutive rows that stay together: the
    /// groups are shuffled, not the rows (a batch size that is a multiple of `group` then holds
    /// whole groups). With `group` 1, `upload`'s order.
    pub(super) fn upload_grouped(
        engine: &mut dyn Engine,
        rows: TrainRows,
        batch_size: Option<usize>,
        group: usize,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let size = batch_size.unwrap_or(rows.len()).clamp(1, rows.len().max(1));
        let group = group.max(1);
        debug_assert!(
            rows.len().is_multiple_of(group) && size.is_multiple_of(group),
            "{} rows in batches of {size}: not whole groups of {group}",
            rows.len()
        );
        let mut groups: Vec<usize> = (0..rows.len() / group).collect();
        if size < rows.len() {
            groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        let order: Vec<usize> = (groups.into_iter())
            .flat_map(|g| g * group..(g + 1) * group)
            .collect();
        let mut owner = Allocation::new(engine);
        let features = rows.features();
        let (mut inputs, mut columns) = (Vec::new(), Vec::new());
        for chunk in order.chunks_exact(size) {
            let part = gather(rows.inputs(), features, chunk);
            inputs.push(owner.tensor_from(engine, "batch.inputs", size, features, &part)?);
            let batch_columns = (rows.columns_of(chunk).into_iter())
                .map(|c| owner.tensor_from(engine, c.label, size, c.cols, &c.values))
                .collect::<Result<Vec<_>, _>>()?;
            columns.push(batch_columns);
        }
        Ok(Self {
            inputs,
            columns,
            size,
            _owner: owner,
        })
    }

    /// The workspace `ws` reading batch `index` (modulo the number of batches), and that
    /// batch's columns.
    pub(super) fn at(&self, index: usize, ws: &Workspace) -> (Workspace, &[crate::Tensor]) {
        let b = index % self.inputs.len();
        let ws = Workspace {
            inputs: self.inputs[b],
            targets: self.columns[b][0],
            ..Workspace::clone(ws)
        };
        (ws, &self.columns[b][..])
    }
}

/// How a session's steps update the model.
enum Stepper {
    /// Forward, loss and backward on the batch, then each parameter's first-order update.
    FirstOrder {
        grads: Owned<Gradients>,
        optimizer: OptimizerState,
    },
    /// A step of `second_order.rs` (its own gradients and Hessian-vector products), on the
    /// session's workspace.
    SecondOrder(Box<SecondOrderState>),
}

/// A training run that advances one submission at a time: `advance` never blocks, so a UI frame
/// can drive it (in the browser, GPU readbacks finish only between frames). Each submission holds
/// `eval_every` steps and ends with the evaluation forward pass; its loss and evaluation logits
/// are the only values read back.
pub struct TrainSession {
    /// Handles of the model being trained; its owner is the caller.
    model: DeviceModel,
    batches: Batches,
    workspace: Owned<Workspace>,
    eval_ws: Owned<Workspace>,
    eval_labels: Vec<usize>,
    stepper: Stepper,
    settings: TrainSettings,
    objective: Objective,
    /// The loss's scratch tensors (`Objective::scratch_shapes`), with their owner.
    loss_scratch: (Vec<crate::Tensor>, Allocation),
    eval_forward: Recording,
    /// Steps submitted so far.
    submitted: usize,
    in_flight: Option<ReadTicket>,
    outcome: TrainOutcome,
    finished: bool,
}

impl TrainSession {
    /// Uploads the data and allocates everything the run needs; trains `model` in place
    /// (cross-entropy on `train_data`'s labels).
    pub fn start(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        train_data: &Dataset,
        eval_data: &Dataset,
        settings: &TrainSettings,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let rows = TrainRows::Labelled(train_data);
        Self::start_rows(engine, model, rows, eval_data, settings, seed)
    }

    /// The same for any rows (`TrainRows`): labels (cross-entropy), a hidden layer's targets
    /// (only the layers up to it train), preference rows (NPO) or noising rows (RepNoise); the
    /// losses other than cross-entropy train with first-order optimisers only.
    pub fn start_rows(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        rows: TrainRows,
        eval_data: &Dataset,
        settings: &TrainSettings,
        seed: u64,
    ) -> Result<Self, EngineError> {
        for (label, empty, features) in [
            ("training set", rows.is_empty(), rows.features()),
            ("evaluation set", eval_data.is_empty(), eval_data.features),
        ] {
            if empty {
                return Err(EngineError::EmptyTensor {
                    label: label.to_string(),
                    rows: 0,
                    cols: features,
                });
            }
        }
        rows.check(model)?;
        let objective = rows.objective();
        if objective != Objective::CrossEntropy && settings.optimizer.is_second_order() {
            return Err(EngineError::Shape {
                op: "training loss",
                message: format!(
                    "the second-order optimiser {} trains on cross-entropy only; use a \
                     first-order one",
                    settings.optimizer.name()
                ),
            });
        }
        let batches = Batches::upload(engine, rows, settings.batch_size, seed)?;
        let target_cols = rows.columns_of(&[0])[0].cols;
        let workspace = Workspace::alloc(engine, model, batches.size, target_cols)?;
        let mut owner = Allocation::new(engine);
        let scratch = (objective.scratch_shapes(batches.size, model).into_iter())
            .map(|(label, r, c)| owner.alloc(engine, label, r, c))
            .collect::<Result<Vec<_>, _>>()?;
        let loss_scratch = (scratch, owner);
        let eval_ws = Workspace::alloc(engine, model, eval_data.len(), 1)?;
        engine.upload(eval_ws.inputs, &eval_data.inputs)?;
        let stepper = if settings.optimizer.is_second_order() {
            Stepper::SecondOrder(Box::new(SecondOrderState::new(
                engine,
                model,
                &workspace,
                Loss::CrossEntropy,
                &settings.second_order_config(seed),
            )?))
        } else {
            let grads = Gradients::alloc(engine, model)?;
            let pairs = (grads.trainable_pairs(model, settings.trainable).into_iter())
                .filter(|(key, _, _)| objective.trains_layer(key.layer))
                .collect();
            let optimizer =
                OptimizerState::with_config(engine, &settings.optimizer_config(), pairs)?;
            Stepper::FirstOrder { grads, optimizer }
        };
        let mut eval_forward = Recording::new();
        graph::forward(&mut eval_forward, model, &eval_ws)?;
        Ok(Self {
            model: model.clone(),
            batches,
            workspace,
            eval_ws,
            eval_labels: eval_data.labels.clone(),
            stepper,
            settings: settings.clone(),
            objective,
            loss_scratch,
            eval_forward,
            submitted: 0,
            in_flight: None,
            outcome: TrainOutcome::empty(),
            finished: settings.steps == 0,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// What the run has measured so far (all of it once finished).
    pub fn outcome(&self) -> &TrainOutcome {
        &self.outcome
    }

    /// One non-blocking move (`TrainRun::advance`).
    pub fn advance(&mut self, engine: &mut dyn Engine) -> Result<bool, EngineError> {
        TrainRun::advance(self, engine)
    }

    /// Runs to the end, blocking on each readback (native).
    pub fn run_to_end(&mut self, engine: &mut dyn Engine) -> Result<(), EngineError> {
        TrainRun::run_to_end(self, engine)
    }

    /// The run's outcome; everything the run allocated is freed with the session (the model
    /// itself stays with its owner).
    pub fn finish(self) -> TrainOutcome {
        self.outcome
    }
}

impl Chunked for TrainSession {
    fn finished(&self) -> bool {
        self.finished
    }

    fn outcome(&self) -> &TrainOutcome {
        &self.outcome
    }

    fn in_flight(&mut self) -> &mut Option<ReadTicket> {
        &mut self.in_flight
    }

    /// Records and submits the next `eval_every` steps plus the evaluation pass, and starts
    /// reading their loss and logits back.
    /// The first submission evaluates the model as it starts (step 0: the loss on the first
    /// batch and the evaluation accuracy before any update), so curves start at step 0.
    fn submit_chunk(&mut self, engine: &mut dyn Engine) -> Result<(), EngineError> {
        let settings = &self.settings;
        let chunk_end = if self.outcome.loss_curve.is_empty() {
            0
        } else {
            (self.submitted + settings.eval_every.max(1)).min(settings.steps)
        };
        let mut rec = Recording::new();
        let batch = |s: usize| self.batches.at(s, &self.workspace);
        let (objective, scratch) = (self.objective, &self.loss_scratch.0[..]);
        if chunk_end == 0 {
            let (ws, columns) = batch(0);
            objective.record(&mut rec, &self.model, &ws, columns, scratch, None)?;
        }
        for s in self.submitted..chunk_end {
            let (ws, columns) = batch(s);
            let lr = settings.schedule.lr_at(settings.lr, s, settings.steps);
            match &self.stepper {
                Stepper::FirstOrder { grads, optimizer } => {
                    let backward = Some((&**grads, settings.trainable));
                    objective.record(&mut rec, &self.model, &ws, columns, scratch, backward)?;
                    optimizer.record_step(&mut rec, lr, s as u32 + 1)?;
                }
                Stepper::SecondOrder(state) => {
                    state.record_step(&mut rec, &ws, lr, s as u32 + 1)?
                }
            }
        }
        rec.extend(&self.eval_forward);
        engine.run(&rec)?;
        self.in_flight =
            Some(engine.begin_read(&[self.workspace.loss_sum, self.eval_ws.logits()])?);
        self.submitted = chunk_end;
        Ok(())
    }

    /// Takes the read-back loss and logits of the last submission into the outcome.
    fn receive(&mut self, values: Vec<Vec<f64>>) {
        let step = self.submitted;
        let loss = values[0][0] / self.objective.loss_divisor(self.batches.size);
        let acc = accuracy(&values[1], &self.eval_labels);
        self.finished = self.outcome.take(step, loss, acc, &self.settings);
    }
}

/// Trains `model` in place on `train_data` (cross-entropy), evaluating on `eval_data`, blocking
/// until the run ends.
pub fn train(
    engine: &mut dyn Engine,
    model: &DeviceModel,
    train_data: &Dataset,
    eval_data: &Dataset,
    settings: &TrainSettings,
    seed: u64,
) -> Result<TrainOutcome, EngineError> {
    let mut session = TrainSession::start(engine, model, train_data, eval_data, settings, seed)?;
    session.run_to_end(engine)?;
    Ok(session.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine64;

    /// Grouped batches hold whole groups (an image with each of its labels), and groups of one
    /// row keep the order rows shuffled one by one always had.
    #[test]
    fn grouped_batches_keep_each_group_whole() {
        let (images, classes, features) = (12, 3, 2);
        let data = Dataset {
            inputs: (0..images * features).map(|v| v as f64).collect(),
            labels: vec![0; images],
            features,
        };
        let every = data.with_every_label(classes);
        let mut engine = CpuEngine64::new();
        let rows = TrainRows::Labelled(&every);
        let batches =
            Batches::upload_grouped(&mut engine, rows, Some(2 * classes), classes, 7).unwrap();
        assert_eq!(batches.inputs.len(), images / 2);
        let mut seen = Vec::new();
        for (inputs, columns) in batches.inputs.iter().zip(&batches.columns) {
            let x = engine.read_one(*inputs).unwrap();
            let labels = engine.read_one(columns[0]).unwrap();
            for (g, row) in x.chunks(features * classes).enumerate() {
                let image = &row[..features];
                assert!(
                    row.chunks(features).all(|r| r == image),
                    "one image per group"
                );
                let group_labels = &labels[g * classes..(g + 1) * classes];
                assert_eq!(group_labels, [0.0, 1.0, 2.0], "every label, in order");
                seen.push(image[0] as usize / features);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..images).collect::<Vec<_>>(), "every image once");

        let rows = TrainRows::Labelled(&data);
        let one_by_one = Batches::upload(&mut engine, rows, Some(4), 7).unwrap();
        let mut order: Vec<usize> = (0..images).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(7));
        let first = engine.read_one(one_by_one.inputs[0]).unwrap();
        let expected: Vec<f64> = (order[..4].iter())
            .flat_map(|&i| data.inputs[i * features..(i + 1) * features].to_vec())
            .collect();
        assert_eq!(first, expected);
    }
}
