//! Condition-number immunisation's training loop (Zheng et al., ICML 2025, "Model Immunization
//! from a Condition Number Perspective"; the reference is `Model.reg_loss` in its repository's
//! `models/model.py`). A linear probe on a feature layer, fitted by least squares, converges at
//! a rate set by the condition number of its Hessian `S = H^T H / n` (H the features of the n
//! rows). The feature extractor (every layer up to `layer`) is trained so that the harmful
//! rows' S is ill-conditioned and the utility rows' stays well-conditioned:
//!   loss = E_utility[ce] + well_weight r_well(S_utility) + ill_weight r_ill(S_harmful),
//!   r_well(S) = lambda_max^2 / 2 - |S|_F^2 / (2K)      (0 iff every eigenvalue is equal),
//!   r_ill(S) = 1 / (|S|_F^2 / (2K) - lambda_min^2 / 2)  (small when lambda_min is),
//! K the feature width and lambda_min the smallest eigenvalue above `EIGEN_FLOOR` times the
//! largest (the reference: the smallest above 1e-6, after adding 1e-6 I).
//!
//! The regularisers need S's eigenvectors, which the engine has no op for: each step reads the
//! two batches' features back, takes `dr/dS` on the host in f64 (faer), uploads it, and the
//! engine injects `dr/dH = 2 H dr/dS / n` at the feature layer. So a step is one submission,
//! and the run alternates with the host (native runs; the browser runs the single-loss stages).
//! Departures: S is divided by the rows (the reference's is not), so the weights do not depend
//! on the batch; the cross-entropy is the model's own head (the reference's probe is binary).

use super::run::Chunked;
use super::train::Batches;
use super::{Curve, OptimizerState, TrainOutcome, TrainRows, TrainSettings, accuracy};
use crate::data::Dataset;
use crate::engine::{Allocation, Engine, EngineError, Owned, ReadTicket, Recording, Tensor};
use crate::linalg::{Matrix, faer_svd};
use crate::model::{DeviceModel, Gradients, Workspace, graph};

/// Eigenvalues below this fraction of the largest count as zero (rank deficiency: a batch with
/// fewer rows than features).
pub const EIGEN_FLOOR: f64 = 1e-9;

/// The probe Hessian `H^T H / n` of features `h` (`n x K`).
pub fn probe_hessian(h: &Matrix) -> Matrix {
    let mut s = Matrix::zeros(h.cols, h.cols);
    for row in h.values.chunks(h.cols) {
        for (i, a) in row.iter().enumerate() {
            for (j, b) in row.iter().enumerate() {
                s.values[i * h.cols + j] += a * b;
            }
        }
    }
    let n = h.rows.max(1) as f64;
    s.values.iter_mut().for_each(|v| *v /= n);
    s
}

/// The eigenvalues of a symmetric positive semi-definite `s`, largest first, with their
/// eigenvectors as columns (its SVD).
fn eigen(s: &Matrix) -> Result<(Vec<f64>, Matrix), String> {
    let svd = faer_svd(s)?;
    Ok((svd.s, svd.u))
}

/// The largest eigenvalue over the smallest one above the floor: the probe's condition number.
pub fn condition_number(s: &Matrix) -> Result<f64, String> {
    let (values, _) = eigen(s)?;
    let (max, min) = extremes(&values);
    Ok(max / values[min])
}

/// The largest eigenvalue and the index of the smallest one above the floor.
fn extremes(values: &[f64]) -> (f64, usize) {
    let max = values[0];
    let min = (values.iter())
        .rposition(|&v| v > EIGEN_FLOOR * max)
        .unwrap_or(0);
    (max, min)
}

fn frobenius_squared(s: &Matrix) -> f64 {
    s.values.iter().map(|v| v * v).sum()
}

/// `c v v^T` added to `out`.
fn add_outer(out: &mut Matrix, eigenvectors: &Matrix, column: usize, c: f64) {
    let k = out.cols;
    for i in 0..k {
        for j in 0..k {
            let (vi, vj) = (
                eigenvectors.values[i * k + column],
                eigenvectors.values[j * k + column],
            );
            out.values[i * k + j] += c * vi * vj;
        }
    }
}

/// r_well(S) and its gradient with respect to S.
pub fn well_conditioning(s: &Matrix) -> Result<(f64, Matrix), String> {
    let (values, vectors) = eigen(s)?;
    let k = s.cols as f64;
    let max = values[0];
    let value = max * max / 2.0 - frobenius_squared(s) / (2.0 * k);
    let mut gradient = Matrix::new(s.rows, s.cols, s.values.iter().map(|v| -v / k).collect());
    add_outer(&mut gradient, &vectors, 0, max);
    Ok((value, gradient))
}

