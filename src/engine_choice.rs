//! Which engine computes, and why: one policy for the command line (`--engine auto|gpu|cpu|cpu64`)
//! and the app (the GPU engine on the window's or page's own device, or the f32 CPU engine).
//!
//! [`decide`] is the policy, pure: given what was asked for and the adapter the GPU engine would
//! run on (or why there is none), it says which engine computes and, where the f32 CPU engine
//! stands in for a GPU, the reason ([`CpuReason`]), worded once for both front ends. [`open`]
//! applies it on the command line, where the GPU engine opens its own adapter; the app applies it
//! to eframe's renderer (`app/engine_choice.rs`).

use crate::engine::Engine;
use crate::engine::cpu::{CpuEngine32, CpuEngine64};
#[cfg(not(target_arch = "wasm32"))]
use crate::engine::{EngineError, gpu::GpuEngine};

/// What the user asked to compute on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum EngineChoice {
    /// A hardware GPU if there is one, else the CPU engine in f32 (faster than a software GPU)
    Auto,
    /// WGSL on wgpu, any adapter (WGPU_BACKEND and WGPU_ADAPTER_NAME pick it), lavapipe included
    Gpu,
    /// The CPU twins in f32
    Cpu,
    /// The CPU twins in f64 (the reference)
    Cpu64,
}

impl EngineChoice {
    /// Whether the choice looks at the GPU at all (`cpu` and `cpu64` never open an adapter).
    pub fn considers_gpu(self) -> bool {
        matches!(self, EngineChoice::Auto | EngineChoice::Gpu)
    }
}

/// The engine [`decide`] picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// The GPU engine on the adapter offered.
    Gpu,
    /// The CPU twins in f32.
    Cpu32,
    /// The CPU twins in f64.
    Cpu64,
}

/// Why a CPU engine computes where the GPU engine could have been asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuReason {
    /// The user asked for a CPU engine (`--engine cpu`, `specdef gui --cpu`, `?engine=cpu`).
    Asked,
    /// There is no adapter for the GPU engine; the text says why (the GPU engine's error, or
    /// that the renderer has no wgpu device).
    NoAdapter(String),
    /// The only adapter is a software GPU (lavapipe, SwiftShader, WARP), which `auto` skips:
    /// the CPU engine is faster on the same cores.
    SoftwareGpu { adapter: String },
    /// The adapter's backend has no compute shaders for the engine: wgpu's GL backend, which the
    /// GPU engine never asks for itself, so only a window's renderer offers it (WebGL2 in a
    /// browser without WebGPU).
    NoCompute { backend: String, adapter: String },
}

