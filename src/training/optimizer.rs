//! First-order optimisers, recorded as engine ops, with parameter groups: each group (by the
//! parameters' role: weights, biases, compensation, ...) can have its own optimiser, learning-rate
//! scale and hyper-parameters. Hyper-parameters default to the reference implementations'
//! (PyTorch's `torch.optim`): momentum 0.9 (the suite's choice; PyTorch has no default), Adam
//! betas (0.9, 0.999), eps 1e-8, AdamW weight decay 0.01.

use crate::engine::{AdamHyper, Allocation, Engine, EngineError, Recording, Tensor};
use crate::model::{ParamGroup, ParamKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain gradient descent: `p -= lr g`.
    Sgd,
    /// Heavy-ball momentum.
    Momentum,
    /// Nesterov momentum.
    Nesterov,
    /// Adam.
    Adam,
    /// AdamW: Adam with decoupled weight decay.
    Adamw,
    /// Muon: momentum orthogonalised by Newton-Schulz on matrices, AdamW on biases
    /// (`second_order.rs`).
    Muon,
    /// AdaHessian: Adam-like with a Hutchinson estimate of the Hessian's diagonal.
    Adahessian,
    /// Sophia: clipped steps preconditioned by a Hessian-diagonal estimate.
    Sophia,
    /// Damped Newton-CG (Hessian-free) with Levenberg-Marquardt damping.
    #[serde(rename = "newton-cg")]
    NewtonCg,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 9] = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Nesterov,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
        OptimizerKind::Muon,
        OptimizerKind::Adahessian,
        OptimizerKind::Sophia,
        OptimizerKind::NewtonCg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Nesterov => "nesterov",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Muon => "muon",
            OptimizerKind::Adahessian => "adahessian",
            OptimizerKind::Sophia => "sophia",
            OptimizerKind::NewtonCg => "newton-cg",
        }
    }

    /// How the claims group it: first-order, or aware of curvature (of the loss, or for Muon
    /// of each matrix's geometry). Every optimiser has one, so none can drop out of a claim.
    pub fn family(self) -> OptimizerFamily {
        match self {
            OptimizerKind::Sgd
            | OptimizerKind::Momentum
            | OptimizerKind::Nesterov
            | OptimizerKind::Adam
            | OptimizerKind::Adamw => OptimizerFamily::FirstOrder,
            OptimizerKind::Muon
            | OptimizerKind::Adahessian
            | OptimizerKind::Sophia
            | OptimizerKind::NewtonCg => OptimizerFamily::CurvatureAware,
        }
    }

    /// Named by the paper (PAPER.md 4); Newton-CG is the suite's own addition.
    pub fn in_paper(self) -> bool {
        self != OptimizerKind::NewtonCg
    }

    /// The names of the optimisers `keep` keeps, in `ALL`'s order.
    pub fn names_where(keep: impl Fn(OptimizerKind) -> bool) -> Vec<&'static str> {
        (Self::ALL.into_iter())
            .filter(|&o| keep(o))
            .map(Self::name)
            .collect()
    }

    /// Run by `SecondOrderState` (`second_order.rs`) rather than `OptimizerState`: Muon (per
    /// matrix, no curvature products), AdaHessian, Sophia and Newton-CG. They update the whole
    /// model as one, so parameter groups are refused with them.
    pub fn is_second_order(self) -> bool {
        match self {
            OptimizerKind::Sgd
            | OptimizerKind::Momentum
            | OptimizerKind::Nesterov
            | OptimizerKind::Adam
            | OptimizerKind::Adamw => false,
            OptimizerKind::Muon
            | OptimizerKind::Adahessian
            | OptimizerKind::Sophia
            | OptimizerKind::NewtonCg => true,
        }
    }

    fn state_tensors(self) -> usize {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum | OptimizerKind::Nesterov => 1,
            OptimizerKind::Adam | OptimizerKind::Adamw => 2,
            // Their state lives in `SecondOrderState`.
            OptimizerKind::Muon
            | OptimizerKind::Adahessian
            | OptimizerKind::Sophia
            | OptimizerKind::NewtonCg => 0,
        }
    }
}

