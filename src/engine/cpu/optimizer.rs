//! CPU twins of shaders/momentum.wgsl and shaders/adam.wgsl.

use super::CpuReal;

pub fn momentum<T: CpuReal>(
    param: &mut [T],
    velocity: &mut [T],
    grad: &[T],
    lr: T,
    momentum: T,
    nesterov: bool,
) {
    for ((p, v), &g) in param.iter_mut().zip(velocity.iter_mut()).zip(grad) {
        *v = momentum * *v + g;
        let step = if nesterov { g + momentum * *v } else { *v };
        *p -= lr * step;
    }
}

/// AdamW with decoupled weight decay (`weight_decay = 0` is Adam); `corrections` are
/// `(1 - beta1^t, 1 - beta2^t)`.
#[allow(clippy::too_many_arguments)]
pub fn adam<T: CpuReal>(
    param: &mut [T],
    m: &mut [T],
    v: &mut [T],
    grad: &[T],
    lr: T,
    (beta1, beta2): (T, T),
    eps: T,
    weight_decay: T,
    (correction1, correction2): (T, T),
) {
    let one = T::one();
    for (((p, m), v), &g) in param
        .iter_mut()
        .zip(m.iter_mut())
        .zip(v.iter_mut())
        .zip(grad)
    {
        *m = beta1 * *m + (one - beta1) * g;
        *v = beta2 * *v + (one - beta2) * g * g;
        let update = (*m / correction1) / ((*v / correction2).sqrt() + eps);
        *p -= lr * (update + weight_decay * *p);
    }
}
