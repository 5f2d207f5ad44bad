//! The CPU engine: executes recordings with the CPU twin of every WGSL kernel, in f64 (the ground
//! truth every GPU result is checked against) or f32.

pub mod batched_matmul;
pub mod damping;
pub mod device_scalar;
pub mod elementwise;
mod flush;
pub mod gather;
pub mod jacobi;
pub mod matmul;
pub mod optimizer;
mod parallel;
pub mod random;
mod real;
pub mod reduce;
pub mod softmax;
pub mod softmax_cross_entropy;
pub mod transpose;

pub use parallel::{PARALLEL_MIN_FLOP, THREADS_VARIABLE, Workers};
pub use real::CpuReal;

use super::{Engine, EngineError, EngineInfo, Recording, ReleaseQueue, Tensor, check_alloc};
use std::collections::HashMap;

struct Stored<T> {
    label: String,
    values: Vec<T>,
}

pub struct CpuEngine<T: CpuReal> {
    tensors: HashMap<u32, Stored<T>>,
    next_id: u32,
    released: ReleaseQueue,
    workers: Workers,
}

pub type CpuEngine64 = CpuEngine<f64>;

/// The most tensors one op reads (the activation gradient's tangent reads four).
const MAX_INPUTS: usize = 4;
pub type CpuEngine32 = CpuEngine<f32>;

impl<T: CpuReal> Default for CpuEngine<T> {
    fn default() -> Self {
        Self {
            tensors: HashMap::new(),
            next_id: 0,
            released: ReleaseQueue::default(),
            workers: Workers::from_environment(),
        }
    }
}

impl<T: CpuReal> CpuEngine<T> {
    /// An engine on `SPECDEF_CPU_THREADS` threads, or every core (see `parallel.rs`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine on `threads` worker threads (1 = sequential); results do not depend on it.
    pub fn with_threads(threads: usize) -> Self {
        Self {
            workers: Workers::new(threads),
            ..Self::default()
        }
    }

    pub fn threads(&self) -> usize {
        self.workers.threads()
    }

    /// Frees what dropped owners left in the release queue.
    fn collect_released(&mut self) {
        for tensor in self.released.take() {
            self.tensors.remove(&tensor.id());
        }
    }

    fn values(&self, tensor: Tensor) -> Result<&[T], EngineError> {
        self.tensors
            .get(&tensor.id())
            .map(|s| s.values.as_slice())
            .ok_or(EngineError::UnknownTensor { id: tensor.id() })
    }

    /// The worker threads (for families that split their work).
    pub(crate) fn workers(&self) -> Workers {
        self.workers
    }

    /// Runs `f(inputs, output)` with the output's storage moved out while `f` runs. Recordings
    /// never alias an output with an input (see `Recording`), so the two borrows never overlap.
    pub(crate) fn with_output(
        &mut self,
        out: Tensor,
        inputs: &[Tensor],
        f: impl FnOnce(&[&[T]], &mut [T]),
    ) -> Result<(), EngineError> {
        assert!(
            inputs.len() <= MAX_INPUTS,
            "an op reads at most {MAX_INPUTS} tensors"
        );
        let unknown = EngineError::UnknownTensor { id: out.id() };
        let mut out_values =
            std::mem::take(&mut self.tensors.get_mut(&out.id()).ok_or(unknown)?.values);
        // On the stack: an op reads at most MAX_INPUTS tensors, and this runs for every op.
        let mut input_values: [&[T]; MAX_INPUTS] = [&[]; MAX_INPUTS];
        let found = inputs
            .iter()
            .zip(&mut input_values)
            .try_for_each(|(&t, slot)| self.values(t).map(|values| *slot = values));
        let result = found.map(|()| f(&input_values[..inputs.len()], &mut out_values));
        // Put the output back whether or not the inputs were found.
        if let Some(stored) = self.tensors.get_mut(&out.id()) {
            stored.values = out_values;
        }
        result
    }

    /// As [`with_output`](Self::with_output), for an update in place of `out` and of the
    /// `state` tensors (an optimiser's moments, a rotation basis): `f(inputs, output, states)`,
    /// with every state moved out while `f` runs and put back whatever happens.
    pub(crate) fn with_state<const N: usize>(
        &mut self,
        out: Tensor,
        state: [Tensor; N],
        inputs: &[Tensor],
        f: impl FnOnce(&[&[T]], &mut [T], &mut [Vec<T>; N]),
    ) -> Result<(), EngineError> {
        let mut values: [Vec<T>; N] = std::array::from_fn(|_| Vec::new());
        let mut taken = 0;
        let mut result = Ok(());
        for (tensor, slot) in state.iter().zip(&mut values) {
            match self.tensors.get_mut(&tensor.id()) {
                Some(stored) => {
                    *slot = std::mem::take(&mut stored.values);
                    taken += 1;
                }
                None => {
                    result = Err(EngineError::UnknownTensor { id: tensor.id() });
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self.with_output(out, inputs, |inp, out| f(inp, out, &mut values));
        }
        for (tensor, slot) in state.iter().zip(values).take(taken) {
            if let Some(stored) = self.tensors.get_mut(&tensor.id()) {
                stored.values = slot;
            }
        }
        result
    }
}

impl<T: CpuReal> Engine for CpuEngine<T> {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: T::ENGINE_NAME.to_string(),
            backend: "cpu".to_string(),
            adapter: "host CPU (faer)".to_string(),
            driver: format!(
                "faer, {} bits{}, {} thread{}",
                std::mem::size_of::<T>() * 8,
                if T::FLUSH_SUBNORMALS {
                    ", subnormals flushed"
                } else {
                    ""
                },
                self.workers.threads(),
                if self.workers.threads() == 1 { "" } else { "s" }
            ),
            device_type: "host".to_string(),
        }
    }

    fn alloc(&mut self, label: &str, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        self.collect_released();
        check_alloc(label, rows, cols)?;
        let id = self.next_id;
        self.next_id += 1;
        self.tensors.insert(
            id,
            Stored {
                label: label.to_string(),
                values: vec![T::zero(); rows * cols],
            },
        );
        Ok(Tensor::new(id, rows, cols))
    }

    fn free(&mut self, tensor: Tensor) {
        self.tensors.remove(&tensor.id());
    }

    fn release_queue(&self) -> ReleaseQueue {
        self.released.clone()
    }

    fn upload(&mut self, tensor: Tensor, values: &[f64]) -> Result<(), EngineError> {
        self.collect_released();
        let stored = self
            .tensors
            .get_mut(&tensor.id())
            .ok_or(EngineError::UnknownTensor { id: tensor.id() })?;
        if values.len() != stored.values.len() {
            return Err(EngineError::UploadLength {
                label: stored.label.clone(),
                got: values.len(),
                expected: stored.values.len(),
            });
        }
        for (dst, &src) in stored.values.iter_mut().zip(values) {
            *dst = T::of_f64(src);
        }
        Ok(())
    }

    fn run(&mut self, recording: &Recording) -> Result<(), EngineError> {
        self.collect_released();
        let workers = self.workers;
        workers.run(T::FLUSH_SUBNORMALS, || {
            recording
                .ops()
                .iter()
                .try_for_each(|op| op.run_on_cpu(self))
        })
    }

    fn read(&mut self, tensors: &[Tensor]) -> Result<Vec<Vec<f64>>, EngineError> {
        self.collect_released();
        tensors
            .iter()
            .map(|&t| Ok(self.values(t)?.iter().map(|v| v.as_f64()).collect()))
            .collect()
    }
}