/// The classes of optimisers the claims compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerFamily {
    FirstOrder,
    CurvatureAware,
}

/// Hyper-parameters; a field left out takes the reference implementation's value
/// ([`Default`], the one place that states them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerHyper {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Momentum and Nesterov's coefficient.
    pub momentum: f64,
    /// Decoupled weight decay; absent: 0.01 for AdamW, 0 for the others.
    pub weight_decay: Option<f64>,
}

impl Default for OptimizerHyper {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            momentum: 0.9,
            weight_decay: None,
        }
    }
}

impl OptimizerHyper {
    /// The weight decay `kind` applies from these hyper-parameters (Muon's: that of the AdamW
    /// that trains its biases; the other second-order optimisers' decay is in
    /// `[attack.second_order]`).
    pub fn weight_decay_for(&self, kind: OptimizerKind) -> f64 {
        match (self.weight_decay, kind) {
            (Some(wd), OptimizerKind::Adamw | OptimizerKind::Muon) => wd,
            (None, OptimizerKind::Adamw | OptimizerKind::Muon) => 0.01,
            _ => 0.0,
        }
    }

    fn adam(&self, kind: OptimizerKind, lr: f64) -> AdamHyper {
        AdamHyper {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay_for(kind),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let in_unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be in [0, 1), got {v}"))
            }
        };
        in_unit("beta1", self.beta1)?;
        in_unit("beta2", self.beta2)?;
        in_unit("momentum", self.momentum)?;
        if !(self.eps > 0.0 && self.eps <= 1.0) {
            return Err(format!("eps must be in (0, 1], got {}", self.eps));
        }
        match self.weight_decay {
            Some(wd) if !((0.0..=MAX_WEIGHT_DECAY).contains(&wd)) => Err(format!(
                "weight_decay must be in [0, {MAX_WEIGHT_DECAY:e}], got {wd}"
            )),
            _ => Ok(()),
        }
    }
}

/// The largest weight decay accepted: decoupled decay multiplies the weights by 1 - lr * wd each
/// step, which flips and explodes them long before this.
pub const MAX_WEIGHT_DECAY: f64 = 1e3;

/// How one parameter group trains, where it differs from the run's optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    pub optimizer: OptimizerKind,
    /// The group's learning rate is the run's times this.
    #[serde(default = "one")]
    pub lr_scale: f64,
    /// The group's hyper-parameters; the run's when absent.
    #[serde(default)]
    pub hyper: Option<OptimizerHyper>,
}

fn one() -> f64 {
    1.0
}

/// The run's optimiser and hyper-parameters, and the groups that differ from them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerConfig {
    pub kind: Option<OptimizerKind>,
    pub hyper: OptimizerHyper,
    pub groups: BTreeMap<ParamGroup, GroupSettings>,
}

impl OptimizerConfig {
    pub fn plain(kind: OptimizerKind) -> Self {
        Self {
            kind: Some(kind),
            ..Self::default()
        }
    }

    /// (optimiser, hyper-parameters, lr scale) for a group.
    fn resolve(&self, group: ParamGroup) -> (OptimizerKind, OptimizerHyper, f64) {
        match self.groups.get(&group) {
            Some(g) => (g.optimizer, g.hyper.unwrap_or(self.hyper), g.lr_scale),
            None => (self.kind.unwrap_or(OptimizerKind::Sgd), self.hyper, 1.0),
        }
    }
}

/// One trained tensor: its gradient, the optimiser that updates it, and that optimiser's state.
struct Slot {
    param: Tensor,
    grad: Tensor,
    kind: OptimizerKind,
    hyper: OptimizerHyper,
    lr_scale: f64,
    /// Velocity, or Adam's (m, v); zero-initialised.
    state: Vec<Tensor>,
}

/// An optimiser's state for a fixed list of (key, parameter, gradient); its tensors are freed
/// when it is dropped.
pub struct OptimizerState {
    slots: Vec<Slot>,
    _state: Allocation,
}

impl OptimizerState {
    /// One optimiser with default hyper-parameters for every pair.
    pub fn new(
        engine: &mut dyn Engine,
        kind: OptimizerKind,
        pairs: Vec<(ParamKey, Tensor, Tensor)>,
    ) -> Result<Self, EngineError> {
        Self::with_config(engine, &OptimizerConfig::plain(kind), pairs)
    }

