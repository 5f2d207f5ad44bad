//! SGD with momentum (shaders/momentum.wgsl; CPU twin in `engine/cpu/optimizer.rs`).

use super::Operation;
use super::check::{distinct, same_shape};
use crate::engine::cpu::{CpuEngine, CpuReal, optimizer};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// SGD with momentum, in place: `velocity = momentum velocity + grad`, then
/// `param -= lr (grad + momentum velocity)` with Nesterov, else `param -= lr velocity`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Momentum {
    pub param: Tensor,
    pub grad: Tensor,
    pub velocity: Tensor,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
}

impl Recording {
    pub fn momentum(
        &mut self,
        param: Tensor,
        grad: Tensor,
        velocity: Tensor,
        lr: f64,
        momentum: f64,
        nesterov: bool,
    ) -> Result<&mut Self, EngineError> {
        self.push(Momentum {
            param,
            grad,
            velocity,
            lr,
            momentum,
            nesterov,
        })
    }
}

static MOMENTUM_WGSL: ShaderFile = crate::shader_file!("momentum");
const MOMENTUM: Kernel = Kernel::of_file(&MOMENTUM_WGSL, "momentum");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MomentumParams {
    len: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    _pad: [u32; 4],
}

impl Operation for Momentum {
    const NAME: &'static str = "momentum";

    fn kernels() -> Vec<Kernel> {
        vec![MOMENTUM]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.param, self.grad, self.velocity]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "param and grad", self.param, self.grad)?;
        same_shape(Self::NAME, "param and velocity", self.param, self.velocity)?;
        distinct(Self::NAME, &[self.param, self.velocity], &[self.grad])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let (lr, momentum) = (R::of_f64(self.lr), R::of_f64(self.momentum));
        let nesterov = self.nesterov;
        cpu.with_state(
            self.param,
            [self.velocity],
            &[self.grad],
            |inp, param, [velocity]| {
                optimizer::momentum(param, velocity, inp[0], lr, momentum, nesterov)
            },
        )
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let len = self.param.len();
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: MOMENTUM,
            params: words(MomentumParams {
                len: len as u32,
                nesterov: u32::from(self.nesterov),
                lr: self.lr as f32,
                momentum: self.momentum as f32,
                _pad: [0; 4],
            }),
            operands: vec![T(self.param), T(self.velocity), T(self.grad)],
            workgroups: grid_1d(Self::NAME, len.div_ceil(256), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(MomentumParams {
            len,
            nesterov,
            lr,
            momentum
        }))
    }
}
