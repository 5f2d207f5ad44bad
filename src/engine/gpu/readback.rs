//! Reading tensors back: copy only the asked-for tensors into mappable staging buffers, map them,
//! and hand the values over once the GPU is done. Split in two (begin, poll) because in the
//! browser a mapping completes only after control returns to the event loop.

use super::pool::PooledBuffer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A GPU readback in flight, inside a `ReadTicket`; `Engine::poll_read` yields its values.
pub struct PendingRead {
    pub(super) staging: Vec<(PooledBuffer, u64)>,
    pub(super) mapped: Arc<AtomicUsize>,
    pub(super) failure: Arc<Mutex<Option<String>>>,
}

impl PendingRead {
    pub(super) fn new(staging: Vec<(PooledBuffer, u64)>) -> Self {
        let pending = Self {
            staging,
            mapped: Arc::new(AtomicUsize::new(0)),
            failure: Arc::new(Mutex::new(None)),
        };
        for (buffer, bytes) in &pending.staging {
            let mapped = Arc::clone(&pending.mapped);
            let failure = Arc::clone(&pending.failure);
            buffer.buffer.slice(0..*bytes).map_async(
                wgpu::MapMode::Read,
                move |result| match result {
                    Ok(()) => {
                        mapped.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) => {
                        if let Ok(mut slot) = failure.lock() {
                            slot.get_or_insert_with(|| e.to_string());
                        }
                    }
                },
            );
        }
        pending
    }

    pub(super) fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|slot| slot.clone())
    }

    pub(super) fn is_ready(&self) -> bool {
        self.mapped.load(Ordering::Acquire) == self.staging.len()
    }

    /// The mapped values, widened to f64. Call only when ready; unmaps the buffers.
    #[allow(clippy::type_complexity)]
    pub(super) fn take_values(
        &mut self,
    ) -> Result<(Vec<Vec<f64>>, Vec<PooledBuffer>), (String, Vec<PooledBuffer>)> {
        let mut values = Vec::with_capacity(self.staging.len());
        let mut buffers = Vec::with_capacity(self.staging.len());
        let mut failure = None;
        for (buffer, bytes) in self.staging.drain(..) {
            match buffer.buffer.slice(0..bytes).get_mapped_range() {
                Ok(view) => {
                    // Copy out rather than cast in place: a mapping carries no f32 alignment promise.
                    let floats: Vec<f32> = bytemuck::pod_collect_to_vec(&view[..]);
                    values.push(floats.into_iter().map(f64::from).collect());
                }
                Err(e) => failure = Some(e.to_string()),
            }
            buffer.buffer.unmap();
            buffers.push(buffer);
        }
        if let Some(message) = failure {
            return Err((message, buffers));
        }
        Ok((values, buffers))
    }
}
