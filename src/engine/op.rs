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

/// Elementwise unary operations `out = f(x)` outside the activations (no backward kernel of
/// their own): `abs`, `sign` (1 for x > 0, -1 for x < 0, 0 for 0 and NaN), the logistic
/// `sigmoid` 1 / (1 + e^-x) and `softplus` ln(1 + e^x) (NPO's loss and its gradient weight),
/// both written so that no exponential overflows: sigmoid from e^-|x|, softplus as
/// max(x, 0) + ln(1 + e^-|x|); `exp` e^x and `log1p` ln(1 + x) (RepNoise's Gaussian kernels and
/// its log of the harmful loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Abs,
    Sign,
    Sigmoid,
    Softplus,
    Exp,
    Log1p,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 6] = [
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Exp,
        UnaryOp::Log1p,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Exp => "exp",
            UnaryOp::Log1p => "log1p",
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
    /// `out = f(x)` elementwise (see [`UnaryOp`]).
    Unary {
        op: UnaryOp,
        x: Tensor,
        out: Tensor,
    },
    /// Exponential moving average, in place: `avg = beta avg + (1 - beta) x`, with `1 - beta`
    /// computed in f64 on the host (so a beta near 1 keeps its complement's precision in f32).
    Ema {
        beta: f64,
        x: Tensor,
        avg: Tensor,
    },
    /// `out[i] = +1 or -1`, from bit 31 of [`random_bits`](crate::engine::cpu::random::random_bits)
    /// `(seed, stream, i)` (clear: +1): a counter-based hash in u32 arithmetic, the same bits on
    /// every engine.
    Rademacher {
        out: Tensor,
        seed: u64,
        stream: u64,
    },
    /// For each row r of `logits` (`rows x classes`), a class drawn from `softmax(logits[r])` by
    /// the inverse CDF: with `e_j = exp(logits[r][j] - max_j logits[r][j])`, `c_j` their running
    /// sums and `u` the 24-bit uniform in [0, 1) of `(seed, stream, r)`
    /// ([`uniform`](crate::engine::cpu::random::uniform)), the label is the smallest `j` with
    /// `u c_last < c_j`. Written as a float into `labels` (`rows x 1`), as
    /// `SoftmaxCrossEntropy` reads labels. A row with a NaN or +inf logit (or only -inf ones)
    /// gets a NaN label. Engines agree except where `u` lies within rounding of a CDF boundary.
    SampleCategorical {
        logits: Tensor,
        labels: Tensor,
        seed: u64,
        stream: u64,
    },
    /// AdaHessian (Yao et al. 2021), in place, at optimiser step `step` (from 1); see
    /// [`AdaHessianHyper`]. `hess_diag` is the Hessian-diagonal estimate D (already averaged
    /// over whatever blocks the caller averages).
    AdaHessian {
        param: Tensor,
        grad: Tensor,
        hess_diag: Tensor,
        m: Tensor,
        v: Tensor,
        hyper: AdaHessianHyper,
        step: u32,
    },
    /// Sophia's clipped update (Liu et al. 2023, SophiaG), in place; see [`SophiaHyper`]. `hess`
    /// is the caller's moving average of `g_hat^2` (kept with `Ema`), which the update scales by
    /// `rho * batch_size`.
    Sophia {
        param: Tensor,
        grad: Tensor,
        hess: Tensor,
        m: Tensor,
        hyper: SophiaHyper,
    },
    /// Levenberg-Marquardt damping for Newton-CG (Martens 2010), on 1x1 tensors, in place on
    /// `lambda`; see [`DampingHyper`].
    DampingUpdate {
        lambda: Tensor,
        actual: Tensor,
        predicted: Tensor,
        hyper: DampingHyper,
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

    /// `coef / den[0]`.
    pub fn over(coef: f64, den: Tensor) -> Self {
        Self {
            coef,
            num: None,
            den: Some(den),
            sqrt: false,
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
            correction2_power: crate::engine::cpu::optimizer::hessian_power(
                c2.sqrt(),
                self.hessian_power,
            ),
        }
    }
}

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

/// Levenberg-Marquardt damping of Newton-CG (Martens 2010, "Deep learning via Hessian-free
/// optimization", section 4.1). With `rho = actual / predicted`, `actual = L(theta + d) -
/// L(theta)` and `predicted = g.d + d.(H d) / 2` the quadratic model's change (both negative
/// for a good step):
///
/// ```text
/// lambda *= increase   where predicted >= 0, rho is not finite, or rho < lower_ratio
/// lambda *= decrease   where rho > upper_ratio
/// lambda  = clamp(lambda, min_lambda, max_lambda)
/// ```
///
/// (NaN in `predicted` counts as not negative.) Defaults ([`Default`]): `increase` 3/2,
/// `decrease` 2/3, ratios 1/4 and 3/4 (Martens'), lambda in [1e-8, 1e8].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DampingHyper {
    pub increase: f64,
    pub decrease: f64,
    pub lower_ratio: f64,
    pub upper_ratio: f64,
    pub min_lambda: f64,
    pub max_lambda: f64,
}

impl Default for DampingHyper {
    fn default() -> Self {
        Self {
            increase: 1.5,
            decrease: 2.0 / 3.0,
            lower_ratio: 0.25,
            upper_ratio: 0.75,
            min_lambda: 1e-8,
            max_lambda: 1e8,
        }
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
            Op::Unary { .. } => "unary",
            Op::Ema { .. } => "ema",
            Op::Rademacher { .. } => "rademacher",
            Op::SampleCategorical { .. } => "sample_categorical",
            Op::AdaHessian { .. } => "adahessian",
            Op::Sophia { .. } => "sophia",
            Op::DampingUpdate { .. } => "damping_update",
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
            Op::Unary { x, out, .. } => vec![x, out],
            Op::Ema { x, avg, .. } => vec![x, avg],
            Op::Rademacher { out, .. } => vec![out],
            Op::SampleCategorical { logits, labels, .. } => vec![logits, labels],
            Op::AdaHessian {
                param,
                grad,
                hess_diag,
                m,
                v,
                ..
            } => vec![param, grad, hess_diag, m, v],
            Op::Sophia {
                param,
                grad,
                hess,
                m,
                ..
            } => vec![param, grad, hess, m],
            Op::DampingUpdate {
                lambda,
                actual,
                predicted,
                ..
            } => vec![lambda, actual, predicted],
        }
    }
}
