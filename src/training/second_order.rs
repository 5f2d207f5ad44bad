//! Second-order and curvature-aware optimisers: Muon, AdaHessian, Sophia and damped Newton-CG.
//! Each step is recorded as engine ops into the caller's recording (the training session's one
//! submission per `eval_every` steps): gradients, Hessian-vector products, Newton-Schulz and
//! conjugate-gradient iterations, damping, all of it with device scalars (`DeviceScalar` over
//! 1x1 reductions), so a step never reads anything back.
//!
//! Hessian-vector products come from one [`HessianVectorProduct`] prepared on a base workspace:
//! for each step the batch's inputs and targets are copied into that workspace, the probe is
//! written into the product's v tensors, and the product's recording is appended (forward,
//! loss, backward and their tangents: the gradient and H v together). Running it several times
//! in a step (Newton-CG) recomputes the forward pass each time.
//!
//! References (hyper-parameter defaults are theirs, except AdaHessian's row averaging of
//! matrices, asked for by the project; `average = "none"` is the reference's; see
//! [`SecondOrderHyper`]):
//! - Muon: K. Jordan et al. 2024, github.com/KellerJordan/Muon (`muon.py`): momentum as a
//!   moving average (`m = beta m + (1 - beta) g`), Nesterov `u = (1 - beta) g + beta m`, five
//!   quintic Newton-Schulz iterations with (a, b, c) = (3.4445, -4.7750, 2.0315) on
//!   `u / (|u|_F + eps)` (transposed when taller than wide), scaled by `max(1, rows/cols)^0.5`.
//!   Non-matrix parameters (biases) are trained by AdamW, as its `MuonWithAuxAdam` does.
//! - AdaHessian: Yao et al. 2021, github.com/amirgholami/adahessian: the Hutchinson diagonal
//!   `D = z * (H z)` with a fresh Rademacher z every step, then the `adahessian` kernel.
//! - Sophia (SophiaG): Liu et al. 2023, github.com/Liuhong99/Sophia: the Gauss-Newton-Bartlett
//!   estimate (labels sampled from the model's own softmax, `batch * g_hat^2`) or Hutchinson's
//!   `z * (H z)`, refreshed every k steps into `h = ema(beta2)`, then the clipped `sophia` kernel.
//! - Newton-CG: Martens 2010 ("Deep learning via Hessian-free optimization"): CG on
//!   `(H + lambda I) d = -g` from d = 0, Levenberg-Marquardt damping from the reduction ratio.

use super::{OptimizerHyper, OptimizerKind};
use crate::engine::{
    Activation, AdaHessianHyper, AdamHyper, Allocation, BinaryOp, DampingHyper, DeviceScalar,
    Engine, EngineError, Owned, Recording, ReduceAxis, Reduction, SophiaHyper, Tensor,
};
use crate::model::{
    DeviceModel, Gradients, HessianVectorProduct, Loss, ParamKey, Trainable, Workspace, graph,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Hyper-parameters

/// `[attack.second_order]` (or `[pretrain.second_order]`): the second-order optimisers'
/// hyper-parameters, one table per optimiser, each field defaulting to its reference value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecondOrderHyper {
    pub muon: MuonSettings,
    pub adahessian: AdaHessianSettings,
    pub sophia: SophiaSettings,
    pub newton_cg: NewtonCgSettings,
}

/// Muon's hyper-parameters; a field left out takes the reference `Muon`'s value ([`Default`]).
/// Biases train with AdamW on `[attack.hyper]`'s betas, eps and weight decay (0.01 when unset),
/// at the run's rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuonSettings {
    pub momentum: f64,
    pub nesterov: bool,
    /// Newton-Schulz iterations.
    pub ns_steps: u32,
    /// Decoupled weight decay of the matrices: `p *= 1 - lr weight_decay` before the update.
    pub weight_decay: f64,
}

impl Default for MuonSettings {
    fn default() -> Self {
        Self {
            momentum: 0.95,
            nesterov: true,
            ns_steps: 5,
            weight_decay: 0.0,
        }
    }
}

/// Over what AdaHessian averages |D| within a matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HessianAverage {
    /// Each entry its own (block size 1: the reference's choice for 2-D tensors).
    None,
    /// Each output row's mean of |D| (the "spatial averaging" over a row of a weight matrix;
    /// biases are never averaged).
    #[default]
    Rows,
}

/// AdaHessian's hyper-parameters. A field left out takes the reference's value, from the
/// kernel's [`AdaHessianHyper::default`]: the one place that states it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaHessianSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub hessian_power: f64,
    pub average: HessianAverage,
}

impl AdaHessianSettings {
    /// The kernel's hyper-parameters at rate `lr`.
    pub fn hyper(&self, lr: f64) -> AdaHessianHyper {
        AdaHessianHyper {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            hessian_power: self.hessian_power,
        }
    }
}

impl Default for AdaHessianSettings {
    fn default() -> Self {
        let reference = AdaHessianHyper::default();
        Self {
            beta1: reference.beta1,
            beta2: reference.beta2,
            eps: reference.eps,
            weight_decay: reference.weight_decay,
            hessian_power: reference.hessian_power,
            average: HessianAverage::default(),
        }
    }
}

/// Which Hessian-diagonal estimate Sophia keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SophiaEstimator {
    /// Gauss-Newton-Bartlett (SophiaG): `batch * g_hat^2`, g_hat the gradient of the loss
    /// against labels sampled from the model's own softmax. Cross-entropy only.
    #[default]
    Gnb,
    /// Hutchinson (Sophia-H): `z * (H z)`, negative entries counted as 0 in the update.
    Hutchinson,
}

