//! A softmax per row over the entries a mask keeps: attention's probabilities
//! (shaders/softmax.wgsl; CPU twin `engine/cpu/softmax.rs`). Its derivatives are recorded from
//! primitive ops (`y (v - rowsum(y v))`), so they need no kernel of their own.

use super::check::{distinct, shape_error};
use super::{BinaryOp, Operation, ReduceAxis, Reduction};
use crate::engine::adjoint::{Adjoint, DerivativeScratch};
use crate::engine::cpu::{CpuEngine, CpuReal, softmax as twin};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// `out[r] = softmax(x[r])` over the columns where `mask[r / rows_per_mask_row]` is not zero;
/// masked entries, and every entry of a row that keeps nothing, are 0. `mask` is
/// `(rows / rows_per_mask_row) x cols` (one row per sequence, shared by its heads and queries).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskedSoftmax {
    pub x: Tensor,
    pub mask: Tensor,
    pub out: Tensor,
    pub rows_per_mask_row: usize,
}

impl Recording {
    pub fn masked_softmax(
        &mut self,
        x: Tensor,
        mask: Tensor,
        out: Tensor,
        rows_per_mask_row: usize,
    ) -> Result<&mut Self, EngineError> {
        self.push(MaskedSoftmax {
            x,
            mask,
            out,
            rows_per_mask_row,
        })
    }
}

static SOFTMAX_WGSL: ShaderFile = crate::shader_file!("softmax");
const MASKED_SOFTMAX: Kernel = Kernel::of_file(&SOFTMAX_WGSL, "masked_softmax");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MaskedSoftmaxParams {
    rows: u32,
    cols: u32,
    rows_per_mask_row: u32,
    _pad: [u32; 5],
}

/// `out = y (v - rowsum(y v))`: the derivative of a softmax `y` along `v`, and (the Jacobian
/// being symmetric) its adjoint of `v`. Masked entries stay 0 because `y` is 0 there.
fn softmax_derivative_times(
    w: &mut dyn DerivativeScratch,
    y: Tensor,
    v: Tensor,
    out: Tensor,
) -> Result<(), EngineError> {
    let (rows, cols) = y.shape();
    let yv = w.scratch(y)?;
    let sums = w.scratch_shaped(rows, 1)?;
    let ones = w.scratch_shaped(1, cols)?;
    let broadcast = w.scratch(y)?;
    let correction = w.scratch(y)?;
    let rec = w.recording();
    rec.binary(BinaryOp::Mul, y, v, yv)?;
    rec.reduce(Reduction::Sum, ReduceAxis::PerRow, yv, sums)?;
    rec.fill(1.0, ones);
    rec.matmul(sums, ones, broadcast, false, false)?;
    rec.binary(BinaryOp::Mul, y, broadcast, correction)?;
    rec.binary(BinaryOp::Sub, yv, correction, out)?;
    Ok(())
}

impl Operation for MaskedSoftmax {
    const NAME: &'static str = "masked_softmax";

    fn kernels() -> Vec<Kernel> {
        vec![MASKED_SOFTMAX]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.mask, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        let MaskedSoftmax {
            x,
            mask,
            out,
            rows_per_mask_row,
        } = *self;
        if out.shape() != x.shape() {
            return Err(shape_error(
                Self::NAME,
                format!("out must be shaped as {x}, got {out}"),
            ));
        }
        if rows_per_mask_row == 0
            || mask.rows() * rows_per_mask_row != x.rows()
            || mask.cols() != x.cols()
        {
            return Err(shape_error(
                Self::NAME,
                format!("the mask {mask}, one row per {rows_per_mask_row} rows, does not fit {x}"),
            ));
        }
        distinct(Self::NAME, &[out], &[x, mask])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let p = *self;
        cpu.with_output(p.out, &[p.x, p.mask], |inp, out| {
            twin::masked_softmax(inp[0], inp[1], p.x.cols(), p.rows_per_mask_row, out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let p = *self;
        match t.live(p.x) {
            Some(dx) => {
                let d_out = t.output(Self::NAME, p.out)?;
                softmax_derivative_times(t, p.out, dx, d_out)?;
            }
            None => t.zero(p.out),
        }
        Ok(())
    }

    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let p = *self;
        t.value(Self::NAME, p.out)?;
        let d_out = t.adjoint(p.out);
        t.overwritten(p.out);
        let Some(d_out) = d_out else { return Ok(()) };
        t.add_to(p.x, |t, term| {
            softmax_derivative_times(t, p.out, d_out, term)
        })
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let p = *self;
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: MASKED_SOFTMAX,
            params: words(MaskedSoftmaxParams {
                rows: p.x.rows() as u32,
                cols: p.x.cols() as u32,
                rows_per_mask_row: p.rows_per_mask_row as u32,
                _pad: [0; 5],
            }),
            operands: vec![T(p.out), T(p.x), T(p.mask)],
            workgroups: grid_1d(Self::NAME, p.x.rows().div_ceil(64), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(MaskedSoftmaxParams {
            rows,
            cols,
            rows_per_mask_row
        }))
    }
}
