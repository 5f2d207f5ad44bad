//! TAR's training loop (Tamirisa et al. 2025, "Tamper-Resistant Safeguards for Open-Weight
//! LLMs"; the reference is `tar_training_loop` in its repository's `modules/training.py`):
//! adversarial meta-learning against simulated fine-tuning attacks. Each outer step
//! 1. copies the model and fine-tunes the copy on the harmful rows for `steps` inner steps with
//!    a fresh optimiser at a learning rate drawn from `lrs` (the simulated attack);
//! 2. after every `subsample`-th inner step takes the tamper-resistance loss's gradient at the
//!    attacked copy, weighted by `tamper_weight exp(lambda (i - (steps - 1)))`, and adds it up:
//!    the first-order meta-gradient, as the reference (no gradient through the inner steps);
//! 3. adds `retain_weight` times the retain loss's gradient at the model itself, and steps the
//!    model on the sum with the outer optimiser.
//!
//! The tamper-resistance loss is cross-entropy against the uniform distribution on the harmful
//! rows (`Dataset::with_every_label`, each batch holding whole images with all their labels),
//! the relearning setting's maximum-entropy objective; the
//! reference's is the negative entropy. Both are minimised by the uniform output (they are
//! KL(u || p) + ln C and KL(p || u) - ln C). The retain loss is cross-entropy on the utility
//! rows (the reference adds a distance to the base model's hidden states). One simulated
//! attack per outer step (the reference's bio run samples one too, `tar_num_tasks_sampled 1`).
//! Everything an outer step does is recorded on the engine; nothing is read back within it.

use super::objective::Objective;
use super::run::Chunked;
use super::train::Batches;
use super::{
    Curve, OptimizerConfig, OptimizerKind, OptimizerState, TrainOutcome, TrainRows, TrainSettings,
};
use crate::data::Dataset;
use crate::engine::{Engine, EngineError, Owned, ReadTicket, Recording, Tensor};
use crate::model::{DeviceModel, Gradients, Workspace, graph};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Mixed into the run's seed for the simulated attacks' learning rates.
const LR_SEED: u64 = 0x7461_725f_6c72;

/// The most inner steps of one simulated attack: each is recorded once per outer step.
pub const MAX_INNER_STEPS: usize = 10_000;

/// The attacks TAR trains against: one per outer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedAttacks {
    /// The attacker's optimiser (the reference: AdamW); first-order.
    pub optimizer: OptimizerKind,
    /// Each attack's learning rate is drawn from these (the reference: 2e-6, 2e-5, 4e-5).
    pub lrs: Vec<f64>,
    /// Inner steps per attack (the reference: 64).
    pub steps: usize,
    /// The tamper-resistance gradient is taken after every this many inner steps (the
    /// reference: 4).
    pub subsample: usize,
    /// Later inner steps weigh more: after step i (0-based) by `exp(lambda (i - (steps - 1)))`
    /// (the reference: 0.0625).
    pub schedule_lambda: f64,
    /// The attacker's batch (the reference: 4); the whole harmful set when absent.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

impl SimulatedAttacks {
    /// Checks every field, naming it as `{table}.{field}`.
    pub fn validate(&self, table: &str) -> Result<(), String> {
        if self.optimizer.is_second_order() {
            return Err(format!(
                "{table}.optimizer: {} is second-order; the simulated attacks use a first-order \
                 one",
                self.optimizer.name()
            ));
        }
        if self.lrs.is_empty() {
            return Err(format!(
                "{table}.lrs is empty: give at least one learning rate"
            ));
        }
        let (min_lr, max_lr) = (crate::scenario::MIN_LR, crate::scenario::MAX_LR);
        if let Some(lr) = (self.lrs.iter()).find(|lr| !(min_lr..=max_lr).contains(*lr)) {
            return Err(format!(
                "{table}.lrs: {lr:e} is outside {min_lr:e}..{max_lr:e}, the learning rates the \
                 suite runs"
            ));
        }
        if !(1..=MAX_INNER_STEPS).contains(&self.steps) {
            return Err(format!(
                "{table}.steps must be in 1..={MAX_INNER_STEPS}, got {}",
                self.steps
            ));
        }
        if !(1..=self.steps).contains(&self.subsample) {
            return Err(format!(
                "{table}.subsample must be in 1..={} (the attack's steps), got {}",
                self.steps, self.subsample
            ));
        }
        if !(self.schedule_lambda.is_finite() && self.schedule_lambda >= 0.0) {
            return Err(format!(
                "{table}.schedule_lambda must be a finite non-negative number, got {}",
                self.schedule_lambda
            ));
        }
        if let Some(batch) = self.batch_size
            && !(1..=super::MAX_BATCH).contains(&batch)
        {
            return Err(format!(
                "{table}.batch_size must be in 1..={}, got {batch}",
                super::MAX_BATCH
            ));
        }
        Ok(())
    }

