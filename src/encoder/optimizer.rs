//! The optimisers that fine-tune the encoder: the first-order ones (SGD, momentum, Nesterov,
//! Adam, AdamW), with the per-tensor update the MLP's optimiser state records; Muon (each
//! matrix's momentum orthogonalised by Newton-Schulz, AdamW for vectors: biases and layer-norm
//! parameters), with the MLP's per-matrix update; and AdaHessian, whose Hutchinson diagonal
//! `z * (H z)` comes from the forward-mode transform of the step's gradient recording
//! (forward-over-reverse, as the MLP's Hessian-vector products). The state of each trained
//! tensor is made on first use and kept across steps.

use crate::engine::{
    Allocation, Engine, EngineError, GradientRecording, Recording, TangentRecording, Tensor,
    tangent_recording,
};
use crate::training::{
    AdaHessianSettings, AdaHessianTensors, FirstOrderUpdate, HessianAverage, MuonSettings,
    MuonTensors, OptimizerHyper, OptimizerKind,
};
use std::collections::HashMap;

/// An optimiser over the encoder's trained tensors, and its state.
pub struct EncoderOptimizer {
    pub kind: OptimizerKind,
    /// The learning rate of the next step (a schedule may change it between steps).
    pub lr: f64,
    pub hyper: OptimizerHyper,
    pub adahessian: AdaHessianSettings,
    pub muon: MuonSettings,
    /// The Rademacher probes' seed (AdaHessian).
    seed: u64,
    step: u32,
    state: HashMap<u32, TensorState>,
    /// Muon's two 1x1 scalars (made on first use).
    muon_scalars: Option<(Tensor, Tensor)>,
    owner: Allocation,
}

#[derive(Clone, Copy)]
enum TensorState {
    /// A first-order optimiser's state (or Muon's AdamW on a vector).
    FirstOrder(FirstOrderUpdate, [Option<Tensor>; 2]),
    Muon(MuonTensors),
    AdaHessian(AdaHessianTensors),
}

/// A step's recording and what must outlive it (the probes and their tangents).
pub struct RecordedUpdate {
    pub recording: Recording,
    _tangent: Option<TangentRecording>,
    _probes: Allocation,
}

impl EncoderOptimizer {
    /// Refuses the optimisers not built for the encoder (Sophia, Newton-CG), by name.
    pub fn new(
        engine: &dyn Engine,
        kind: OptimizerKind,
        lr: f64,
        hyper: OptimizerHyper,
        seed: u64,
    ) -> Result<Self, EngineError> {
        if !Self::is_built(kind) {
            return Err(EngineError::Shape {
                op: "encoder_optimizer",
                message: format!(
                    "{} is not built for the encoder (first-order optimisers, muon and \
                     adahessian are)",
                    kind.name()
                ),
            });
        }
        Ok(Self {
            kind,
            lr,
            hyper,
            adahessian: AdaHessianSettings::default(),
            muon: MuonSettings::default(),
            seed,
            step: 0,
            state: HashMap::new(),
            muon_scalars: None,
            owner: Allocation::new(engine),
        })
    }

    /// Whether the encoder's optimiser takes `kind`: every first-order one, Muon, AdaHessian.
    pub fn is_built(kind: OptimizerKind) -> bool {
        !kind.is_second_order() || matches!(kind, OptimizerKind::Muon | OptimizerKind::Adahessian)
    }

    /// The steps recorded so far.
    pub fn steps(&self) -> u32 {
        self.step
    }