/// Sophia's hyper-parameters. A field left out takes the reference SophiaG's value, from the
/// kernel's [`SophiaHyper::default`]: the one place that states it; the estimate is refreshed
/// every `update_every` steps, 10 as in the reference's training script.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SophiaSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub rho: f64,
    pub weight_decay: f64,
    pub update_every: u32,
    pub estimator: SophiaEstimator,
}

impl Default for SophiaSettings {
    fn default() -> Self {
        let reference = SophiaHyper::default();
        Self {
            beta1: reference.beta1,
            beta2: reference.beta2,
            rho: reference.rho,
            weight_decay: reference.weight_decay,
            update_every: 10,
            estimator: SophiaEstimator::default(),
        }
    }
}

/// Damped Newton-CG's settings; a field left out takes its [`Default`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewtonCgSettings {
    /// CG iterations per step (one Hessian-vector product each).
    pub cg_iterations: u32,
    /// The Levenberg-Marquardt damping lambda at the first step (then adapted every step by the
    /// reduction ratio, within [1e-8, 1e8]); 0 is the undamped first step. The default, 45, is
    /// Martens' (`initlambda = 45.0` in his released Hessian-free code, whose curvature is per
    /// training case, as the mean loss's Hessian here): a first step about `g / 45`, becoming
    /// Newton's as lambda shrinks by 2/3 per step the quadratic model predicts well.
    pub initial_damping: f64,
    /// Undo, on the device, a step that increased the batch's loss (a trust-region rejection).
    pub reject_uphill: bool,
}

impl Default for NewtonCgSettings {
    fn default() -> Self {
        Self {
            cg_iterations: 10,
            initial_damping: 45.0,
            reject_uphill: true,
        }
    }
}

impl SecondOrderHyper {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks every field, naming a bad one `muon.momentum` (the caller prefixes the table).
    pub fn validate(&self) -> Result<(), String> {
        let in_unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be in [0, 1), got {v}"))
            }
        };
        let non_negative = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number >= 0, got {v}"))
            }
        };
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a positive number, got {v}"))
            }
        };
        let m = &self.muon;
        in_unit("muon.momentum", m.momentum)?;
        if !(1..=100).contains(&m.ns_steps) {
            return Err(format!(
                "muon.ns_steps must be in 1..=100, got {}",
                m.ns_steps
            ));
        }
        non_negative("muon.weight_decay", m.weight_decay)?;
        let a = &self.adahessian;
        in_unit("adahessian.beta1", a.beta1)?;
        in_unit("adahessian.beta2", a.beta2)?;
        positive("adahessian.eps", a.eps)?;
        non_negative("adahessian.weight_decay", a.weight_decay)?;
        if !(0.0..=1.0).contains(&a.hessian_power) {
            return Err(format!(
                "adahessian.hessian_power must be in [0, 1], got {}",
                a.hessian_power
            ));
        }
        let s = &self.sophia;
        in_unit("sophia.beta1", s.beta1)?;
        in_unit("sophia.beta2", s.beta2)?;
        positive("sophia.rho", s.rho)?;
        non_negative("sophia.weight_decay", s.weight_decay)?;
        if s.update_every == 0 {
            return Err("sophia.update_every must be at least 1, got 0".to_string());
        }
        let n = &self.newton_cg;
        if !(1..=1000).contains(&n.cg_iterations) {
            return Err(format!(
                "newton_cg.cg_iterations must be in 1..=1000, got {}",
                n.cg_iterations
            ));
        }
        non_negative("newton_cg.initial_damping", n.initial_damping)?;
        Ok(())
    }

    /// The settings `kind` uses, as JSON (for records); None for first-order optimisers. Muon's
    /// include the AdamW that trains its biases.
    pub fn describe(&self, kind: OptimizerKind, hyper: &OptimizerHyper) -> Option<String> {
        let value = match kind {
            OptimizerKind::Muon => {
                let mut value = serde_json::to_value(self.muon).ok()?;
                let adamw = AdamWOfMuon::new(hyper);
                value["adamw"] = serde_json::to_value(adamw).ok()?;
                value
            }
            OptimizerKind::Adahessian => serde_json::to_value(self.adahessian).ok()?,
            OptimizerKind::Sophia => serde_json::to_value(self.sophia).ok()?,
            OptimizerKind::NewtonCg => serde_json::to_value(self.newton_cg).ok()?,
            OptimizerKind::Sgd
            | OptimizerKind::Momentum
            | OptimizerKind::Nesterov
            | OptimizerKind::Adam
            | OptimizerKind::Adamw => return None,
        };
        Some(value.to_string())
    }
}

/// The AdamW that trains Muon's non-matrix parameters, for records.
#[derive(Serialize)]
struct AdamWOfMuon {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamWOfMuon {
    fn new(hyper: &OptimizerHyper) -> Self {
        Self {
            beta1: hyper.beta1,
            beta2: hyper.beta2,
            eps: hyper.eps,
            weight_decay: hyper.weight_decay_for(OptimizerKind::Adamw),
        }
    }
}

/// What a second-order optimiser's state is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct SecondOrderConfig {
    /// Muon, AdaHessian, Sophia or Newton-CG.
    pub kind: OptimizerKind,
    /// `[attack.hyper]`: the AdamW of Muon's biases.
    pub hyper: OptimizerHyper,
    pub second_order: SecondOrderHyper,
    pub trainable: Trainable,
    /// The seed of the Rademacher probes and the sampled labels (with the step as the stream).
    pub seed: u64,
}

