//! CPU twin of shaders/batched_matmul.wgsl: one product per matrix of a batch, each through
//! faer on strided views of the operands' storage (see `op::BatchedMatmul`).

use super::CpuReal;
use crate::engine::op::{BatchShape, BatchedLayout};
use faer::{Accum, MatMut, MatRef, Par};

/// One operand's matrix `(o, i)`: `rows x cols` stored row-major at its layout's offset.
fn view<T: CpuReal>(
    values: &[T],
    layout: BatchedLayout,
    (o, i): (usize, usize),
    (rows, cols): (usize, usize),
    transposed: bool,
) -> MatRef<'_, T> {
    let (stored_rows, stored_cols) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let stored = MatRef::from_row_major_slice_with_stride(
        &values[layout.offset(o, i)..],
        stored_rows,
        stored_cols,
        layout.leading,
    );
    if transposed {
        stored.transpose()
    } else {
        stored
    }
}

/// `c[o, i] = alpha op(a[o, i]) op(b[o, i]) + beta c[o, i]` for every matrix of the batch.
#[allow(clippy::too_many_arguments)]
pub fn batched_matmul<T: CpuReal>(
    a: &[T],
    b: &[T],
    c: &mut [T],
    shape: BatchShape,
    layouts: [BatchedLayout; 3],
    trans_a: bool,
    trans_b: bool,
    alpha: T,
    beta: T,
) {
    let BatchShape { m, n, k, .. } = shape;
    let [a_layout, b_layout, c_layout] = layouts;
    for o in 0..shape.outer {
        for i in 0..shape.inner {
            let a = view(a, a_layout, (o, i), (m, k), trans_a);
            let b = view(b, b_layout, (o, i), (k, n), trans_b);
            let offset = c_layout.offset(o, i);
            let accum = if beta == T::zero() {
                Accum::Replace
            } else {
                for row in 0..m {
                    let start = offset + row * c_layout.leading;
                    c[start..start + n].iter_mut().for_each(|v| *v *= beta);
                }
                Accum::Add
            };
            // Row-major as the transpose of column-major: faer 0.24.4's
            // `from_row_major_slice_with_stride_mut` passes the strides swapped (row stride 1),
            // which writes outside the matrix.
            let c = MatMut::from_column_major_slice_with_stride_mut(
                &mut c[offset..],
                n,
                m,
                c_layout.leading,
            )
            .transpose_mut();
            faer::linalg::matmul::matmul(c, accum, a, b, alpha, Par::Seq);
        }
    }
}
