//! Finding an adapter and opening a device, apart from the work done on it (so tests and the
//! egui app can bring their own device).

use crate::engine::EngineError;

/// How to pick the adapter. `from_env` honours wgpu's variables: WGPU_BACKEND (e.g. `vulkan`),
/// WGPU_ADAPTER_NAME (a case-insensitive part of the adapter's name) and WGPU_POWER_PREF.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    pub backends: wgpu::Backends,
    pub adapter_name: Option<String>,
    pub power_preference: wgpu::PowerPreference,
}

impl GpuOptions {
    pub fn from_env() -> Self {
        Self {
            // GL is left out (wgpu has it, for eframe's window): an absent Vulkan driver is an
            // error, never a silent fall-back to GL.
            backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY),
            adapter_name: std::env::var("WGPU_ADAPTER_NAME")
                .ok()
                .filter(|name| !name.trim().is_empty()),
            power_preference: wgpu::PowerPreference::from_env()
                .unwrap_or(wgpu::PowerPreference::HighPerformance),
        }
    }
}

/// An opened device with what the engine needs to know about it.
pub struct GpuDevice {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter_info: wgpu::AdapterInfo,
}

async fn choose_adapter(
    instance: &wgpu::Instance,
    options: &GpuOptions,
) -> Result<wgpu::Adapter, EngineError> {
    if let Some(wanted) = &options.adapter_name {
        let adapters = instance.enumerate_adapters(options.backends).await;
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let info = a.get_info();
                format!("{} ({})", info.name, info.backend.to_str())
            })
            .collect();
        let needle = wanted.to_lowercase();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&needle))
            .ok_or_else(|| EngineError::AdapterNameNotFound {
                wanted: wanted.clone(),
                found: if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                },
            });
    }
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: options.power_preference,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        })
        .await
        .map_err(|e| EngineError::NoAdapter {
            detail: format!(" for backends {:?} ({e})", options.backends),
        })
}

/// Opens a device with the adapter's own limits (not WebGPU's defaults, which would cap storage
/// buffers at 128 MiB on every card) and timestamp queries where the adapter has them.
pub async fn open_device(options: &GpuOptions) -> Result<GpuDevice, EngineError> {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = options.backends;
    let instance = wgpu::Instance::new(descriptor);
    let adapter = choose_adapter(&instance, options).await?;
    let adapter_info = adapter.get_info();
    let required_features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("specdef"),
            required_features,
            required_limits: adapter.limits(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        })
        .await
        .map_err(|e| EngineError::DeviceRequest {
            adapter: adapter_info.name.clone(),
            message: e.to_string(),
        })?;
    Ok(GpuDevice {
        device,
        queue,
        adapter_info,
    })
}
