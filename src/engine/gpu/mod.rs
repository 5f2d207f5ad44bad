//! The GPU engine: WGSL compute shaders on wgpu, natively (Vulkan, Metal, DX12) and in the
//! browser (WebGPU). Pipelines are created once and cached, tensor buffers come from a pool, a
//! whole recording is encoded into one compute pass and one submission, and only the tensors
//! asked for are read back.

mod adam_group;
mod context;
pub mod kernels;
pub mod lower;
pub mod plan;
mod plan_cache;
mod pool;
pub mod product_pair;
mod readback;
mod reflection;

pub use context::{GpuDevice, GpuOptions, open_device};
pub use readback::PendingRead;

use super::fusion::Fusion;
use super::{
    Engine, EngineError, EngineInfo, ReadTicket, Recording, ReleaseQueue, Tensor, check_alloc,
};
use kernels::{Bindings, Kernel, PARAMS_BINDING_BYTES, PARAMS_SLOT_BYTES, PipelineCache};
use lower::{Dispatch, MatmulTile, Operand, SCRATCH_LEN};
use plan::{PlanFigures, PlanLimits};
use plan_cache::{CachedPlan, PlanCache};
use pool::{BufferPool, PooledBuffer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Device time of one dispatch, from GPU timestamps.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTiming {
    pub kernel: String,
    pub device_ns: f64,
}

struct GpuTensor {
    label: String,
    buffer: PooledBuffer,
}

/// The uniform buffer holding one params slot per dispatch of a recording.
struct ParamsRing {
    buffer: wgpu::Buffer,
    slots: u64,
    /// Bumped when the buffer is replaced, which invalidates cached bind groups.
    generation: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct BindGroupKey {
    bindings: Bindings,
    params_generation: u64,
    /// (buffer uid, bound bytes) per storage binding.
    buffers: Vec<(u64, u64)>,
}

/// A dispatch ready to encode.
struct Prepared {
    kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

pub struct GpuEngine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: PipelineCache,
    tensors: HashMap<u32, GpuTensor>,
    next_tensor_id: u32,
    released: ReleaseQueue,
    storage_pool: BufferPool,
    staging_pool: BufferPool,
    scratch: PooledBuffer,
    params: ParamsRing,
    bind_groups: HashMap<BindGroupKey, wgpu::BindGroup>,
    plans: PlanCache,
    /// The serial of the plan whose params the params buffer holds (as of the last write).
    params_of_plan: Option<u64>,
    fusion: Fusion,
    /// Every plain product in this tile configuration, for benchmarks; None: by shape.
    matmul_tile: Option<MatmulTile>,
    /// Validation and out-of-memory errors that wgpu reports asynchronously.
    errors: Arc<Mutex<Vec<String>>>,
}

const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

fn create_params_buffer(device: &wgpu::Device, slots: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("specdef.params"),
        size: slots * PARAMS_SLOT_BYTES,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

impl GpuEngine {
    /// Opens the adapter chosen by the environment (WGPU_BACKEND, WGPU_ADAPTER_NAME), blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self, EngineError> {
        Self::with_options(&GpuOptions::from_env())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(options: &GpuOptions) -> Result<Self, EngineError> {
        pollster::block_on(Self::new_async(options))
    }

    /// Opens an adapter asynchronously (the only way in the browser).
    pub async fn new_async(options: &GpuOptions) -> Result<Self, EngineError> {
        let opened = open_device(options).await?;
        Ok(Self::from_device(
            opened.device,
            opened.queue,
            opened.adapter_info,
        ))
    }

    /// Builds the engine on an existing device, such as the one eframe renders with.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_info: wgpu::AdapterInfo,
    ) -> Self {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            if let Ok(mut errors) = sink.lock() {
                errors.push(error.to_string());
            }
        }));
        let limits = device.limits();
        let mut storage_pool = BufferPool::new(STORAGE_USAGE);
        let scratch = storage_pool.acquire(
            &device,
            "specdef.scratch",
            (SCRATCH_LEN * 4) as u64,
            limits.max_buffer_size,
        );
        let params = ParamsRing {
            buffer: create_params_buffer(&device, 256),
            slots: 256,
            generation: 0,
        };
        Self {
            device,
            queue,
            adapter_info,
            limits,
            pipelines: PipelineCache::default(),
            tensors: HashMap::new(),
            next_tensor_id: 0,
            released: ReleaseQueue::default(),
            storage_pool,
            staging_pool: BufferPool::new(
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            scratch,
            params,
            bind_groups: HashMap::new(),
            plans: PlanCache::default(),
            params_of_plan: None,
            fusion: Fusion::default(),
            matmul_tile: None,
            errors,
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.adapter_info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether recordings are fused before they are lowered (on by default; the results are the
    /// same either way within the tolerances the parity tests state).
    pub fn set_fusion(&mut self, fusion: Fusion) {
        self.fusion = fusion;
    }

    pub fn fusion(&self) -> Fusion {
        self.fusion
    }

    /// Runs every plain product in one tile configuration (`None`: each by its shape, as
    /// `MatmulTile::for_shape` says), so that benchmarks can time both on the same shapes.
    pub fn set_matmul_tile(&mut self, tile: Option<MatmulTile>) {
        if tile != self.matmul_tile {
            // Kept plans were made under the other setting.
            self.plans.clear();
            self.matmul_tile = tile;
        }
    }

    /// The dispatches of `recording` under the engine's settings.
    fn lower(&self, recording: &Recording) -> Result<Vec<Dispatch>, EngineError> {
        let limits = PlanLimits::of(&self.limits);
        plan::lower_recording_in(recording, self.fusion, limits, self.matmul_tile)
    }

    /// Whether `run_timed` can measure device time on this adapter.
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Blocks until all submitted work has finished (for timing from the host).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_idle(&self) -> Result<(), EngineError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| EngineError::Device(e.to_string()))
    }

    /// Idle buffers held by the pool (tensors freed and staging buffers returned).
    pub fn pooled_buffers(&self) -> usize {
        self.storage_pool.idle_count() + self.staging_pool.idle_count()
    }

    /// Recordings planned so far (a recording run again reuses its plan; for tests and
    /// diagnostics).
    pub fn plans_made(&self) -> u64 {
        self.plans.made()
    }

    /// Compiles every pipeline now rather than on first use, reporting a shader that fails.
    /// Compiles every pipeline the device's limits allow (an Adam group binds more storage
    /// buffers than a WebGPU device may).
    pub fn compile_all(&mut self) -> Result<(), EngineError> {
        let max_storage = self.limits.max_storage_buffers_per_shader_stage as usize;
        for kernel in Kernel::all() {
            if kernel.bindings().storage_count() > max_storage {
                continue;
            }
            self.pipelines.pipeline(&self.device, kernel);
            self.take_error().map_or(Ok(()), |message| {
                Err(EngineError::Shader {
                    kernel: kernel.label(),
                    message,
                })
            })?;
        }
        Ok(())
    }

    fn take_error(&self) -> Option<String> {
        let mut errors = self.errors.lock().ok()?;
        (!errors.is_empty()).then(|| errors.drain(..).collect::<Vec<_>>().join("; "))
    }

    fn tensor(&self, tensor: Tensor) -> Result<&GpuTensor, EngineError> {
        self.tensors
            .get(&tensor.id())
            .ok_or(EngineError::UnknownTensor { id: tensor.id() })
    }

    /// The buffer and byte range one operand binds.
    fn operand_buffer(&self, operand: Operand) -> Result<(&PooledBuffer, u64), EngineError> {
        match operand {
            Operand::Tensor(t) => Ok((&self.tensor(t)?.buffer, (t.len() * 4) as u64)),
            Operand::Scratch { len } => Ok((&self.scratch, (len * 4) as u64)),
        }
    }

    fn ensure_params_slots(&mut self, slots: u64) {
        if slots > self.params.slots {
            let slots = slots.next_power_of_two();
            self.params.buffer = create_params_buffer(&self.device, slots);
            self.params.slots = slots;
            self.params.generation += 1;
            // Every cached bind group, and so every cached plan, points at the old params buffer.
            self.bind_groups.clear();
            self.plans.clear();
        }
    }

    fn bind_group(&mut self, dispatch: &Dispatch) -> Result<wgpu::BindGroup, EngineError> {
        let bindings = dispatch.kernel.bindings();
        let mut buffers = Vec::with_capacity(dispatch.operands.len());
        for &operand in &dispatch.operands {
            let (buffer, bytes) = self.operand_buffer(operand)?;
            buffers.push((buffer.uid, bytes));
        }
        let key = BindGroupKey {
            bindings,
            params_generation: self.params.generation,
            buffers,
        };
        if let Some(group) = self.bind_groups.get(&key) {
            return Ok(group.clone());
        }
        let layout = self
            .pipelines
            .bind_group_layout(&self.device, bindings)
            .clone();
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params.buffer,
                offset: 0,
                size: wgpu::BufferSize::new(PARAMS_BINDING_BYTES),
            }),
        }];
        for (i, &operand) in dispatch.operands.iter().enumerate() {
            let (buffer, bytes) = self.operand_buffer(operand)?;
            entries.push(wgpu::BindGroupEntry {
                binding: bindings.binding_of(i),
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &buffer.buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(bytes),
                }),
            });
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&dispatch.kernel.label()),
            layout: &layout,
            entries: &entries,
        });
        self.bind_groups.insert(key, group.clone());
        Ok(group)
    }

    /// Makes the recording's plan the plan cache's newest (planning it unless it is kept) and
    /// writes its params to the params buffer unless they are there already.
    fn prepare(&mut self, recording: &Recording) -> Result<(), EngineError> {
        let generation = self.params.generation;
        if self.plans.promote(recording.ops(), self.fusion, generation) {
            let plan = self.plans.newest().expect("promoted");
            // A freed tensor's id is never reused, so a kept plan names it until it is forgotten.
            for &id in &plan.tensor_ids {
                if !self.tensors.contains_key(&id) {
                    return Err(EngineError::UnknownTensor { id });
                }
            }
        } else {
            let plan = self.plan(recording)?;
            self.plans.insert(plan);
        }
        let plan = self.plans.newest().expect("kept");
        if self.params_of_plan != Some(plan.serial) && !plan.params.is_empty() {
            self.queue
                .write_buffer(&self.params.buffer, 0, bytemuck::cast_slice(&plan.params));
            self.params_of_plan = Some(plan.serial);
        }
        Ok(())
    }

    /// The dispatches of the plan `prepare` made ready last.
    fn prepared(&self) -> &[Prepared] {
        self.plans.newest().map_or(&[], |plan| &plan.dispatches)
    }

    /// Lowers the recording and prepares each dispatch: its params slot, pipeline and bind group.
    fn plan(&mut self, recording: &Recording) -> Result<CachedPlan, EngineError> {
        let mut tensor_ids = Vec::new();
        let mut named = std::collections::HashSet::new();
        for op in recording.ops() {
            for tensor in op.tensors() {
                self.tensor(tensor)?;
                if named.insert(tensor.id()) {
                    tensor_ids.push(tensor.id());
                }
            }
        }
        let dispatches = self.lower(recording)?;
        self.ensure_params_slots(dispatches.len() as u64);
        let slot_words = (PARAMS_SLOT_BYTES / 4) as usize;
        let mut params = vec![0u32; dispatches.len() * slot_words];
        for (slot, dispatch) in params.chunks_mut(slot_words).zip(&dispatches) {
            slot[..dispatch.params.len()].copy_from_slice(&dispatch.params);
        }
        let mut prepared = Vec::with_capacity(dispatches.len());
        for dispatch in &dispatches {
            let pipeline = self
                .pipelines
                .pipeline(&self.device, dispatch.kernel)
                .clone();
            if let Some(message) = self.take_error() {
                return Err(EngineError::Shader {
                    kernel: dispatch.kernel.label(),
                    message,
                });
            }
            prepared.push(Prepared {
                kernel: dispatch.kernel,
                pipeline,
                bind_group: self.bind_group(dispatch)?,
                workgroups: dispatch.workgroups,
            });
        }
        Ok(CachedPlan {
            ops: recording.ops().to_vec(),
            fusion: self.fusion,
            params_generation: self.params.generation,
            tensor_ids,
            params,
            dispatches: prepared,
            serial: 0,
        })
    }

    fn submit(&self, encoder: wgpu::CommandEncoder) -> Result<(), EngineError> {
        self.queue.submit([encoder.finish()]);
        self.take_error()
            .map_or(Ok(()), |e| Err(EngineError::Device(e)))
    }

    fn encode_dispatch(pass: &mut wgpu::ComputePass<'_>, slot: usize, dispatch: &Prepared) {
        let offset = (slot as u64 * PARAMS_SLOT_BYTES) as u32;
        // Names each dispatch in GPU debuggers (RenderDoc, browser devtools); debug builds only,
        // as the label is a new string per dispatch.
        #[cfg(debug_assertions)]
        pass.insert_debug_marker(&dispatch.kernel.label());
        pass.set_pipeline(&dispatch.pipeline);
        pass.set_bind_group(0, &dispatch.bind_group, &[offset]);
        let [x, y, z] = dispatch.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Runs the recording with each dispatch in its own timed compute pass and returns the device
    /// time of each. Needs TIMESTAMP_QUERY; blocks until the GPU is done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_timed(&mut self, recording: &Recording) -> Result<Vec<KernelTiming>, EngineError> {
        if !self.has_timestamps() {
            return Err(EngineError::Unsupported(
                "GPU timestamp queries (TIMESTAMP_QUERY)",
            ));
        }
        self.prepare(recording)?;
        let prepared = self.prepared();
        let queries = 2 * prepared.len() as u32;
        if queries > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(EngineError::Shape {
                op: "run_timed",
                message: format!(
                    "{} dispatches; a timed run holds at most {}",
                    prepared.len(),
                    wgpu::QUERY_SET_MAX_QUERIES / 2
                ),
            });
        }
        if queries == 0 {
            return Ok(Vec::new());
        }
        let query_set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("specdef.timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: queries,
        });
        let resolve_bytes = u64::from(queries) * 8;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("specdef.timestamps.resolve"),
            size: resolve_bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("specdef.timestamps.staging"),
            size: resolve_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("specdef.recording.timed"),
            });
        for (slot, dispatch) in prepared.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&dispatch.kernel.label()),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: Some(2 * slot as u32),
                    end_of_pass_write_index: Some(2 * slot as u32 + 1),
                }),
            });
            Self::encode_dispatch(&mut pass, slot, dispatch);
        }
        encoder.resolve_query_set(&query_set, 0..queries, &resolve, 0);
        encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, resolve_bytes);
        self.submit(encoder)?;

        let (sender, receiver) = std::sync::mpsc::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |result| {
                let _ = sender.send(result);
            });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| EngineError::Readback(e.to_string()))?;
        receiver
            .recv()
            .map_err(|e| EngineError::Readback(e.to_string()))?
            .map_err(|e| EngineError::Readback(e.to_string()))?;
        let ticks: Vec<u64> = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| EngineError::Readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view[..])
        };
        staging.unmap();
        let period_ns = f64::from(self.queue.get_timestamp_period());
        Ok(prepared
            .iter()
            .zip(ticks.chunks_exact(2))
            .map(|(dispatch, pair)| KernelTiming {
                kernel: dispatch.kernel.label(),
                device_ns: pair[1].saturating_sub(pair[0]) as f64 * period_ns,
            })
            .collect())
    }
}

