//! The operations both engines execute. Each variant is one kernel family: a WGSL file in
//! `shaders/` and its CPU twin in `src/engine/cpu/` with the same name and semantics.

use super::Tensor;

/// Activation functions (forward `y = f(x)`, backward `dx = dy * f'(x)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    /// The tanh approximation of GELU (as in GPT-2 / BERT), the same formula on every engine.
    Gelu,
    Tanh,
}

impl Activation {
    pub const ALL: [Activation; 3] = [Activation::Relu, Activation::Gelu, Activation::Tanh];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::Tanh => "tanh",
        }
    }
}

/// Elementwise binary operations `out = a (op) b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 3] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
        }
    }
}

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
}

/// Over what a reduction runs: each row to one value (`rows x 1` out), or everything to one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceAxis {
    PerRow,
    Whole,
}

/// One recorded operation. Scalars are f64 so the f64 engine computes at full precision; the GPU
/// and the f32 engine round them to f32.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `c = alpha * op(a) op(b) + beta * c`, where op transposes when asked. With `beta == 0`
    /// the old `c` is not read (so NaN or garbage there does not leak in).
    Matmul {
        a: Tensor,
        b: Tensor,
        c: Tensor,
        trans_a: bool,
        trans_b: bool,
        alpha: f64,
        beta: f64,
    },
    Activate {
        f: Activation,
        x: Tensor,
        y: Tensor,
    },
    /// `grad_x = grad_y * f'(x)`, with `x` the activation's input.
    ActivateGrad {
        f: Activation,
        x: Tensor,
        grad_y: Tensor,
        grad_x: Tensor,
    },
    /// The tangent (forward-mode derivative) of `ActivateGrad` along `(dx, d_grad_y)`:
    /// `out = d_grad_y * f'(x) + grad_y * f''(x) * dx`. `f''` is 0 everywhere for relu (its
    /// derivative is piecewise constant), the exact derivative of the tanh-form GELU's `f'`, and
    /// `-2 t (1 - t^2)` with `t = tanh(x)` for tanh.
    ActivateGradJvp {
        f: Activation,
        x: Tensor,
        grad_y: Tensor,
        dx: Tensor,
        d_grad_y: Tensor,
        out: Tensor,
    },
    Binary {
        op: BinaryOp,
        a: Tensor,
        b: Tensor,
        out: Tensor,
    },
    /// `out = alpha * x`
    Scale {
        alpha: f64,
        x: Tensor,
        out: Tensor,
    },
    /// `y = y + alpha * x`
    Axpy {
        alpha: f64,
        x: Tensor,
        y: Tensor,
    },
    /// `out = value` everywhere.
    Fill {
        value: f64,
        out: Tensor,
    },
    Reduce {
        reduction: Reduction,
        axis: ReduceAxis,
        x: Tensor,
        out: Tensor,
    },
    /// Row-wise softmax cross-entropy. `labels` (`rows x 1`) holds class indices as floats.
    /// `loss[r] = logsumexp(logits[r]) - logits[r][label]`;
    /// `grad[r][j] = grad_scale * (softmax(logits[r])[j] - [j == label])`.
    /// A label outside `0..cols` gives a NaN loss and NaN gradient row.
    SoftmaxCrossEntropy {
        logits: Tensor,
        labels: Tensor,
        loss: Tensor,
        grad: Tensor,
        grad_scale: f64,
    },
    /// The tangent of `SoftmaxCrossEntropy` along `d_logits` (the labels are constants). With
    /// `p = softmax(logits[r])` and `s = sum_j p_j d_logits[r][j]`:
    /// `d_loss[r] = s - d_logits[r][label]`;
    /// `d_grad[r][j] = grad_scale * p_j * (d_logits[r][j] - s)`.
    /// A label outside `0..cols` gives a NaN `d_loss` and a NaN `d_grad` row, as the loss does.
    SoftmaxCrossEntropyJvp {
        logits: Tensor,
        labels: Tensor,
        d_logits: Tensor,
        d_loss: Tensor,
        d_grad: Tensor,
        grad_scale: f64,
    },
    Transpose {
        x: Tensor,
        out: Tensor,
    },
    /// `y = y + value * x`, with the scalar `value` computed on the device (see [`DeviceScalar`]),
    /// so iterations that need a norm or a ratio of reductions run without a readback.
    AxpyDevice {
        scalar: DeviceScalar,
        x: Tensor,
        y: Tensor,
    },
    /// `out = value * x`, with the scalar `value` computed on the device (see [`DeviceScalar`]).
    ScaleDevice {
        scalar: DeviceScalar,
        x: Tensor,
        out: Tensor,
    },
    /// SGD with momentum, in place: `velocity = momentum velocity + grad`, then
    /// `param -= lr (grad + momentum velocity)` with Nesterov, else `param -= lr velocity`.
    Momentum {
        param: Tensor,
        grad: Tensor,
        velocity: Tensor,
        lr: f64,
        momentum: f64,
        nesterov: bool,
    },
    /// One round of the parallel one-sided Jacobi SVD, in place: `rows` (columns x len) holds the
    /// columns being orthogonalised, `basis` (columns x columns) accumulates the rotations.
    JacobiRound {
        rows: Tensor,
        basis: Tensor,
        round: u32,
    },
    /// AdamW (Adam when `weight_decay == 0`), in place, at optimiser step `step` (from 1).
    Adam {
        param: Tensor,
        grad: Tensor,
        m: Tensor,
        v: Tensor,
        hyper: AdamHyper,
        step: u32,
    },
}

