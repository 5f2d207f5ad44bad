//! AdaHessian (shaders/adahessian.wgsl; CPU twin in `engine/cpu/optimizer.rs`).

use super::Operation;
use super::check::{distinct, same_shape, shape_error};
use crate::engine::cpu::{CpuEngine, CpuReal, optimizer};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// AdaHessian's hyper-parameters (Yao et al. 2021, "ADAHESSIAN: An Adaptive Second Order
/// Optimizer for Machine Learning"; reference implementation github.com/amirgholami/adahessian).
/// With D the Hessian-diagonal estimate, g the gradient and t the step (from 1):
///
/// ```text
/// m = beta1 m + (1 - beta1) g
/// v = beta2 v + (1 - beta2) D^2
/// denom = sqrt(v)^k / sqrt(1 - beta2^t)^k + eps          (k = hessian_power)
/// param -= lr (m / (1 - beta1^t) / denom + weight_decay param)
/// ```
///
/// The weight decay is decoupled (added to the update, not to the gradient), as the reference
/// applies it. The reference's defaults: `lr` 0.15, betas (0.9, 0.999), `eps` 1e-4,
/// `weight_decay` 0, `hessian_power` 1 ([`Default`] gives these); it accepts `hessian_power` in
/// [0, 1] only, and so does the recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaHessianHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub hessian_power: f64,
}

impl Default for AdaHessianHyper {
    fn default() -> Self {
        Self {
            lr: 0.15,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-4,
            weight_decay: 0.0,
            hessian_power: 1.0,
        }
    }
}

/// The scalars of one AdaHessian step, folded on the host in f64 (both engines read these).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaHessianScalars {
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
    /// `lr * weight_decay`.
    pub decay: f64,
    /// `sqrt(1 - beta2^t)^k`, k the Hessian power.
    pub correction2_power: f64,
}

impl AdaHessianHyper {
    /// The bias corrections `(1 - beta1^t, 1 - beta2^t)` at step `t`.
    pub fn corrections(&self, step: u32) -> (f64, f64) {
        let t = step.max(1) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }

    /// The host-side scalars of step `t`: the update is then
    /// `param -= step_size m / denom + decay param`, `denom = sqrt(v)^k / correction2_power + eps`.
    pub fn scalars(&self, step: u32) -> AdaHessianScalars {
        let (c1, c2) = self.corrections(step);
        AdaHessianScalars {
            step_size: self.lr / c1,
            decay: self.lr * self.weight_decay,
            correction2_power: optimizer::hessian_power(c2.sqrt(), self.hessian_power),
        }
    }
}

/// AdaHessian (Yao et al. 2021), in place, at optimiser step `step` (from 1); see
/// [`AdaHessianHyper`]. `hess_diag` is the Hessian-diagonal estimate D (already averaged over
/// whatever blocks the caller averages).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaHessian {
    pub param: Tensor,
    pub grad: Tensor,
    pub hess_diag: Tensor,
    pub m: Tensor,
    pub v: Tensor,
    pub hyper: AdaHessianHyper,
    pub step: u32,
}

impl Recording {
    /// AdaHessian's update at optimiser step `step` (from 1), in place on `param`, `m` and `v`;
    /// see [`AdaHessianHyper`].
    pub fn adahessian(
        &mut self,
        param: Tensor,
        grad: Tensor,
        hess_diag: Tensor,
        (m, v): (Tensor, Tensor),
        hyper: AdaHessianHyper,
        step: u32,
    ) -> Result<&mut Self, EngineError> {
        self.push(AdaHessian {
            param,
            grad,
            hess_diag,
            m,
            v,
            hyper,
            step,
        })
    }
}

static ADAHESSIAN_WGSL: ShaderFile = crate::shader_file!("adahessian");
const ADAHESSIAN: Kernel = Kernel::of_file(&ADAHESSIAN_WGSL, "adahessian");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdaHessianParams {
    len: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    decay: f32,
    correction2_power: f32,
    hessian_power: f32,
}

impl Operation for AdaHessian {
    const NAME: &'static str = "adahessian";

    fn kernels() -> Vec<Kernel> {
        vec![ADAHESSIAN]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.param, self.grad, self.hess_diag, self.m, self.v]
    }

    fn check(&self) -> Result<(), EngineError> {
        let op = Self::NAME;
        same_shape(op, "param and grad", self.param, self.grad)?;
        same_shape(op, "param and hess_diag", self.param, self.hess_diag)?;
        same_shape(op, "param and m", self.param, self.m)?;
        same_shape(op, "param and v", self.param, self.v)?;
        distinct(
            op,
            &[self.param, self.m, self.v],
            &[self.grad, self.hess_diag],
        )?;
        let power = self.hyper.hessian_power;
        if !(0.0..=1.0).contains(&power) {
            return Err(shape_error(
                op,
                format!("hessian_power must be in [0, 1], got {power}"),
            ));
        }
        Ok(())
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let (hyper, step) = (self.hyper, self.step);
        let inputs = [self.grad, self.hess_diag];
        cpu.with_state(
            self.param,
            [self.m, self.v],
            &inputs,
            |inp, param, [m, v]| optimizer::adahessian(param, m, v, inp[0], inp[1], &hyper, step),
        )
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let (hyper, len) = (self.hyper, self.param.len());
        let scalars = hyper.scalars(self.step);
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: ADAHESSIAN,
            params: words(AdaHessianParams {
                len: len as u32,
                beta1: hyper.beta1 as f32,
                beta2: hyper.beta2 as f32,
                eps: hyper.eps as f32,
                step_size: scalars.step_size as f32,
                decay: scalars.decay as f32,
                correction2_power: scalars.correction2_power as f32,
                hessian_power: hyper.hessian_power as f32,
            }),
            operands: vec![
                T(self.param),
                T(self.m),
                T(self.v),
                T(self.grad),
                T(self.hess_diag),
            ],
            workgroups: grid_1d(Self::NAME, len.div_ceil(256), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(AdaHessianParams {
            len,
            beta1,
            beta2,
            eps,
            step_size,
            decay,
            correction2_power,
            hessian_power
        }))
    }
}
