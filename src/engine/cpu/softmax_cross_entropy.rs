//! CPU twins of shaders/softmax_cross_entropy.wgsl: the loss and gradient, and their tangent.

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

/// The tangent of `softmax_cross_entropy` along `d_logits`: with `p = softmax(logits[r])` and
/// `s = sum_j p_j d_logits[r][j]`, `d_loss[r] = s - d_logits[r][label]` and
/// `d_grad[r][j] = grad_scale * p_j * (d_logits[r][j] - s)`. A label outside `0..cols` gives a
/// NaN `d_loss` and a NaN `d_grad` row.
pub fn softmax_cross_entropy_jvp<T: CpuReal>(
    logits: &[T],
    labels: &[T],
    d_logits: &[T],
    cols: usize,
    grad_scale: T,
    d_loss: &mut [T],
    d_grad: &mut [T],
) {
    for ((((row, &label), d_row), d_loss), d_grad) in logits
        .chunks(cols)
        .zip(labels)
        .zip(d_logits.chunks(cols))
        .zip(d_loss.iter_mut())
        .zip(d_grad.chunks_mut(cols))
    {
        let label_index = label.as_f64();
        let valid = label_index >= 0.0 && label_index < cols as f64;
        let target = label_index as usize;
        if !valid {
            *d_loss = T::nan();
            d_grad.iter_mut().for_each(|g| *g = T::nan());
            continue;
        }
        let max = row.iter().fold(T::neg_infinity(), |acc, &v| acc.max(v));
        let sum = row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp());
        // s = (sum_j e_j d_j) / sum_j e_j, in the shader's order.
        let weighted = row
            .iter()
            .zip(d_row)
            .fold(T::zero(), |acc, (&v, &d)| acc + (v - max).exp() * d);
        let s = weighted / sum;
        *d_loss = s - d_row[target];
        for ((g, &v), &d) in d_grad.iter_mut().zip(row).zip(d_row) {
            let p = (v - max).exp() / sum;
            *g = grad_scale * p * (d - s);
        }
    }
}
