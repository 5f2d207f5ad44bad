//! What a training run minimises. Pretraining, suppression and attacks minimise the mean
//! cross-entropy against class labels; the baseline defences minimise losses of their own: a
//! weighted squared distance between a hidden layer's output and per-row targets (RMU),
//! negative preference optimisation against a frozen reference (NPO), and representation
//! noising (RepNoise, `noising.rs`). Each is recorded from the engine's ops, so every engine runs
//! it. A training set gives, per row, the inputs and the columns its loss reads (uploaded batch
//! by batch); the loss asks for the scratch it needs.

use super::noising::{self, NoisingSet};
use crate::data::Dataset;
use crate::engine::{BinaryOp, EngineError, Recording, ReduceAxis, Reduction, Tensor, UnaryOp};
use crate::model::{DeviceModel, Gradients, Trainable, Workspace, graph};

/// Rows to train on: inputs, and per row what the loss compares with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainRows<'a> {
    /// Class labels; the loss is the mean softmax cross-entropy.
    Labelled(&'a Dataset),
    /// Targets for a hidden layer's output; the loss is the squared distance to them.
    HiddenTargets(&'a HiddenTargetSet),
    /// Labels of rows to forget (NPO's loss against the reference) and to retain (cross-entropy).
    Preference(&'a PreferenceSet),
    /// Harmful rows to noise and utility rows to retain (RepNoise).
    Noising(&'a NoisingSet),
}

/// A training set for a loss on layer `layer`'s output (`f(Z)`, or `Z` without an activation):
/// per batch of `b` rows, `loss = sum_r weight_r |h_r - target_r|^2 / (b width)`, so with one
/// weight everywhere it is the mean squared error over the batch's elements, as RMU's
/// `mse_loss` is. Only layers `0..=layer` train (nothing after it has a gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenTargetSet {
    /// `rows x features`.
    pub inputs: Vec<f64>,
    pub features: usize,
    pub layer: usize,
    /// `rows x width`, width being layer `layer`'s output width.
    pub targets: Vec<f64>,
    pub width: usize,
    /// One per row.
    pub weights: Vec<f64>,
}

/// A training set for negative preference optimisation (Zhang et al. 2024) with a retain term:
/// per batch of `b` rows,
/// `loss = (1/b) sum_r [forget_r (2/beta) softplus(beta d_r) + retain_r retain_weight ce_r]`,
/// where `ce_r` is the model's cross-entropy on row r's label and
/// `d_r = log p(y|x) - log p_ref(y|x) = reference_loss_r - ce_r`. Its gradient on the logits is
/// `(1/b) (softmax - onehot) (retain_weight retain_r - 2 forget_r sigmoid(beta d_r))`: forgetting
/// slows as the model's likelihood falls below the reference's.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceSet {
    pub data: Dataset,
    /// Per row, the frozen reference model's cross-entropy on its label (forget rows; any value
    /// on retain rows, where it is not read).
    pub reference_loss: Vec<f64>,
    /// Per row: forget (true) or retain.
    pub forget: Vec<bool>,
    pub beta: f64,
    pub retain_weight: f64,
}

/// A set that owns its rows, for stages that build their own (the baseline defences).
#[derive(Clone, Debug, PartialEq)]
pub enum TrainSet {
    HiddenTargets(HiddenTargetSet),
    Preference(PreferenceSet),
    Noising(NoisingSet),
}

impl TrainSet {
    pub fn rows(&self) -> TrainRows<'_> {
        match self {
            TrainSet::HiddenTargets(set) => TrainRows::HiddenTargets(set),
            TrainSet::Preference(set) => TrainRows::Preference(set),
            TrainSet::Noising(set) => TrainRows::Noising(set),
        }
    }
}

/// One per-row column a loss reads: its label and width, and the values of a batch's rows.
pub struct Column {
    pub label: &'static str,
    pub cols: usize,
    pub values: Vec<f64>,
}

pub(super) fn shape_error(message: String) -> EngineError {
    EngineError::Shape {
        op: "training loss",
        message,
    }
}