impl std::fmt::Display for CpuReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpuReason::Asked => write!(f, "as asked"),
            CpuReason::NoAdapter(why) => write!(f, "{why}"),
            CpuReason::SoftwareGpu { adapter } => {
                write!(f, "the only adapter is the software GPU '{adapter}'")
            }
            CpuReason::NoCompute { backend, adapter } => write!(
                f,
                "the window draws with {backend} ({adapter}), which has no compute shaders for the engine{}",
                if cfg!(target_arch = "wasm32") {
                    "; this browser offers no WebGPU"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What [`decide`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub engine: EngineKind,
    /// Why a CPU engine computes (None for the GPU engine).
    pub reason: Option<CpuReason>,
}

impl Decision {
    fn cpu(engine: EngineKind, reason: CpuReason) -> Self {
        Self {
            engine,
            reason: Some(reason),
        }
    }

    /// The note the command line prints where the f32 CPU engine stands in for a GPU the choice
    /// would have used; None where the choice was followed as given.
    pub fn fallback_note(&self) -> Option<String> {
        match self.reason.as_ref()? {
            CpuReason::Asked => None,
            reason @ CpuReason::SoftwareGpu { .. } => Some(format!(
                "{reason}; using the faster CPU engine (f32). --engine gpu runs on it anyway."
            )),
            reason => Some(format!("{reason}; using the CPU engine (f32)")),
        }
    }

    /// What the app shows under its controls: what computes and, on the CPU, why.
    pub fn note(&self, engine: &dyn Engine) -> String {
        match (&self.reason, self.engine) {
            (Some(reason), EngineKind::Cpu32) => {
                format!("computing on the CPU engine (f32): {reason}")
            }
            _ => format!("computing on {}", engine.info()),
        }
    }
}

/// Whether the GPU engine can compute on an adapter of this backend (WGSL compute shaders:
/// Vulkan, Metal, DX12, WebGPU; not GL).
pub fn backend_computes(backend: wgpu::Backend) -> bool {
    matches!(
        backend,
        wgpu::Backend::Vulkan
            | wgpu::Backend::Metal
            | wgpu::Backend::Dx12
            | wgpu::Backend::BrowserWebGpu
    )
}

/// The policy. `adapter` is the adapter the GPU engine would run on, or why there is none (not
/// looked at for `cpu` and `cpu64`). `Err` only for `gpu` where the GPU engine cannot compute: the
/// command line then fails, the app computes on the f32 CPU engine with the reason.
pub fn decide(
    choice: EngineChoice,
    adapter: Result<&wgpu::AdapterInfo, &str>,
) -> Result<Decision, CpuReason> {
    let cpu32 = |reason| Decision::cpu(EngineKind::Cpu32, reason);
    let gpu = Decision {
        engine: EngineKind::Gpu,
        reason: None,
    };
    match choice {
        EngineChoice::Cpu => Ok(cpu32(CpuReason::Asked)),
        EngineChoice::Cpu64 => Ok(Decision::cpu(EngineKind::Cpu64, CpuReason::Asked)),
        EngineChoice::Gpu | EngineChoice::Auto => {
            let unusable = match adapter {
                Err(why) => CpuReason::NoAdapter(why.to_string()),
                Ok(info) if !backend_computes(info.backend) => CpuReason::NoCompute {
                    backend: info.backend.to_str().to_string(),
                    adapter: info.name.clone(),
                },
                Ok(info)
                    if choice == EngineChoice::Auto
                        && info.device_type == wgpu::DeviceType::Cpu =>
                {
                    CpuReason::SoftwareGpu {
                        adapter: info.name.clone(),
                    }
                }
                Ok(_) => return Ok(gpu),
            };
            match choice {
                EngineChoice::Auto => Ok(cpu32(unusable)),
                _ => Err(unusable),
            }
        }
    }
}

/// An engine opened by [`open`].
pub struct Opened {
    pub engine: Box<dyn Engine>,
    /// Why the f32 CPU engine computes where `auto` looked for a GPU (to print as a note).
    pub note: Option<String>,
}

/// Opens the engine `choice` asks for, the GPU engine on the adapter the environment picks
/// (WGPU_BACKEND, WGPU_ADAPTER_NAME). Fails only for `gpu` without a usable adapter.
#[cfg(not(target_arch = "wasm32"))]
pub fn open(choice: EngineChoice) -> Result<Opened, EngineError> {
    let gpu = choice.considers_gpu().then(GpuEngine::new);
    let no_gpu = match &gpu {
        Some(Err(e)) => format!("no GPU ({e})"),
        _ => "the GPU was not looked for".to_string(),
    };
    let adapter = match &gpu {
        Some(Ok(engine)) => Ok(engine.adapter_info()),
        _ => Err(no_gpu.as_str()),
    };
    let decision = match decide(choice, adapter) {
        Ok(decision) => decision,
        Err(reason) => {
            return Err(match gpu {
                Some(Err(e)) => e,
                _ => EngineError::NoAdapter {
                    detail: format!(" that computes ({reason})"),
                },
            });
        }
    };
    let note = decision.fallback_note();
    let engine: Box<dyn Engine> = match gpu {
        Some(Ok(engine)) if decision.engine == EngineKind::Gpu => Box::new(engine),
        _ => {
            cpu_engine(decision.engine).expect("the policy picks the GPU engine only on an adapter")
        }
    };
    Ok(Opened { engine, note })
}

/// The engine for a [`Decision`] that is not the GPU engine (the app builds the GPU engine on its
/// renderer's device itself).
pub fn cpu_engine(kind: EngineKind) -> Option<Box<dyn Engine>> {
    match kind {
        EngineKind::Gpu => None,
        EngineKind::Cpu32 => Some(Box::new(CpuEngine32::new())),
        EngineKind::Cpu64 => Some(Box::new(CpuEngine64::new())),
    }
}