    /// The weight of the tamper-resistance gradient taken after inner step `i` (0-based), or
    /// None where none is taken.
    pub fn weight_after(&self, i: usize) -> Option<f64> {
        (i + 1)
            .is_multiple_of(self.subsample)
            .then(|| (self.schedule_lambda * (i as f64 - (self.steps as f64 - 1.0))).exp())
    }

    /// Tamper-resistance gradients per attack.
    fn points(&self) -> usize {
        self.steps / self.subsample
    }
}

/// The outer loss: the simulated attacks, and the weights of its two terms.
#[derive(Clone, Debug, PartialEq)]
pub struct TamperObjective {
    pub attacks: SimulatedAttacks,
    /// The tamper-resistance term's weight (the reference's grad scale: 4).
    pub tamper_weight: f64,
    /// The retain term's weight (the reference: 1).
    pub retain_weight: f64,
}

/// The rows TAR trains on.
#[derive(Clone, Copy, Debug)]
pub struct TamperRows<'a> {
    /// Harmful rows with their labels: what the simulated attacks fine-tune on.
    pub attack: &'a Dataset,
    /// Harmful rows with every label (`Dataset::with_every_label`): the tamper-resistance loss.
    pub tamper: &'a Dataset,
    /// Utility rows with their labels: the retain loss.
    pub retain: &'a Dataset,
}

/// A TAR run on the engine, advanced one submission (`eval_every` outer steps and the
/// evaluation pass) at a time like `TrainSession`. Its outcome's loss is the retain loss; the
/// tamper-resistance loss after the last attack of each submission is `tamper_curve`.
pub struct TamperSession {
    model: DeviceModel,
    /// The attacked copy of the model, with its owner.
    adapted: (DeviceModel, Owned<Gradients>),
    /// Every backward pass's gradients (the copy's and the model's share one shape).
    grads: Owned<Gradients>,
    /// The outer step's summed gradient, which the outer optimiser reads.
    meta: Owned<Gradients>,
    /// (gradient, summed gradient) per trained tensor.
    sums: Vec<(Tensor, Tensor)>,
    inner: OptimizerState,
    outer: OptimizerState,
    attack: (Batches, Owned<Workspace>),
    tamper: (Batches, Owned<Workspace>),
    retain: (Batches, Owned<Workspace>),
    eval_ws: Owned<Workspace>,
    eval_forward: Recording,
    eval_labels: Vec<usize>,
    objective: TamperObjective,
    settings: TrainSettings,
    lr_draws: ChaCha8Rng,
    submitted: usize,
    in_flight: Option<ReadTicket>,
    outcome: TrainOutcome,
    tamper_curve: Vec<(usize, f64)>,
    finished: bool,
}