/// A scalar computed on the device from 1x1 tensors: `coef * r`, or `coef * sqrt(r)` when `sqrt`,
/// with `r = num[0] / den[0]`; a missing `num` or `den` counts as 1. Every engine computes it in
/// its own precision (f32 on the GPU, in each invocation) in this order: the ratio, the square
/// root, then `coef` times that. A negative `r` with `sqrt` gives NaN; a zero `den` an infinity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceScalar {
    pub coef: f64,
    pub num: Option<Tensor>,
    pub den: Option<Tensor>,
    pub sqrt: bool,
}

impl DeviceScalar {
    /// The constant `coef` (no tensor read).
    pub fn constant(coef: f64) -> Self {
        Self {
            coef,
            num: None,
            den: None,
            sqrt: false,
        }
    }

    /// `coef * num[0] / den[0]`.
    pub fn ratio(coef: f64, num: Tensor, den: Tensor) -> Self {
        Self {
            coef,
            num: Some(num),
            den: Some(den),
            sqrt: false,
        }
    }

    /// `coef / sqrt(den[0])`, e.g. one over a norm from a sum of squares.
    pub fn inverse_sqrt(coef: f64, den: Tensor) -> Self {
        Self {
            coef,
            num: None,
            den: Some(den),
            sqrt: true,
        }
    }

    /// The tensors the scalar reads.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.num.into_iter().chain(self.den).collect()
    }
}

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

impl Op {
    /// The kernel family's name, as used in timings and errors.
    pub fn kernel_name(&self) -> &'static str {
        match self {
            Op::Matmul { .. } => "matmul",
            Op::Activate { .. } => "activate",
            Op::ActivateGrad { .. } => "activate_grad",
            Op::ActivateGradJvp { .. } => "activate_grad_jvp",
            Op::Binary { .. } => "binary",
            Op::Scale { .. } => "scale",
            Op::Axpy { .. } => "axpy",
            Op::Fill { .. } => "fill",
            Op::Reduce { .. } => "reduce",
            Op::SoftmaxCrossEntropy { .. } => "softmax_cross_entropy",
            Op::SoftmaxCrossEntropyJvp { .. } => "softmax_cross_entropy_jvp",
            Op::Transpose { .. } => "transpose",
            Op::AxpyDevice { .. } => "axpy_device",
            Op::ScaleDevice { .. } => "scale_device",
            Op::Momentum { .. } => "momentum",
            Op::Adam { .. } => "adam",
            Op::JacobiRound { .. } => "jacobi_round",
        }
    }

    /// Every tensor this op touches, so engines can check they are alive.
    pub fn tensors(&self) -> Vec<Tensor> {
        match *self {
            Op::Matmul { a, b, c, .. } => vec![a, b, c],
            Op::Activate { x, y, .. } => vec![x, y],
            Op::ActivateGrad {
                x, grad_y, grad_x, ..
            } => vec![x, grad_y, grad_x],
            Op::ActivateGradJvp {
                x,
                grad_y,
                dx,
                d_grad_y,
                out,
                ..
            } => vec![x, grad_y, dx, d_grad_y, out],
            Op::Binary { a, b, out, .. } => vec![a, b, out],
            Op::Scale { x, out, .. } => vec![x, out],
            Op::Axpy { x, y, .. } => vec![x, y],
            Op::Fill { out, .. } => vec![out],
            Op::Reduce { x, out, .. } => vec![x, out],
            Op::SoftmaxCrossEntropy {
                logits,
                labels,
                loss,
                grad,
                ..
            } => vec![logits, labels, loss, grad],
            Op::SoftmaxCrossEntropyJvp {
                logits,
                labels,
                d_logits,
                d_loss,
                d_grad,
                ..
            } => vec![logits, labels, d_logits, d_loss, d_grad],
            Op::Transpose { x, out } => vec![x, out],
            Op::AxpyDevice { scalar, x, y } => [x, y].into_iter().chain(scalar.tensors()).collect(),
            Op::ScaleDevice { scalar, x, out } => {
                [x, out].into_iter().chain(scalar.tensors()).collect()
            }
            Op::Momentum {
                param,
                grad,
                velocity,
                ..
            } => vec![param, grad, velocity],
            Op::Adam {
                param, grad, m, v, ..
            } => vec![param, grad, m, v],
            Op::JacobiRound { rows, basis, .. } => vec![rows, basis],
        }
    }
}
