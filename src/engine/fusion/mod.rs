//! Fusion: a pass over a recording that replaces runs of recorded ops with one fused kernel
//! each, for the GPU engine's plan. It works on recordings, never in model code, and each fused
//! op computes exactly what the ops it replaces compute, in the same order of operations except
//! where its module says: so the CPU engines, which run the recording unfused, are each fused
//! kernel's CPU twin, and a fused op needs no tangent rule of its own (tangents are taken of the
//! recording before it is planned).
//!
//! A fused family is one module here (its pattern, its checks and its lowering) and one WGSL
//! file. A run of ops is fused only where nothing would change: the fused kernel's outputs are
//! distinct and none of its inputs, so no op of the run reads what another op of it writes
//! except as the fused kernel does itself.

mod adam_group;
mod cross_entropy_sum;
mod linear;
mod product_pair;

pub use adam_group::{AdamGroup, max_group};
pub use cross_entropy_sum::CrossEntropySum;
pub use linear::{LinearForward, LinearInputGrad, LinearWeightGrad};
pub use product_pair::ProductPair;

use super::gpu::kernels::{Kernel, MAX_ADAM_GROUP};
use super::gpu::lower::Dispatch;
use super::gpu::product_pair::ProductKind;
use super::{EngineError, Op, Tensor};

/// Every fused kernel (with each setting of its constants).
pub(crate) fn kernels() -> Vec<Kernel> {
    let mut kernels = linear::kernels();
    kernels.push(cross_entropy_sum::CROSS_ENTROPY_SUM);
    kernels.extend((2..=MAX_ADAM_GROUP).map(adam_group::kernel));
    for first in ProductKind::all() {
        for second in ProductKind::all() {
            kernels.push(product_pair::kernel(first, second));
        }
    }
    kernels
}

/// Whether the GPU engine fuses a recording before lowering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fusion {
    #[default]
    On,
    /// Every recorded op its own kernel (for comparisons and the before/after figures).
    Off,
}

/// One fused kernel in place of a run of recorded ops.
#[derive(Clone, Debug, PartialEq)]
pub enum Fused {
    LinearForward(LinearForward),
    LinearWeightGrad(LinearWeightGrad),
    LinearInputGrad(LinearInputGrad),
    CrossEntropySum(CrossEntropySum),
    AdamGroup(AdamGroup),
    /// Two of the products above (or plain matmuls) side by side; formed after the others.
    ProductPair(ProductPair),
}

impl Fused {
    /// The fused op that replaces the ops at the start of `ops`, with how many it replaces.
    fn at_start_of(ops: &[Op], max_storage_buffers: u32) -> Option<(Fused, usize)> {
        LinearForward::at_start_of(ops)
            .map(|(f, n)| (Fused::LinearForward(f), n))
            .or_else(|| LinearWeightGrad::at_start_of(ops).map(|f| (Fused::LinearWeightGrad(f), 2)))
            .or_else(|| LinearInputGrad::at_start_of(ops).map(|f| (Fused::LinearInputGrad(f), 2)))
            .or_else(|| CrossEntropySum::at_start_of(ops).map(|f| (Fused::CrossEntropySum(f), 2)))
            .or_else(|| {
                AdamGroup::at_start_of(ops, max_group(max_storage_buffers)).map(|f| {
                    let replaced = f.tensor_count();
                    (Fused::AdamGroup(f), replaced)
                })
            })
    }

    /// The one dispatch that executes it.
    pub fn lower(&self, max_per_dim: u32) -> Result<Dispatch, EngineError> {
        match self {
            Fused::LinearForward(f) => f.lower(max_per_dim),
            Fused::LinearWeightGrad(f) => f.lower(max_per_dim),
            Fused::LinearInputGrad(f) => f.lower(max_per_dim),
            Fused::CrossEntropySum(f) => Ok(f.lower()),
            Fused::AdamGroup(f) => f.lower(max_per_dim),
            Fused::ProductPair(f) => f.lower(max_per_dim),
        }
    }
}

/// One step of a planned recording: a recorded op as it is, or a fused kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<'a> {
    Op(&'a Op),
    Fused(Fused),
}

/// The recording's ops with every fusable run replaced, left to right, first match wins, then
/// each two consecutive independent products paired; no fused kernel binds more than
/// `max_storage_buffers` storage buffers (the device's limit per stage).
pub fn fuse(ops: &[Op], max_storage_buffers: u32) -> Vec<Step<'_>> {
    let mut steps = Vec::with_capacity(ops.len());
    let mut at = 0;
    while at < ops.len() {
        match Fused::at_start_of(&ops[at..], max_storage_buffers) {
            Some((fused, replaced)) => {
                steps.push(Step::Fused(fused));
                at += replaced;
            }
            None => {
                steps.push(Step::Op(&ops[at]));
                at += 1;
            }
        }
    }
    product_pair::pair_products(steps, max_storage_buffers)
}

/// A fused kernel binds each output once and reads none of them: the outputs are distinct from
/// each other and from every input.
fn independent(outputs: &[Tensor], inputs: &[Tensor]) -> bool {
    outputs
        .iter()
        .enumerate()
        .all(|(i, out)| !inputs.contains(out) && !outputs[..i].contains(out))
}