impl TamperSession {
    /// Uploads the rows and allocates everything the run needs; trains `model` in place with
    /// the outer settings `settings` (first-order), evaluating on `eval_data`.
    pub fn start(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        rows: TamperRows,
        eval_data: &Dataset,
        objective: &TamperObjective,
        settings: &TrainSettings,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let refuse = |message: String| EngineError::Shape {
            op: "tamper-resistance training",
            message,
        };
        (objective.attacks.validate("attacks")).map_err(refuse)?;
        let weights = [objective.tamper_weight, objective.retain_weight];
        if let Some(bad) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(refuse(format!(
                "the tamper-resistance and retain weights must be finite and non-negative, got \
                 {bad}"
            )));
        }
        if settings.optimizer.is_second_order() {
            return Err(refuse(format!(
                "the outer optimiser {} is second-order; TAR steps on a summed first-order \
                 gradient",
                settings.optimizer.name()
            )));
        }
        for (label, set) in [
            ("harmful attack rows", rows.attack),
            ("tamper-resistance rows", rows.tamper),
            ("retain rows", rows.retain),
            ("evaluation set", eval_data),
        ] {
            if set.is_empty() {
                return Err(EngineError::EmptyTensor {
                    label: label.to_string(),
                    rows: 0,
                    cols: set.features,
                });
            }
        }
        if !rows.tamper.len().is_multiple_of(rows.attack.len()) {
            return Err(refuse(format!(
                "the tamper-resistance rows must be the attack rows' images each with every \
                 label (Dataset::with_every_label): {} rows for {} images",
                rows.tamper.len(),
                rows.attack.len()
            )));
        }
        let mut upload = |data: &Dataset, batch, group, salt: u64| {
            let rows = TrainRows::Labelled(data);
            let batches = Batches::upload_grouped(engine, rows, batch, group, seed ^ salt)?;
            let ws = Workspace::alloc(engine, model, batches.size, 1)?;
            Ok::<_, EngineError>((batches, ws))
        };
        let attack = upload(rows.attack, objective.attacks.batch_size, 1, 1)?;
        // As many tamper rows per batch as the attack batch has images, each image with all its
        // labels (the every-label set's rows of one image stay together): the batch's mean
        // cross-entropy is then its images' cross-entropy to the uniform distribution, at least
        // ln C and minimised by the uniform output. (Rows drawn one by one would let training
        // fit the labels drawn for each image, below ln C.)
        let labels = rows.tamper.len() / rows.attack.len().max(1);
        let tamper_batch = attack.0.size * labels;
        let tamper = upload(rows.tamper, Some(tamper_batch), labels, 2)?;
        let retain = upload(rows.retain, settings.batch_size, 1, 3)?;
        let adapted_params = Gradients::alloc_named(engine, model, "tar.adapted.")?;
        let adapted = DeviceModel {
            spec: model.spec.clone(),
            layers: adapted_params.layers.clone(),
        };
        let grads = Gradients::alloc(engine, model)?;
        let meta = Gradients::alloc_named(engine, model, "tar.meta.")?;
        let trainable = settings.trainable;
        let outer_pairs = meta.trainable_pairs(model, trainable);
        let sums = (grads.trainable_pairs(model, trainable).into_iter())
            .zip(&outer_pairs)
            .map(|((_, _, grad), (_, _, sum))| (grad, *sum))
            .collect();
        let inner = OptimizerState::with_config(
            engine,
            &OptimizerConfig::plain(objective.attacks.optimizer),
            grads.trainable_pairs(&adapted, trainable),
        )?;
        let outer = OptimizerState::with_config(engine, &settings.optimizer_config(), outer_pairs)?;
        let eval_ws = Workspace::alloc(engine, model, eval_data.len(), 1)?;
        engine.upload(eval_ws.inputs, &eval_data.inputs)?;
        let mut eval_forward = Recording::new();
        graph::forward(&mut eval_forward, model, &eval_ws)?;
        Ok(Self {
            model: model.clone(),
            adapted: (adapted, adapted_params),
            grads,
            meta,
            sums,
            inner,
            outer,
            attack,
            tamper,
            retain,
            eval_ws,
            eval_forward,
            eval_labels: eval_data.labels.clone(),
            objective: objective.clone(),
            settings: settings.clone(),
            lr_draws: ChaCha8Rng::seed_from_u64(seed ^ LR_SEED),
            submitted: 0,
            in_flight: None,
            outcome: TrainOutcome::empty(),
            tamper_curve: Vec::new(),
            finished: settings.steps == 0,
        })
    }

    /// (outer step, tamper-resistance loss at the attacked copy after the last simulated
    /// attack of the submission that ended there).
    pub fn tamper_curve(&self) -> &[(usize, f64)] {
        &self.tamper_curve
    }

    /// `sum += weight * gradient` for every trained tensor.
    fn record_sum(&self, rec: &mut Recording, weight: f64) -> Result<(), EngineError> {
        for &(grad, sum) in &self.sums {
            rec.axpy(weight, grad, sum)?;
        }
        Ok(())
    }

    /// Records outer step `s` (0-based): the simulated attack with its tamper-resistance
    /// gradients, the retain gradient, and the outer update.
    fn record_outer_step(&mut self, rec: &mut Recording, s: usize) -> Result<(), EngineError> {
        let attacks = &self.objective.attacks;
        let adapted = &self.adapted.0;
        for ((_, param), (_, copy)) in self
            .model
            .parameters()
            .into_iter()
            .zip(adapted.parameters())
        {
            rec.scale(1.0, param, copy)?;
        }
        for (_, sum) in self.meta.parameters() {
            rec.fill(0.0, sum);
        }
        self.inner.record_reset(rec);
        let lr = attacks.lrs[self.lr_draws.random_range(0..attacks.lrs.len())];
        let backward = Some((&*self.grads, self.settings.trainable));
        for i in 0..attacks.steps {
            let (ws, columns) = self.attack.0.at(s * attacks.steps + i, &self.attack.1);
            Objective::CrossEntropy.record(rec, adapted, &ws, columns, &[], backward)?;
            self.inner.record_step(rec, lr, i as u32 + 1)?;
            if let Some(weight) = attacks.weight_after(i) {
                let index = s * attacks.points() + i / attacks.subsample;
                let (ws, columns) = self.tamper.0.at(index, &self.tamper.1);
                Objective::CrossEntropy.record(rec, adapted, &ws, columns, &[], backward)?;
                self.record_sum(rec, self.objective.tamper_weight * weight)?;
            }
        }
        let (ws, columns) = self.retain.0.at(s, &self.retain.1);
        Objective::CrossEntropy.record(rec, &self.model, &ws, columns, &[], backward)?;
        self.record_sum(rec, self.objective.retain_weight)?;
        let settings = &self.settings;
        let lr = settings.schedule.lr_at(settings.lr, s, settings.steps);
        self.outer.record_step(rec, lr, s as u32 + 1)
    }
}