impl GpuEngine {
    /// Frees what dropped owners left in the release queue (their buffers go back to the pool;
    /// a buffer reused later is written only after the submissions that used it).
    fn collect_released(&mut self) {
        for tensor in self.released.take() {
            self.free(tensor);
        }
    }
}

impl Engine for GpuEngine {
    fn info(&self) -> EngineInfo {
        let info = &self.adapter_info;
        EngineInfo {
            engine: "gpu".to_string(),
            backend: info.backend.to_str().to_string(),
            adapter: info.name.clone(),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            device_type: format!("{:?}", info.device_type),
        }
    }

    fn alloc(&mut self, label: &str, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        self.collect_released();
        check_alloc(label, rows, cols)?;
        let bytes = (rows as u64).saturating_mul(cols as u64).saturating_mul(4);
        for (limit_name, limit) in [
            (
                "max_storage_buffer_binding_size",
                self.limits.max_storage_buffer_binding_size,
            ),
            ("max_buffer_size", self.limits.max_buffer_size),
        ] {
            if bytes > limit {
                return Err(EngineError::BufferTooLarge {
                    label: label.to_string(),
                    bytes,
                    limit_name,
                    limit,
                });
            }
        }
        let buffer =
            self.storage_pool
                .acquire(&self.device, label, bytes, self.limits.max_buffer_size);
        let id = self.next_tensor_id;
        self.next_tensor_id += 1;
        self.tensors.insert(
            id,
            GpuTensor {
                label: label.to_string(),
                buffer,
            },
        );
        Ok(Tensor::new(id, rows, cols))
    }

