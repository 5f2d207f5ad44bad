//! CPU twin of shaders/softmax.wgsl: a softmax per row over the entries its mask row keeps.

use super::CpuReal;

/// `out[r][j] = exp(x[r][j] - max) / sum` over the `j` where `mask[r / rows_per_mask_row][j]`
/// is not zero, 0 elsewhere (and everywhere in a row that keeps nothing). The maximum and the
/// sum run in increasing `j`, as the kernel's do.
pub fn masked_softmax<T: CpuReal>(
    x: &[T],
    mask: &[T],
    cols: usize,
    rows_per_mask_row: usize,
    out: &mut [T],
) {
    for (r, (row, out_row)) in x.chunks(cols).zip(out.chunks_mut(cols)).enumerate() {
        let keep = &mask[(r / rows_per_mask_row) * cols..][..cols];
        let row_max = row
            .iter()
            .zip(keep)
            .filter(|&(_, &k)| k != T::zero())
            .fold(T::of_f64(f32::MIN as f64), |acc, (&v, _)| acc.max(v));
        let mut sum = T::zero();
        for ((o, &v), &k) in out_row.iter_mut().zip(row).zip(keep) {
            *o = if k != T::zero() {
                (v - row_max).exp()
            } else {
                T::zero()
            };
            sum += *o;
        }
        if sum != T::zero() {
            out_row.iter_mut().for_each(|o| *o /= sum);
        }
    }
}
