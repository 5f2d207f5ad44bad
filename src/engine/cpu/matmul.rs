//! CPU twin of shaders/matmul.wgsl: `c = alpha * op(a) op(b) + beta * c`, through faer (on the
//! engine's worker threads where the product is large enough, see `parallel.rs`).

use super::CpuReal;
use faer::{Accum, MatMut, MatRef, Par};

/// Row-major operands; `a` is `m x k` (or `k x m` when `trans_a`), `b` is `k x n` (or `n x k`).
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: CpuReal>(
    a: &[T],
    b: &[T],
    c: &mut [T],
    (m, n, k): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    alpha: T,
    beta: T,
    par: Par,
) {
    let a = if trans_a {
        MatRef::from_row_major_slice(a, k, m).transpose()
    } else {
        MatRef::from_row_major_slice(a, m, k)
    };
    let b = if trans_b {
        MatRef::from_row_major_slice(b, n, k).transpose()
    } else {
        MatRef::from_row_major_slice(b, k, n)
    };
    let accum = if beta == T::zero() {
        Accum::Replace
    } else {
        if beta != T::one() {
            c.iter_mut().for_each(|v| *v *= beta);
        }
        Accum::Add
    };
    let c = MatMut::from_row_major_slice_mut(c, m, n);
    // faer splits the output over threads, never the sum: results do not depend on `par`.
    faer::linalg::matmul::matmul(c, accum, a, b, alpha, par);
}