    fn free(&mut self, tensor: Tensor) {
        if let Some(stored) = self.tensors.remove(&tensor.id()) {
            self.storage_pool.release(stored.buffer);
        }
    }

    fn release_queue(&self) -> ReleaseQueue {
        self.released.clone()
    }

    fn upload(&mut self, tensor: Tensor, values: &[f64]) -> Result<(), EngineError> {
        self.collect_released();
        let stored = self.tensor(tensor)?;
        if values.len() != tensor.len() {
            return Err(EngineError::UploadLength {
                label: stored.label.clone(),
                got: values.len(),
                expected: tensor.len(),
            });
        }
        let floats: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        self.queue
            .write_buffer(&stored.buffer.buffer, 0, bytemuck::cast_slice(&floats));
        Ok(())
    }

    fn run(&mut self, recording: &Recording) -> Result<(), EngineError> {
        self.collect_released();
        self.prepare(recording)?;
        let prepared = self.prepared();
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("specdef.recording"),
            });
        {
            // One pass for the whole recording: wgpu orders dispatches that share buffers.
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("specdef.recording"),
                timestamp_writes: None,
            });
            for (slot, dispatch) in prepared.iter().enumerate() {
                Self::encode_dispatch(&mut pass, slot, dispatch);
            }
        }
        self.submit(encoder)
    }

    fn plan_figures(&self, recording: &Recording) -> Result<Option<PlanFigures>, EngineError> {
        Ok(Some(PlanFigures::of(&self.lower(recording)?)))
    }

    fn begin_read(&mut self, tensors: &[Tensor]) -> Result<ReadTicket, EngineError> {
        self.collect_released();
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("specdef.readback"),
            });
        let mut staging = Vec::with_capacity(tensors.len());
        for &tensor in tensors {
            let bytes = (tensor.len() * 4) as u64;
            self.tensor(tensor)?;
            let target = self.staging_pool.acquire(
                &self.device,
                "specdef.staging",
                bytes,
                self.limits.max_buffer_size,
            );
            let source = &self.tensor(tensor)?.buffer.buffer;
            encoder.copy_buffer_to_buffer(source, 0, &target.buffer, 0, bytes);
            staging.push((target, bytes));
        }
        self.submit(encoder)?;
        Ok(ReadTicket::Pending(PendingRead::new(staging)))
    }

    fn poll_read(&mut self, ticket: &mut ReadTicket) -> Result<Option<Vec<Vec<f64>>>, EngineError> {
        let pending = match ticket {
            ReadTicket::Pending(pending) => pending,
            ReadTicket::Ready(_) | ReadTicket::Taken => {
                return match std::mem::replace(ticket, ReadTicket::Taken) {
                    ReadTicket::Ready(values) => Ok(Some(values)),
                    _ => Err(EngineError::Readback(
                        "the ticket was already read".to_string(),
                    )),
                };
            }
        };
        // Drives map callbacks natively; in the browser the event loop does that.
        let _ = self.device.poll(wgpu::PollType::Poll);
        if let Some(message) = pending.failure() {
            return Err(EngineError::Readback(message));
        }
        if !pending.is_ready() {
            return Ok(None);
        }
        let result = pending.take_values();
        *ticket = ReadTicket::Taken;
        match result {
            Ok((values, buffers)) => {
                buffers
                    .into_iter()
                    .for_each(|b| self.staging_pool.release(b));
                Ok(Some(values))
            }
            Err((message, buffers)) => {
                buffers
                    .into_iter()
                    .for_each(|b| self.staging_pool.release(b));
                Err(EngineError::Readback(message))
            }
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn wait_read(&mut self, ticket: &mut ReadTicket) -> Result<Vec<Vec<f64>>, EngineError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| EngineError::Readback(e.to_string()))?;
        self.poll_read(ticket)?.ok_or_else(|| {
            EngineError::Readback("the GPU finished but the buffers were not mapped".to_string())
        })
    }

    #[cfg(target_arch = "wasm32")]
    fn wait_read(&mut self, _ticket: &mut ReadTicket) -> Result<Vec<Vec<f64>>, EngineError> {
        Err(EngineError::Unsupported(
            "blocking readback in the browser (poll the ticket each frame)",
        ))
    }

    fn read(&mut self, tensors: &[Tensor]) -> Result<Vec<Vec<f64>>, EngineError> {
        let mut ticket = self.begin_read(tensors)?;
        self.wait_read(&mut ticket)
    }
}
