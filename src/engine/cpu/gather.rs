//! CPU twins of shaders/gather.wgsl: rows of a table picked by index, and the sum of rows back
//! into the table (the gather's gradient), in increasing row order as the kernel adds them.

use super::CpuReal;

/// The table row an index names, or `None` for anything but an integer in `0..table_rows`.
pub fn table_row<T: CpuReal>(index: T, table_rows: usize) -> Option<usize> {
    let index = index.as_f64();
    (index >= 0.0 && index < table_rows as f64 && index.fract() == 0.0).then_some(index as usize)
}

/// `out[r] = table[ids[r]]`; a row whose index is not a row of the table is NaN.
pub fn gather_rows<T: CpuReal>(table: &[T], ids: &[T], cols: usize, out: &mut [T]) {
    let table_rows = table.len() / cols;
    for (&id, out_row) in ids.iter().zip(out.chunks_mut(cols)) {
        match table_row(id, table_rows) {
            Some(row) => out_row.copy_from_slice(&table[row * cols..][..cols]),
            None => out_row.fill(T::nan()),
        }
    }
}

/// `table[ids[r]] += rows[r]` for r in increasing order; rows whose index is not a row of the
/// table are skipped (their gather already made the loss NaN).
pub fn scatter_add_rows<T: CpuReal>(rows: &[T], ids: &[T], cols: usize, table: &mut [T]) {
    let table_rows = table.len() / cols;
    for (&id, row) in ids.iter().zip(rows.chunks(cols)) {
        if let Some(target) = table_row(id, table_rows) {
            for (t, &v) in table[target * cols..][..cols].iter_mut().zip(row) {
                *t += v;
            }
        }
    }
}
