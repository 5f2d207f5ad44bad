//! A pool of wgpu buffers by size class, so freeing and re-allocating tensors of a training loop
//! (or readback staging buffers) creates no new GPU allocations.

use std::collections::HashMap;

pub struct PooledBuffer {
    /// Unique for the buffer's lifetime: bind groups are cached by it.
    pub uid: u64,
    pub buffer: wgpu::Buffer,
}

pub struct BufferPool {
    usage: wgpu::BufferUsages,
    free: HashMap<u64, Vec<PooledBuffer>>,
    next_uid: u64,
}

/// Powers of two up to 1 MiB (little waste in absolute terms), whole MiB above (little waste
/// relatively), so a buffer is reused by any request of its class.
fn size_class(bytes: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    if bytes <= MIB {
        bytes.next_power_of_two().max(256)
    } else {
        bytes.div_ceil(MIB) * MIB
    }
}

impl BufferPool {
    pub fn new(usage: wgpu::BufferUsages) -> Self {
        Self {
            usage,
            free: HashMap::new(),
            next_uid: 0,
        }
    }

    /// A buffer of at least `bytes`, but never over `max_buffer_size`.
    pub fn acquire(
        &mut self,
        device: &wgpu::Device,
        label: &str,
        bytes: u64,
        max_buffer_size: u64,
    ) -> PooledBuffer {
        let class = size_class(bytes).min(max_buffer_size).max(bytes);
        if let Some(buffer) = self.free.get_mut(&class).and_then(Vec::pop) {
            return buffer;
        }
        let uid = self.next_uid;
        self.next_uid += 1;
        PooledBuffer {
            uid,
            buffer: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: class,
                usage: self.usage,
                mapped_at_creation: false,
            }),
        }
    }

    pub fn release(&mut self, buffer: PooledBuffer) {
        self.free
            .entry(buffer.buffer.size())
            .or_default()
            .push(buffer);
    }

    /// Number of idle buffers (for tests and diagnostics).
    pub fn idle_count(&self) -> usize {
        self.free.values().map(Vec::len).sum()
    }
}
