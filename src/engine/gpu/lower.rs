//! Lowering: each recorded op becomes one or more kernel dispatches with their uniform params,
//! bound buffers and workgroup grid. Pure data, no wgpu calls, so it is testable on its own.

use super::kernels::{Bindings, Kernel};
use super::product_pair::ProductParams;
use crate::engine::cpu::random::split_u64;
use crate::engine::op::{AdamHyper, DeviceScalar, Op, ReduceAxis, Reduction};
use crate::engine::{EngineError, Tensor};
use bytemuck::{Pod, Zeroable};

/// What a dispatch binds: a tensor, or the engine's scratch buffer for partial reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Tensor(Tensor),
    /// `len` floats of the engine's scratch buffer.
    Scratch {
        len: usize,
    },
}

/// Params are 16 words (64 bytes, the binding size): the WGSL params struct's bytes, then zeros.
pub type ParamWords = [u32; 16];

#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub kernel: Kernel,
    pub params: ParamWords,
    /// Outputs first, then inputs, in binding order (see `Kernel::bindings`).
    pub operands: Vec<Operand>,
    pub workgroups: [u32; 3],
}

/// The tile configuration of a plain product (matmul.wgsl's two entry points).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulTile {
    /// 64x64 tiles, 4x4 outputs per invocation.
    Small,
    /// 128x128 tiles, 8x8 outputs per invocation, the next K slice prefetched.
    Large,
}

impl MatmulTile {
    /// Large tiles do four times the arithmetic per word staged, but a quarter as many
    /// workgroups: they are chosen where even they make at least one wave on a large GPU,
    /// `LARGE_TILE_MIN_WORKGROUPS` (128, about one per streaming multiprocessor of an H100 or
    /// H200: 132), with both sides at least `LARGE_TILE_MIN_SIDE` (a skinny output would leave
    /// most of each tile empty): outputs of 2048 x 1024 and up. Below that the 64x64 grid's four
    /// times as many workgroups keep more of the GPU busy. A starting rule, to be tuned on a GPU
    /// with `benches/gpu.sh`'s per-configuration timings.
    pub fn for_shape(m: usize, n: usize) -> Self {
        let large_tiles = m.div_ceil(128) * n.div_ceil(128);
        if m.min(n) >= LARGE_TILE_MIN_SIDE && large_tiles >= LARGE_TILE_MIN_WORKGROUPS {
            MatmulTile::Large
        } else {
            MatmulTile::Small
        }
    }

    /// The tile's side, in outputs.
    pub fn side(self) -> usize {
        match self {
            MatmulTile::Small => 64,
            MatmulTile::Large => 128,
        }
    }

    pub fn kernel(self, trans_a: bool, trans_b: bool) -> Kernel {
        match self {
            MatmulTile::Small => Kernel::Matmul { trans_a, trans_b },
            MatmulTile::Large => Kernel::MatmulLarge { trans_a, trans_b },
        }
    }
}

/// The fewest 128x128 workgroups for which a product takes the large tiles.
pub const LARGE_TILE_MIN_WORKGROUPS: usize = 128;
/// The shortest side of an output that takes the large tiles.
pub const LARGE_TILE_MIN_SIDE: usize = 1024;

