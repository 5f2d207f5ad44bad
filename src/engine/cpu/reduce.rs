//! CPU twin of shaders/reduce.wgsl: sum, sum of squares and max, per row or over everything.
//! Sums run in index order; the GPU sums in a fixed tree, so the two agree within the tolerance
//! of a K-term sum, and each is bit-reproducible on its own.

use super::CpuReal;
use crate::engine::op::{ReduceAxis, Reduction};

fn reduce_slice<T: CpuReal>(reduction: Reduction, x: &[T]) -> T {
    match reduction {
        Reduction::Sum => x.iter().fold(T::zero(), |acc, &v| acc + v),
        Reduction::SumOfSquares => x.iter().fold(T::zero(), |acc, &v| acc + v * v),
        Reduction::Max => x.iter().fold(T::neg_infinity(), |acc, &v| acc.max(v)),
    }
}

pub fn reduce<T: CpuReal>(
    reduction: Reduction,
    axis: ReduceAxis,
    x: &[T],
    cols: usize,
    out: &mut [T],
) {
    match axis {
        ReduceAxis::PerRow => {
            for (o, row) in out.iter_mut().zip(x.chunks(cols)) {
                *o = reduce_slice(reduction, row);
            }
        }
        ReduceAxis::Whole => out[0] = reduce_slice(reduction, x),
    }
}
