//! CPU twins of shaders/momentum.wgsl, shaders/adam.wgsl, shaders/adahessian.wgsl and
//! shaders/sophia.wgsl.

use super::CpuReal;
use crate::engine::op::{AdaHessianHyper, SophiaHyper};

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

/// `x^k` as the AdaHessian kernels take it (x >= 0): exactly x for k = 1 (the reference's
/// default), exactly 1 for k = 0 (where `pow(0, 0)` is undefined in WGSL), `pow` otherwise.
pub fn hessian_power<T: num_traits::Float>(x: T, k: T) -> T {
    if k == T::one() {
        x
    } else if k == T::zero() {
        T::one()
    } else {
        x.powf(k)
    }
}

/// AdaHessian at step `step` (see `AdaHessianHyper`), with the host scalars of
/// `AdaHessianHyper::scalars` and the shader's order of operations:
/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) D D`,
/// `denom = sqrt(v)^k / correction2_power + eps`, `p -= step_size m / denom + decay p`.
pub fn adahessian<T: CpuReal>(
    param: &mut [T],
    m: &mut [T],
    v: &mut [T],
    grad: &[T],
    hess_diag: &[T],
    hyper: &AdaHessianHyper,
    step: u32,
) {
    let scalars = hyper.scalars(step);
    let one = T::one();
    let (beta1, beta2) = (T::of_f64(hyper.beta1), T::of_f64(hyper.beta2));
    let eps = T::of_f64(hyper.eps);
    let power = T::of_f64(hyper.hessian_power);
    let step_size = T::of_f64(scalars.step_size);
    let decay = T::of_f64(scalars.decay);
    let correction2_power = T::of_f64(scalars.correction2_power);
    for ((((p, m), v), &g), &d) in param
        .iter_mut()
        .zip(m.iter_mut())
        .zip(v.iter_mut())
        .zip(grad)
        .zip(hess_diag)
    {
        *m = beta1 * *m + (one - beta1) * g;
        *v = beta2 * *v + (one - beta2) * d * d;
        let denom = hessian_power(v.sqrt(), power) / correction2_power + eps;
        *p -= step_size * (*m / denom) + decay * *p;
    }
}

/// `sign(x)` as the kernels take it: 1 above 0, -1 below, 0 at 0 and for NaN.
pub fn sign<T: CpuReal>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else if x < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

/// Sophia's clipped update (see `SophiaHyper`), in the shader's order of operations:
/// `p = p decay_factor`, `m = b1 m + (1 - b1) g`,
/// `ratio = min(|m| / (curvature_scale h + eps), 1)`, `p = p - lr sign(m) ratio`.
pub fn sophia<T: CpuReal>(
    param: &mut [T],
    m: &mut [T],
    grad: &[T],
    hess: &[T],
    hyper: &SophiaHyper,
) {
    let one = T::one();
    let lr = T::of_f64(hyper.lr);
    let beta1 = T::of_f64(hyper.beta1);
    let decay_factor = T::of_f64(hyper.decay_factor());
    let curvature_scale = T::of_f64(hyper.curvature_scale());
    let eps = T::of_f64(hyper.eps);
    for (((p, m), &g), &h) in param.iter_mut().zip(m.iter_mut()).zip(grad).zip(hess) {
        let decayed = *p * decay_factor;
        *m = beta1 * *m + (one - beta1) * g;
        let ratio = (m.abs() / (curvature_scale * h + eps)).min(one);
        *p = decayed - lr * sign(*m) * ratio;
    }
}