/// r_ill(S) and its gradient with respect to S.
pub fn ill_conditioning(s: &Matrix) -> Result<(f64, Matrix), String> {
    let (values, vectors) = eigen(s)?;
    let k = s.cols as f64;
    let (_, min) = extremes(&values);
    let lambda_min = values[min];
    let denominator = frobenius_squared(s) / (2.0 * k) - lambda_min * lambda_min / 2.0;
    if !(denominator.is_finite() && denominator > 0.0) {
        return Err(format!(
            "r_ill's denominator |S|_F^2 / (2K) - lambda_min^2 / 2 is {denominator:e}: the \
             features' probe Hessian has too few eigenvalues above zero (a batch smaller than the \
             feature width?)"
        ));
    }
    let scale = -1.0 / (denominator * denominator);
    // dD/dS = S / K - lambda_min v v^T; dr/dS = -dD/dS / D^2.
    let mut gradient = Matrix::new(
        s.rows,
        s.cols,
        s.values.iter().map(|v| scale * v / k).collect(),
    );
    add_outer(&mut gradient, &vectors, min, -scale * lambda_min);
    Ok((1.0 / denominator, gradient))
}

/// The regularisers' weights and the feature layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConditioningObjective {
    /// The feature layer (its output is what the probe reads; it must be a hidden layer).
    pub layer: usize,
    pub well_weight: f64,
    pub ill_weight: f64,
}

/// The rows immunisation trains on, with their labels.
#[derive(Clone, Copy, Debug)]
pub struct ConditioningRows<'a> {
    /// Cross-entropy and the well-conditioning term.
    pub utility: &'a Dataset,
    /// The ill-conditioning term (labels unread).
    pub harmful: &'a Dataset,
}

/// One set of rows: its batches, the workspace they run in, and the uploaded `dr/dS`.
struct Side {
    batches: Batches,
    ws: Owned<Workspace>,
    /// `weight dr/dS` (K x K), uploaded each step.
    gradient: Tensor,
    /// `dr/dH`, injected at the feature layer.
    injected: Tensor,
}

/// A condition-number immunisation run: one step per submission (the host computes the
/// regularisers' gradients between steps), with the evaluation pass every `eval_every` steps.
/// A step whose regularisers are undefined (non-finite features, or a probe Hessian with too
/// few eigenvalues above zero for r_ill) ends the run as diverged.
pub struct ConditioningSession {
    model: DeviceModel,
    utility: Side,
    harmful: Side,
    grads: Owned<Gradients>,
    harmful_grads: Owned<Gradients>,
    /// (utility gradient, harmful gradient) per trained tensor.
    sums: Vec<(Tensor, Tensor)>,
    optimizer: OptimizerState,
    eval_ws: Owned<Workspace>,
    eval_forward: Recording,
    eval_labels: Vec<usize>,
    objective: ConditioningObjective,
    settings: TrainSettings,
    _scratch: Allocation,
    /// The step whose forward pass is in flight (its update comes in the next submission).
    step: usize,
    /// The regularisers' gradients of the last step read back, to upload with its update.
    pending: Option<(Vec<f64>, Vec<f64>)>,
    in_flight: Option<ReadTicket>,
    outcome: TrainOutcome,
    /// The whole utility and harmful training sets, whose probe Hessians are measured at each
    /// evaluation.
    whole: [Owned<Workspace>; 2],
    /// (step, condition number of the utility set's S, of the harmful set's S).
    condition_curve: Vec<(usize, f64, f64)>,
    finished: bool,
}