    /// Turns the gradient recording of a step into the whole step: the gradient's ops (for
    /// AdaHessian, with their tangents along fresh Rademacher probes) and then the update of
    /// every tensor of `trained` that has a gradient, at rate `self.lr`.
    pub fn record_update(
        &mut self,
        engine: &mut dyn Engine,
        gradient: &mut GradientRecording,
        trained: &[Tensor],
    ) -> Result<RecordedUpdate, EngineError> {
        self.step += 1;
        let (step, lr) = (self.step, self.lr);
        let pairs: Vec<(Tensor, Tensor)> = (trained.iter())
            .filter_map(|&param| Some((param, gradient.gradient_of(param)?)))
            .collect();
        let mut probes = Allocation::new(engine);
        if self.kind != OptimizerKind::Adahessian {
            for &(param, grad) in &pairs {
                let rec = &mut gradient.recording;
                match self.state_of(engine, param)? {
                    TensorState::FirstOrder(update, state) => {
                        let state: Vec<Tensor> = state.into_iter().flatten().collect();
                        FirstOrderUpdate { lr, step, ..update }.record(rec, param, grad, &state)?;
                    }
                    TensorState::Muon(state) => {
                        let scalars = self.muon_scalars.expect("made with Muon's state");
                        state.record_update(rec, param, grad, &self.muon, lr, scalars)?;
                    }
                    TensorState::AdaHessian(_) => unreachable!("AdaHessian records below"),
                }
            }
            return Ok(RecordedUpdate {
                recording: std::mem::take(&mut gradient.recording),
                _tangent: None,
                _probes: probes,
            });
        }
        let mut recording = Recording::new();
        let mut seeds = Vec::with_capacity(pairs.len());
        for (i, &(param, _)) in pairs.iter().enumerate() {
            let (rows, cols) = param.shape();
            let z = probes.alloc(engine, "adahessian.z", rows, cols)?;
            recording.rademacher(z, self.seed, (u64::from(step) << 32) | i as u64);
            seeds.push((param, z));
        }
        let tangent = tangent_recording(engine, &gradient.recording, &seeds)?;
        recording.extend(&tangent.recording);
        let hyper = self.adahessian.hyper(lr);
        for (&(param, grad), &(_, z)) in pairs.iter().zip(&seeds) {
            let hz = match tangent.tangent_of(grad) {
                Some(hz) => hz,
                // No path from the parameters to this gradient: H z is zero there.
                None => {
                    let (rows, cols) = grad.shape();
                    let zero = probes.alloc(engine, "adahessian.hz", rows, cols)?;
                    recording.fill(0.0, zero);
                    zero
                }
            };
            let TensorState::AdaHessian(state) = self.state_of(engine, param)? else {
                unreachable!("AdaHessian's state")
            };
            state.record_update(&mut recording, param, grad, (z, hz), hyper, step)?;
        }
        Ok(RecordedUpdate {
            recording,
            _tangent: Some(tangent),
            _probes: probes,
        })
    }

    /// The state of `param`, zeroed on first use.
    fn state_of(
        &mut self,
        engine: &mut dyn Engine,
        param: Tensor,
    ) -> Result<TensorState, EngineError> {
        if let Some(&state) = self.state.get(&param.id()) {
            return Ok(state);
        }
        let (rows, cols) = param.shape();
        let label = format!("{}.{}", self.kind.name(), param.id());
        let state = match self.kind {
            OptimizerKind::Adahessian => {
                // Rows averaged for matrices only (a bias, 1 x n, keeps each entry its own).
                let average = self.adahessian.average == HessianAverage::Rows && rows > 1;
                TensorState::AdaHessian(AdaHessianTensors::allocate(
                    engine,
                    &mut self.owner,
                    &label,
                    rows,
                    cols,
                    average,
                )?)
            }
            OptimizerKind::Muon if rows > 1 => {
                if self.muon_scalars.is_none() {
                    let scalars = MuonTensors::allocate_scalars(engine, &mut self.owner)?;
                    self.muon_scalars = Some(scalars);
                }
                let state = MuonTensors::allocate(engine, &mut self.owner, &label, rows, cols)?;
                TensorState::Muon(state)
            }
            kind => {
                // Muon's vectors train with AdamW, as the reference's MuonWithAuxAdam does.
                let kind = if kind == OptimizerKind::Muon {
                    OptimizerKind::Adamw
                } else {
                    kind
                };
                let update = FirstOrderUpdate {
                    kind,
                    hyper: self.hyper,
                    lr: 0.0,
                    step: 0,
                };
                let mut tensors = [None; 2];
                for slot in tensors
                    .iter_mut()
                    .take(FirstOrderUpdate::state_tensors(kind))
                {
                    let zeros = vec![0.0; rows * cols];
                    *slot = Some(self.owner.tensor_from(engine, &label, rows, cols, &zeros)?);
                }
                TensorState::FirstOrder(update, tensors)
            }
        };
        self.state.insert(param.id(), state);
        Ok(state)
    }
}
