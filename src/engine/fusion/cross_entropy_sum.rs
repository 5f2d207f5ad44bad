//! Softmax cross-entropy followed by the sum of its losses (the training loss), as one dispatch:
//! shaders/cross_entropy_sum.wgsl. Each row's loss and gradient are computed in column order, as
//! the CPU twin computes them (the unfused GPU kernel sums a row with 64 invocations), and the
//! sum adds the losses in reduce.wgsl's single-segment order; so the fused values agree with the
//! unfused ones within the tolerance of the sums, not bit for bit.

use super::independent;
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{Dispatch, Operand};
use crate::engine::op::{Reduce, SoftmaxCrossEntropy, softmax_params};
use crate::engine::{Op, ReduceAxis, Reduction, Tensor};

/// One workgroup does the whole sum, so the fusion stops where one workgroup would be slow:
/// at the length up to which the unfused whole-array sum is one workgroup too.
const MAX_ROWS: usize = 4096;

static CROSS_ENTROPY_SUM_WGSL: ShaderFile = crate::shader_file!("cross_entropy_sum");
/// Softmax cross-entropy with the sum of its losses.
pub(super) const CROSS_ENTROPY_SUM: Kernel =
    Kernel::of_file(&CROSS_ENTROPY_SUM_WGSL, "softmax_cross_entropy_sum");

#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropySum {
    logits: Tensor,
    labels: Tensor,
    loss: Tensor,
    grad: Tensor,
    loss_sum: Tensor,
    grad_scale: f64,
}

impl CrossEntropySum {
    /// `softmax_cross_entropy(logits, labels) -> (loss, grad)`, then `loss_sum = sum(loss)`.
    pub(super) fn at_start_of(ops: &[Op]) -> Option<Self> {
        let [
            Op::SoftmaxCrossEntropy(SoftmaxCrossEntropy {
                logits,
                labels,
                loss,
                grad,
                grad_scale,
            }),
            Op::Reduce(Reduce {
                reduction: Reduction::Sum,
                axis: ReduceAxis::Whole,
                x,
                out: loss_sum,
            }),
            ..,
        ] = *ops
        else {
            return None;
        };
        let fusable = x == loss
            && logits.rows() <= MAX_ROWS
            && independent(&[loss, grad, loss_sum], &[logits, labels]);
        fusable.then_some(Self {
            logits,
            labels,
            loss,
            grad,
            loss_sum,
            grad_scale,
        })
    }

    pub(super) fn lower(&self) -> Dispatch {
        use Operand::Tensor as T;
        Dispatch {
            flop: 0.0,
            kernel: CROSS_ENTROPY_SUM,
            params: softmax_params(self.logits, self.grad_scale),
            operands: vec![
                T(self.loss),
                T(self.grad),
                T(self.loss_sum),
                T(self.logits),
                T(self.labels),
            ],
            workgroups: [1, 1, 1],
        }
    }
}