impl ConditioningSession {
    /// Uploads the rows and allocates everything; trains `model` in place (first-order).
    pub fn start(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        rows: ConditioningRows,
        eval_data: &Dataset,
        objective: ConditioningObjective,
        settings: &TrainSettings,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let ConditioningRows { utility, harmful } = rows;
        let refuse = |message: String| EngineError::Shape {
            op: "condition-number immunisation",
            message,
        };
        if objective.layer + 1 >= model.layers.len() {
            return Err(refuse(format!(
                "layer {} is not a hidden layer (this model's are 0..{})",
                objective.layer,
                model.layers.len().saturating_sub(2)
            )));
        }
        let weights = [objective.well_weight, objective.ill_weight];
        if let Some(bad) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(refuse(format!(
                "the regularisers' weights must be finite and non-negative, got {bad}"
            )));
        }
        if settings.optimizer.is_second_order() {
            return Err(refuse(format!(
                "{} is second-order; the regularisers' gradients come from the host, for a \
                 first-order optimiser",
                settings.optimizer.name()
            )));
        }
        for (label, set) in [
            ("utility rows", utility),
            ("harmful rows", harmful),
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
        let width = model.spec.layer_shape(objective.layer).1;
        let mut scratch = Allocation::new(engine);
        let mut side = |data: &Dataset, salt: u64, name: &str| {
            let rows = TrainRows::Labelled(data);
            let batches = Batches::upload(engine, rows, settings.batch_size, seed ^ salt)?;
            let ws = Workspace::alloc(engine, model, batches.size, 1)?;
            let gradient = scratch.alloc(engine, &format!("{name}.dr_ds"), width, width)?;
            let injected = scratch.alloc(engine, &format!("{name}.dr_dh"), batches.size, width)?;
            Ok::<_, EngineError>(Side {
                batches,
                ws,
                gradient,
                injected,
            })
        };
        let utility_side = side(utility, 1, "conditioning.utility")?;
        let harmful_side = side(harmful, 2, "conditioning.harmful")?;
        let grads = Gradients::alloc(engine, model)?;
        let harmful_grads = Gradients::alloc_named(engine, model, "conditioning.grad.")?;
        let trainable = settings.trainable;
        let pairs = grads.trainable_pairs(model, trainable);
        // The harmful term reaches layers up to the feature layer only (`backward_from`
        // writes nothing above it).
        let sums = (pairs.iter())
            .zip(harmful_grads.trainable_pairs(model, trainable))
            .filter(|((key, _, _), _)| key.layer <= objective.layer)
            .map(|((_, _, grad), (_, _, harmful))| (*grad, harmful))
            .collect();
        let optimizer = OptimizerState::with_config(engine, &settings.optimizer_config(), pairs)?;
        let mut uploaded = |data: &Dataset| {
            let ws = Workspace::alloc(engine, model, data.len(), 1)?;
            engine.upload(ws.inputs, &data.inputs)?;
            Ok::<_, EngineError>(ws)
        };
        let eval_ws = uploaded(eval_data)?;
        let whole = [uploaded(utility)?, uploaded(harmful)?];
        let mut eval_forward = Recording::new();
        graph::forward(&mut eval_forward, model, &eval_ws)?;
        for ws in &whole {
            graph::forward_through(&mut eval_forward, model, ws, objective.layer)?;
        }
        Ok(Self {
            model: model.clone(),
            utility: utility_side,
            harmful: harmful_side,
            grads,
            harmful_grads,
            sums,
            optimizer,
            eval_ws,
            eval_forward,
            eval_labels: eval_data.labels.clone(),
            objective,
            settings: settings.clone(),
            _scratch: scratch,
            step: 0,
            pending: None,
            in_flight: None,
            outcome: TrainOutcome::empty(),
            whole,
            condition_curve: Vec::new(),
            finished: settings.steps == 0,
        })
    }

    /// (step, condition number of the utility training set's probe Hessian, of the harmful
    /// set's), at every evaluated step.
    pub fn condition_curve(&self) -> &[(usize, f64, f64)] {
        &self.condition_curve
    }

    /// Records the update of the step whose forward pass is in the workspaces: the utility
    /// batch's cross-entropy with `dr_well/dH` added at the feature layer, the harmful batch's
    /// `dr_ill/dH` from the feature layer down, their sum, and the optimiser's step.
    fn record_update(&self, rec: &mut Recording, step: usize) -> Result<(), EngineError> {
        let layer = self.objective.layer;
        let trainable = self.settings.trainable;
        // The workspaces as the step's forward pass ran them (reading its batches' inputs).
        let (utility_ws, _) = self.utility.batches.at(step, &self.utility.ws);
        let (harmful_ws, _) = self.harmful.batches.at(step, &self.harmful.ws);
        // dr/dH = 2 H dr/dS / n (S = H^T H / n, dr/dS symmetric).
        let inject = |rec: &mut Recording, ws: &Workspace, side: &Side, out: Tensor| {
            let scale = 2.0 / side.batches.size as f64;
            let features = ws.layers[layer].output();
            rec.matmul_scaled(features, side.gradient, out, false, false, scale, 0.0)
                .map(|_| ())
        };
        inject(rec, &utility_ws, &self.utility, self.utility.injected)?;
        let added = [(layer, self.utility.injected)];
        graph::backward_adding(
            rec,
            &self.model,
            &utility_ws,
            &self.grads,
            trainable,
            &added,
        )?;
        inject(
            rec,
            &harmful_ws,
            &self.harmful,
            graph::output_grad(&harmful_ws, layer),
        )?;
        graph::backward_from(
            rec,
            &self.model,
            &harmful_ws,
            &self.harmful_grads,
            trainable,
            layer,
        )?;
        for &(grad, harmful_grad) in &self.sums {
            rec.axpy(1.0, harmful_grad, grad)?;
        }
        let settings = &self.settings;
        let lr = settings.schedule.lr_at(settings.lr, step, settings.steps);
        self.optimizer.record_step(rec, lr, step as u32 + 1)
    }