impl Chunked for TamperSession {
    fn finished(&self) -> bool {
        self.finished
    }

    fn outcome(&self) -> &TrainOutcome {
        &self.outcome
    }

    fn summary(&self) -> Option<String> {
        let (first, last) = (self.tamper_curve.first()?, self.tamper_curve.last()?);
        Some(format!(
            "tamper-resistance loss after the simulated attack {:.4} at step {} -> {:.4} at \
             step {} (ln C at the uniform output)",
            first.1, first.0, last.1, last.0
        ))
    }

    fn own_curves(&self) -> Vec<Curve> {
        vec![Curve::new("tamper_loss", self.tamper_curve.iter().copied())]
    }

    fn in_flight(&mut self) -> &mut Option<ReadTicket> {
        &mut self.in_flight
    }

    /// The first submission evaluates the model as it starts (its retain loss on the first
    /// batch and its evaluation accuracy); each later one records up to `eval_every` outer steps.
    fn submit_chunk(&mut self, engine: &mut dyn Engine) -> Result<(), EngineError> {
        let first = self.outcome.loss_curve.is_empty();
        let chunk_end = if first {
            0
        } else {
            (self.submitted + self.settings.eval_every.max(1)).min(self.settings.steps)
        };
        // One recording per outer step: each holds a whole simulated attack.
        for s in self.submitted..chunk_end {
            let mut rec = Recording::new();
            self.record_outer_step(&mut rec, s)?;
            engine.run(&rec)?;
        }
        let mut rec = Recording::new();
        if first {
            let (ws, columns) = self.retain.0.at(0, &self.retain.1);
            Objective::CrossEntropy.record(&mut rec, &self.model, &ws, columns, &[], None)?;
        }
        rec.extend(&self.eval_forward);
        engine.run(&rec)?;
        let mut reads = vec![self.retain.1.loss_sum, self.eval_ws.logits()];
        if !first {
            reads.push(self.tamper.1.loss_sum);
        }
        self.in_flight = Some(engine.begin_read(&reads)?);
        self.submitted = chunk_end;
        Ok(())
    }

    fn receive(&mut self, values: Vec<Vec<f64>>) {
        let step = self.submitted;
        let loss = values[0][0] / self.retain.0.size as f64;
        if let Some(tamper) = values.get(2) {
            let rows = self.tamper.0.size as f64;
            self.tamper_curve.push((step, tamper[0] / rows));
        }
        let acc = super::accuracy(&values[1], &self.eval_labels);
        self.finished = self.outcome.take(step, loss, acc, &self.settings);
    }
}
