//! A recording: a list of operations checked for shape when recorded, executed by any engine.
//! Keeping the list apart from the engine keeps algorithm code free of wgpu calls and lets the
//! GPU engine submit many steps in one command buffer.

use super::op::{
    Activation, AdaHessianHyper, AdamHyper, BinaryOp, DampingHyper, DeviceScalar, Op, ReduceAxis,
    Reduction, SophiaHyper, UnaryOp,
};
use super::{EngineError, Tensor};

#[derive(Clone, Debug, Default)]
pub struct Recording {
    ops: Vec<Op>,
}

fn shape_error(op: &'static str, message: String) -> EngineError {
    EngineError::Shape { op, message }
}

fn same_shape(op: &'static str, what: &str, a: Tensor, b: Tensor) -> Result<(), EngineError> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(shape_error(
            op,
            format!("{what} must have the same shape, got {a} and {b}"),
        ))
    }
}

/// Outputs may not alias inputs or each other: a GPU dispatch cannot bind one buffer both
/// read-only and read-write, and both engines refuse the same recordings.
fn distinct(op: &'static str, outputs: &[Tensor], inputs: &[Tensor]) -> Result<(), EngineError> {
    for (i, out) in outputs.iter().enumerate() {
        if inputs.contains(out) || outputs[..i].contains(out) {
            return Err(shape_error(
                op,
                format!("output {out} must not alias another operand of the same op"),
            ));
        }
    }
    Ok(())
}

/// A device scalar reads `num[0]` and `den[0]`: both must be 1x1.
fn scalar_operands(op: &'static str, scalar: &DeviceScalar) -> Result<(), EngineError> {
    for (what, tensor) in [("num", scalar.num), ("den", scalar.den)] {
        if let Some(t) = tensor
            && t.shape() != (1, 1)
        {
            return Err(shape_error(
                op,
                format!("the scalar's {what} must be 1x1, got {t}"),
            ));
        }
    }
    Ok(())
}

/// Labels and per-row outputs of the softmax cross-entropy ops must be `rows x 1`.
fn per_row(op: &'static str, what: &str, logits: Tensor, t: Tensor) -> Result<(), EngineError> {
    let rows = logits.rows();
    if t.shape() == (rows, 1) {
        Ok(())
    } else {
        Err(shape_error(
            op,
            format!("{what} must be {rows}x1 for logits {logits}, got {t}"),
        ))
    }
}

impl Recording {
    pub fn new() -> Self {
        Self::default()
    }

