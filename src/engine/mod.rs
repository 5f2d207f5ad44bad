//! The engine interface and its two implementations: [`gpu::GpuEngine`] (WGSL on wgpu) and
//! [`cpu::CpuEngine`] (the CPU twin of every kernel, in f64 as ground truth or f32).

mod adjoint;
pub mod cpu;
mod error;
pub mod fusion;
pub mod gpu;
pub mod op;
mod owned;
mod recording;
mod tangent;
mod tensor;

pub use adjoint::{GradientRecording, gradient_recording};
pub use error::EngineError;
pub use op::{
    Activation, AdaHessianHyper, AdamHyper, BatchShape, BatchedLayout, BatchedMatmul, BinaryOp,
    DampingHyper, DeviceScalar, Op, ReduceAxis, Reduction, SophiaHyper, UnaryOp,
};
pub use owned::{Allocation, Owned, ReleaseQueue};
pub use recording::Recording;
pub use tangent::{TangentRecording, tangent_recording};
pub use tensor::Tensor;

/// What computed a result: carried by every result record so reports from different machines,
/// drivers and browsers can be compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    /// `gpu`, `cpu-f32` or `cpu-f64`.
    pub engine: String,
    /// wgpu backend (`vulkan`, `metal`, `dx12`, `browser-webgpu`) or `cpu`.
    pub backend: String,
    pub adapter: String,
    pub driver: String,
    /// wgpu device type (`DiscreteGpu`, `Cpu` for lavapipe/SwiftShader, ...) or `host`.
    pub device_type: String,
}

impl std::fmt::Display for EngineInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} ({}, {}, driver {})",
            self.engine, self.adapter, self.backend, self.device_type, self.driver
        )
    }
}

/// A readback in flight: values already there (CPU engines), or GPU buffers still mapping.
pub enum ReadTicket {
    Ready(Vec<Vec<f64>>),
    Pending(gpu::PendingRead),
    /// Handed out already.
    Taken,
}

/// Executes recordings on tensors it owns. Algorithm code is written once against this trait.
pub trait Engine {
    fn info(&self) -> EngineInfo;

    /// Allocates a `rows x cols` tensor. Its contents are unspecified until written.
    fn alloc(&mut self, label: &str, rows: usize, cols: usize) -> Result<Tensor, EngineError>;

    /// Returns a tensor's storage to the engine; the handle is dead afterwards. Owners of
    /// tensors (`Allocation`) release them through `release_queue` instead, when dropped.
    fn free(&mut self, tensor: Tensor);

    /// Where dropped `Allocation`s leave their tensors; the engine frees them at its next
    /// `alloc`, `upload`, `run` or read.
    fn release_queue(&self) -> ReleaseQueue;

    /// Writes host values (row-major) into a tensor, rounding to the engine's precision.
    fn upload(&mut self, tensor: Tensor, values: &[f64]) -> Result<(), EngineError>;

    /// Executes every op of the recording in order.
    fn run(&mut self, recording: &Recording) -> Result<(), EngineError>;

    /// What one run of the recording costs in dispatches, barriers, workgroups, FLOPs and bytes,
    /// where the engine plans dispatches (the GPU); `None` for the CPU engines.
    fn plan_figures(
        &self,
        _recording: &Recording,
    ) -> Result<Option<gpu::plan::PlanFigures>, EngineError> {
        Ok(None)
    }

    /// Reads back the named tensors only (row-major, widened to f64). Blocks until the GPU is done;
    /// in the browser use `begin_read` / `poll_read` instead.
    fn read(&mut self, tensors: &[Tensor]) -> Result<Vec<Vec<f64>>, EngineError>;

    /// Starts reading tensors back without blocking; poll the ticket with `poll_read`. This is
    /// how a browser frame reads: the GPU's mapping completes only after the frame returns.
    fn begin_read(&mut self, tensors: &[Tensor]) -> Result<ReadTicket, EngineError> {
        Ok(ReadTicket::Ready(self.read(tensors)?))
    }

    /// The values of a ticket once they are there (`None` until then); a ticket yields once.
    fn poll_read(&mut self, ticket: &mut ReadTicket) -> Result<Option<Vec<Vec<f64>>>, EngineError> {
        match std::mem::replace(ticket, ReadTicket::Taken) {
            ReadTicket::Ready(values) => Ok(Some(values)),
            ReadTicket::Taken => Err(EngineError::Readback(
                "the ticket was already read".to_string(),
            )),
            ReadTicket::Pending(pending) => {
                *ticket = ReadTicket::Pending(pending);
                Err(EngineError::Unsupported(
                    "polling a GPU readback on a CPU engine",
                ))
            }
        }
    }

    /// Blocks until a ticket's values are there (native only for the GPU).
    fn wait_read(&mut self, ticket: &mut ReadTicket) -> Result<Vec<Vec<f64>>, EngineError> {
        self.poll_read(ticket)?.ok_or(EngineError::Unsupported(
            "waiting for a readback on this engine",
        ))
    }

    /// Allocates a tensor and uploads `values` into it.
    fn tensor_from(
        &mut self,
        label: &str,
        rows: usize,
        cols: usize,
        values: &[f64],
    ) -> Result<Tensor, EngineError> {
        let tensor = self.alloc(label, rows, cols)?;
        self.upload(tensor, values)?;
        Ok(tensor)
    }

    /// Reads one tensor.
    fn read_one(&mut self, tensor: Tensor) -> Result<Vec<f64>, EngineError> {
        Ok(self.read(&[tensor])?.remove(0))
    }
}

/// Checks an allocation request; shared by both engines so they refuse the same things.
pub(crate) fn check_alloc(label: &str, rows: usize, cols: usize) -> Result<(), EngineError> {
    if rows == 0 || cols == 0 {
        return Err(EngineError::EmptyTensor {
            label: label.to_string(),
            rows,
            cols,
        });
    }
    if rows > u32::MAX as usize || cols > u32::MAX as usize {
        return Err(EngineError::BufferTooLarge {
            label: label.to_string(),
            bytes: (rows as u64).saturating_mul(cols as u64).saturating_mul(4),
            limit_name: "u32 dimension limit",
            limit: u32::MAX as u64,
        });
    }
    Ok(())
}
