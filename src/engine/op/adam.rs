//! Adam and AdamW (shaders/adam.wgsl; CPU twin in `engine/cpu/optimizer.rs`). The fusion pass
//! groups consecutive Adam updates into one dispatch (`fusion/adam_group.rs`).

use super::Operation;
use super::check::{distinct, same_shape};
use crate::engine::cpu::{CpuEngine, CpuReal, optimizer};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamWords, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamHyper {
    /// The bias corrections `(1 - beta1^t, 1 - beta2^t)` at step `t`.
    pub fn corrections(&self, step: u32) -> (f64, f64) {
        let t = step.max(1) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// AdamW (Adam when `weight_decay == 0`), in place, at optimiser step `step` (from 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    pub param: Tensor,
    pub grad: Tensor,
    pub m: Tensor,
    pub v: Tensor,
    pub hyper: AdamHyper,
    pub step: u32,
}

impl Recording {
    pub fn adam(
        &mut self,
        param: Tensor,
        grad: Tensor,
        (m, v): (Tensor, Tensor),
        hyper: AdamHyper,
        step: u32,
    ) -> Result<&mut Self, EngineError> {
        self.push(Adam {
            param,
            grad,
            m,
            v,
            hyper,
            step,
        })
    }
}

static ADAM_WGSL: ShaderFile =
    crate::shader_file!("adam", snippets: ["common/adam_update.wgsl"], self_bounded: false);
const ADAM: Kernel = Kernel::of_file(&ADAM_WGSL, "adam");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamParams {
    len: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    correction1: f32,
    correction2: f32,
}

/// The params of both Adam kernels: `len` is the (first) tensor's length.
pub(crate) fn adam_params(len: usize, hyper: &AdamHyper, step: u32) -> ParamWords {
    let (correction1, correction2) = hyper.corrections(step);
    words(AdamParams {
        len: len as u32,
        lr: hyper.lr as f32,
        beta1: hyper.beta1 as f32,
        beta2: hyper.beta2 as f32,
        eps: hyper.eps as f32,
        weight_decay: hyper.weight_decay as f32,
        correction1: correction1 as f32,
        correction2: correction2 as f32,
    })
}

impl Operation for Adam {
    const NAME: &'static str = "adam";

    fn kernels() -> Vec<Kernel> {
        vec![ADAM]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.param, self.grad, self.m, self.v]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "param and grad", self.param, self.grad)?;
        same_shape(Self::NAME, "param and m", self.param, self.m)?;
        same_shape(Self::NAME, "param and v", self.param, self.v)?;
        distinct(Self::NAME, &[self.param, self.m, self.v], &[self.grad])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let hyper = self.hyper;
        let (c1, c2) = hyper.corrections(self.step);
        let workers = cpu.workers();
        cpu.with_state(
            self.param,
            [self.m, self.v],
            &[self.grad],
            |inp, param, [m, v]| {
                let state = (param, m.as_mut_slice(), v.as_mut_slice());
                workers.update_in_chunks(state, inp[0], |param, m, v, grad| {
                    optimizer::adam(
                        param,
                        m,
                        v,
                        grad,
                        R::of_f64(hyper.lr),
                        (R::of_f64(hyper.beta1), R::of_f64(hyper.beta2)),
                        R::of_f64(hyper.eps),
                        R::of_f64(hyper.weight_decay),
                        (R::of_f64(c1), R::of_f64(c2)),
                    )
                })
            },
        )
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let len = self.param.len();
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: ADAM,
            params: adam_params(len, &self.hyper, self.step),
            operands: vec![T(self.param), T(self.m), T(self.v), T(self.grad)],
            workgroups: grid_1d(Self::NAME, len.div_ceil(256), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(AdamParams {
            len,
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            correction1,
            correction2,
        }))
    }
}
