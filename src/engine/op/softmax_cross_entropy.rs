//! Row-wise softmax cross-entropy and its tangent (shaders/softmax_cross_entropy.wgsl; CPU
//! twins in `engine/cpu/softmax_cross_entropy.rs`).

use super::Operation;
use super::check::{distinct, per_row, same_shape, shape_error};
use crate::engine::adjoint::Adjoint;
use crate::engine::cpu::{CpuEngine, CpuReal, softmax_cross_entropy as twin};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamWords, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{BinaryOp, EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// Row-wise softmax cross-entropy. `labels` (`rows x 1`) holds class indices as floats.
/// `loss[r] = logsumexp(logits[r]) - logits[r][label]`;
/// `grad[r][j] = grad_scale * (softmax(logits[r])[j] - [j == label])`.
/// A label outside `0..cols` gives a NaN loss and NaN gradient row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxCrossEntropy {
    pub logits: Tensor,
    pub labels: Tensor,
    pub loss: Tensor,
    pub grad: Tensor,
    pub grad_scale: f64,
}

/// The tangent of [`SoftmaxCrossEntropy`] along `d_logits` (the labels are constants). With
/// `p = softmax(logits[r])` and `s = sum_j p_j d_logits[r][j]`:
/// `d_loss[r] = s - d_logits[r][label]`;
/// `d_grad[r][j] = grad_scale * p_j * (d_logits[r][j] - s)`.
/// A label outside `0..cols` gives a NaN `d_loss` and a NaN `d_grad` row, as the loss does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxCrossEntropyJvp {
    pub logits: Tensor,
    pub labels: Tensor,
    pub d_logits: Tensor,
    pub d_loss: Tensor,
    pub d_grad: Tensor,
    pub grad_scale: f64,
}

impl Recording {
    pub fn softmax_cross_entropy(
        &mut self,
        logits: Tensor,
        labels: Tensor,
        loss: Tensor,
        grad: Tensor,
        grad_scale: f64,
    ) -> Result<&mut Self, EngineError> {
        self.push(SoftmaxCrossEntropy {
            logits,
            labels,
            loss,
            grad,
            grad_scale,
        })
    }

    /// The tangent of `softmax_cross_entropy` along `d_logits` (see [`SoftmaxCrossEntropyJvp`]).
    pub fn softmax_cross_entropy_jvp(
        &mut self,
        logits: Tensor,
        labels: Tensor,
        d_logits: Tensor,
        d_loss: Tensor,
        d_grad: Tensor,
        grad_scale: f64,
    ) -> Result<&mut Self, EngineError> {
        self.push(SoftmaxCrossEntropyJvp {
            logits,
            labels,
            d_logits,
            d_loss,
            d_grad,
            grad_scale,
        })
    }
}

