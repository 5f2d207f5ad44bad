//! Engine tensors released by ownership. A value that owns tensors (a device model, a workspace,
//! an optimiser's state) holds an `Allocation`; when it is dropped, on the normal path or an
//! error path alike, its tensors go to the engine's `ReleaseQueue`, and the engine frees them at
//! its next call. Drop has no engine at hand, hence the queue; `Tensor` handles stay `Copy` so
//! recordings can name them freely.

use super::{Engine, EngineError, Tensor};
use std::sync::{Arc, Mutex};

/// Tensors dropped by their owners, waiting for the engine that made them.
#[derive(Clone, Debug, Default)]
pub struct ReleaseQueue(Arc<Mutex<Vec<Tensor>>>);

impl ReleaseQueue {
    fn push(&self, tensors: impl IntoIterator<Item = Tensor>) {
        let mut queue = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.extend(tensors);
    }

    /// Everything queued since the last call (for the engine to free).
    pub(crate) fn take(&self) -> Vec<Tensor> {
        let mut queue = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *queue)
    }
}

/// Tensors owned together, freed (through the engine's queue) when this is dropped.
#[derive(Debug)]
pub struct Allocation {
    tensors: Vec<Tensor>,
    queue: ReleaseQueue,
}

impl Allocation {
    /// An empty allocation for tensors of `engine`.
    pub fn new(engine: &dyn Engine) -> Self {
        Self {
            tensors: Vec::new(),
            queue: engine.release_queue(),
        }
    }

    /// Allocates a tensor owned by this allocation.
    pub fn alloc(
        &mut self,
        engine: &mut dyn Engine,
        label: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Tensor, EngineError> {
        let tensor = engine.alloc(label, rows, cols)?;
        self.tensors.push(tensor);
        Ok(tensor)
    }

    /// Allocates a tensor holding `values`, owned by this allocation.
    pub fn tensor_from(
        &mut self,
        engine: &mut dyn Engine,
        label: &str,
        rows: usize,
        cols: usize,
        values: &[f64],
    ) -> Result<Tensor, EngineError> {
        let tensor = self.alloc(engine, label, rows, cols)?;
        engine.upload(tensor, values)?;
        Ok(tensor)
    }

    /// Takes over another allocation's tensors.
    pub fn absorb(&mut self, mut other: Allocation) {
        self.tensors.append(&mut other.tensors);
    }

    /// `value`, owning this allocation's tensors.
    pub fn owning<T>(self, value: T) -> Owned<T> {
        Owned {
            value,
            _allocation: self,
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.queue.push(self.tensors.drain(..));
    }
}

/// A value of tensor handles (a `DeviceModel`, a `Workspace`, ...) that owns those tensors:
/// it derefs to the handles, and dropping it frees them. Clones of the handles do not own.
#[derive(Debug)]
pub struct Owned<T> {
    value: T,
    _allocation: Allocation,
}

impl<T> std::ops::Deref for Owned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}
