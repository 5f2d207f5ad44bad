//! First-order optimisers with standard hyper-parameters, recorded as engine ops.

use crate::engine::{AdamHyper, Engine, EngineError, Recording, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain gradient descent: `p -= lr g`.
    Sgd,
    /// Heavy-ball momentum 0.9.
    Momentum,
    /// Nesterov momentum 0.9.
    Nesterov,
    /// Adam (0.9, 0.999, eps 1e-8).
    Adam,
    /// AdamW: Adam with decoupled weight decay 0.01.
    Adamw,
}

const MOMENTUM: f64 = 0.9;

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 5] = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Nesterov,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Nesterov => "nesterov",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
        }
    }

    fn adam_hyper(self, lr: f64) -> AdamHyper {
        AdamHyper {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: if self == OptimizerKind::Adamw {
                0.01
            } else {
                0.0
            },
        }
    }

    fn state_tensors(self) -> usize {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum | OptimizerKind::Nesterov => 1,
            OptimizerKind::Adam | OptimizerKind::Adamw => 2,
        }
    }
}

/// An optimiser's state for a fixed list of (parameter, gradient) pairs.
pub struct OptimizerState {
    kind: OptimizerKind,
    pairs: Vec<(Tensor, Tensor)>,
    /// Per pair: velocity, or Adam's (m, v); zero-initialised.
    state: Vec<Vec<Tensor>>,
}

impl OptimizerState {
    pub fn new(
        engine: &mut dyn Engine,
        kind: OptimizerKind,
        pairs: Vec<(Tensor, Tensor)>,
    ) -> Result<Self, EngineError> {
        let mut state = Vec::with_capacity(pairs.len());
        for (i, &(param, _)) in pairs.iter().enumerate() {
            let mut tensors = Vec::new();
            for s in 0..kind.state_tensors() {
                let zeros = vec![0.0; param.len()];
                let label = format!("optimizer.{}.{i}.{s}", kind.name());
                tensors.push(engine.tensor_from(&label, param.rows(), param.cols(), &zeros)?);
            }
            state.push(tensors);
        }
        Ok(Self { kind, pairs, state })
    }

    /// Records one update of every parameter at learning rate `lr`; `step` counts from 1.
    pub fn record_step(&self, rec: &mut Recording, lr: f64, step: u32) -> Result<(), EngineError> {
        for (&(param, grad), state) in self.pairs.iter().zip(&self.state) {
            match self.kind {
                OptimizerKind::Sgd => {
                    rec.axpy(-lr, grad, param)?;
                }
                OptimizerKind::Momentum | OptimizerKind::Nesterov => {
                    let nesterov = self.kind == OptimizerKind::Nesterov;
                    rec.momentum(param, grad, state[0], lr, MOMENTUM, nesterov)?;
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    rec.adam(
                        param,
                        grad,
                        (state[0], state[1]),
                        self.kind.adam_hyper(lr),
                        step,
                    )?;
                }
            }
        }
        Ok(())
    }

    pub fn free(&self, engine: &mut dyn Engine) {
        self.state.iter().flatten().for_each(|&t| engine.free(t));
    }
}