    pub fn with_config(
        engine: &mut dyn Engine,
        config: &OptimizerConfig,
        pairs: Vec<(ParamKey, Tensor, Tensor)>,
    ) -> Result<Self, EngineError> {
        let mut owner = Allocation::new(engine);
        let mut slots = Vec::new();
        for (i, (key, param, grad)) in pairs.into_iter().enumerate() {
            let (kind, hyper, lr_scale) = config.resolve(key.group());
            if kind.is_second_order() {
                return Err(EngineError::Shape {
                    op: "optimizer",
                    message: format!(
                        "{} ({key}) is a second-order optimiser: SecondOrderState (the training \
                         session) runs it, for the whole model",
                        kind.name()
                    ),
                });
            }
            let state = (0..kind.state_tensors())
                .map(|s| {
                    let label = format!("optimizer.{}.{i}.{s}", kind.name());
                    let zeros = vec![0.0; param.len()];
                    owner.tensor_from(engine, &label, param.rows(), param.cols(), &zeros)
                })
                .collect::<Result<_, _>>()?;
            slots.push(Slot {
                param,
                grad,
                kind,
                hyper,
                lr_scale,
                state,
            });
        }
        Ok(Self {
            slots,
            _state: owner,
        })
    }

    /// Records the state's return to zero (a fresh optimiser, as for each of TAR's simulated
    /// attacks); the next `record_step` counts from step 1 again.
    pub fn record_reset(&self, rec: &mut Recording) {
        for tensor in self.slots.iter().flat_map(|slot| &slot.state) {
            rec.fill(0.0, *tensor);
        }
    }

    /// Records one update of every parameter at learning rate `lr` (times each group's
    /// scale); `step` counts from 1.
    pub fn record_step(&self, rec: &mut Recording, lr: f64, step: u32) -> Result<(), EngineError> {
        for slot in &self.slots {
            let update = FirstOrderUpdate {
                kind: slot.kind,
                hyper: slot.hyper,
                lr: lr * slot.lr_scale,
                step,
            };
            update.record(rec, slot.param, slot.grad, &slot.state)?;
        }
        Ok(())
    }
}

/// One first-order update of one tensor: the optimiser, its hyper-parameters, the rate and the
/// step (from 1). Shared by the MLP's optimiser state and the encoder's.
#[derive(Clone, Copy, Debug)]
pub struct FirstOrderUpdate {
    pub kind: OptimizerKind,
    pub hyper: OptimizerHyper,
    pub lr: f64,
    pub step: u32,
}

impl FirstOrderUpdate {
    /// How many state tensors of the parameter's shape the optimiser keeps (velocity, or
    /// Adam's m and v); zero-initialised by the caller.
    pub fn state_tensors(kind: OptimizerKind) -> usize {
        kind.state_tensors()
    }

    /// Records `param`'s update from `grad` with `state` (as many tensors as
    /// `state_tensors`). Refuses the second-order optimisers, which update a model as one.
    pub fn record(
        &self,
        rec: &mut Recording,
        param: Tensor,
        grad: Tensor,
        state: &[Tensor],
    ) -> Result<(), EngineError> {
        let lr = self.lr;
        match self.kind {
            OptimizerKind::Sgd => {
                rec.axpy(-lr, grad, param)?;
            }
            OptimizerKind::Momentum | OptimizerKind::Nesterov => {
                let nesterov = self.kind == OptimizerKind::Nesterov;
                rec.momentum(param, grad, state[0], lr, self.hyper.momentum, nesterov)?;
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let hyper = self.hyper.adam(self.kind, lr);
                rec.adam(param, grad, (state[0], state[1]), hyper, self.step)?;
            }
            OptimizerKind::Muon
            | OptimizerKind::Adahessian
            | OptimizerKind::Sophia
            | OptimizerKind::NewtonCg => {
                return Err(EngineError::Shape {
                    op: "optimizer",
                    message: format!("{} is not a first-order optimiser", self.kind.name()),
                });
            }
        }
        Ok(())
    }
}
