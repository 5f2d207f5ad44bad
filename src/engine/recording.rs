//! A recording: a list of operations checked for shape when recorded, executed by any engine.
//! Keeping the list apart from the engine keeps algorithm code free of wgpu calls and lets the
//! GPU engine submit many steps in one command buffer. Each op family adds its builders
//! (`Recording::matmul`, `Recording::adam`, ...) in its own module under `engine/op/`.

use super::op::Op;

#[derive(Clone, Debug, Default)]
pub struct Recording {
    ops: Vec<Op>,
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
            .map(|op| match op {
                Op::Matmul(product) => product.flop(),
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

    /// Appends an op checked already (taken from another recording, or one with nothing to
    /// check).
    pub(in crate::engine) fn push_recorded(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Appends another recording (for example, one optimisation step repeated N times).
    pub fn extend(&mut self, other: &Recording) {
        self.ops.extend_from_slice(&other.ops);
    }
}
