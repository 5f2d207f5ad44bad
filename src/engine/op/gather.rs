//! Rows of a table picked by index, an embedding lookup, and the deterministic sum of rows back
//! into a table that is its gradient (shaders/gather.wgsl; CPU twins `engine/cpu/gather.rs`).
//! Indices are a `rows x 1` tensor of floats holding integers (exact up to 2^24, far above any
//! vocabulary here); they are data, not differentiated.

use super::Operation;
use super::check::{distinct, shape_error};
use crate::engine::adjoint::Adjoint;
use crate::engine::cpu::{CpuEngine, CpuReal, gather};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// `out[r] = table[ids[r]]`. A row whose index is not a row of the table is NaN, so a bad index
/// shows in the loss instead of reading another row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GatherRows {
    pub table: Tensor,
    pub ids: Tensor,
    pub out: Tensor,
}

/// `table[ids[r]] += rows[r]`, in increasing `r` on every engine (no atomics): the gradient of
/// [`GatherRows`] with respect to its table. Rows with a bad index are skipped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScatterAddRows {
    pub rows: Tensor,
    pub ids: Tensor,
    pub table: Tensor,
}

impl Recording {
    pub fn gather_rows(
        &mut self,
        table: Tensor,
        ids: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(GatherRows { table, ids, out })
    }

    pub fn scatter_add_rows(
        &mut self,
        rows: Tensor,
        ids: Tensor,
        table: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(ScatterAddRows { rows, ids, table })
    }
}

static GATHER_WGSL: ShaderFile = crate::shader_file!("gather");
const GATHER: Kernel = Kernel::of_file(&GATHER_WGSL, "gather_rows");
const SCATTER_ADD: Kernel = Kernel::of_file(&GATHER_WGSL, "scatter_add_rows");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GatherParams {
    rows: u32,
    cols: u32,
    table_rows: u32,
    nan_bits: u32,
    _pad: [u32; 4],
}

/// The shapes both ops share: `rows x cols` rows, `rows x 1` indices, a `? x cols` table.
fn check_shapes(
    op: &'static str,
    rows: Tensor,
    ids: Tensor,
    table: Tensor,
) -> Result<(), EngineError> {
    if ids.shape() != (rows.rows(), 1) {
        return Err(shape_error(
            op,
            format!("ids must be {}x1 for rows {rows}, got {ids}", rows.rows()),
        ));
    }
    if table.cols() != rows.cols() {
        return Err(shape_error(
            op,
            format!("the table {table} and the rows {rows} must have as many columns"),
        ));
    }
    Ok(())
}

fn dispatch(
    op: &'static str,
    kernel: Kernel,
    rows: Tensor,
    table: Tensor,
    operands: [Tensor; 3],
    max_per_dim: u32,
) -> Result<Vec<Dispatch>, EngineError> {
    Ok(vec![Dispatch {
        flop: 0.0,
        kernel,
        params: words(GatherParams {
            rows: rows.rows() as u32,
            cols: rows.cols() as u32,
            table_rows: table.rows() as u32,
            nan_bits: f32::NAN.to_bits(),
            _pad: [0; 4],
        }),
        operands: operands.map(T).to_vec(),
        workgroups: grid_1d(op, rows.len().div_ceil(256), max_per_dim)?,
    }])
}

impl Operation for GatherRows {
    const NAME: &'static str = "gather_rows";

    fn kernels() -> Vec<Kernel> {
        vec![GATHER]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.table, self.ids, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        let GatherRows { table, ids, out } = *self;
        check_shapes(Self::NAME, out, ids, table)?;
        distinct(Self::NAME, &[out], &[table, ids])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let GatherRows { table, ids, out } = *self;
        cpu.with_output(out, &[table, ids], |inp, out| {
            gather::gather_rows(inp[0], inp[1], table.cols(), out)
        })
    }

    /// `d_out = d_table[ids]`.
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let GatherRows { table, ids, out } = *self;
        match t.live(table) {
            Some(d_table) => {
                let d_out = t.output(Self::NAME, out)?;
                t.recording.gather_rows(d_table, ids, d_out)?;
            }
            None => t.zero(out),
        }
        Ok(())
    }

    /// `d_table += d_out` summed back into the rows it was gathered from.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let GatherRows { table, ids, out } = *self;
        let d_out = t.adjoint(out);
        t.overwritten(out);
        let Some(d_out) = d_out else { return Ok(()) };
        t.add_to(table, |t, term| {
            t.recording.fill(0.0, term);
            t.recording.scatter_add_rows(d_out, ids, term).map(|_| ())
        })
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let GatherRows { table, ids, out } = *self;
        dispatch(
            Self::NAME,
            GATHER,
            out,
            table,
            [out, table, ids],
            max_per_dim,
        )
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(GatherParams {
            rows,
            cols,
            table_rows,
            nan_bits
        }))
    }
}

impl Operation for ScatterAddRows {
    const NAME: &'static str = "scatter_add_rows";

    fn kernels() -> Vec<Kernel> {
        vec![SCATTER_ADD]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.rows, self.ids, self.table]
    }

    fn check(&self) -> Result<(), EngineError> {
        let ScatterAddRows { rows, ids, table } = *self;
        check_shapes(Self::NAME, rows, ids, table)?;
        distinct(Self::NAME, &[table], &[rows, ids])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let ScatterAddRows { rows, ids, table } = *self;
        cpu.with_output(table, &[rows, ids], |inp, table| {
            gather::scatter_add_rows(inp[0], inp[1], rows.cols(), table)
        })
    }

    /// `d_table += d_rows` summed into the same rows (the indices are constants).
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let ScatterAddRows { rows, ids, table } = *self;
        let Some(d_rows) = t.live(rows) else {
            return Ok(());
        };
        let fresh = t.live(table).is_none();
        let d_table = t.output(Self::NAME, table)?;
        if fresh {
            t.recording.fill(0.0, d_table);
        }
        t.recording.scatter_add_rows(d_rows, ids, d_table)?;
        Ok(())
    }

    /// `d_rows += d_table[ids]`; the table was updated in place, so its adjoint carries on.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let ScatterAddRows { rows, ids, table } = *self;
        t.updated(table);
        let Some(d_table) = t.adjoint(table) else {
            return Ok(());
        };
        t.add_to(rows, |t, term| {
            t.recording.gather_rows(d_table, ids, term).map(|_| ())
        })
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let ScatterAddRows { rows, ids, table } = *self;
        dispatch(
            Self::NAME,
            SCATTER_ADD,
            rows,
            table,
            [table, rows, ids],
            max_per_dim,
        )
    }
}
