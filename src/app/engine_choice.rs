//! Which engine the app computes on: the GPU engine on eframe's own wgpu device where that device
//! can run compute shaders, the f32 CPU engine otherwise, with a note saying which and why.

use crate::engine::Engine;
use crate::engine::cpu::CpuEngine32;
use crate::engine::gpu::GpuEngine;

/// What to call the adapter where wgpu leaves its name or driver blank, as it does on WebGPU
/// (the browser tells the page instead: vendor, architecture, browser version).
#[derive(Clone, Debug, Default)]
pub struct AdapterLabels {
    pub name: String,
    pub driver: String,
}

/// The engine for a window or page whose renderer made `render_state` (None: not the wgpu
/// renderer). `force_cpu` is the user's choice (`specdef gui --cpu`, `?engine=cpu`).
pub fn engine_for(
    render_state: Option<&eframe::egui_wgpu::RenderState>,
    force_cpu: bool,
    labels: Option<AdapterLabels>,
) -> (Box<dyn Engine>, String) {
    let cpu = |why: String| -> (Box<dyn Engine>, String) {
        (
            Box::new(CpuEngine32::new()),
            format!("computing on the CPU engine (f32): {why}"),
        )
    };
    if force_cpu {
        return cpu("as asked".to_string());
    }
    let Some(state) = render_state else {
        return cpu("the renderer has no wgpu device".to_string());
    };
    let mut info = state.adapter.get_info();
    if let Some(labels) = labels {
        if info.name.trim().is_empty() {
            info.name = labels.name;
        }
        if info.driver.trim().is_empty() {
            info.driver = labels.driver;
        }
    }
    match info.backend {
        wgpu::Backend::Vulkan
        | wgpu::Backend::Metal
        | wgpu::Backend::Dx12
        | wgpu::Backend::BrowserWebGpu => {
            let engine = GpuEngine::from_device(state.device.clone(), state.queue.clone(), info);
            let note = format!("computing on {}", engine.info());
            (Box::new(engine), note)
        }
        // WebGL2 (the browser without WebGPU) has no compute shaders; the engine never uses GL.
        other => cpu(format!(
            "the window draws with {} ({}), which has no compute shaders for the engine{}",
            other.to_str(),
            info.name,
            if cfg!(target_arch = "wasm32") {
                "; this browser offers no WebGPU"
            } else {
                ""
            }
        )),
    }
}
