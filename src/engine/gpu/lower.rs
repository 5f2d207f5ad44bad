//! Lowering: each recorded op becomes one or more kernel dispatches with their uniform params,
//! bound buffers and workgroup grid. Pure data, no wgpu calls, so it is testable on its own.
//! Each op family lowers its own ops (`engine/op/`); this module holds what they share.

use super::kernels::{Bindings, Kernel};
use super::product_pair::ProductParams;
use crate::engine::op::Op;
use crate::engine::{EngineError, Tensor};
use bytemuck::{Pod, Zeroable};

pub use crate::engine::op::{
    LARGE_TILE_MIN_SIDE, LARGE_TILE_MIN_WORKGROUPS, MAX_REDUCE_PARTIALS, MatmulTile,
    SPLIT_K_MAX_TILES, SPLIT_K_MIN_LEN, split_k,
};

/// What a dispatch binds: a tensor, or the engine's scratch buffer for partial reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Tensor(Tensor),
    /// `len` floats of the engine's scratch buffer.
    Scratch {
        len: usize,
    },
}

/// The engine's scratch buffer, in floats: a whole-array reduction's partials
/// (`MAX_REDUCE_PARTIALS`) or a split-K product's.
pub const SCRATCH_LEN: usize = 1 << 16;

/// Params are 16 words (64 bytes, the binding size): the WGSL params struct's bytes, then zeros.
pub type ParamWords = [u32; 16];

#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub kernel: Kernel,
    pub params: ParamWords,
    /// Outputs first, then inputs, in binding order (see `Kernel::bindings`).
    pub operands: Vec<Operand>,
    pub workgroups: [u32; 3],
    /// 2 m n k per product it computes (a fused bias as the rank-one product the unfused
    /// recording computes); 0 for element-wise work, which FLOP figures do not count.
    pub flop: f64,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct LinearParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub b_cols: u32,
    pub alpha: f32,
    pub _pad: [u32; 3],
}

/// A params struct's WGSL name and the byte offset of each of its fields that the shader reads
/// (every field but padding).
pub type ParamsLayout = (&'static str, Vec<(&'static str, usize)>);

/// The [`ParamsLayout`] of a params struct, from its name and the fields the shader reads.
macro_rules! params_layout {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        (
            stringify!($ty),
            vec![$((stringify!($field), std::mem::offset_of!($ty, $field))),*],
        )
    };
}
pub(crate) use params_layout;

/// Every params struct's layout, for tests/shader_validation.rs to check against naga's layout
/// of the WGSL struct of the same name.
#[doc(hidden)]
pub fn params_layouts() -> Vec<ParamsLayout> {
    let mut layouts = crate::engine::op::params_layouts();
    layouts.extend([
        params_layout!(ProductParams {
            m,
            n,
            k,
            b_cols,
            alpha,
            tiles_n,
            tiles
        }),
        params_layout!(LinearParams {
            m,
            n,
            k,
            b_cols,
            alpha
        }),
    ]);
    layouts
}

pub(crate) fn words<P: Pod>(params: P) -> ParamWords {
    const { assert!(size_of::<P>() <= size_of::<ParamWords>()) };
    let mut words = [0u32; 16];
    let bytes = bytemuck::bytes_of(&params);
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

/// Splits `count` workgroups over x and y, as the kernels' `flat_workgroup_id` expects.
pub(crate) fn grid_1d(
    op: &'static str,
    count: usize,
    max_per_dim: u32,
) -> Result<[u32; 3], EngineError> {
    let max = max_per_dim as usize;
    let x = count.clamp(1, max);
    let y = count.div_ceil(x);
    if y > max {
        return Err(EngineError::Shape {
            op,
            message: format!("{count} workgroups exceed the adapter's grid of {max} x {max}"),
        });
    }
    Ok([x as u32, y as u32, 1])
}

pub(crate) fn grid_2d(
    op: &'static str,
    x: usize,
    y: usize,
    max_per_dim: u32,
) -> Result<[u32; 3], EngineError> {
    let max = max_per_dim as usize;
    if x > max || y > max {
        return Err(EngineError::Shape {
            op,
            message: format!(
                "a {x} x {y} grid of workgroups exceeds the adapter's {max} per dimension"
            ),
        });
    }
    Ok([x as u32, y as u32, 1])
}

/// The dispatches that execute `op` (its family's lowering). `max_per_dim` is the adapter's
/// `max_compute_workgroups_per_dimension`.
pub fn lower(op: &Op, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
    let dispatches = op.lower(max_per_dim)?;
    for dispatch in &dispatches {
        debug_assert_eq!(
            dispatch.operands.len(),
            Bindings::storage_count(dispatch.kernel.bindings()),
            "{} binds as many operands as its kernel declares",
            op.kernel_name()
        );
    }
    Ok(dispatches)
}