    /// FLOPs of the recording's matrix products (2 m n k each; the element-wise work is not
    /// counted): what GFLOP/s figures divide by.
    pub fn matmul_flop(&self) -> f64 {
        self.ops
            .iter()
            .map(|op| match *op {
                Op::Matmul { a, c, trans_a, .. } => {
                    let k = if trans_a { a.rows() } else { a.cols() };
                    2.0 * (c.rows() * c.cols() * k) as f64
                }
                _ => 0.0,
            })
            .sum()
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends an op taken from another recording, where it was checked already.
    pub(super) fn push_recorded(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Appends another recording (for example, one optimisation step repeated N times).
    pub fn extend(&mut self, other: &Recording) {
        self.ops.extend_from_slice(&other.ops);
    }

    /// `c = op(a) op(b)`.
    pub fn matmul(
        &mut self,
        a: Tensor,
        b: Tensor,
        c: Tensor,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<&mut Self, EngineError> {
        self.matmul_scaled(a, b, c, trans_a, trans_b, 1.0, 0.0)
    }

    /// `c = alpha * op(a) op(b) + beta * c`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_scaled(
        &mut self,
        a: Tensor,
        b: Tensor,
        c: Tensor,
        trans_a: bool,
        trans_b: bool,
        alpha: f64,
        beta: f64,
    ) -> Result<&mut Self, EngineError> {
        let (m, k) = if trans_a {
            (a.cols(), a.rows())
        } else {
            (a.rows(), a.cols())
        };
        let (k2, n) = if trans_b {
            (b.cols(), b.rows())
        } else {
            (b.rows(), b.cols())
        };
        let describe = || {
            format!(
                "A{} is {a}, B{} is {b}, C is {c}",
                if trans_a { "^T" } else { "" },
                if trans_b { "^T" } else { "" }
            )
        };
        if k != k2 {
            return Err(shape_error(
                "matmul",
                format!("inner dimensions differ ({k} vs {k2}): {}", describe()),
            ));
        }
        if c.shape() != (m, n) {
            return Err(shape_error(
                "matmul",
                format!("C must be {m}x{n}: {}", describe()),
            ));
        }
        distinct("matmul", &[c], &[a, b])?;
        self.ops.push(Op::Matmul {
            a,
            b,
            c,
            trans_a,
            trans_b,
            alpha,
            beta,
        });
        Ok(self)
    }

    pub fn activate(
        &mut self,
        f: Activation,
        x: Tensor,
        y: Tensor,
    ) -> Result<&mut Self, EngineError> {
        same_shape("activate", "x and y", x, y)?;
        distinct("activate", &[y], &[x])?;
        self.ops.push(Op::Activate { f, x, y });
        Ok(self)
    }

    pub fn activate_grad(
        &mut self,
        f: Activation,
        x: Tensor,
        grad_y: Tensor,
        grad_x: Tensor,
    ) -> Result<&mut Self, EngineError> {
        same_shape("activate_grad", "x and grad_y", x, grad_y)?;
        same_shape("activate_grad", "x and grad_x", x, grad_x)?;
        distinct("activate_grad", &[grad_x], &[x, grad_y])?;
        self.ops.push(Op::ActivateGrad {
            f,
            x,
            grad_y,
            grad_x,
        });
        Ok(self)
    }

    /// `out = d_grad_y * f'(x) + grad_y * f''(x) * dx`: the tangent of `activate_grad`.
    pub fn activate_grad_jvp(
        &mut self,
        f: Activation,
        x: Tensor,
        grad_y: Tensor,
        dx: Tensor,
        d_grad_y: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        let op = "activate_grad_jvp";
        same_shape(op, "x and grad_y", x, grad_y)?;
        same_shape(op, "x and dx", x, dx)?;
        same_shape(op, "x and d_grad_y", x, d_grad_y)?;
        same_shape(op, "x and out", x, out)?;
        distinct(op, &[out], &[x, grad_y, dx, d_grad_y])?;
        self.ops.push(Op::ActivateGradJvp {
            f,
            x,
            grad_y,
            dx,
            d_grad_y,
            out,
        });
        Ok(self)
    }

    pub fn binary(
        &mut self,
        op: BinaryOp,
        a: Tensor,
        b: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        same_shape("binary", "a and b", a, b)?;
        same_shape("binary", "a and out", a, out)?;
        distinct("binary", &[out], &[a, b])?;
        self.ops.push(Op::Binary { op, a, b, out });
        Ok(self)
    }

    pub fn scale(&mut self, alpha: f64, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        same_shape("scale", "x and out", x, out)?;
        distinct("scale", &[out], &[x])?;
        self.ops.push(Op::Scale { alpha, x, out });
        Ok(self)
    }

    pub fn axpy(&mut self, alpha: f64, x: Tensor, y: Tensor) -> Result<&mut Self, EngineError> {
        same_shape("axpy", "x and y", x, y)?;
        distinct("axpy", &[y], &[x])?;
        self.ops.push(Op::Axpy { alpha, x, y });
        Ok(self)
    }

    /// `y = y + value * x`, with `value` computed on the device from `scalar`.
    pub fn axpy_device(
        &mut self,
        scalar: DeviceScalar,
        x: Tensor,
        y: Tensor,
    ) -> Result<&mut Self, EngineError> {
        let op = "axpy_device";
        same_shape(op, "x and y", x, y)?;
        scalar_operands(op, &scalar)?;
        let inputs: Vec<Tensor> = [x].into_iter().chain(scalar.tensors()).collect();
        distinct(op, &[y], &inputs)?;
        self.ops.push(Op::AxpyDevice { scalar, x, y });
        Ok(self)
    }

    /// `out = value * x`, with `value` computed on the device from `scalar`.
    pub fn scale_device(
        &mut self,
        scalar: DeviceScalar,
        x: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        let op = "scale_device";
        same_shape(op, "x and out", x, out)?;
        scalar_operands(op, &scalar)?;
        let inputs: Vec<Tensor> = [x].into_iter().chain(scalar.tensors()).collect();
        distinct(op, &[out], &inputs)?;
        self.ops.push(Op::ScaleDevice { scalar, x, out });
        Ok(self)
    }

    pub fn fill(&mut self, value: f64, out: Tensor) -> &mut Self {
        self.ops.push(Op::Fill { value, out });
        self
    }

    pub fn reduce(
        &mut self,
        reduction: Reduction,
        axis: ReduceAxis,
        x: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        let expected = match axis {
            ReduceAxis::PerRow => (x.rows(), 1),
            ReduceAxis::Whole => (1, 1),
        };
        if out.shape() != expected {
            return Err(shape_error(
                "reduce",
                format!(
                    "out must be {}x{} for {axis:?} over {x}, got {out}",
                    expected.0, expected.1
                ),
            ));
        }
        distinct("reduce", &[out], &[x])?;
        self.ops.push(Op::Reduce {
            reduction,
            axis,
            x,
            out,
        });
        Ok(self)
    }

    pub fn softmax_cross_entropy(
        &mut self,
        logits: Tensor,
        labels: Tensor,
        loss: Tensor,
        grad: Tensor,
        grad_scale: f64,
    ) -> Result<&mut Self, EngineError> {
        let op = "softmax_cross_entropy";
        per_row(op, "labels", logits, labels)?;
        per_row(op, "loss", logits, loss)?;
        same_shape(op, "logits and grad", logits, grad)?;
        distinct(op, &[loss, grad], &[logits, labels])?;
        self.ops.push(Op::SoftmaxCrossEntropy {
            logits,
            labels,
            loss,
            grad,
            grad_scale,
        });
        Ok(self)
    }

    /// The tangent of `softmax_cross_entropy` along `d_logits` (see `Op::SoftmaxCrossEntropyJvp`).
    pub fn softmax_cross_entropy_jvp(
        &mut self,
        logits: Tensor,
        labels: Tensor,
        d_logits: Tensor,
        d_loss: Tensor,
        d_grad: Tensor,
        grad_scale: f64,
    ) -> Result<&mut Self, EngineError> {
        let op = "softmax_cross_entropy_jvp";
        per_row(op, "labels", logits, labels)?;
        per_row(op, "d_loss", logits, d_loss)?;
        same_shape(op, "logits and d_logits", logits, d_logits)?;
        same_shape(op, "logits and d_grad", logits, d_grad)?;
        distinct(op, &[d_loss, d_grad], &[logits, labels, d_logits])?;
        self.ops.push(Op::SoftmaxCrossEntropyJvp {
            logits,
            labels,
            d_logits,
            d_loss,
            d_grad,
            grad_scale,
        });
        Ok(self)
    }

    pub fn transpose(&mut self, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        if out.shape() != (x.cols(), x.rows()) {
            return Err(shape_error(
                "transpose",
                format!("out must be {}x{} for {x}, got {out}", x.cols(), x.rows()),
            ));
        }
        distinct("transpose", &[out], &[x])?;
        self.ops.push(Op::Transpose { x, out });
        Ok(self)
    }

    pub fn momentum(
        &mut self,
        param: Tensor,
        grad: Tensor,
        velocity: Tensor,
        lr: f64,
        momentum: f64,
        nesterov: bool,
    ) -> Result<&mut Self, EngineError> {
        same_shape("momentum", "param and grad", param, grad)?;
        same_shape("momentum", "param and velocity", param, velocity)?;
        distinct("momentum", &[param, velocity], &[grad])?;
        self.ops.push(Op::Momentum {
            param,
            grad,
            velocity,
            lr,
            momentum,
            nesterov,
        });
        Ok(self)
    }

    pub fn adam(
        &mut self,
        param: Tensor,
        grad: Tensor,
        (m, v): (Tensor, Tensor),
        hyper: AdamHyper,
        step: u32,
    ) -> Result<&mut Self, EngineError> {
        same_shape("adam", "param and grad", param, grad)?;
        same_shape("adam", "param and m", param, m)?;
        same_shape("adam", "param and v", param, v)?;
        distinct("adam", &[param, m, v], &[grad])?;
        self.ops.push(Op::Adam {
            param,
            grad,
            m,
            v,
            hyper,
            step,
        });
        Ok(self)
    }

    /// `out = f(x)` elementwise (`abs`, `sign`, `sigmoid`, `softplus`).
    pub fn unary(&mut self, op: UnaryOp, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        same_shape(op.name(), "x and out", x, out)?;
        distinct(op.name(), &[out], &[x])?;
        self.ops.push(Op::Unary { op, x, out });
        Ok(self)
    }

    /// `out = |x|` elementwise.
    pub fn abs(&mut self, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        self.unary(UnaryOp::Abs, x, out)
    }

    /// `out = sign(x)` elementwise: 1, -1, or 0 at 0 (and NaN).
    pub fn sign(&mut self, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        self.unary(UnaryOp::Sign, x, out)
    }

    /// In place `avg = beta avg + (1 - beta) x` (`x` and `avg` distinct).
    pub fn ema(&mut self, beta: f64, x: Tensor, avg: Tensor) -> Result<&mut Self, EngineError> {
        same_shape("ema", "x and avg", x, avg)?;
        distinct("ema", &[avg], &[x])?;
        self.ops.push(Op::Ema { beta, x, avg });
        Ok(self)
    }

    /// Fills `out` with +1/-1 from a counter-based hash of `(seed, stream, index)`: the same
    /// values on every engine (see `Op::Rademacher`). Use a different `stream` per probe.
    pub fn rademacher(&mut self, out: Tensor, seed: u64, stream: u64) -> &mut Self {
        self.ops.push(Op::Rademacher { out, seed, stream });
        self
    }

    /// Draws one class per row of `logits` from its softmax into `labels_out` (`rows x 1`, class
    /// indices as floats, as `softmax_cross_entropy` reads them); see `Op::SampleCategorical`.
    /// The row's uniform comes from the hash `rademacher` uses, at index r: give the two
    /// different streams.
    pub fn sample_categorical(
        &mut self,
        logits: Tensor,
        labels_out: Tensor,
        seed: u64,
        stream: u64,
    ) -> Result<&mut Self, EngineError> {
        let op = "sample_categorical";
        per_row(op, "labels_out", logits, labels_out)?;
        distinct(op, &[labels_out], &[logits])?;
        self.ops.push(Op::SampleCategorical {
            logits,
            labels: labels_out,
            seed,
            stream,
        });
        Ok(self)
    }

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
        let op = "adahessian";
        same_shape(op, "param and grad", param, grad)?;
        same_shape(op, "param and hess_diag", param, hess_diag)?;
        same_shape(op, "param and m", param, m)?;
        same_shape(op, "param and v", param, v)?;
        distinct(op, &[param, m, v], &[grad, hess_diag])?;
        if !(0.0..=1.0).contains(&hyper.hessian_power) {
            return Err(shape_error(
                op,
                format!(
                    "hessian_power must be in [0, 1], got {}",
                    hyper.hessian_power
                ),
            ));
        }
        self.ops.push(Op::AdaHessian {
            param,
            grad,
            hess_diag,
            m,
            v,
            hyper,
            step,
        });
        Ok(self)
    }

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
        let op = "sophia";
        same_shape(op, "param and grad", param, grad)?;
        same_shape(op, "param and hess", param, hess)?;
        same_shape(op, "param and m", param, m)?;
        distinct(op, &[param, m], &[grad, hess])?;
        self.ops.push(Op::Sophia {
            param,
            grad,
            hess,
            m,
            hyper,
        });
        Ok(self)
    }