impl SecondOrderConfig {
    /// `kind` with every hyper-parameter at its default, every parameter trained.
    pub fn new(kind: OptimizerKind) -> Self {
        Self {
            kind,
            hyper: OptimizerHyper::default(),
            second_order: SecondOrderHyper::default(),
            trainable: Trainable::default(),
            seed: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State

/// Newton-Schulz's quintic coefficients (Muon's reference).
pub const NEWTON_SCHULZ: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// `|G|_F + 1e-7` in the reference; here `sqrt(|G|_F^2 + MUON_EPS_SQ)`, which guards a zero
/// update the same way (and differs from it by under 1e-7 / |G|_F relatively).
const MUON_EPS_SQ: f64 = 1e-14;

/// Added to CG's `r.r` and `p.(A p)` accumulators, so a converged (zero) residual gives steps
/// of 0 rather than 0/0. Far below any curvature or residual that matters (and above f32's
/// smallest normal number).
const CG_PAD: f64 = 1e-30;

/// Sophia's denominator guard (the reference's constant).
const SOPHIA_EPS: f64 = 1e-15;

/// Per-parameter state, by optimiser.
enum SlotState {
    /// Muon on a matrix: momentum, the update, the Newton-Schulz iterates (r' x c' with r' <= c':
    /// transposed when the matrix is taller than wide), X X^T and `b A + c A A` (r' x r').
    Muon(MuonTensors),
    /// AdamW (Muon's biases): (m, v).
    Adam {
        m: Tensor,
        v: Tensor,
    },
    AdaHessian(AdaHessianTensors),
    /// Sophia: momentum, the averaged estimate h, max(h, 0), the step's estimate, and (GNB) the
    /// gradient against sampled labels.
    Sophia {
        m: Tensor,
        h: Tensor,
        h_positive: Tensor,
        estimate: Tensor,
        sampled_grad: Option<Tensor>,
    },
    /// Newton-CG: the solution d, the residual r, a scratch tensor.
    NewtonCg {
        d: Tensor,
        r: Tensor,
        scratch: Tensor,
    },
}

/// Muon's state for one matrix: momentum, the update, the Newton-Schulz iterates (r' x c' with
/// r' <= c': transposed when the matrix is taller than wide), X X^T and `b A + c A A`
/// (r' x r'). Shared by the MLP's second-order state and the encoder's optimiser.
#[derive(Clone, Copy, Debug)]
pub struct MuonTensors {
    momentum: Tensor,
    update: Tensor,
    iterates: [Tensor; 2],
    gram: Tensor,
    poly: Tensor,
    transposed: bool,
    /// `max(1, rows/cols)^0.5`.
    shape_factor: f64,
}

impl MuonTensors {
    /// Zeroed state for a `rows x cols` matrix.
    pub fn allocate(
        engine: &mut dyn Engine,
        owner: &mut Allocation,
        label: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Self, EngineError> {
        let mut zeros = |what: &str, r: usize, c: usize| {
            owner.tensor_from(engine, &format!("{label}.{what}"), r, c, &vec![0.0; r * c])
        };
        let transposed = rows > cols;
        let (r, c) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        Ok(Self {
            momentum: zeros("momentum", rows, cols)?,
            update: zeros("update", rows, cols)?,
            iterates: [zeros("x0", r, c)?, zeros("x1", r, c)?],
            gram: zeros("gram", r, r)?,
            poly: zeros("poly", r, r)?,
            transposed,
            shape_factor: (rows as f64 / cols as f64).max(1.0).sqrt(),
        })
    }

    /// The 1x1 tensors a step needs beside the state: a scratch for |U|_F^2, and one holding
    /// `MUON_EPS_SQ` (written once; `allocate_scalars` makes both).
    pub fn allocate_scalars(
        engine: &mut dyn Engine,
        owner: &mut Allocation,
    ) -> Result<(Tensor, Tensor), EngineError> {
        Ok((
            owner.tensor_from(engine, "muon.sum_sq", 1, 1, &[0.0])?,
            owner.tensor_from(engine, "muon.eps", 1, 1, &[MUON_EPS_SQ])?,
        ))
    }

    /// Records Muon's update of `param` from `grad` at rate `lr`: decoupled weight decay,
    /// momentum (Nesterov where set), the Newton-Schulz orthogonalisation of `U / |U|_F`, and
    /// the step scaled by the shape factor. `(sum_sq, eps)` as `allocate_scalars` makes them.
    pub fn record_update(
        &self,
        rec: &mut Recording,
        param: Tensor,
        grad: Tensor,
        muon: &MuonSettings,
        lr: f64,
        (sum_sq, eps): (Tensor, Tensor),
    ) -> Result<(), EngineError> {
        let (a, b, c) = NEWTON_SCHULZ;
        let update = self.update;
        if muon.weight_decay != 0.0 {
            // p *= 1 - lr weight_decay (the update buffer as scratch: the update does not
            // depend on p, so decaying first changes nothing).
            rec.scale(-lr * muon.weight_decay, param, update)?;
            rec.axpy(1.0, update, param)?;
        }
        let beta = muon.momentum;
        rec.ema(beta, grad, self.momentum)?;
        if muon.nesterov {
            rec.scale(1.0 - beta, grad, update)?;
            rec.axpy(beta, self.momentum, update)?;
        } else {
            rec.scale(1.0, self.momentum, update)?;
        }
        // X = U / |U|_F, on U^T where U is taller than wide.
        let [mut x, mut next] = self.iterates;
        let source = if self.transposed {
            rec.transpose(update, next)?;
            next
        } else {
            update
        };
        rec.reduce(Reduction::SumOfSquares, ReduceAxis::Whole, source, sum_sq)?;
        rec.axpy(1.0, eps, sum_sq)?;
        rec.scale_device(DeviceScalar::inverse_sqrt(1.0, sum_sq), source, x)?;
        for _ in 0..muon.ns_steps {
            // A = X X^T; B = b A + c A A; X <- a X + B X.
            rec.matmul(x, x, self.gram, false, true)?;
            rec.matmul_scaled(self.gram, self.gram, self.poly, false, false, c, 0.0)?;
            rec.axpy(b, self.gram, self.poly)?;
            rec.matmul(self.poly, x, next, false, false)?;
            rec.axpy(a, x, next)?;
            std::mem::swap(&mut x, &mut next);
        }
        let orthogonal = if self.transposed {
            rec.transpose(x, update)?;
            update
        } else {
            x
        };
        rec.axpy(-lr * self.shape_factor, orthogonal, param)?;
        Ok(())
    }
}

/// AdaHessian's state for one tensor: (m, v), the estimate D, and for row averaging |D|, its
/// row sums and a row of ones (1 x cols) that broadcasts them back. Shared by the MLP's
/// second-order state and the encoder's optimiser.
#[derive(Clone, Copy, Debug)]
pub struct AdaHessianTensors {
    m: Tensor,
    v: Tensor,
    diag: Tensor,
    rows: Option<(Tensor, Tensor, Tensor)>,
}

impl AdaHessianTensors {
    /// Zeroed state for a `rows x cols` parameter, averaged per row where `average_rows`.
    pub fn allocate(
        engine: &mut dyn Engine,
        owner: &mut Allocation,
        label: &str,
        rows: usize,
        cols: usize,
        average_rows: bool,
    ) -> Result<Self, EngineError> {
        let mut zeros = |what: &str, r: usize, c: usize| {
            owner.tensor_from(engine, &format!("{label}.{what}"), r, c, &vec![0.0; r * c])
        };
        let (m, v, diag) = (
            zeros("m", rows, cols)?,
            zeros("v", rows, cols)?,
            zeros("diag", rows, cols)?,
        );
        let rows = if average_rows {
            let abs = zeros("abs", rows, cols)?;
            let row_sums = zeros("row_sums", rows, 1)?;
            let ones =
                owner.tensor_from(engine, &format!("{label}.ones"), 1, cols, &vec![1.0; cols])?;
            Some((abs, row_sums, ones))
        } else {
            None
        };
        Ok(Self { m, v, diag, rows })
    }

    /// Records D = z * (H z) from the probe `(z, H z)`, its row averaging where kept, and the
    /// AdaHessian update of `param`.
    pub fn record_update(
        &self,
        rec: &mut Recording,
        param: Tensor,
        grad: Tensor,
        (z, hz): (Tensor, Tensor),
        hyper: AdaHessianHyper,
        step: u32,
    ) -> Result<(), EngineError> {
        let diag = self.diag;
        rec.binary(BinaryOp::Mul, z, hz, diag)?;
        if let Some((abs, row_sums, ones)) = self.rows {
            // Each row's mean |D|, broadcast back over the row: (row sums) (1^T) / cols.
            rec.abs(diag, abs)?;
            rec.reduce(Reduction::Sum, ReduceAxis::PerRow, abs, row_sums)?;
            let cols = diag.cols() as f64;
            rec.matmul_scaled(row_sums, ones, diag, false, false, 1.0 / cols, 0.0)?;
        }
        rec.adahessian(param, grad, diag, (self.m, self.v), hyper, step)?;
        Ok(())
    }
}

struct Slot {
    key: ParamKey,
    param: Tensor,
    grad: Tensor,
    /// The product's (v, H v) for this parameter, where the optimiser uses one.
    probe: Option<(Tensor, Tensor)>,
    state: SlotState,
}

/// 1x1 tensors of a step's device scalars.
struct Scalars {
    /// Muon's `MUON_EPS_SQ` (a constant, written when allocated).
    muon_eps: Tensor,
    /// A reduction's result before it is accumulated.
    partial: Tensor,
    /// Newton-CG: the damping lambda (kept across steps), the loss sum before the step, the
    /// actual and predicted changes, the two `r.r`, `p.(A p)`, `g.d`, `d.(H d)`, the rejection
    /// factor and the sign scratch.
    lambda: Tensor,
    loss_before: Tensor,
    actual: Tensor,
    predicted: Tensor,
    rr: [Tensor; 2],
    curvature: Tensor,
    gd: Tensor,
    dhd: Tensor,
    undo: Tensor,
    sign: Tensor,
}

/// A second-order optimiser's state over the trainable parameters of one model, with the
/// Hessian-vector product it needs (prepared on the workspace given to [`new`](Self::new)); its
/// tensors are freed when it is dropped.
pub struct SecondOrderState {
    config: SecondOrderConfig,
    model: DeviceModel,
    /// The workspace the Hessian-vector product runs on; batches are copied into it.
    base: Workspace,
    loss: Loss,
    product: Option<HessianVectorProduct>,
    /// The gradients every pass writes: the product's where there is one.
    grads: Gradients,
    /// Sophia-GNB: the labels sampled from the model's softmax, and their gradients.
    sampled: Option<(Tensor, Gradients)>,
    slots: Vec<Slot>,
    scalars: Scalars,
    _grads: Option<Owned<Gradients>>,
    _sampled_grads: Option<Owned<Gradients>>,
    _state: Allocation,
}

/// The loss per unit of `ws.loss_sum`: `graph` leaves the batch's summed cross-entropy, or the
/// summed squares (twice the batch's half squared error), there.
fn loss_per_sum(loss: Loss, batch: usize) -> f64 {
    match loss {
        Loss::CrossEntropy => 1.0 / batch as f64,
        Loss::SquaredError => 0.5 / batch as f64,
    }
}

/// `lambda` as a device scalar: `coef * lambda[0]`.
fn scaled_by(coef: f64, tensor: Tensor) -> DeviceScalar {
    DeviceScalar {
        coef,
        num: Some(tensor),
        den: None,
        sqrt: false,
    }
}

impl SecondOrderState {
    /// Allocates the state of `config.kind` for the trainable parameters of `model`, and the
    /// Hessian-vector product of `loss` on `ws` where the optimiser needs one (AdaHessian,
    /// Sophia's Hutchinson estimate, Newton-CG).
    pub fn new(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        ws: &Workspace,
        loss: Loss,
        config: &SecondOrderConfig,
    ) -> Result<Self, EngineError> {
        let kind = config.kind;
        if !kind.is_second_order() {
            return Err(EngineError::Shape {
                op: "second_order",
                message: format!("{} is a first-order optimiser", kind.name()),
            });
        }
        let sophia = config.second_order.sophia;
        let needs_product = match kind {
            OptimizerKind::Adahessian | OptimizerKind::NewtonCg => true,
            OptimizerKind::Sophia => sophia.estimator == SophiaEstimator::Hutchinson,
            _ => false,
        };
        if kind == OptimizerKind::Sophia
            && sophia.estimator == SophiaEstimator::Gnb
            && loss != Loss::CrossEntropy
        {
            return Err(EngineError::Shape {
                op: "sophia",
                message: "the Gauss-Newton-Bartlett estimate samples class labels: it needs the \
                          cross-entropy loss (use estimator = \"hutchinson\")"
                    .to_string(),
            });
        }
        let trainable = config.trainable;
        let product = if needs_product {
            Some(HessianVectorProduct::prepare(
                engine, model, ws, loss, trainable,
            )?)
        } else {
            None
        };
        let (grads, own_grads) = match &product {
            Some(p) => (Gradients::clone(&p.gradients), None),
            None => {
                let g = Gradients::alloc(engine, model)?;
                (Gradients::clone(&g), Some(g))
            }
        };
        let mut owner = Allocation::new(engine);
        let (sampled, sampled_grads) =
            if kind == OptimizerKind::Sophia && sophia.estimator == SophiaEstimator::Gnb {
                let labels = owner.alloc(engine, "sophia.sampled_labels", ws.batch, 1)?;
                let g = Gradients::alloc_named(engine, model, "sophia.sampled_grad.")?;
                (Some((labels, Gradients::clone(&g))), Some(g))
            } else {
                (None, None)
            };
        let pairs = grads.trainable_pairs(model, trainable);
        let probes: Vec<Option<(Tensor, Tensor)>> = match &product {
            Some(p) => {
                let slots = p.slots();
                if slots.len() != pairs.len()
                    || slots.iter().zip(&pairs).any(|(s, pair)| s.0 != pair.0)
                {
                    return Err(EngineError::Shape {
                        op: "second_order",
                        message: "the Hessian-vector product's parameters are not the trained ones"
                            .to_string(),
                    });
                }
                slots.iter().map(|&(_, v, hv)| Some((v, hv))).collect()
            }
            None => vec![None; pairs.len()],
        };
        let sampled_pairs: Vec<Option<Tensor>> = match &sampled {
            Some((_, g)) => g
                .trainable_pairs(model, trainable)
                .into_iter()
                .map(|(_, _, grad)| Some(grad))
                .collect(),
            None => vec![None; pairs.len()],
        };
        let mut slots = Vec::with_capacity(pairs.len());
        for (i, (((key, param, grad), probe), sampled_grad)) in
            pairs.into_iter().zip(probes).zip(sampled_pairs).enumerate()
        {
            let (rows, cols) = param.shape();
            let zeros = |engine: &mut dyn Engine,
                         owner: &mut Allocation,
                         what: &str,
                         r: usize,
                         c: usize| {
                let label = format!("{}.{i}.{what}", kind.name());
                owner.tensor_from(engine, &label, r, c, &vec![0.0; r * c])
            };
            let state = match kind {
                OptimizerKind::Muon if key.group().is_matrix() => {
                    let label = format!("muon.{i}");
                    SlotState::Muon(MuonTensors::allocate(
                        engine, &mut owner, &label, rows, cols,
                    )?)
                }
                OptimizerKind::Muon => SlotState::Adam {
                    m: zeros(engine, &mut owner, "adam_m", rows, cols)?,
                    v: zeros(engine, &mut owner, "adam_v", rows, cols)?,
                },
                OptimizerKind::Adahessian => {
                    let average = config.second_order.adahessian.average == HessianAverage::Rows
                        && key.group().is_matrix();
                    let label = format!("adahessian.{i}");
                    SlotState::AdaHessian(AdaHessianTensors::allocate(
                        engine, &mut owner, &label, rows, cols, average,
                    )?)
                }
                OptimizerKind::Sophia => SlotState::Sophia {
                    m: zeros(engine, &mut owner, "m", rows, cols)?,
                    h: zeros(engine, &mut owner, "h", rows, cols)?,
                    h_positive: zeros(engine, &mut owner, "h_positive", rows, cols)?,
                    estimate: zeros(engine, &mut owner, "estimate", rows, cols)?,
                    sampled_grad,
                },
                OptimizerKind::NewtonCg => SlotState::NewtonCg {
                    d: zeros(engine, &mut owner, "d", rows, cols)?,
                    r: zeros(engine, &mut owner, "r", rows, cols)?,
                    scratch: zeros(engine, &mut owner, "scratch", rows, cols)?,
                },
                _ => unreachable!("checked: a second-order optimiser"),
            };
            slots.push(Slot {
                key,
                param,
                grad,
                probe,
                state,
            });
        }
        let mut scalar = |name: &str, value: f64| {
            owner.tensor_from(engine, &format!("second_order.{name}"), 1, 1, &[value])
        };
        let scalars = Scalars {
            muon_eps: scalar("muon_eps", MUON_EPS_SQ)?,
            partial: scalar("partial", 0.0)?,
            lambda: scalar("lambda", config.second_order.newton_cg.initial_damping)?,
            loss_before: scalar("loss_before", 0.0)?,
            actual: scalar("actual", 0.0)?,
            predicted: scalar("predicted", 0.0)?,
            rr: [scalar("rr0", 0.0)?, scalar("rr1", 0.0)?],
            curvature: scalar("curvature", 0.0)?,
            gd: scalar("gd", 0.0)?,
            dhd: scalar("dhd", 0.0)?,
            undo: scalar("undo", 0.0)?,
            sign: scalar("sign", 0.0)?,
        };
        Ok(Self {
            config: config.clone(),
            model: model.clone(),
            base: ws.clone(),
            loss,
            product,
            grads,
            sampled,
            slots,
            scalars,
            _grads: own_grads,
            _sampled_grads: sampled_grads,
            _state: owner,
        })
    }

    /// (key, gradient tensor) of every trained parameter: after a step, the gradient that step
    /// used.
    pub fn gradients(&self) -> Vec<(ParamKey, Tensor)> {
        self.slots.iter().map(|s| (s.key, s.grad)).collect()
    }

    /// (key, the curvature estimate of the last step): AdaHessian's D (after any row
    /// averaging), Sophia's averaged h. Empty for Muon and Newton-CG.
    pub fn curvature_estimates(&self) -> Vec<(ParamKey, Tensor)> {
        (self.slots.iter())
            .filter_map(|s| match s.state {
                SlotState::AdaHessian(state) => Some((s.key, state.diag)),
                SlotState::Sophia { h, .. } => Some((s.key, h)),
                _ => None,
            })
            .collect()
    }

    /// Newton-CG's damping lambda (1x1), adapted every step.
    pub fn damping(&self) -> Option<Tensor> {
        (self.config.kind == OptimizerKind::NewtonCg).then_some(self.scalars.lambda)
    }

    /// Records one step (`step` counts from 1) at learning rate `lr` on the batch `batch`: the
    /// base workspace itself, or a copy of it whose `inputs` and `targets` name another batch
    /// (as the training session's are). `loss_sum` ends holding the batch's loss before the
    /// update, as a first-order step leaves it.
    pub fn record_step(
        &self,
        rec: &mut Recording,
        batch: &Workspace,
        lr: f64,
        step: u32,
    ) -> Result<(), EngineError> {
        let rest_of_batch = Workspace {
            inputs: self.base.inputs,
            targets: self.base.targets,
            ..batch.clone()
        };
        if rest_of_batch != self.base
            || batch.inputs.shape() != self.base.inputs.shape()
            || batch.targets.shape() != self.base.targets.shape()
        {
            return Err(EngineError::Shape {
                op: "second_order",
                message: "the batch must be the state's workspace, or a copy of it naming other \
                          inputs and targets of the same shapes"
                    .to_string(),
            });
        }
        match self.config.kind {
            OptimizerKind::Muon => self.muon_step(rec, batch, lr, step),
            OptimizerKind::Adahessian => self.adahessian_step(rec, batch, lr, step),
            OptimizerKind::Sophia => self.sophia_step(rec, batch, lr, step),
            OptimizerKind::NewtonCg => self.newton_step(rec, batch, lr),
            _ => unreachable!("checked in new"),
        }
    }

    /// Copies the batch's inputs and targets into the base workspace (where the product runs).
    fn load_batch(&self, rec: &mut Recording, batch: &Workspace) -> Result<(), EngineError> {
        if batch.inputs != self.base.inputs {
            rec.scale(1.0, batch.inputs, self.base.inputs)?;
        }
        if batch.targets != self.base.targets {
            rec.scale(1.0, batch.targets, self.base.targets)?;
        }
        Ok(())
    }

    /// Forward, loss and backward on `ws` into the gradients.
    fn gradient_pass(&self, rec: &mut Recording, ws: &Workspace) -> Result<(), EngineError> {
        graph::forward(rec, &self.model, ws)?;
        self.loss.record(rec, ws)?;
        graph::backward(rec, &self.model, ws, &self.grads, self.config.trainable)?;
        Ok(())
    }

    /// The Rademacher stream of slot `slot` at step `step`.
    fn stream(step: u32, slot: usize) -> u64 {
        (u64::from(step) << 32) | slot as u64
    }

    /// Fills the product's v tensors with Rademacher probes and appends the product.
    fn hutchinson_product(&self, rec: &mut Recording, step: u32) -> Result<(), EngineError> {
        let product = self
            .product
            .as_ref()
            .expect("a product where Hutchinson runs");
        for (i, slot) in self.slots.iter().enumerate() {
            let (v, _) = slot.probe.expect("a probe per slot");
            rec.rademacher(v, self.config.seed, Self::stream(step, i));
        }
        rec.extend(&product.recording);
        Ok(())
    }

    fn muon_step(
        &self,
        rec: &mut Recording,
        batch: &Workspace,
        lr: f64,
        step: u32,
    ) -> Result<(), EngineError> {
        self.gradient_pass(rec, batch)?;
        let muon = self.config.second_order.muon;
        let hyper = &self.config.hyper;
        let sum_sq = self.scalars.partial;
        for slot in &self.slots {
            let (param, grad) = (slot.param, slot.grad);
            match slot.state {
                SlotState::Muon(state) => {
                    let scalars = (sum_sq, self.scalars.muon_eps);
                    state.record_update(rec, param, grad, &muon, lr, scalars)?;
                }
                SlotState::Adam { m, v } => {
                    let adam = AdamHyper {
                        lr,
                        beta1: hyper.beta1,
                        beta2: hyper.beta2,
                        eps: hyper.eps,
                        weight_decay: hyper.weight_decay_for(OptimizerKind::Adamw),
                    };
                    rec.adam(param, grad, (m, v), adam, step)?;
                }
                _ => unreachable!("Muon's slots"),
            }
        }
        Ok(())
    }

    fn adahessian_step(
        &self,
        rec: &mut Recording,
        batch: &Workspace,
        lr: f64,
        step: u32,
    ) -> Result<(), EngineError> {
        self.load_batch(rec, batch)?;
        self.hutchinson_product(rec, step)?;
        let hyper = self.config.second_order.adahessian.hyper(lr);
        for slot in &self.slots {
            let SlotState::AdaHessian(state) = slot.state else {
                unreachable!("AdaHessian's slots")
            };
            let probe = slot.probe.expect("a probe per slot");
            state.record_update(rec, slot.param, slot.grad, probe, hyper, step)?;
        }
        Ok(())
    }

    fn sophia_step(
        &self,
        rec: &mut Recording,
        batch: &Workspace,
        lr: f64,
        step: u32,
    ) -> Result<(), EngineError> {
        let settings = self.config.second_order.sophia;
        let refresh = (step.max(1) - 1).is_multiple_of(settings.update_every);
        let hutchinson = settings.estimator == SophiaEstimator::Hutchinson;
        match (refresh, hutchinson) {
            (true, true) => {
                self.load_batch(rec, batch)?;
                self.hutchinson_product(rec, step)?;
                for slot in &self.slots {
                    let SlotState::Sophia { estimate, .. } = slot.state else {
                        unreachable!("Sophia's slots")
                    };
                    let (z, hz) = slot.probe.expect("a probe per slot");
                    rec.binary(BinaryOp::Mul, z, hz, estimate)?;
                }
            }
            (true, false) => {
                // One forward; the loss against labels drawn from the model's own softmax and
                // its gradient first, then the batch's own loss and gradient.
                let (labels, sampled_grads) = self.sampled.as_ref().expect("GNB's labels");
                graph::forward(rec, &self.model, batch)?;
                let stream = (u64::from(step) << 32) | 0xffff_ffff;
                rec.sample_categorical(batch.logits(), *labels, self.config.seed, stream)?;
                let sampled_ws = Workspace {
                    targets: *labels,
                    ..batch.clone()
                };
                graph::cross_entropy(rec, &sampled_ws)?;
                let trainable = self.config.trainable;
                graph::backward(rec, &self.model, &sampled_ws, sampled_grads, trainable)?;
                for slot in &self.slots {
                    let SlotState::Sophia {
                        estimate,
                        sampled_grad,
                        ..
                    } = slot.state
                    else {
                        unreachable!("Sophia's slots")
                    };
                    let g_hat = sampled_grad.expect("GNB's gradient");
                    // batch * g_hat^2: the batch factor is the kernel's `batch_size`.
                    rec.binary(BinaryOp::Mul, g_hat, g_hat, estimate)?;
                }
                self.loss.record(rec, batch)?;
                graph::backward(rec, &self.model, batch, &self.grads, trainable)?;
            }
            (false, _) => self.gradient_pass(rec, batch)?,
        }
        let hyper = SophiaHyper {
            lr,
            beta1: settings.beta1,
            beta2: settings.beta2,
            rho: settings.rho,
            weight_decay: settings.weight_decay,
            batch_size: if hutchinson { 1.0 } else { batch.batch as f64 },
            eps: SOPHIA_EPS,
        };
        for slot in &self.slots {
            let SlotState::Sophia {
                m,
                h,
                h_positive,
                estimate,
                ..
            } = slot.state
            else {
                unreachable!("Sophia's slots")
            };
            if refresh {
                rec.ema(settings.beta2, estimate, h)?;
            }
            // max(h, 0): Hutchinson's estimate can be negative, and the clip needs h >= 0.
            rec.activate(Activation::Relu, h, h_positive)?;
            rec.sophia(slot.param, slot.grad, h_positive, m, hyper)?;
        }
        Ok(())
    }

    /// `out = pad + sum over slots of a . b` (`b` None: `|a|^2`).
    fn dot(
        &self,
        rec: &mut Recording,
        pairs: &[(Tensor, Option<Tensor>, Tensor)],
        out: Tensor,
        pad: f64,
    ) -> Result<(), EngineError> {
        let partial = self.scalars.partial;
        rec.fill(pad, out);
        for &(a, b, scratch) in pairs {
            match b {
                Some(b) => {
                    rec.binary(BinaryOp::Mul, a, b, scratch)?;
                    rec.reduce(Reduction::Sum, ReduceAxis::Whole, scratch, partial)?;
                }
                None => {
                    rec.reduce(Reduction::SumOfSquares, ReduceAxis::Whole, a, partial)?;
                }
            }
            rec.axpy(1.0, partial, out)?;
        }
        Ok(())
    }

    fn newton_step(
        &self,
        rec: &mut Recording,
        batch: &Workspace,
        lr: f64,
    ) -> Result<(), EngineError> {
        let product = self.product.as_ref().expect("Newton-CG's product");
        let settings = self.config.second_order.newton_cg;
        let s = &self.scalars;
        self.load_batch(rec, batch)?;
        let base = &self.base;
        // The gradient and the loss before the step.
        self.gradient_pass(rec, base)?;
        rec.scale(1.0, base.loss_sum, s.loss_before)?;
        struct Cg {
            p: Tensor,
            ap: Tensor,
            d: Tensor,
            r: Tensor,
            scratch: Tensor,
            grad: Tensor,
            param: Tensor,
        }
        let cg: Vec<Cg> = (self.slots.iter())
            .map(|slot| {
                let SlotState::NewtonCg { d, r, scratch } = slot.state else {
                    unreachable!("Newton-CG's slots")
                };
                let (p, ap) = slot.probe.expect("a probe per slot");
                Cg {
                    p,
                    ap,
                    d,
                    r,
                    scratch,
                    grad: slot.grad,
                    param: slot.param,
                }
            })
            .collect();
        // d = 0, r = -g, p = r.
        for c in &cg {
            rec.fill(0.0, c.d);
            rec.scale(-1.0, c.grad, c.r)?;
            rec.scale(1.0, c.r, c.p)?;
        }
        let residual: Vec<_> = cg.iter().map(|c| (c.r, None, c.scratch)).collect();
        let curvature: Vec<_> = cg.iter().map(|c| (c.p, Some(c.ap), c.scratch)).collect();
        let [mut rr, mut rr_next] = s.rr;
        self.dot(rec, &residual, rr, CG_PAD)?;
        let iterations = settings.cg_iterations;
        for i in 0..iterations {
            // A p = H p + lambda p (the product recomputes the gradient on the way: unchanged).
            rec.extend(&product.recording);
            for c in &cg {
                rec.axpy_device(scaled_by(1.0, s.lambda), c.p, c.ap)?;
            }
            self.dot(rec, &curvature, s.curvature, CG_PAD)?;
            // alpha = r.r / p.A p; d += alpha p; r -= alpha A p.
            for c in &cg {
                rec.axpy_device(DeviceScalar::ratio(1.0, rr, s.curvature), c.p, c.d)?;
                rec.axpy_device(DeviceScalar::ratio(-1.0, rr, s.curvature), c.ap, c.r)?;
            }
            if i + 1 < iterations {
                // beta = r'.r' / r.r; p = r' + beta p.
                self.dot(rec, &residual, rr_next, CG_PAD)?;
                for c in &cg {
                    rec.scale_device(DeviceScalar::ratio(1.0, rr_next, rr), c.p, c.scratch)?;
                    rec.binary(BinaryOp::Add, c.r, c.scratch, c.p)?;
                }
                std::mem::swap(&mut rr, &mut rr_next);
            }
        }
        // The quadratic model's change along the step lr d: lr g.d + lr^2 d.(H d) / 2, with
        // H d from one more product.
        for c in &cg {
            rec.scale(1.0, c.d, c.p)?;
        }
        rec.extend(&product.recording);
        let hd: Vec<_> = cg.iter().map(|c| (c.d, Some(c.ap), c.scratch)).collect();
        let gd: Vec<_> = cg.iter().map(|c| (c.grad, Some(c.d), c.scratch)).collect();
        self.dot(rec, &hd, s.dhd, 0.0)?;
        self.dot(rec, &gd, s.gd, 0.0)?;
        rec.scale(lr, s.gd, s.predicted)?;
        rec.axpy(0.5 * lr * lr, s.dhd, s.predicted)?;
        // The step, and the loss after it.
        for c in &cg {
            rec.axpy(lr, c.d, c.param)?;
        }
        graph::forward(rec, &self.model, base)?;
        self.loss.record(rec, base)?;
        let per_sum = loss_per_sum(self.loss, base.batch);
        rec.scale(per_sum, base.loss_sum, s.actual)?;
        rec.axpy(-per_sum, s.loss_before, s.actual)?;
        rec.damping_update(s.lambda, s.actual, s.predicted, DampingHyper::default())?;
        if settings.reject_uphill {
            // undo = 1 - relu(-sign(actual)): 0 only where the loss fell; 1 where it rose,
            // stayed, or became NaN (the engine's sign is 0 at 0 and at NaN).
            rec.sign(s.actual, s.sign)?;
            rec.scale(-1.0, s.sign, s.undo)?;
            rec.activate(Activation::Relu, s.undo, s.sign)?;
            rec.fill(1.0, s.undo);
            rec.axpy(-1.0, s.sign, s.undo)?;
            for c in &cg {
                rec.axpy_device(scaled_by(-lr, s.undo), c.d, c.param)?;
            }
        }
        // The loss the step started from, as the training loop reads it.
        rec.scale(1.0, s.loss_before, base.loss_sum)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table that sets one field keeps the others at the kernels' reference values, so the
    /// defaults have one source (`AdaHessianHyper`, `SophiaHyper`) whichever way they are read.
    #[test]
    fn partial_tables_keep_the_kernels_reference_defaults() {
        let hyper: SecondOrderHyper =
            toml::from_str("[sophia]\nrho = 0.5\n[adahessian]\neps = 0.25\n").unwrap();
        let (sophia, adahessian) = (SophiaHyper::default(), AdaHessianHyper::default());
        assert_eq!(hyper.sophia.rho, 0.5);
        assert_eq!(
            (
                hyper.sophia.beta1,
                hyper.sophia.beta2,
                hyper.sophia.weight_decay
            ),
            (sophia.beta1, sophia.beta2, sophia.weight_decay)
        );
        assert_eq!(hyper.adahessian.eps, 0.25);
        assert_eq!(
            (hyper.adahessian.beta1, hyper.adahessian.beta2),
            (adahessian.beta1, adahessian.beta2)
        );
        assert_eq!(hyper.adahessian.hessian_power, adahessian.hessian_power);
        assert_eq!(hyper.muon, MuonSettings::default());
        assert_eq!(hyper.newton_cg, NewtonCgSettings::default());
        let unknown = toml::from_str::<SecondOrderHyper>("[sophia]\nrh0 = 0.5\n");
        assert!(unknown.unwrap_err().to_string().contains("rh0"));
    }
}
