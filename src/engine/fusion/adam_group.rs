//! Consecutive Adam updates with the same hyper-parameters and step as one dispatch over all of
//! their tensors (src/engine/gpu/adam_group.rs writes its WGSL), each element updated with the
//! unfused kernel's arithmetic. Each tensor binds three read-write buffers and one read-only
//! one, so a group holds as many tensors as the device's storage buffers per stage allow: two
//! under WebGPU's default of eight, every parameter of the default MLP on lavapipe or a native
//! GPU driver. (The engine keeps a buffer per tensor; one buffer for all parameters would lift
//! the bound everywhere.)

use super::independent;
use crate::engine::gpu::kernels::{Kernel, MAX_ADAM_GROUP, Module};
use crate::engine::gpu::lower::{Dispatch, Operand, grid_1d};
use crate::engine::op::{Adam, adam_params};
use crate::engine::{AdamHyper, EngineError, Op, Tensor};

/// Adam updates of `tensors` tensors in one dispatch (2..=MAX_ADAM_GROUP).
pub(super) fn kernel(tensors: u8) -> Kernel {
    Kernel::new(Module::AdamGroup(tensors), "adam_group")
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdamGroup {
    /// (param, grad, m, v) of each tensor.
    tensors: Vec<[Tensor; 4]>,
    hyper: AdamHyper,
    step: u32,
}

/// The most tensors one group may hold with `max_storage_buffers` storage buffers per stage.
pub fn max_group(max_storage_buffers: u32) -> usize {
    (max_storage_buffers as usize / 4).min(usize::from(MAX_ADAM_GROUP))
}

impl AdamGroup {
    /// The longest run of Adam updates at the start of `ops` that can share a dispatch (at
    /// least two, at most `max_tensors`).
    pub(super) fn at_start_of(ops: &[Op], max_tensors: usize) -> Option<Self> {
        let Some(&Op::Adam(Adam { hyper, step, .. })) = ops.first() else {
            return None;
        };
        let mut tensors: Vec<[Tensor; 4]> = Vec::new();
        for op in ops.iter().take(max_tensors) {
            let &Op::Adam(Adam {
                param,
                grad,
                m,
                v,
                hyper: hyper2,
                step: step2,
            }) = op
            else {
                break;
            };
            let mut candidate = tensors.clone();
            candidate.push([param, grad, m, v]);
            let outputs: Vec<Tensor> = candidate
                .iter()
                .flat_map(|&[p, _, m, v]| [p, m, v])
                .collect();
            let inputs: Vec<Tensor> = candidate.iter().map(|t| t[1]).collect();
            if hyper2 != hyper || step2 != step || !independent(&outputs, &inputs) {
                break;
            }
            tensors = candidate;
        }
        (tensors.len() >= 2).then_some(Self {
            tensors,
            hyper,
            step,
        })
    }

    /// How many tensors it updates: the recorded ops it replaces.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    pub(super) fn lower(&self, max_per_dim: u32) -> Result<Dispatch, EngineError> {
        use Operand::Tensor as T;
        let len: usize = self.tensors.iter().map(|t| t[0].len()).sum();
        let mut operands: Vec<Operand> = self
            .tensors
            .iter()
            .flat_map(|&[p, _, m, v]| [T(p), T(m), T(v)])
            .collect();
        operands.extend(self.tensors.iter().map(|t| T(t[1])));
        Ok(Dispatch {
            flop: 0.0,
            kernel: kernel(self.tensors.len() as u8),
            params: adam_params(len, &self.hyper, self.step),
            operands,
            workgroups: grid_1d("adam_group", len.div_ceil(256), max_per_dim)?,
        })
    }
}
