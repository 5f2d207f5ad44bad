//! What a training run minimises. Pretraining, suppression and attacks minimise the mean
//! cross-entropy against class labels; representation-level defences (RMU) a weighted squared
//! distance between a hidden layer's output and per-row targets. Both are recorded from the
//! engine's existing ops, so every engine runs them.

use crate::data::Dataset;
use crate::engine::{BinaryOp, EngineError, Recording, ReduceAxis, Reduction, Tensor};
use crate::model::{DeviceModel, Gradients, Trainable, Workspace, graph};

/// Rows to train on: inputs, and per row what the loss compares with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainRows<'a> {
    /// Class labels; the loss is the mean softmax cross-entropy.
    Labelled(&'a Dataset),
    /// Targets for a hidden layer's output; the loss is the squared distance to them.
    HiddenTargets(&'a HiddenTargetSet),
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

impl TrainRows<'_> {
    pub fn len(&self) -> usize {
        match self {
            TrainRows::Labelled(data) => data.len(),
            TrainRows::HiddenTargets(set) => set.weights.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn features(&self) -> usize {
        match self {
            TrainRows::Labelled(data) => data.features,
            TrainRows::HiddenTargets(set) => set.features,
        }
    }

    pub fn inputs(&self) -> &[f64] {
        match self {
            TrainRows::Labelled(data) => &data.inputs,
            TrainRows::HiddenTargets(set) => &set.inputs,
        }
    }

    /// Columns of the per-row targets the workspace holds: 1 (a label) or the layer's width.
    pub fn target_cols(&self) -> usize {
        match self {
            TrainRows::Labelled(_) => 1,
            TrainRows::HiddenTargets(set) => set.width,
        }
    }

    /// The targets of the rows `chunk`, row-major.
    pub fn targets_of(&self, chunk: &[usize]) -> Vec<f64> {
        match self {
            TrainRows::Labelled(data) => chunk.iter().map(|&r| data.labels[r] as f64).collect(),
            TrainRows::HiddenTargets(set) => gather(&set.targets, set.width, chunk),
        }
    }

    /// The loss weights of the rows `chunk` as the recorded loss reads them (`rows x width`,
    /// each row's weight times `2 / (rows width)`: the gradient of the batch's loss), or None
    /// for cross-entropy.
    pub fn gradient_weights_of(&self, chunk: &[usize]) -> Option<Vec<f64>> {
        let TrainRows::HiddenTargets(set) = self else {
            return None;
        };
        let scale = 2.0 / (chunk.len() * set.width) as f64;
        Some(
            (chunk.iter())
                .flat_map(|&r| std::iter::repeat_n(set.weights[r] * scale, set.width))
                .collect(),
        )
    }

    /// Checks the rows against the model before any upload.
    pub fn check(&self, model: &DeviceModel) -> Result<(), EngineError> {
        let TrainRows::HiddenTargets(set) = self else {
            return Ok(());
        };
        let layers = model.layers.len();
        let shape_error = |message: String| EngineError::Shape {
            op: "hidden-layer loss",
            message,
        };
        if set.layer >= layers {
            return Err(shape_error(format!(
                "layer {} does not exist (the model has {layers} layers, 0..{})",
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
                "{rows} rows need {} inputs and {} targets (layer {} is {width} wide), got {} \
                 and {} of width {}",
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

    /// The loss as recorded: cross-entropy, or a hidden layer's squared distance.
    pub fn objective(&self) -> Objective {
        match self {
            TrainRows::Labelled(_) => Objective::CrossEntropy,
            TrainRows::HiddenTargets(set) => Objective::HiddenTarget { layer: set.layer },
        }
    }
}

/// Rows `chunk` of a row-major matrix with `cols` columns.
pub fn gather(values: &[f64], cols: usize, chunk: &[usize]) -> Vec<f64> {
    (chunk.iter())
        .flat_map(|&r| &values[r * cols..(r + 1) * cols])
        .copied()
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    CrossEntropy,
    HiddenTarget { layer: usize },
}

/// The tensors a hidden-layer loss needs beside the workspace, all `batch x width`: the batch's
/// gradient weights, the difference to the targets and a scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HiddenLossTensors {
    pub weights: Tensor,
    pub diff: Tensor,
    pub scratch: Tensor,
}

impl Objective {
    /// What `ws.loss_sum` is divided by to give the batch's loss: the batch for cross-entropy
    /// (a sum over rows), 2 for the hidden loss (its sum is `h - t` against twice the weighted
    /// gradient).
    pub fn loss_divisor(self, batch: usize) -> f64 {
        match self {
            Objective::CrossEntropy => batch as f64,
            Objective::HiddenTarget { .. } => 2.0,
        }
    }

    /// The layers whose parameters a step may change.
    pub fn trains_layer(self, layer: usize) -> bool {
        match self {
            Objective::CrossEntropy => true,
            Objective::HiddenTarget { layer: top } => layer <= top,
        }
    }

    /// Records the forward pass and the loss (into `ws.loss_sum`), and, with `grads`, the
    /// backward pass into them.
    pub fn record(
        self,
        rec: &mut Recording,
        model: &DeviceModel,
        ws: &Workspace,
        hidden: Option<HiddenLossTensors>,
        grads: Option<(&Gradients, Trainable)>,
    ) -> Result<(), EngineError> {
        match (self, hidden) {
            (Objective::CrossEntropy, _) => {
                graph::forward(rec, model, ws)?;
                graph::cross_entropy(rec, ws)?;
                if let Some((grads, trainable)) = grads {
                    graph::backward(rec, model, ws, grads, trainable)?;
                }
            }
            (Objective::HiddenTarget { layer }, Some(t)) => {
                graph::forward_through(rec, model, ws, layer)?;
                // diff = h - t; g = w2 diff (the loss's gradient); loss_sum = sum diff g.
                let diff = t.diff;
                let gradient = graph::output_grad(ws, layer);
                rec.binary(BinaryOp::Sub, ws.layers[layer].output(), ws.targets, diff)?;
                rec.binary(BinaryOp::Mul, diff, t.weights, gradient)?;
                rec.binary(BinaryOp::Mul, diff, gradient, t.scratch)?;
                rec.reduce(Reduction::Sum, ReduceAxis::Whole, t.scratch, ws.loss_sum)?;
                if let Some((grads, trainable)) = grads {
                    graph::backward_from(rec, model, ws, grads, trainable, layer)?;
                }
            }
            (Objective::HiddenTarget { .. }, None) => {
                return Err(EngineError::Shape {
                    op: "hidden-layer loss",
                    message: "recorded without its weight and scratch tensors".to_string(),
                });
            }
        }
        Ok(())
    }
}
