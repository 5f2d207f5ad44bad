//! Fine-tuning the encoder as a classifier: a linear head on the mean-pooled embedding,
//! softmax cross-entropy, the gradient by reverse mode of the recorded forward pass, and the
//! optimiser's update of every trainable tensor (`optimizer.rs`), all in one recording per step. The parts that train are
//! chosen like an MLP's (`Trainable` for the linear maps' weights, factors, LoRA and biases),
//! plus the layer norms, the embedding tables and the head.

use super::device::record_layer_chain;
use super::optimizer::{EncoderOptimizer, RecordedUpdate};
use super::{DeviceEncoder, EncoderRun, TokenBatch};
use crate::engine::{
    Allocation, Engine, EngineError, GradientRecording, Recording, ReduceAxis, Reduction, Tensor,
    gradient_recording,
};
use crate::model::{LayerOf, Trainable};

/// Which parameters a fine-tuning step updates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderTrainable {
    /// The linear maps' parameter groups (weights, SpecDef's compensation, LoRA, biases, ...).
    pub layers: Trainable,
    pub norms: bool,
    pub embeddings: bool,
    /// The head's parameter groups (its weight and bias, or a rewrite's LoRA on it); frozen
    /// where None.
    pub head: Option<Trainable>,
}

impl Default for EncoderTrainable {
    /// Everything but the embedding tables (their gradient touches only the rows of the
    /// batch's tokens, but Adam still sweeps all 30522 rows).
    fn default() -> Self {
        Self {
            layers: Trainable::default(),
            norms: true,
            embeddings: false,
            head: Some(Trainable::default()),
        }
    }
}

/// Every parameter tensor of the encoder and head that `trainable` lets train.
pub fn trainable_tensors(
    encoder: &DeviceEncoder,
    head: &LayerOf<Tensor>,
    trainable: EncoderTrainable,
) -> Vec<Tensor> {
    let mut tensors = Vec::new();
    if trainable.embeddings {
        tensors.extend([
            encoder.word_embeddings,
            encoder.position_embeddings,
            encoder.token_type_embeddings,
        ]);
    }
    if trainable.norms {
        tensors.extend(encoder.embedding_norm);
        tensors.extend(encoder.norms.iter().flatten().flatten());
    }
    let chains = (encoder.linear.iter().map(|l| (l, Some(trainable.layers))))
        .chain([(head, trainable.head)]);
    for (i, (layer, groups)) in chains.enumerate() {
        let Some(groups) = groups else { continue };
        for (key, &tensor) in layer.parameters(i) {
            if layer.trains(key.role, groups) {
                tensors.push(tensor);
            }
        }
    }
    tensors
}

/// What a row of a batch is trained towards: its class, or the uniform distribution over
/// every class (maximum entropy: the suppression step's target for harmful examples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassTarget {
    Label(usize),
    Uniform,
}

/// One recorded step: run its recording, then read `loss` (the batch's summed cross-entropy)
/// and `logits` (before the update).
pub struct TrainStep {
    pub recording: Recording,
    pub loss: Tensor,
    pub logits: Tensor,
    _update: RecordedUpdate,
    _gradient: GradientRecording,
    _run: EncoderRun,
    _owner: Allocation,
}

/// The logits of `batch` (`sequences x classes`): `pooled H^T + b`.
pub fn record_logits(
    engine: &mut dyn Engine,
    rec: &mut Recording,
    encoder: &DeviceEncoder,
    head: &LayerOf<Tensor>,
    batch: &TokenBatch,
    owner: &mut Allocation,
) -> Result<(Tensor, EncoderRun), EngineError> {
    let run = encoder.record(engine, rec, batch)?;
    let logits = record_layer_chain(engine, rec, owner, head, run.pooled)?;
    Ok((logits, run))
}

/// Records one fine-tuning step on `batch` towards `targets`: forward,
/// cross-entropy, its gradient, and `optimizer`'s update (at its rate) of every tensor of `trained`. A
/// uniform target's cross-entropy is the mean of the row's cross-entropy against each class,
/// recorded as one cross-entropy per class on the same logits (one forward pass, as the MLP's
/// suppression set is one copy of the example per class).
pub fn record_train_step(
    engine: &mut dyn Engine,
    encoder: &DeviceEncoder,
    head: &LayerOf<Tensor>,
    batch: &TokenBatch,
    targets: &[ClassTarget],
    trained: &[Tensor],
    optimizer: &mut EncoderOptimizer,
) -> Result<TrainStep, EngineError> {
    if targets.len() != batch.sequences {
        return Err(EngineError::Shape {
            op: "encoder_train_step",
            message: format!(
                "{} targets for {} sequences",
                targets.len(),
                batch.sequences
            ),
        });
    }
    let mut owner = Allocation::new(engine);
    let mut rec = Recording::new();
    let (logits, run) = record_logits(engine, &mut rec, encoder, head, batch, &mut owner)?;
    let (rows, classes) = logits.shape();
    if let Some(label) = targets.iter().find_map(|t| match t {
        ClassTarget::Label(l) if *l >= classes => Some(*l),
        _ => None,
    }) {
        return Err(EngineError::Shape {
            op: "encoder_train_step",
            message: format!("label {label} for a head of {classes} classes"),
        });
    }
    let uniform = targets.contains(&ClassTarget::Uniform);
    // Every class once for a uniform row, the row's own label every time for a labelled one.
    let passes = if uniform { classes } else { 1 };
    let row_loss = owner.alloc(engine, "train.row_loss", rows, 1)?;
    for class in 0..passes {
        let labels: Vec<f64> = (targets.iter())
            .map(|t| match t {
                ClassTarget::Label(l) => *l as f64,
                ClassTarget::Uniform => class as f64,
            })
            .collect();
        let label_tensor = owner.tensor_from(engine, "train.labels", rows, 1, &labels)?;
        let class_loss = owner.alloc(engine, "train.class_loss", rows, 1)?;
        let row_grad = owner.alloc(engine, "train.row_grad", rows, classes)?;
        rec.softmax_cross_entropy(logits, label_tensor, class_loss, row_grad, 1.0)?;
        let share = 1.0 / passes as f64;
        if class == 0 {
            rec.scale(share, class_loss, row_loss)?;
        } else {
            rec.axpy(share, class_loss, row_loss)?;
        }
    }
    let loss = owner.alloc(engine, "train.loss", 1, 1)?;
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, row_loss, loss)?;
    let mut gradient = gradient_recording(engine, &rec, loss, 1.0 / rows as f64)?;
    let mut update = optimizer.record_update(engine, &mut gradient, trained)?;
    Ok(TrainStep {
        recording: std::mem::take(&mut update.recording),
        loss,
        logits,
        _update: update,
        _gradient: gradient,
        _run: run,
        _owner: owner,
    })
}
