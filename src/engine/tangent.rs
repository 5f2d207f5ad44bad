//! Forward-mode differentiation of a recording: every op has a tangent rule, so any recording
//! (forward, loss and backward of any layer form) gets its directional derivative without a
//! hand-written tangent pass. Applied to a recording that computes gradients, with the
//! parameters' tangents seeded by a vector v, the gradients' tangents are the Hessian-vector
//! product H v (forward-over-reverse, as `jax.jvp(jax.grad(f))`).
//!
//! Each primal op is followed by its tangent ops; those read the op's inputs only, never its
//! output, so buffers reused across a recording stay correct. A tensor whose tangent is known to
//! be zero has none (`tangent_of` is `None`) and its terms are skipped, not computed as zeros.

use super::adjoint::DerivativeScratch;
use super::{Allocation, Engine, EngineError, Recording, Tensor};
use std::collections::{HashMap, HashSet};

/// A recording with its tangent ops, and the tangent tensors it allocated (freed when this is
/// dropped; the seeds stay the caller's).
pub struct TangentRecording {
    pub recording: Recording,
    /// Tangent of each primal tensor (by id) that ever had one.
    tangents: HashMap<u32, Tensor>,
    /// Primal tensors whose tangent is non-zero after the recording.
    live: HashSet<u32>,
    _owned: Allocation,
}

impl TangentRecording {
    /// The tangent of `primal` after the recording runs; `None` where it is zero.
    pub fn tangent_of(&self, primal: Tensor) -> Option<Tensor> {
        self.live
            .contains(&primal.id())
            .then(|| self.tangents[&primal.id()])
    }
}

/// The transform in progress: the tangent recording so far and which tensors' tangents are
/// live. Each op family's tangent rule (`Operation::tangent`) records through it.
pub(crate) struct Transform<'e> {
    engine: &'e mut dyn Engine,
    /// The tangent recording, which each rule appends to.
    pub(crate) recording: Recording,
    tangents: HashMap<u32, Tensor>,
    live: HashSet<u32>,
    owned: Allocation,
    seeded: HashSet<u32>,
}

impl Transform<'_> {
    /// The tangent of `t`, where it is not known to be zero.
    pub(crate) fn live(&self, t: Tensor) -> Option<Tensor> {
        self.live.contains(&t.id()).then(|| self.tangents[&t.id()])
    }

    fn alloc(&mut self, label: &str, like: Tensor) -> Result<Tensor, EngineError> {
        (self.owned).alloc(&mut *self.engine, label, like.rows(), like.cols())
    }

    /// The tangent tensor an op writes for `primal` (allocated on first use), marked live.
    pub(crate) fn output(
        &mut self,
        op: &'static str,
        primal: Tensor,
    ) -> Result<Tensor, EngineError> {
        if self.seeded.contains(&primal.id()) {
            return Err(EngineError::Shape {
                op,
                message: format!("writes {primal}, whose tangent is a seed of the transform"),
            });
        }
        let tangent = match self.tangents.get(&primal.id()) {
            Some(&t) => t,
            None => {
                let t = self.alloc(&format!("tangent.{}", primal.id()), primal)?;
                self.tangents.insert(primal.id(), t);
                t
            }
        };
        self.live.insert(primal.id());
        Ok(tangent)
    }

    /// Marks `primal`'s tangent as zero (an op overwrote it with something constant).
    pub(crate) fn zero(&mut self, primal: Tensor) {
        self.live.remove(&primal.id());
    }

    /// A scratch tensor shaped like `like`, for terms that need an intermediate.
    pub(crate) fn scratch(&mut self, like: Tensor) -> Result<Tensor, EngineError> {
        self.alloc("tangent.scratch", like)
    }
}

impl DerivativeScratch for Transform<'_> {
    fn recording(&mut self) -> &mut Recording {
        &mut self.recording
    }

    fn scratch(&mut self, like: Tensor) -> Result<Tensor, EngineError> {
        Transform::scratch(self, like)
    }

    fn scratch_shaped(&mut self, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        (self.owned).alloc(&mut *self.engine, "tangent.scratch", rows, cols)
    }
}

/// The forward-mode transform of `primal`: its ops, each followed by its tangent ops, with the
/// tangent of each `(tensor, tangent)` seed given by the caller (parameters and v, for an HVP).
/// Tensors without a seed start with a zero tangent.
pub fn tangent_recording(
    engine: &mut dyn Engine,
    primal: &Recording,
    seeds: &[(Tensor, Tensor)],
) -> Result<TangentRecording, EngineError> {
    let owned = Allocation::new(engine);
    let mut transform = Transform {
        engine,
        recording: Recording::new(),
        tangents: HashMap::new(),
        live: HashSet::new(),
        owned,
        seeded: HashSet::new(),
    };
    for &(tensor, tangent) in seeds {
        if tensor.shape() != tangent.shape() {
            return Err(EngineError::Shape {
                op: "tangent_recording",
                message: format!("seed {tangent} must have the shape of {tensor}"),
            });
        }
        transform.tangents.insert(tensor.id(), tangent);
        transform.live.insert(tensor.id());
        transform.seeded.insert(tensor.id());
    }
    for op in primal.ops() {
        transform.recording.push_recorded(op.clone());
        op.tangent(&mut transform)?;
    }
    Ok(TangentRecording {
        recording: transform.recording,
        tangents: transform.tangents,
        live: transform.live,
        _owned: transform.owned,
    })
}
