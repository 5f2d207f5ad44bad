//! Fine-tuning the encoder as a classifier: a linear head on the mean-pooled embedding,
//! softmax cross-entropy, the gradient by reverse mode of the recorded forward pass, and one
//! Adam update per trainable tensor, all in one recording per step. The parts that train are
//! chosen like an MLP's (`Trainable` for the linear maps' weights, factors, LoRA and biases),
//! plus the layer norms, the embedding tables and the head.

use super::device::record_layer_chain;
use super::{DeviceEncoder, EncoderRun, TokenBatch};
use crate::engine::{
    AdamHyper, Allocation, Engine, EngineError, GradientRecording, Recording, ReduceAxis,
    Reduction, Tensor, gradient_recording,
};
use crate::model::{LayerOf, Trainable};
use std::collections::HashMap;

/// Which parameters a fine-tuning step updates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderTrainable {
    /// The linear maps' parameter groups (weights, SpecDef's compensation, LoRA, biases, ...).
    pub layers: Trainable,
    pub norms: bool,
    pub embeddings: bool,
    pub head: bool,
}

impl Default for EncoderTrainable {
    /// Everything but the embedding tables (their gradient touches only the rows of the
    /// batch's tokens, but Adam still sweeps all 30522 rows).
    fn default() -> Self {
        Self {
            layers: Trainable::default(),
            norms: true,
            embeddings: false,
            head: true,
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
    for (i, layer) in encoder.linear.iter().enumerate() {
        for (key, &tensor) in layer.parameters(i) {
            if layer.trains(key.role, trainable.layers) {
                tensors.push(tensor);
            }
        }
    }
    if trainable.head {
        tensors.extend(head.parameters(0).into_iter().map(|(_, &t)| t));
    }
    tensors
}

/// Adam's moments per trained tensor, and its step count.
pub struct AdamState {
    pub hyper: AdamHyper,
    step: u32,
    moments: HashMap<u32, (Tensor, Tensor)>,
    owner: Allocation,
}

impl AdamState {
    pub fn new(engine: &dyn Engine, hyper: AdamHyper) -> Self {
        Self {
            hyper,
            step: 0,
            moments: HashMap::new(),
            owner: Allocation::new(engine),
        }
    }

    /// The moments of `param` (zeros on first use).
    fn moments(
        &mut self,
        engine: &mut dyn Engine,
        param: Tensor,
    ) -> Result<(Tensor, Tensor), EngineError> {
        if let Some(&pair) = self.moments.get(&param.id()) {
            return Ok(pair);
        }
        let zeros = vec![0.0; param.len()];
        let (rows, cols) = param.shape();
        let m = self
            .owner
            .tensor_from(engine, "adam.m", rows, cols, &zeros)?;
        let v = self
            .owner
            .tensor_from(engine, "adam.v", rows, cols, &zeros)?;
        self.moments.insert(param.id(), (m, v));
        Ok((m, v))
    }
}

/// One recorded step: run its recording, then read `loss` (the batch's summed cross-entropy)
/// and `logits` (before the update).
pub struct TrainStep {
    pub recording: Recording,
    pub loss: Tensor,
    pub logits: Tensor,
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

/// Records one fine-tuning step on `batch` with class `labels`: forward, mean cross-entropy,
/// its gradient, and Adam on every tensor of `trained`.
pub fn record_train_step(
    engine: &mut dyn Engine,
    encoder: &DeviceEncoder,
    head: &LayerOf<Tensor>,
    batch: &TokenBatch,
    labels: &[usize],
    trained: &[Tensor],
    adam: &mut AdamState,
) -> Result<TrainStep, EngineError> {
    if labels.len() != batch.sequences {
        return Err(EngineError::Shape {
            op: "encoder_train_step",
            message: format!("{} labels for {} sequences", labels.len(), batch.sequences),
        });
    }
    let mut owner = Allocation::new(engine);
    let mut rec = Recording::new();
    let (logits, run) = record_logits(engine, &mut rec, encoder, head, batch, &mut owner)?;
    let (rows, classes) = logits.shape();
    let labels: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
    let label_tensor = owner.tensor_from(engine, "train.labels", rows, 1, &labels)?;
    let row_loss = owner.alloc(engine, "train.row_loss", rows, 1)?;
    let row_grad = owner.alloc(engine, "train.row_grad", rows, classes)?;
    let loss = owner.alloc(engine, "train.loss", 1, 1)?;
    rec.softmax_cross_entropy(logits, label_tensor, row_loss, row_grad, 1.0)?;
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, row_loss, loss)?;
    let mut gradient = gradient_recording(engine, &rec, loss, 1.0 / rows as f64)?;
    adam.step += 1;
    for &param in trained {
        let Some(grad) = gradient.gradient_of(param) else {
            continue;
        };
        let moments = adam.moments(engine, param)?;
        gradient
            .recording
            .adam(param, grad, moments, adam.hyper, adam.step)?;
    }
    Ok(TrainStep {
        recording: std::mem::take(&mut gradient.recording),
        loss,
        logits,
        _gradient: gradient,
        _run: run,
        _owner: owner,
    })
}