/// Partial results of a whole-array reduction: at most this many.
pub const MAX_REDUCE_PARTIALS: usize = 1024;
/// Below this length a whole-array reduction is one workgroup.
const SINGLE_PASS_REDUCE_LEN: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    alpha: f32,
    beta: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct LinearParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub b_cols: u32,
    pub alpha: f32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    len: u32,
    _pad: u32,
    alpha: f32,
    /// `1 - alpha` in f64, rounded (the moving average reads it).
    one_minus_alpha: f32,
    _pad2: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    len: u32,
    segment_len: u32,
    segments: u32,
    _pad: [u32; 5],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SoftmaxParams {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    nan_bits: u32,
    _pad: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TransposeParams {
    rows: u32,
    cols: u32,
    _pad: [u32; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MomentumParams {
    len: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    _pad: [u32; 4],
}

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RandomParams {
    len: u32,
    cols: u32,
    seed_lo: u32,
    seed_hi: u32,
    stream_lo: u32,
    stream_hi: u32,
    nan_bits: u32,
    _pad: u32,
}

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DampingParams {
    increase: f32,
    decrease: f32,
    lower_ratio: f32,
    upper_ratio: f32,
    min_lambda: f32,
    max_lambda: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct JacobiParams {
    players: u32,
    columns: u32,
    row_len: u32,
    round: u32,
    _pad: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DeviceScalarParams {
    len: u32,
    coef: f32,
    has_num: u32,
    has_den: u32,
    take_sqrt: u32,
    _pad: [u32; 3],
}

/// Each params struct's WGSL name and the byte offset of each of its fields that the shader
/// reads (every field but padding), for tests/shader_validation.rs to check against naga's
/// layout of the WGSL struct of the same name.
#[doc(hidden)]
pub fn params_layouts() -> Vec<(&'static str, Vec<(&'static str, usize)>)> {
    macro_rules! layout {
        ($ty:ident { $($field:ident),* $(,)? }) => {
            (
                stringify!($ty),
                vec![$((stringify!($field), std::mem::offset_of!($ty, $field))),*],
            )
        };
    }
    vec![
        layout!(MatmulParams {
            m,
            n,
            k,
            accumulate,
            alpha,
            beta
        }),
        layout!(ProductParams {
            m,
            n,
            k,
            b_cols,
            alpha,
            tiles_n,
            tiles
        }),
        layout!(LinearParams {
            m,
            n,
            k,
            b_cols,
            alpha
        }),
        layout!(ElementwiseParams {
            len,
            alpha,
            one_minus_alpha
        }),
        layout!(ReduceParams {
            len,
            segment_len,
            segments
        }),
        layout!(SoftmaxParams {
            rows,
            cols,
            grad_scale,
            nan_bits
        }),
        layout!(TransposeParams { rows, cols }),
        layout!(MomentumParams {
            len,
            nesterov,
            lr,
            momentum
        }),
        layout!(AdamParams {
            len,
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            correction1,
            correction2,
        }),
        layout!(JacobiParams {
            players,
            columns,
            row_len,
            round
        }),
        layout!(DeviceScalarParams {
            len,
            coef,
            has_num,
            has_den,
            take_sqrt
        }),
        layout!(RandomParams {
            len,
            cols,
            seed_lo,
            seed_hi,
            stream_lo,
            stream_hi,
            nan_bits
        }),
        layout!(AdaHessianParams {
            len,
            beta1,
            beta2,
            eps,
            step_size,
            decay,
            correction2_power,
            hessian_power
        }),
        layout!(SophiaParams {
            len,
            lr,
            beta1,
            decay_factor,
            curvature_scale,
            eps
        }),
        layout!(DampingParams {
            increase,
            decrease,
            lower_ratio,
            upper_ratio,
            min_lambda,
            max_lambda
        }),
    ]
}

pub(crate) fn words<P: Pod>(params: P) -> ParamWords {
    const { assert!(size_of::<P>() <= size_of::<ParamWords>()) };
    let mut words = [0u32; 16];
    let bytes = bytemuck::bytes_of(&params);
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

/// Splits `count` workgroups over x and y, as the kernels' `flat_workgroup_id` expects.
pub(crate) fn grid_1d(
    op: &'static str,
    count: usize,
    max_per_dim: u32,
) -> Result<[u32; 3], EngineError> {
    let max = max_per_dim as usize;
    let x = count.clamp(1, max);
    let y = count.div_ceil(x);
    if y > max {
        return Err(EngineError::Shape {
            op,
            message: format!("{count} workgroups exceed the adapter's grid of {max} x {max}"),
        });
    }
    Ok([x as u32, y as u32, 1])
}

pub(crate) fn grid_2d(
    op: &'static str,
    x: usize,
    y: usize,
    max_per_dim: u32,
) -> Result<[u32; 3], EngineError> {
    let max = max_per_dim as usize;
    if x > max || y > max {
        return Err(EngineError::Shape {
            op,
            message: format!(
                "a {x} x {y} grid of workgroups exceeds the adapter's {max} per dimension"
            ),
        });
    }
    Ok([x as u32, y as u32, 1])
}

fn elementwise(
    kernel: Kernel,
    len: usize,
    alpha: f64,
    operands: Vec<Operand>,
    max_per_dim: u32,
) -> Result<Dispatch, EngineError> {
    Ok(Dispatch {
        kernel,
        params: words(ElementwiseParams {
            len: len as u32,
            _pad: 0,
            alpha: alpha as f32,
            one_minus_alpha: (1.0 - alpha) as f32,
            _pad2: [0; 4],
        }),
        operands,
        workgroups: grid_1d("elementwise", len.div_ceil(256), max_per_dim)?,
    })
}

/// A device-scalar dispatch: x, then the scalar's num and den, with x bound again in place of an
/// absent one (the shader's flags say which to ignore).
fn device_scalar(
    kernel: Kernel,
    scalar: DeviceScalar,
    x: Tensor,
    out: Tensor,
    max_per_dim: u32,
) -> Result<Dispatch, EngineError> {
    let len = x.len();
    Ok(Dispatch {
        kernel,
        params: words(DeviceScalarParams {
            len: len as u32,
            coef: scalar.coef as f32,
            has_num: u32::from(scalar.num.is_some()),
            has_den: u32::from(scalar.den.is_some()),
            take_sqrt: u32::from(scalar.sqrt),
            _pad: [0; 3],
        }),
        operands: vec![
            Operand::Tensor(out),
            Operand::Tensor(x),
            Operand::Tensor(scalar.num.unwrap_or(x)),
            Operand::Tensor(scalar.den.unwrap_or(x)),
        ],
        workgroups: grid_1d(kernel.entry_point(), len.div_ceil(256), max_per_dim)?,
    })
}

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
        kernel: Kernel::Reduce(reduction),
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

/// The params of both random kernels: `len` elements (rademacher) or rows (sample_categorical).
fn random_params(len: usize, cols: usize, seed: u64, stream: u64) -> ParamWords {
    let (seed_lo, seed_hi) = split_u64(seed);
    let (stream_lo, stream_hi) = split_u64(stream);
    words(RandomParams {
        len: len as u32,
        cols: cols as u32,
        seed_lo,
        seed_hi,
        stream_lo,
        stream_hi,
        nan_bits: f32::NAN.to_bits(),
        _pad: 0,
    })
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

/// The params of the softmax cross-entropy kernels (the loss, its tangent, the fused sum).
pub(crate) fn softmax_params(logits: Tensor, grad_scale: f64) -> ParamWords {
    words(SoftmaxParams {
        rows: logits.rows() as u32,
        cols: logits.cols() as u32,
        grad_scale: grad_scale as f32,
        nan_bits: f32::NAN.to_bits(),
        _pad: [0; 4],
    })
}

/// The dispatches that execute `op`. `max_per_dim` is the adapter's
/// `max_compute_workgroups_per_dimension`.
pub fn lower(op: &Op, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
    use Operand::Tensor as T;
    let dispatch = match *op {
        Op::Matmul {
            a,
            b,
            c,
            trans_a,
            trans_b,
            alpha,
            beta,
        } => {
            let (m, n) = c.shape();
            let k = if trans_a { a.rows() } else { a.cols() };
            let tile = MatmulTile::for_shape(m, n);
            Dispatch {
                kernel: tile.kernel(trans_a, trans_b),
                params: words(MatmulParams {
                    m: m as u32,
                    n: n as u32,
                    k: k as u32,
                    accumulate: u32::from(beta != 0.0),
                    alpha: alpha as f32,
                    beta: beta as f32,
                    _pad: [0; 2],
                }),
                operands: vec![T(c), T(a), T(b)],
                workgroups: grid_2d(
                    "matmul",
                    n.div_ceil(tile.side()),
                    m.div_ceil(tile.side()),
                    max_per_dim,
                )?,
            }
        }
        Op::Activate { f, x, y } => elementwise(
            Kernel::Activate(f),
            x.len(),
            0.0,
            vec![T(y), T(x)],
            max_per_dim,
        )?,
        Op::ActivateGrad {
            f,
            x,
            grad_y,
            grad_x,
        } => elementwise(
            Kernel::ActivateGrad(f),
            x.len(),
            0.0,
            vec![T(grad_x), T(x), T(grad_y)],
            max_per_dim,
        )?,
        Op::ActivateGradJvp {
            f,
            x,
            grad_y,
            dx,
            d_grad_y,
            out,
        } => elementwise(
            Kernel::ActivateGradJvp(f),
            x.len(),
            0.0,
            vec![T(out), T(x), T(grad_y), T(dx), T(d_grad_y)],
            max_per_dim,
        )?,
        Op::Binary { op, a, b, out } => elementwise(
            Kernel::Binary(op),
            a.len(),
            0.0,
            vec![T(out), T(a), T(b)],
            max_per_dim,
        )?,
        Op::Scale { alpha, x, out } => elementwise(
            Kernel::Scale,
            x.len(),
            alpha,
            vec![T(out), T(x)],
            max_per_dim,
        )?,
        Op::Axpy { alpha, x, y } => {
            elementwise(Kernel::Axpy, x.len(), alpha, vec![T(y), T(x)], max_per_dim)?
        }
        Op::Fill { value, out } => {
            elementwise(Kernel::Fill, out.len(), value, vec![T(out)], max_per_dim)?
        }
        Op::Reduce {
            reduction,
            axis: ReduceAxis::PerRow,
            x,
            out,
        } => reduce_segments(reduction, x.len(), x.cols(), T(out), T(x), max_per_dim)?,
        Op::Reduce {
            reduction,
            axis: ReduceAxis::Whole,
            x,
            out,
        } => {
            let len = x.len();
            if len <= SINGLE_PASS_REDUCE_LEN {
                reduce_segments(reduction, len, len, T(out), T(x), max_per_dim)?
            } else {
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
                return Ok(vec![
                    reduce_segments(reduction, len, chunk, scratch, T(x), max_per_dim)?,
                    reduce_segments(second, partials, partials, T(out), scratch, max_per_dim)?,
                ]);
            }
        }
        Op::SoftmaxCrossEntropy {
            logits,
            labels,
            loss,
            grad,
            grad_scale,
        } => Dispatch {
            kernel: Kernel::SoftmaxCrossEntropy,
            params: softmax_params(logits, grad_scale),
            operands: vec![T(loss), T(grad), T(logits), T(labels)],
            workgroups: grid_1d("softmax_cross_entropy", logits.rows(), max_per_dim)?,
        },
        Op::SoftmaxCrossEntropyJvp {
            logits,
            labels,
            d_logits,
            d_loss,
            d_grad,
            grad_scale,
        } => Dispatch {
            kernel: Kernel::SoftmaxCrossEntropyJvp,
            params: softmax_params(logits, grad_scale),
            operands: vec![T(d_loss), T(d_grad), T(logits), T(labels), T(d_logits)],
            workgroups: grid_1d("softmax_cross_entropy_jvp", logits.rows(), max_per_dim)?,
        },
        Op::AxpyDevice { scalar, x, y } => {
            device_scalar(Kernel::AxpyDevice, scalar, x, y, max_per_dim)?
        }
        Op::ScaleDevice { scalar, x, out } => {
            device_scalar(Kernel::ScaleDevice, scalar, x, out, max_per_dim)?
        }
        Op::Transpose { x, out } => Dispatch {
            kernel: Kernel::Transpose,
            params: words(TransposeParams {
                rows: x.rows() as u32,
                cols: x.cols() as u32,
                _pad: [0; 6],
            }),
            operands: vec![T(out), T(x)],
            workgroups: grid_2d(
                "transpose",
                x.cols().div_ceil(16),
                x.rows().div_ceil(16),
                max_per_dim,
            )?,
        },
        Op::Momentum {
            param,
            grad,
            velocity,
            lr,
            momentum,
            nesterov,
        } => Dispatch {
            kernel: Kernel::Momentum,
            params: words(MomentumParams {
                len: param.len() as u32,
                nesterov: u32::from(nesterov),
                lr: lr as f32,
                momentum: momentum as f32,
                _pad: [0; 4],
            }),
            operands: vec![T(param), T(velocity), T(grad)],
            workgroups: grid_1d("momentum", param.len().div_ceil(256), max_per_dim)?,
        },
        Op::Adam {
            param,
            grad,
            m,
            v,
            hyper,
            step,
        } => Dispatch {
            kernel: Kernel::Adam,
            params: adam_params(param.len(), &hyper, step),
            operands: vec![T(param), T(m), T(v), T(grad)],
            workgroups: grid_1d("adam", param.len().div_ceil(256), max_per_dim)?,
        },
        Op::Unary { op, x, out } => elementwise(
            Kernel::Unary(op),
            x.len(),
            0.0,
            vec![T(out), T(x)],
            max_per_dim,
        )?,
        Op::Ema { beta, x, avg } => {
            elementwise(Kernel::Ema, x.len(), beta, vec![T(avg), T(x)], max_per_dim)?
        }
        Op::Rademacher { out, seed, stream } => Dispatch {
            kernel: Kernel::Rademacher,
            params: random_params(out.len(), 1, seed, stream),
            operands: vec![T(out)],
            workgroups: grid_1d("rademacher", out.len().div_ceil(256), max_per_dim)?,
        },
        Op::SampleCategorical {
            logits,
            labels,
            seed,
            stream,
        } => Dispatch {
            kernel: Kernel::SampleCategorical,
            params: random_params(logits.rows(), logits.cols(), seed, stream),
            operands: vec![T(labels), T(logits)],
            workgroups: grid_1d("sample_categorical", logits.rows(), max_per_dim)?,
        },
        Op::AdaHessian {
            param,
            grad,
            hess_diag,
            m,
            v,
            hyper,
            step,
        } => {
            let scalars = hyper.scalars(step);
            Dispatch {
                kernel: Kernel::AdaHessian,
                params: words(AdaHessianParams {
                    len: param.len() as u32,
                    beta1: hyper.beta1 as f32,
                    beta2: hyper.beta2 as f32,
                    eps: hyper.eps as f32,
                    step_size: scalars.step_size as f32,
                    decay: scalars.decay as f32,
                    correction2_power: scalars.correction2_power as f32,
                    hessian_power: hyper.hessian_power as f32,
                }),
                operands: vec![T(param), T(m), T(v), T(grad), T(hess_diag)],
                workgroups: grid_1d("adahessian", param.len().div_ceil(256), max_per_dim)?,
            }
        }
        Op::Sophia {
            param,
            grad,
            hess,
            m,
            hyper,
        } => Dispatch {
            kernel: Kernel::Sophia,
            params: words(SophiaParams {
                len: param.len() as u32,
                lr: hyper.lr as f32,
                beta1: hyper.beta1 as f32,
                decay_factor: hyper.decay_factor() as f32,
                curvature_scale: hyper.curvature_scale() as f32,
                eps: hyper.eps as f32,
                _pad: [0; 2],
            }),
            operands: vec![T(param), T(m), T(grad), T(hess)],
            workgroups: grid_1d("sophia", param.len().div_ceil(256), max_per_dim)?,
        },
        Op::DampingUpdate {
            lambda,
            actual,
            predicted,
            hyper,
        } => Dispatch {
            kernel: Kernel::DampingUpdate,
            params: words(DampingParams {
                increase: hyper.increase as f32,
                decrease: hyper.decrease as f32,
                lower_ratio: hyper.lower_ratio as f32,
                upper_ratio: hyper.upper_ratio as f32,
                min_lambda: hyper.min_lambda as f32,
                max_lambda: hyper.max_lambda as f32,
                _pad: [0; 2],
            }),
            operands: vec![T(lambda), T(actual), T(predicted)],
            workgroups: [1, 1, 1],
        },
        Op::JacobiRound { rows, basis, round } => {
            let columns = rows.rows();
            let players = columns + columns % 2;
            Dispatch {
                kernel: Kernel::JacobiRound,
                params: words(JacobiParams {
                    players: players as u32,
                    columns: columns as u32,
                    row_len: rows.cols() as u32,
                    round,
                    _pad: [0; 4],
                }),
                operands: vec![T(rows), T(basis)],
                workgroups: grid_1d("jacobi_round", players / 2, max_per_dim)?,
            }
        }
    };
    debug_assert_eq!(
        dispatch.operands.len(),
        Bindings::storage_count(dispatch.kernel.bindings())
    );
    Ok(vec![dispatch])
}
