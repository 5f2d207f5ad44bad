//! One round of the parallel one-sided Jacobi SVD (shaders/jacobi.wgsl; CPU twin
//! `engine/cpu/jacobi.rs`).

use super::Operation;
use super::check::{distinct, shape_error};
use crate::engine::cpu::{CpuEngine, CpuReal, jacobi};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// One round of the parallel one-sided Jacobi SVD, in place: `rows` (columns x len) holds the
/// columns being orthogonalised, `basis` (columns x columns) accumulates the rotations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JacobiRound {
    pub rows: Tensor,
    pub basis: Tensor,
    pub round: u32,
}

impl Recording {
    pub fn jacobi_round(
        &mut self,
        rows: Tensor,
        basis: Tensor,
        round: u32,
    ) -> Result<&mut Self, EngineError> {
        self.push(JacobiRound { rows, basis, round })
    }
}

static JACOBI_WGSL: ShaderFile = crate::shader_file!("jacobi");
const JACOBI_ROUND: Kernel = Kernel::of_file(&JACOBI_WGSL, "jacobi_round");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct JacobiParams {
    players: u32,
    columns: u32,
    row_len: u32,
    round: u32,
    _pad: [u32; 4],
}

impl Operation for JacobiRound {
    const NAME: &'static str = "jacobi_round";

    fn kernels() -> Vec<Kernel> {
        vec![JACOBI_ROUND]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.rows, self.basis]
    }

    fn check(&self) -> Result<(), EngineError> {
        let JacobiRound { rows, basis, .. } = *self;
        let columns = rows.rows();
        if basis.shape() != (columns, columns) {
            return Err(shape_error(
                Self::NAME,
                format!("basis must be {columns}x{columns} for rows {rows}, got {basis}"),
            ));
        }
        distinct(Self::NAME, &[rows, basis], &[])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let JacobiRound { rows, basis, round } = *self;
        cpu.with_state(rows, [basis], &[], |_, rows_values, [basis_values]| {
            jacobi::jacobi_round(
                rows_values,
                basis_values,
                rows.rows(),
                rows.cols(),
                round as usize,
            )
        })
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let JacobiRound { rows, basis, round } = *self;
        let columns = rows.rows();
        let players = columns + columns % 2;
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: JACOBI_ROUND,
            params: words(JacobiParams {
                players: players as u32,
                columns: columns as u32,
                row_len: rows.cols() as u32,
                round,
                _pad: [0; 4],
            }),
            operands: vec![T(rows), T(basis)],
            workgroups: grid_1d(Self::NAME, players / 2, max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(JacobiParams {
            players,
            columns,
            row_len,
            round
        }))
    }
}
