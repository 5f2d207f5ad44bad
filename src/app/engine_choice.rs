//! Which engine the app computes on: the library's policy ([`crate::engine_choice::decide`])
//! applied to eframe's renderer. The GPU engine runs on eframe's own wgpu device where that device
//! can run compute shaders, any adapter (as `--engine gpu`); otherwise the f32 CPU engine
//! computes, with the policy's reason in the note, since a window cannot refuse to open.

use crate::engine::Engine;
use crate::engine::cpu::CpuEngine32;
use crate::engine::gpu::GpuEngine;
use crate::engine_choice::{CpuReason, Decision, EngineChoice, EngineKind, cpu_engine, decide};

/// What to call the adapter where wgpu leaves its name or driver blank, as it does on WebGPU
/// (the browser tells the page instead: vendor, architecture, browser version).
#[derive(Clone, Debug, Default)]
pub struct AdapterLabels {
    pub name: String,
    pub driver: String,
}

/// The engine for a window or page whose renderer made `render_state` (None: not the wgpu
/// renderer), and the note saying what computes and why. `force_cpu` is the user's choice
/// (`specdef gui --cpu`, `?engine=cpu`).
pub fn engine_for(
    render_state: Option<&eframe::egui_wgpu::RenderState>,
    force_cpu: bool,
    labels: Option<AdapterLabels>,
) -> (Box<dyn Engine>, String) {
    let choice = if force_cpu {
        EngineChoice::Cpu
    } else {
        EngineChoice::Gpu
    };
    let info = render_state.map(|state| {
        let mut info = state.adapter.get_info();
        if let Some(labels) = labels {
            if info.name.trim().is_empty() {
                info.name = labels.name;
            }
            if info.driver.trim().is_empty() {
                info.driver = labels.driver;
            }
        }
        info
    });
    let adapter = info.as_ref().ok_or("the renderer has no wgpu device");
    let decision = decide(choice, adapter).unwrap_or_else(|reason: CpuReason| Decision {
        engine: EngineKind::Cpu32,
        reason: Some(reason),
    });
    let engine: Box<dyn Engine> = match (decision.engine, render_state, info) {
        (EngineKind::Gpu, Some(state), Some(info)) => Box::new(GpuEngine::from_device(
            state.device.clone(),
            state.queue.clone(),
            info,
        )),
        (kind, ..) => cpu_engine(kind).unwrap_or_else(|| Box::new(CpuEngine32::new())),
    };
    let note = decision.note(engine.as_ref());
    (engine, note)
}
