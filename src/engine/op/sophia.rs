//! Sophia's clipped update (shaders/sophia.wgsl; CPU twin in `engine/cpu/optimizer.rs`).

use super::Operation;
use super::check::{distinct, same_shape};
use crate::engine::cpu::{CpuEngine, CpuReal, optimizer};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// Sophia's hyper-parameters (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order
/// Optimizer for Language Model Pre-training"; reference implementation SophiaG in
/// github.com/Liuhong99/Sophia). Per step, with g the gradient and h the caller's moving
/// average of `g_hat^2`, `g_hat` the gradient of the loss on labels sampled from the model's own
/// logits (`Recording::sample_categorical`) averaged over `batch_size` samples:
///
/// ```text
/// param *= 1 - lr weight_decay                               (decoupled weight decay)
/// m = beta1 m + (1 - beta1) g
/// ratio = min(|m| / (rho batch_size h + eps), 1)
/// param -= lr sign(m) ratio                                   (sign(0) = 0)
/// ```
///
/// so no entry moves by more than `lr` beyond its decay, for `h >= 0` (an average of squares
/// is; the reference does not guard a negative h, and neither does this kernel). The
/// Gauss-Newton-Bartlett estimate of the Hessian diagonal is `batch_size * g_hat^2`; as the
/// reference does, h averages `g_hat^2` alone and the factor `batch_size` enters here. The
/// average itself, `h = beta2 h + (1 - beta2) g_hat^2` every k steps (k = 10 in the reference's
/// training script), is not part of this kernel: callers record `g_hat^2` with
/// `binary(Mul, ..)` and the average with `Recording::ema(beta2, ..)`.
/// The reference's defaults ([`Default`]): `lr` 1e-4, betas (0.965, 0.99), `rho` 0.04,
/// `weight_decay` 0.1, `batch_size` 5120 (its `step(bs=5120)`; its training script passes the
/// tokens per step), `eps` 1e-15 (written into its update as a constant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SophiaHyper {
    pub lr: f64,
    /// The gradient's moving-average coefficient.
    pub beta1: f64,
    /// The Hessian average's coefficient: for the caller's `ema`, not read by the kernel.
    pub beta2: f64,
    /// The clipping threshold's scale: `rho * batch_size * h` is the curvature an update of
    /// size 1 (before `lr`) needs.
    pub rho: f64,
    pub weight_decay: f64,
    /// The reference's `bs`: the samples (tokens) per step that `g_hat` averages over, so that
    /// `batch_size * h` is the Gauss-Newton-Bartlett Hessian-diagonal estimate.
    pub batch_size: f64,
    /// Keeps the denominator positive where h is 0.
    pub eps: f64,
}

impl Default for SophiaHyper {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.965,
            beta2: 0.99,
            rho: 0.04,
            weight_decay: 0.1,
            batch_size: 5120.0,
            eps: 1e-15,
        }
    }
}

impl SophiaHyper {
    /// `1 - lr weight_decay`, the factor of the decoupled weight decay (f64 on the host).
    pub fn decay_factor(&self) -> f64 {
        1.0 - self.lr * self.weight_decay
    }

    /// `rho batch_size`, the scale of h in the denominator (f64 on the host).
    pub fn curvature_scale(&self) -> f64 {
        self.rho * self.batch_size
    }
}

/// Sophia's clipped update (Liu et al. 2023, SophiaG), in place; see [`SophiaHyper`]. `hess`
/// is the caller's moving average of `g_hat^2` (kept with `Ema`), which the update scales by
/// `rho * batch_size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sophia {
    pub param: Tensor,
    pub grad: Tensor,
    pub hess: Tensor,
    pub m: Tensor,
    pub hyper: SophiaHyper,
}

impl Recording {
    /// Sophia's clipped update, in place on `param` and `m`; `hess` is the caller's moving
    /// average of `g_hat^2` (the Gauss-Newton-Bartlett estimate over `batch_size`). See
    /// [`SophiaHyper`].
    pub fn sophia(
        &mut self,
        param: Tensor,
        grad: Tensor,
        hess: Tensor,
        m: Tensor,
        hyper: SophiaHyper,
    ) -> Result<&mut Self, EngineError> {
        self.push(Sophia {
            param,
            grad,
            hess,
            m,
            hyper,
        })
    }
}

static SOPHIA_WGSL: ShaderFile = crate::shader_file!("sophia");
const SOPHIA: Kernel = Kernel::of_file(&SOPHIA_WGSL, "sophia");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SophiaParams {
    len: u32,
    lr: f32,
    beta1: f32,
    decay_factor: f32,
    curvature_scale: f32,
    eps: f32,
    _pad: [u32; 2],
}

impl Operation for Sophia {
    const NAME: &'static str = "sophia";

    fn kernels() -> Vec<Kernel> {
        vec![SOPHIA]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.param, self.grad, self.hess, self.m]
    }

    fn check(&self) -> Result<(), EngineError> {
        let op = Self::NAME;
        same_shape(op, "param and grad", self.param, self.grad)?;
        same_shape(op, "param and hess", self.param, self.hess)?;
        same_shape(op, "param and m", self.param, self.m)?;
        distinct(op, &[self.param, self.m], &[self.grad, self.hess])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let hyper = self.hyper;
        let inputs = [self.grad, self.hess];
        cpu.with_state(self.param, [self.m], &inputs, |inp, param, [m]| {
            optimizer::sophia(param, m, inp[0], inp[1], &hyper)
        })
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let (hyper, len) = (self.hyper, self.param.len());
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: SOPHIA,
            params: words(SophiaParams {
                len: len as u32,
                lr: hyper.lr as f32,
                beta1: hyper.beta1 as f32,
                decay_factor: hyper.decay_factor() as f32,
                curvature_scale: hyper.curvature_scale() as f32,
                eps: hyper.eps as f32,
                _pad: [0; 2],
            }),
            operands: vec![T(self.param), T(self.m), T(self.grad), T(self.hess)],
            workgroups: grid_1d(Self::NAME, len.div_ceil(256), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(SophiaParams {
            len,
            lr,
            beta1,
            decay_factor,
            curvature_scale,
            eps
        }))
    }
}
