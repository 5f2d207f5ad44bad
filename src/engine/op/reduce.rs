//! Reductions per row or over a whole tensor (shaders/reduce.wgsl; CPU twin
//! `engine/cpu/reduce.rs`), in a fixed order on every engine.

use super::Operation;
use super::check::{distinct, shape_error};
use crate::engine::adjoint::Adjoint;
use crate::engine::cpu::{CpuEngine, CpuReal, reduce};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{Dispatch, Operand, ParamsLayout, grid_1d, params_layout, words};
use crate::engine::tangent::Transform;
use crate::engine::{BinaryOp, EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    Sum,
    SumOfSquares,
    Max,
}

impl Reduction {
    pub const ALL: [Reduction; 3] = [Reduction::Sum, Reduction::SumOfSquares, Reduction::Max];

    pub fn name(self) -> &'static str {
        match self {
            Reduction::Sum => "sum",
            Reduction::SumOfSquares => "sum_sq",
            Reduction::Max => "max",
        }
    }

    /// The kernel of one pass.
    fn kernel(self) -> Kernel {
        let code = match self {
            Reduction::Sum => 0,
            Reduction::SumOfSquares => 1,
            Reduction::Max => 2,
        };
        Kernel::of_file(&REDUCE_WGSL, "reduce_segments")
            .with("OP", code)
            .labelled("reduce", [self.name(), ""])
    }
}

/// Over what a reduction runs: each row to one value (`rows x 1` out), or everything to one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceAxis {
    PerRow,
    Whole,
}

/// `out = reduction(x)` over `axis`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reduce {
    pub reduction: Reduction,
    pub axis: ReduceAxis,
    pub x: Tensor,
    pub out: Tensor,
}

impl Recording {
    pub fn reduce(
        &mut self,
        reduction: Reduction,
        axis: ReduceAxis,
        x: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(Reduce {
            reduction,
            axis,
            x,
            out,
        })
    }
}

/// Partial results of a whole-array reduction: at most this many.
pub const MAX_REDUCE_PARTIALS: usize = 1024;
const _: () = assert!(MAX_REDUCE_PARTIALS <= crate::engine::gpu::lower::SCRATCH_LEN);
/// Below this length a whole-array reduction is one workgroup.
const SINGLE_PASS_REDUCE_LEN: usize = 4096;

static REDUCE_WGSL: ShaderFile = crate::shader_file!("reduce");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    len: u32,
    segment_len: u32,
    segments: u32,
    _pad: [u32; 5],
}

/// One pass: each segment of `segment_len` values to one.
fn reduce_segments(
    reduction: Reduction,
    len: usize,
    segment_len: usize,
    out: Operand,
    x: Operand,
    max_per_dim: u32,
) -> Result<Dispatch, EngineError> {
    let segments = len.div_ceil(segment_len);
    Ok(Dispatch {
        flop: 0.0,
        kernel: reduction.kernel(),
        params: words(ReduceParams {
            len: len as u32,
            segment_len: segment_len as u32,
            segments: segments as u32,
            _pad: [0; 5],
        }),
        operands: vec![out, x],
        workgroups: grid_1d("reduce", segments, max_per_dim)?,
    })
}

impl Operation for Reduce {
    const NAME: &'static str = "reduce";

    fn kernels() -> Vec<Kernel> {
        Reduction::ALL.map(Reduction::kernel).to_vec()
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        let &Reduce { axis, x, out, .. } = self;
        let expected = match axis {
            ReduceAxis::PerRow => (x.rows(), 1),
            ReduceAxis::Whole => (1, 1),
        };
        if out.shape() != expected {
            return Err(shape_error(
                Self::NAME,
                format!(
                    "out must be {}x{} for {axis:?} over {x}, got {out}",
                    expected.0, expected.1
                ),
            ));
        }
        distinct(Self::NAME, &[out], &[x])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let &Reduce {
            reduction, axis, x, ..
        } = self;
        cpu.with_output(self.out, &[x], |inp, out| {
            reduce::reduce(reduction, axis, inp[0], x.cols(), out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let &Reduce {
            reduction,
            axis,
            x,
            out,
        } = self;
        let Some(dx) = t.live(x) else {
            t.zero(out);
            return Ok(());
        };
        match reduction {
            Reduction::Sum => {
                let d_out = t.output(Self::NAME, out)?;
                t.recording.reduce(Reduction::Sum, axis, dx, d_out)?;
            }
            Reduction::SumOfSquares => {
                // d sum x^2 = 2 sum x dx.
                let product = t.scratch(x)?;
                let summed = t.scratch(out)?;
                let d_out = t.output(Self::NAME, out)?;
                let rec = &mut t.recording;
                rec.binary(BinaryOp::Mul, x, dx, product)?;
                rec.reduce(Reduction::Sum, axis, product, summed)?;
                rec.scale(2.0, summed, d_out)?;
            }
            Reduction::Max => return Err(super::check::not_differentiable(Self::NAME)),
        }
        Ok(())
    }

    /// `dx += d_out` broadcast over what was reduced (times `2 x` for a sum of squares).
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Reduce {
            reduction,
            axis,
            x,
            out,
        } = self;
        if reduction == Reduction::SumOfSquares {
            t.value(Self::NAME, x)?;
        }
        let d_out = t.adjoint(out);
        t.overwritten(out);
        let Some(d_out) = d_out else {
            return Ok(());
        };
        if reduction == Reduction::Max {
            return Err(super::check::not_reversible(Self::NAME));
        }
        t.add_to(x, |t, term| {
            let per_row = match axis {
                ReduceAxis::PerRow => d_out,
                ReduceAxis::Whole => {
                    // Down the rows first: ones (rows x 1) times the 1x1 d_out.
                    let column = t.scratch(x.rows(), 1)?;
                    let ones = t.ones(x.rows(), 1)?;
                    t.recording.matmul(ones, d_out, column, false, false)?;
                    column
                }
            };
            t.broadcast_rows(per_row, term)?;
            if reduction == Reduction::SumOfSquares {
                let broadcast = t.scratch_like(x)?;
                (t.recording).scale(2.0, term, broadcast)?;
                t.recording.binary(BinaryOp::Mul, broadcast, x, term)?;
            }
            Ok(())
        })
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let &Reduce {
            reduction,
            axis,
            x,
            out,
        } = self;
        let (x, out) = (Operand::Tensor(x), Operand::Tensor(out));
        let len = self.x.len();
        if axis == ReduceAxis::PerRow {
            let segment = self.x.cols();
            return Ok(vec![reduce_segments(
                reduction,
                len,
                segment,
                out,
                x,
                max_per_dim,
            )?]);
        }
        if len <= SINGLE_PASS_REDUCE_LEN {
            return Ok(vec![reduce_segments(
                reduction,
                len,
                len,
                out,
                x,
                max_per_dim,
            )?]);
        }
        // Two passes in a fixed order: at most MAX_REDUCE_PARTIALS partials, then one.
        let chunk = len
            .div_ceil(MAX_REDUCE_PARTIALS)
            .max(SINGLE_PASS_REDUCE_LEN);
        let partials = len.div_ceil(chunk);
        let scratch = Operand::Scratch { len: partials };
        // Partials of a sum of squares are already squared: the second pass sums them.
        let second = match reduction {
            Reduction::SumOfSquares => Reduction::Sum,
            other => other,
        };
        Ok(vec![
            reduce_segments(reduction, len, chunk, scratch, x, max_per_dim)?,
            reduce_segments(second, partials, partials, out, scratch, max_per_dim)?,
        ])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(ReduceParams {
            len,
            segment_len,
            segments
        }))
    }
}
