//! A recording's plan: the dispatches the GPU engine runs for it (fused or not), and what one run
//! of them costs, read off the plan alone (no device needed): dispatches, barrier stages,
//! workgroups, FLOPs of the products and the bytes bound.

use super::lower::{self, Dispatch, MatmulTile, Operand};
use crate::engine::fusion::{self, Fusion, Step};
use crate::engine::{EngineError, Op, Recording};
use std::collections::HashMap;

/// The device limits a plan depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_workgroups_per_dim: u32,
    pub max_storage_buffers_per_stage: u32,
}

impl PlanLimits {
    /// WebGPU's defaults, which every adapter grants.
    pub const WEBGPU: Self = Self {
        max_workgroups_per_dim: 65535,
        max_storage_buffers_per_stage: 8,
    };

    pub fn of(limits: &wgpu::Limits) -> Self {
        Self {
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
        }
    }
}

/// The dispatches that execute `recording`, after the fusion pass where `fusion` is on. Checks
/// nothing about the tensors' storage: that is the engine's job.
pub fn lower_recording(
    recording: &Recording,
    fusion: Fusion,
    limits: PlanLimits,
) -> Result<Vec<Dispatch>, EngineError> {
    lower_recording_in(recording, fusion, limits, None)
}

/// The same with every plain product in the configuration `matmul_tile` where one is given
/// (each by its shape otherwise, as `MatmulTile::for_shape` says), so that tests and benchmarks
/// can run each configuration on the same shapes.
pub fn lower_recording_in(
    recording: &Recording,
    fusion: Fusion,
    limits: PlanLimits,
    matmul_tile: Option<MatmulTile>,
) -> Result<Vec<Dispatch>, EngineError> {
    let max_per_dim = limits.max_workgroups_per_dim;
    let lower_op = |op: &Op| match (op, matmul_tile) {
        (Op::Matmul(product), Some(tile)) => product.lower_in(tile, max_per_dim),
        _ => lower::lower(op, max_per_dim),
    };
    let mut dispatches = Vec::with_capacity(recording.len());
    match fusion {
        Fusion::Off => {
            for op in recording.ops() {
                dispatches.extend(lower_op(op)?);
            }
        }
        Fusion::On => {
            for step in fusion::fuse(recording.ops(), limits.max_storage_buffers_per_stage) {
                match step {
                    Step::Op(op) => dispatches.extend(lower_op(op)?),
                    Step::Fused(fused) => dispatches.push(fused.lower(max_per_dim)?),
                }
            }
        }
    }
    debug_assert!(
        dispatches.iter().all(|d| d.kernel.is_listed()),
        "every kernel a lowering uses is in Kernel::all()"
    );
    Ok(dispatches)
}

/// What one run of a plan costs.
#[derive(Clone, Copy, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct PlanFigures {
    pub dispatches: usize,
    /// The length of the longest chain of dispatches that must wait for each other (one reads
    /// or overwrites what an earlier one wrote, or overwrites what it read): the barriers a
    /// driver needs at least, whatever it runs side by side.
    pub barrier_stages: usize,
    pub workgroups: u64,
    /// 2 m n k per product (the bias and its gradient as the products with a ones column that
    /// the unfused recording computes); element-wise work is not counted.
    pub flop: f64,
    /// The bytes every dispatch binds, each operand counted once: the memory traffic of a run
    /// that touched each operand once (tiles read more; caches read less).
    pub bytes: u64,
}

fn operand_bytes(operand: Operand) -> u64 {
    match operand {
        Operand::Tensor(t) => t.len() as u64 * 4,
        Operand::Scratch { len } => len as u64 * 4,
    }
}

/// What an operand is, for hazards between dispatches: a tensor or the scratch buffer.
fn resource(operand: Operand) -> Option<u32> {
    match operand {
        Operand::Tensor(t) => Some(t.id()),
        Operand::Scratch { .. } => None,
    }
}

impl PlanFigures {
    pub fn of(dispatches: &[Dispatch]) -> Self {
        // Per resource: the stage of its last writer and of its last reader.
        let mut written: HashMap<Option<u32>, usize> = HashMap::new();
        let mut read: HashMap<Option<u32>, usize> = HashMap::new();
        let mut figures = PlanFigures::default();
        for dispatch in dispatches {
            let outputs = dispatch.kernel.bindings().outputs;
            let (writes, reads) = dispatch.operands.split_at(outputs);
            let after = |map: &HashMap<Option<u32>, usize>, ops: &[Operand]| {
                ops.iter()
                    .filter_map(|&o| map.get(&resource(o)).copied())
                    .max()
                    .unwrap_or(0)
            };
            let stage = 1 + after(&written, reads)
                .max(after(&written, writes))
                .max(after(&read, writes));
            for &o in writes {
                written.insert(resource(o), stage);
            }
            for &o in reads {
                let last = read.entry(resource(o)).or_default();
                *last = (*last).max(stage);
            }
            figures.dispatches += 1;
            figures.barrier_stages = figures.barrier_stages.max(stage);
            figures.workgroups += dispatch
                .workgroups
                .iter()
                .map(|&w| u64::from(w))
                .product::<u64>();
            figures.flop += dispatch.flop;
            figures.bytes += dispatch
                .operands
                .iter()
                .map(|&o| operand_bytes(o))
                .sum::<u64>();
        }
        figures
    }
}