    /// Whether `step` is evaluated: every `eval_every` steps and the last.
    fn due(&self, step: usize) -> bool {
        step.is_multiple_of(self.settings.eval_every.max(1)) || step >= self.settings.steps
    }
}

impl Chunked for ConditioningSession {
    fn finished(&self) -> bool {
        self.finished
    }

    fn outcome(&self) -> &TrainOutcome {
        &self.outcome
    }

    fn summary(&self) -> Option<String> {
        let (first, last) = (self.condition_curve.first()?, self.condition_curve.last()?);
        Some(format!(
            "probe Hessian condition number on the training sets: harmful {:.2e} -> {:.2e}, \
             utility {:.2e} -> {:.2e} (steps {} -> {})",
            first.2, last.2, first.1, last.1, first.0, last.0
        ))
    }

    fn own_curves(&self) -> Vec<Curve> {
        let curve = |name, pick: fn(&(usize, f64, f64)) -> f64| {
            Curve::new(name, self.condition_curve.iter().map(|p| (p.0, pick(p))))
        };
        vec![
            curve("utility_condition_number", |p| p.1),
            curve("harmful_condition_number", |p| p.2),
        ]
    }

    fn in_flight(&mut self) -> &mut Option<ReadTicket> {
        &mut self.in_flight
    }

    /// The update of the last step read back (with its regularisers' gradients), then the
    /// forward pass of the next one (the utility batch's cross-entropy and both batches'
    /// features), all read back; at an evaluated step also the evaluation pass and the whole
    /// training sets' features.
    fn submit_chunk(&mut self, engine: &mut dyn Engine) -> Result<(), EngineError> {
        let mut rec = Recording::new();
        if let Some((utility, harmful)) = self.pending.take() {
            engine.upload(self.utility.gradient, &utility)?;
            engine.upload(self.harmful.gradient, &harmful)?;
            self.record_update(&mut rec, self.step)?;
            self.step += 1;
        }
        let (ws, _) = self.utility.batches.at(self.step, &self.utility.ws);
        graph::forward(&mut rec, &self.model, &ws)?;
        graph::cross_entropy(&mut rec, &ws)?;
        let (harmful_ws, _) = self.harmful.batches.at(self.step, &self.harmful.ws);
        graph::forward_through(&mut rec, &self.model, &harmful_ws, self.objective.layer)?;
        let layer = self.objective.layer;
        let mut reads = vec![
            ws.loss_sum,
            ws.layers[layer].output(),
            harmful_ws.layers[layer].output(),
        ];
        if self.due(self.step) {
            rec.extend(&self.eval_forward);
            reads.push(self.eval_ws.logits());
            reads.extend(self.whole.iter().map(|ws| ws.layers[layer].output()));
        }
        engine.run(&rec)?;
        self.in_flight = Some(engine.begin_read(&reads)?);
        Ok(())
    }

    fn receive(&mut self, values: Vec<Vec<f64>>) {
        let step = self.step;
        let width = self.model.spec.layer_shape(self.objective.layer).1;
        let matrix = |v: &Vec<f64>| Matrix::new(v.len() / width, width, v.clone());
        let (s_utility, s_harmful) = (
            probe_hessian(&matrix(&values[1])),
            probe_hessian(&matrix(&values[2])),
        );
        let objective = self.objective;
        let regularisers = (well_conditioning(&s_utility).ok())
            .zip(ill_conditioning(&s_harmful).ok())
            .filter(|_| {
                s_utility
                    .values
                    .iter()
                    .chain(&s_harmful.values)
                    .all(|v| v.is_finite())
            });
        let ce = values[0][0] / self.utility.batches.size as f64;
        let loss = match &regularisers {
            Some(((well, _), (ill, _))) => {
                ce + objective.well_weight * well + objective.ill_weight * ill
            }
            None => f64::NAN,
        };
        if self.due(step) || !loss.is_finite() {
            // A step between evaluations that blew up keeps the last accuracy measured.
            let acc = (values.get(3)).map_or(self.outcome.final_accuracy, |logits| {
                accuracy(logits, &self.eval_labels)
            });
            if let [.., utility, harmful] = &values[..]
                && values.len() == 6
                && let (Ok(u), Ok(h)) = (
                    condition_number(&probe_hessian(&matrix(utility))),
                    condition_number(&probe_hessian(&matrix(harmful))),
                )
            {
                self.condition_curve.push((step, u, h));
            }
            self.finished = self.outcome.take(step, loss, acc, &self.settings) || !loss.is_finite();
        }
        if let Some(((_, well), (_, ill))) = regularisers
            && !self.finished
        {
            let scaled = |m: Matrix, w: f64| m.values.iter().map(|v| v * w).collect();
            self.pending = Some((
                scaled(well, objective.well_weight),
                scaled(ill, objective.ill_weight),
            ));
        }
    }
}
