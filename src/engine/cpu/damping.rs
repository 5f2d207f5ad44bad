//! CPU twin of shaders/damping.wgsl: Levenberg-Marquardt damping for Newton-CG.

use super::CpuReal;
use crate::engine::op::DampingHyper;

/// The new lambda from the actual and predicted loss changes (see `DampingHyper`), in the
/// shader's order: `rho = actual / predicted`; multiply by `increase` unless `predicted < 0`
/// and `rho` is finite and at least `lower_ratio`, else by `decrease` where `rho >
/// upper_ratio`; then clamp to `[min_lambda, max_lambda]`.
pub fn damping_update<T: CpuReal>(lambda: T, actual: T, predicted: T, hyper: &DampingHyper) -> T {
    let rho = actual / predicted;
    let reliable = predicted < T::zero() && rho.abs() <= T::max_value();
    let scaled = if !reliable || rho < T::of_f64(hyper.lower_ratio) {
        lambda * T::of_f64(hyper.increase)
    } else if rho > T::of_f64(hyper.upper_ratio) {
        lambda * T::of_f64(hyper.decrease)
    } else {
        lambda
    };
    // WGSL's clamp: min(max(x, low), high).
    scaled
        .max(T::of_f64(hyper.min_lambda))
        .min(T::of_f64(hyper.max_lambda))
}