static SOFTMAX_CROSS_ENTROPY_WGSL: ShaderFile = crate::shader_file!("softmax_cross_entropy");
const LOSS: Kernel = Kernel::of_file(&SOFTMAX_CROSS_ENTROPY_WGSL, "softmax_cross_entropy");
const TANGENT: Kernel = Kernel::of_file(&SOFTMAX_CROSS_ENTROPY_WGSL, "softmax_cross_entropy_jvp");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SoftmaxParams {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    nan_bits: u32,
    _pad: [u32; 4],
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

fn softmax_layout() -> Option<ParamsLayout> {
    Some(params_layout!(SoftmaxParams {
        rows,
        cols,
        grad_scale,
        nan_bits
    }))
}

impl Operation for SoftmaxCrossEntropy {
    const NAME: &'static str = "softmax_cross_entropy";

    fn kernels() -> Vec<Kernel> {
        vec![LOSS]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.logits, self.labels, self.loss, self.grad]
    }

    fn check(&self) -> Result<(), EngineError> {
        let op = Self::NAME;
        per_row(op, "labels", self.logits, self.labels)?;
        per_row(op, "loss", self.logits, self.loss)?;
        same_shape(op, "logits and grad", self.logits, self.grad)?;
        distinct(op, &[self.loss, self.grad], &[self.logits, self.labels])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let &SoftmaxCrossEntropy {
            logits,
            labels,
            loss,
            grad,
            grad_scale,
        } = self;
        // Two outputs: compute into a scratch loss, then store it.
        let mut loss_values = vec![R::zero(); loss.len()];
        cpu.with_output(grad, &[logits, labels], |inp, out| {
            twin::softmax_cross_entropy(
                inp[0],
                inp[1],
                logits.cols(),
                R::of_f64(grad_scale),
                &mut loss_values,
                out,
            )
        })?;
        cpu.with_output(loss, &[], |_, out| out.copy_from_slice(&loss_values))
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let &SoftmaxCrossEntropy {
            logits,
            labels,
            loss,
            grad,
            grad_scale,
        } = self;
        match t.live(logits) {
            Some(d_logits) => {
                let d_loss = t.output(Self::NAME, loss)?;
                let d_grad = t.output(Self::NAME, grad)?;
                (t.recording).softmax_cross_entropy_jvp(
                    logits, labels, d_logits, d_loss, d_grad, grad_scale,
                )?;
            }
            None => {
                t.zero(loss);
                t.zero(grad);
            }
        }
        Ok(())
    }

    /// `d_logits[r] += d_loss[r] (softmax(logits[r]) - onehot(label))`, read off the op's own
    /// gradient output as `grad / grad_scale`. Differentiating through that gradient output
    /// (second order) is the tangent transform's job, not this one's.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &SoftmaxCrossEntropy {
            logits,
            loss,
            grad,
            grad_scale,
            ..
        } = self;
        if t.adjoint(grad).is_some() {
            return Err(shape_error(
                Self::NAME,
                "reverse mode through its gradient output is not built; differentiate the \
                 loss only"
                    .to_string(),
            ));
        }
        let d_loss = t.adjoint(loss);
        t.overwritten(loss);
        let Some(d_loss) = d_loss else {
            t.overwritten(grad);
            return Ok(());
        };
        t.value(Self::NAME, grad)?;
        if grad_scale == 0.0 || !grad_scale.is_finite() {
            return Err(shape_error(
                Self::NAME,
                format!("reverse mode reads its gradient output, scaled by {grad_scale}"),
            ));
        }
        t.add_to(logits, |t, term| {
            let rows = t.scratch_like(grad)?;
            t.broadcast_rows(d_loss, rows)?;
            let scaled = t.scratch_like(grad)?;
            (t.recording).scale(1.0 / grad_scale, grad, scaled)?;
            t.recording.binary(BinaryOp::Mul, rows, scaled, term)?;
            Ok(())
        })?;
        t.overwritten(grad);
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: LOSS,
            params: softmax_params(self.logits, self.grad_scale),
            operands: vec![T(self.loss), T(self.grad), T(self.logits), T(self.labels)],
            workgroups: grid_1d(Self::NAME, self.logits.rows(), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        softmax_layout()
    }
}

impl Operation for SoftmaxCrossEntropyJvp {
    const NAME: &'static str = "softmax_cross_entropy_jvp";

    fn kernels() -> Vec<Kernel> {
        vec![TANGENT]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![
            self.logits,
            self.labels,
            self.d_logits,
            self.d_loss,
            self.d_grad,
        ]
    }

    fn check(&self) -> Result<(), EngineError> {
        let op = Self::NAME;
        per_row(op, "labels", self.logits, self.labels)?;
        per_row(op, "d_loss", self.logits, self.d_loss)?;
        same_shape(op, "logits and d_logits", self.logits, self.d_logits)?;
        same_shape(op, "logits and d_grad", self.logits, self.d_grad)?;
        distinct(
            op,
            &[self.d_loss, self.d_grad],
            &[self.logits, self.labels, self.d_logits],
        )
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let &SoftmaxCrossEntropyJvp {
            logits,
            labels,
            d_logits,
            d_loss,
            d_grad,
            grad_scale,
        } = self;
        // Two outputs, as for the loss: a scratch d_loss, stored afterwards.
        let mut d_loss_values = vec![R::zero(); d_loss.len()];
        cpu.with_output(d_grad, &[logits, labels, d_logits], |inp, out| {
            twin::softmax_cross_entropy_jvp(
                inp[0],
                inp[1],
                inp[2],
                logits.cols(),
                R::of_f64(grad_scale),
                &mut d_loss_values,
                out,
            )
        })?;
        cpu.with_output(d_loss, &[], |_, out| out.copy_from_slice(&d_loss_values))
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: TANGENT,
            params: softmax_params(self.logits, self.grad_scale),
            operands: vec![
                T(self.d_loss),
                T(self.d_grad),
                T(self.logits),
                T(self.labels),
                T(self.d_logits),
            ],
            workgroups: grid_1d(Self::NAME, self.logits.rows(), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        softmax_layout()
    }
}