impl TrainRows<'_> {
    pub fn len(&self) -> usize {
        match self {
            TrainRows::Labelled(data) => data.len(),
            TrainRows::HiddenTargets(set) => set.weights.len(),
            TrainRows::Preference(set) => set.data.len(),
            TrainRows::Noising(set) => set.data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn features(&self) -> usize {
        match self {
            TrainRows::Labelled(data) => data.features,
            TrainRows::HiddenTargets(set) => set.features,
            TrainRows::Preference(set) => set.data.features,
            TrainRows::Noising(set) => set.data.features,
        }
    }

    pub fn inputs(&self) -> &[f64] {
        match self {
            TrainRows::Labelled(data) => &data.inputs,
            TrainRows::HiddenTargets(set) => &set.inputs,
            TrainRows::Preference(set) => &set.data.inputs,
            TrainRows::Noising(set) => &set.data.inputs,
        }
    }

    /// The columns of the rows `chunk` (one batch), in the order the loss reads them; the first
    /// is the workspace's targets.
    pub fn columns_of(&self, chunk: &[usize]) -> Vec<Column> {
        let labels = |data: &Dataset| Column {
            label: "batch.labels",
            cols: 1,
            values: chunk.iter().map(|&r| data.labels[r] as f64).collect(),
        };
        let per_row = |label, value: &dyn Fn(usize) -> f64| Column {
            label,
            cols: 1,
            values: chunk.iter().map(|&r| value(r)).collect(),
        };
        match self {
            TrainRows::Labelled(data) => vec![labels(data)],
            TrainRows::HiddenTargets(set) => {
                // The weights as the gradient reads them: each row's times 2 / (rows width).
                let scale = 2.0 / (chunk.len() * set.width) as f64;
                let weights = (chunk.iter())
                    .flat_map(|&r| std::iter::repeat_n(set.weights[r] * scale, set.width))
                    .collect();
                vec![
                    Column {
                        label: "batch.hidden_targets",
                        cols: set.width,
                        values: gather(&set.targets, set.width, chunk),
                    },
                    Column {
                        label: "batch.hidden_weights",
                        cols: set.width,
                        values: weights,
                    },
                ]
            }
            TrainRows::Preference(set) => {
                let forget = |r: usize| set.forget[r];
                vec![
                    labels(&set.data),
                    per_row("batch.reference_loss", &|r| {
                        if forget(r) {
                            set.reference_loss[r]
                        } else {
                            0.0
                        }
                    }),
                    per_row("batch.forget_gain", &|r| if forget(r) { -2.0 } else { 0.0 }),
                    per_row("batch.retain_gain", &|r| {
                        if forget(r) { 0.0 } else { set.retain_weight }
                    }),
                ]
            }
            TrainRows::Noising(set) => set.columns_of(chunk),
        }
    }

    /// Checks the rows against the model before any upload.
    pub fn check(&self, model: &DeviceModel) -> Result<(), EngineError> {
        match self {
            TrainRows::Labelled(_) => Ok(()),
            TrainRows::HiddenTargets(set) => check_hidden(set, model),
            TrainRows::Noising(set) => set.check(model),
            TrainRows::Preference(set) => {
                let rows = set.data.len();
                if set.reference_loss.len() != rows || set.forget.len() != rows {
                    return Err(shape_error(format!(
                        "{rows} rows need {rows} reference losses and forget flags, got {} and {}",
                        set.reference_loss.len(),
                        set.forget.len()
                    )));
                }
                let finite = |v: f64| v.is_finite();
                if !(finite(set.beta) && set.beta > 0.0) {
                    return Err(shape_error(format!(
                        "beta must be positive, got {}",
                        set.beta
                    )));
                }
                if !(finite(set.retain_weight) && set.retain_weight >= 0.0) {
                    return Err(shape_error(format!(
                        "the retain weight must be non-negative, got {}",
                        set.retain_weight
                    )));
                }
                let flagged = set.reference_loss.iter().zip(&set.forget);
                if let Some((bad, _)) = flagged.filter(|(_, f)| **f).find(|(v, _)| !finite(**v)) {
                    return Err(shape_error(format!(
                        "a forget row's reference loss is {bad}: the reference model must give \
                         every harmful image a finite loss"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The loss as recorded.
    pub fn objective(&self) -> Objective {
        match self {
            TrainRows::Labelled(_) => Objective::CrossEntropy,
            TrainRows::HiddenTargets(set) => Objective::HiddenTarget { layer: set.layer },
            TrainRows::Preference(set) => Objective::Preference { beta: set.beta },
            TrainRows::Noising(set) => Objective::Noising {
                alpha: set.alpha,
                beta: set.beta,
            },
        }
    }
}

fn check_hidden(set: &HiddenTargetSet, model: &DeviceModel) -> Result<(), EngineError> {
    let layers = model.layers.len();
    if set.layer >= layers {
        return Err(shape_error(format!(
            "hidden-layer loss on layer {}, which does not exist (the model has {layers} layers, \
             0..{})",
            set.layer,
            layers - 1
        )));
    }
    let width = model.spec.layer_shape(set.layer).1;
    let rows = set.weights.len();
    if set.width != width
        || set.targets.len() != rows * width
        || set.inputs.len() != rows * set.features
    {
        return Err(shape_error(format!(
            "{rows} rows need {} inputs and {} targets (layer {} is {width} wide), got {} and {} \
             of width {}",
            rows * set.features,
            rows * width,
            set.layer,
            set.inputs.len(),
            set.targets.len(),
            set.width
        )));
    }
    if let Some(bad) = set.weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(shape_error(format!(
            "row weights must be finite and non-negative, got {bad}"
        )));
    }
    Ok(())
}

/// Rows `chunk` of a row-major matrix with `cols` columns.
pub fn gather(values: &[f64], cols: usize, chunk: &[usize]) -> Vec<f64> {
    (chunk.iter())
        .flat_map(|&r| &values[r * cols..(r + 1) * cols])
        .copied()
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    CrossEntropy,
    HiddenTarget { layer: usize },
    Preference { beta: f64 },
    Noising { alpha: f64, beta: f64 },
}

impl Objective {
    /// What `ws.loss_sum` is divided by to give the batch's loss: the batch for the losses summed
    /// over rows, 2 for the hidden loss (its sum is `h - t` against twice the weighted gradient).
    pub fn loss_divisor(self, batch: usize) -> f64 {
        match self {
            Objective::CrossEntropy | Objective::Preference { .. } => batch as f64,
            Objective::HiddenTarget { .. } => 2.0,
            Objective::Noising { .. } => 1.0,
        }
    }

    /// The layers whose parameters a step may change.
    pub fn trains_layer(self, layer: usize) -> bool {
        match self {
            Objective::CrossEntropy | Objective::Preference { .. } | Objective::Noising { .. } => {
                true
            }
            Objective::HiddenTarget { layer: top } => layer <= top,
        }
    }

    /// The scratch tensors the loss records into, as (label, rows, cols), for a batch of `batch`
    /// rows.
    pub fn scratch_shapes(
        self,
        batch: usize,
        model: &DeviceModel,
    ) -> Vec<(&'static str, usize, usize)> {
        match self {
            Objective::CrossEntropy => Vec::new(),
            Objective::HiddenTarget { layer } => {
                let width = model.spec.layer_shape(layer).1;
                vec![("loss.diff", batch, width), ("loss.scratch", batch, width)]
            }
            Objective::Preference { .. } => {
                let classes = model.spec.widths[model.spec.widths.len() - 1];
                let mut shapes = vec![("loss.grad", batch, classes), ("loss.wide", batch, classes)];
                shapes.extend(PREFERENCE_ROWS.iter().map(|&label| (label, batch, 1)));
                shapes.push(("loss.ones", 1, classes));
                shapes
            }
            Objective::Noising { .. } => noising::scratch_shapes(batch, model),
        }
    }

    /// Records the forward pass and the loss (into `ws.loss_sum`), and, with `grads`, the
    /// backward pass into them. `columns` and `scratch` are as `TrainRows::columns_of` and
    /// `scratch_shapes` give them.
    pub fn record(
        self,
        rec: &mut Recording,
        model: &DeviceModel,
        ws: &Workspace,
        columns: &[Tensor],
        scratch: &[Tensor],
        grads: Option<(&Gradients, Trainable)>,
    ) -> Result<(), EngineError> {
        match self {
            Objective::CrossEntropy => {
                graph::forward(rec, model, ws)?;
                graph::cross_entropy(rec, ws)?;
            }
            Objective::HiddenTarget { layer } => {
                graph::forward_through(rec, model, ws, layer)?;
                // diff = h - t; g = w2 diff (the loss's gradient); loss_sum = sum diff g.
                let (weights, diff, product) = (columns[1], scratch[0], scratch[1]);
                let gradient = graph::output_grad(ws, layer);
                rec.binary(BinaryOp::Sub, ws.layers[layer].output(), ws.targets, diff)?;
                rec.binary(BinaryOp::Mul, diff, weights, gradient)?;
                rec.binary(BinaryOp::Mul, diff, gradient, product)?;
                rec.reduce(Reduction::Sum, ReduceAxis::Whole, product, ws.loss_sum)?;
                if let Some((grads, trainable)) = grads {
                    graph::backward_from(rec, model, ws, grads, trainable, layer)?;
                }
                return Ok(());
            }
            Objective::Preference { beta } => {
                graph::forward(rec, model, ws)?;
                preference_loss(rec, ws, beta, columns, scratch)?;
            }
            Objective::Noising { alpha, beta } => {
                graph::forward(rec, model, ws)?;
                let injected = noising::record(rec, ws, alpha, beta, columns, scratch)?;
                if let Some((grads, trainable)) = grads {
                    graph::backward_adding(rec, model, ws, grads, trainable, &injected)?;
                }
                return Ok(());
            }
        }
        if let Some((grads, trainable)) = grads {
            graph::backward(rec, model, ws, grads, trainable)?;
        }
        Ok(())
    }
}

/// The `batch x 1` scratch of the preference loss, after its two `batch x classes` ones.
const PREFERENCE_ROWS: [&str; 10] = [
    "loss.ce", "loss.d", "loss.z", "loss.s", "loss.w1", "loss.w", "loss.sp", "loss.l1", "loss.l2",
    "loss.l3",
];

/// NPO with a retain term (see `PreferenceSet`): the loss into `ws.loss_sum` (times the batch),
/// its gradient into the logits' `grad_pre`.
fn preference_loss(
    rec: &mut Recording,
    ws: &Workspace,
    beta: f64,
    columns: &[Tensor],
    scratch: &[Tensor],
) -> Result<(), EngineError> {
    let (labels, reference, forget_gain, retain_gain) =
        (columns[0], columns[1], columns[2], columns[3]);
    let [grad, wide, ce, d, z, s, w1, w, sp, l1, l2, l3, ones] = scratch else {
        return Err(shape_error(format!(
            "the preference loss needs 13 scratch tensors, got {}",
            scratch.len()
        )));
    };
    let last = &ws.layers[ws.layers.len() - 1];
    // grad = (softmax - onehot) / b; ce per row.
    rec.softmax_cross_entropy(last.pre(), labels, *ce, *grad, 1.0 / ws.batch as f64)?;
    // z = beta d, d = reference - ce = log p - log p_ref.
    rec.binary(BinaryOp::Sub, reference, *ce, *d)?;
    rec.scale(beta, *d, *z)?;
    // Per-row gradient weight w = forget_gain sigmoid(z) + retain_gain, spread over the classes.
    rec.unary(UnaryOp::Sigmoid, *z, *s)?;
    rec.binary(BinaryOp::Mul, *s, forget_gain, *w1)?;
    rec.binary(BinaryOp::Add, *w1, retain_gain, *w)?;
    rec.fill(1.0, *ones);
    rec.matmul(*w, *ones, *wide, false, false)?;
    rec.binary(BinaryOp::Mul, *grad, *wide, last.grad_pre())?;
    // Loss per row: (2/beta) softplus(z) = -(1/beta) forget_gain softplus(z), plus retain_gain ce.
    rec.unary(UnaryOp::Softplus, *z, *sp)?;
    rec.binary(BinaryOp::Mul, *sp, forget_gain, *l1)?;
    rec.scale(-1.0 / beta, *l1, *l2)?;
    rec.binary(BinaryOp::Mul, *ce, retain_gain, *l3)?;
    rec.binary(BinaryOp::Add, *l2, *l3, *d)?;
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, *d, ws.loss_sum)?;
    Ok(())
}