    /// Levenberg-Marquardt damping from the actual and predicted loss changes, in place on
    /// `lambda`; all three 1x1. See [`DampingHyper`].
    pub fn damping_update(
        &mut self,
        lambda: Tensor,
        actual: Tensor,
        predicted: Tensor,
        hyper: DampingHyper,
    ) -> Result<&mut Self, EngineError> {
        let op = "damping_update";
        for (what, t) in [
            ("lambda", lambda),
            ("actual", actual),
            ("predicted", predicted),
        ] {
            if t.shape() != (1, 1) {
                return Err(shape_error(op, format!("{what} must be 1x1, got {t}")));
            }
        }
        distinct(op, &[lambda], &[actual, predicted])?;
        // WGSL's clamp is indeterminate for low > high.
        if hyper.min_lambda.is_nan()
            || hyper.max_lambda.is_nan()
            || hyper.min_lambda > hyper.max_lambda
        {
            return Err(shape_error(
                op,
                format!(
                    "min_lambda ({}) must not exceed max_lambda ({})",
                    hyper.min_lambda, hyper.max_lambda
                ),
            ));
        }
        self.ops.push(Op::DampingUpdate {
            lambda,
            actual,
            predicted,
            hyper,
        });
        Ok(self)
    }

    pub fn jacobi_round(
        &mut self,
        rows: Tensor,
        basis: Tensor,
        round: u32,
    ) -> Result<&mut Self, EngineError> {
        let columns = rows.rows();
        if basis.shape() != (columns, columns) {
            return Err(shape_error(
                "jacobi_round",
                format!("basis must be {columns}x{columns} for rows {rows}, got {basis}"),
            ));
        }
        distinct("jacobi_round", &[rows, basis], &[])?;
        self.ops.push(Op::JacobiRound { rows, basis, round });
        Ok(self)
    }
}
