//! CPU twin of shaders/softmax_cross_entropy.wgsl.

use super::CpuReal;

pub fn softmax_cross_entropy<T: CpuReal>(
    logits: &[T],
    labels: &[T],
    cols: usize,
    grad_scale: T,
    loss: &mut [T],
    grad: &mut [T],
) {
    for (((row, &label), loss), grad) in logits
        .chunks(cols)
        .zip(labels)
        .zip(loss.iter_mut())
        .zip(grad.chunks_mut(cols))
    {
        let label_index = label.as_f64();
        let valid = label_index >= 0.0 && label_index < cols as f64;
        let target = label_index as usize;
        if !valid {
            *loss = T::nan();
            grad.iter_mut().for_each(|g| *g = T::nan());
            continue;
        }
        let max = row.iter().fold(T::neg_infinity(), |acc, &v| acc.max(v));
        let sum = row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp());
        *loss = sum.ln() + max - row[target];
        for (j, (g, &v)) in grad.iter_mut().zip(row).enumerate() {
            let p = (v - max).exp() / sum;
            let y = if j == target { T::one() } else { T::zero() };
            *g = grad_scale * (p - y);
        }
    }
}
