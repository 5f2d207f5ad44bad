//! CPU twin of shaders/transpose.wgsl.

use super::CpuReal;

pub fn transpose<T: CpuReal>(x: &[T], rows: usize, cols: usize, out: &mut [T]) {
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
}
