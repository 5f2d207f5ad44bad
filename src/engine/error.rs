//! Errors of the engine layer: each says what was wrong and, where it helps, what to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(
        "no GPU adapter found{detail}; install a Vulkan driver (Linux without a GPU: `apt-get install mesa-vulkan-drivers libvulkan1` for lavapipe) or use the CPU engine"
    )]
    NoAdapter { detail: String },

    #[error("no GPU adapter matches WGPU_ADAPTER_NAME={wanted:?}; adapters found: {found}")]
    AdapterNameNotFound { wanted: String, found: String },

    #[error("could not open the GPU device on {adapter}: {message}")]
    DeviceRequest { adapter: String, message: String },

    #[error(
        "buffer '{label}' needs {bytes} bytes, over this adapter's {limit_name} of {limit} bytes; use a smaller model or batch"
    )]
    BufferTooLarge {
        label: String,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
    },

    #[error("tensor '{label}' must have at least one row and one column, got {rows}x{cols}")]
    EmptyTensor {
        label: String,
        rows: usize,
        cols: usize,
    },

    #[error("upload to tensor '{label}': {got} values given, the tensor holds {expected}")]
    UploadLength {
        label: String,
        got: usize,
        expected: usize,
    },

    #[error("tensor #{id} is not alive in this engine (freed, or made by another engine)")]
    UnknownTensor { id: u32 },

    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    #[error("GPU shader '{kernel}' failed to compile: {message}")]
    Shader { kernel: String, message: String },

    #[error("GPU error while running the recording: {0}")]
    Device(String),

    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),

    #[error("model: {0}")]
    Model(String),

    #[error("{0} is not supported by this engine or adapter")]
    Unsupported(&'static str),
}
