//! Hessian-vector products of a model's loss, by forward-over-reverse: the recording of forward,
//! loss and backward is differentiated in forward mode (`engine::tangent_recording`) with the
//! trainable parameters' tangents seeded by v, so the gradients' tangents are H v. Exact (no
//! finite differences), for every layer form and loss, on any engine, in one submission.

use super::graph;
use super::layer::{ParamKey, Trainable};
use super::{DeviceModel, Gradients, Workspace};
use crate::engine::{
    Allocation, Engine, EngineError, Owned, Recording, TangentRecording, Tensor, tangent_recording,
};

/// Which loss the Hessian is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Mean softmax cross-entropy against class labels.
    CrossEntropy,
    /// Half the mean squared error against target values.
    SquaredError,
}

impl Loss {
    pub fn record(self, rec: &mut Recording, ws: &Workspace) -> Result<(), EngineError> {
        match self {
            Loss::CrossEntropy => graph::cross_entropy(rec, ws),
            Loss::SquaredError => graph::squared_error(rec, ws),
        }
    }
}

/// A prepared Hessian-vector product on one batch (the workspace's inputs and targets): write v
/// into the slots' v tensors, run `recording`, read H v from their H v tensors (and the gradient
/// from `gradients`, computed on the way). Its tensors are freed when it is dropped.
pub struct HessianVectorProduct {
    pub recording: Recording,
    pub gradients: Owned<Gradients>,
    /// (key, v, H v) for every trainable parameter, in registry order.
    slots: Vec<(ParamKey, Tensor, Tensor)>,
    _v: Owned<Gradients>,
    _tangents: TangentRecording,
    /// Zero tensors standing for H v blocks that are structurally zero.
    _zeros: Allocation,
}

impl HessianVectorProduct {
    /// Records H v of `loss` at the model's parameters, over the trainable groups.
    pub fn prepare(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        ws: &Workspace,
        loss: Loss,
        trainable: Trainable,
    ) -> Result<Self, EngineError> {
        let gradients = Gradients::alloc(engine, model)?;
        let v = Gradients::alloc_named(engine, model, "hvp.v.")?;
        let mut primal = Recording::new();
        graph::forward(&mut primal, model, ws)?;
        loss.record(&mut primal, ws)?;
        graph::backward(&mut primal, model, ws, &gradients, trainable)?;
        let trained: Vec<(ParamKey, Tensor, Tensor, Tensor)> = model
            .parameters()
            .into_iter()
            .zip(v.parameters())
            .zip(gradients.parameters())
            .filter(|(((key, _), _), _)| model.layers[key.layer].trains(key.role, trainable))
            .map(|(((key, param), (_, v)), (_, grad))| (key, param, v, grad))
            .collect();
        let seeds: Vec<(Tensor, Tensor)> = trained.iter().map(|&(_, p, v, _)| (p, v)).collect();
        let tangents = tangent_recording(engine, &primal, &seeds)?;
        let mut recording = tangents.recording.clone();
        let mut zeros = Allocation::new(engine);
        let mut slots = Vec::with_capacity(trained.len());
        for (key, _, v, grad) in trained {
            let hv = match tangents.tangent_of(grad) {
                Some(hv) => hv,
                None => {
                    // The loss does not depend on this parameter through the recorded ops.
                    let label = format!("hvp.zero.{key}");
                    let zero = zeros.alloc(engine, &label, grad.rows(), grad.cols())?;
                    recording.fill(0.0, zero);
                    zero
                }
            };
            slots.push((key, v, hv));
        }
        Ok(Self {
            recording,
            gradients,
            slots,
            _v: v,
            _tangents: tangents,
            _zeros: zeros,
        })
    }

    /// (key, v tensor, H v tensor) for every trainable parameter, in registry order.
    pub fn slots(&self) -> &[(ParamKey, Tensor, Tensor)] {
        &self.slots
    }

    /// Uploads v (one value list per slot), runs the product and reads H v back, blocking.
    pub fn apply(
        &self,
        engine: &mut dyn Engine,
        v: &[Vec<f64>],
    ) -> Result<Vec<Vec<f64>>, EngineError> {
        if v.len() != self.slots.len() {
            return Err(EngineError::Shape {
                op: "hessian_vector_product",
                message: format!(
                    "v has {} blocks, the trainable parameters {}",
                    v.len(),
                    self.slots.len()
                ),
            });
        }
        for (&(_, tensor, _), values) in self.slots.iter().zip(v) {
            engine.upload(tensor, values)?;
        }
        engine.run(&self.recording)?;
        let hv: Vec<Tensor> = self.slots.iter().map(|s| s.2).collect();
        engine.read(&hv)
    }
}
