//! The transpose (shaders/transpose.wgsl; CPU twin `engine/cpu/transpose.rs`).

use super::Operation;
use super::check::{distinct, shape_error};
use crate::engine::adjoint::Adjoint;
use crate::engine::cpu::{CpuEngine, CpuReal, transpose};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_2d, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// `out = x^T`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transpose {
    pub x: Tensor,
    pub out: Tensor,
}

impl Recording {
    pub fn transpose(&mut self, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        self.push(Transpose { x, out })
    }
}

static TRANSPOSE_WGSL: ShaderFile = crate::shader_file!("transpose");
const TRANSPOSE: Kernel = Kernel::of_file(&TRANSPOSE_WGSL, "transpose");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TransposeParams {
    rows: u32,
    cols: u32,
    _pad: [u32; 6],
}

impl Operation for Transpose {
    const NAME: &'static str = "transpose";

    fn kernels() -> Vec<Kernel> {
        vec![TRANSPOSE]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        let Transpose { x, out } = *self;
        if out.shape() != (x.cols(), x.rows()) {
            return Err(shape_error(
                Self::NAME,
                format!("out must be {}x{} for {x}, got {out}", x.cols(), x.rows()),
            ));
        }
        distinct(Self::NAME, &[out], &[x])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let x = self.x;
        cpu.with_output(self.out, &[x], |inp, out| {
            transpose::transpose(inp[0], x.rows(), x.cols(), out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        match t.live(self.x) {
            Some(dx) => {
                let d_out = t.output(Self::NAME, self.out)?;
                t.recording.transpose(dx, d_out)?;
            }
            None => t.zero(self.out),
        }
        Ok(())
    }

    /// `dx += d_out^T`.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let Transpose { x, out } = *self;
        let d_out = t.adjoint(out);
        t.overwritten(out);
        match d_out {
            Some(d_out) => t.add_to(x, |t, term| t.recording.transpose(d_out, term).map(|_| ())),
            None => Ok(()),
        }
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let x = self.x;
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: TRANSPOSE,
            params: words(TransposeParams {
                rows: x.rows() as u32,
                cols: x.cols() as u32,
                _pad: [0; 6],
            }),
            operands: vec![T(self.out), T(x)],
            workgroups: grid_2d(
                Self::NAME,
                x.cols().div_ceil(16),
                x.rows().div_ceil(16),
                max_per_dim,
            )?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(TransposeParams { rows, cols }))
    }
}
