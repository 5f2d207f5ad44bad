//! CPU twins of shaders/device_scalar.wgsl: axpy and scale by a scalar computed from 1x1 tensors
//! (see `DeviceScalar`).

use super::CpuReal;

/// `coef * r`, or `coef * sqrt(r)` when `sqrt`, with `r = num / den` and a missing `num` or `den`
/// counting as 1: the ratio, then the square root, then the product, as the shader computes it.
pub fn device_scalar_value<T: CpuReal>(coef: T, num: Option<T>, den: Option<T>, sqrt: bool) -> T {
    let ratio = num.unwrap_or(T::one()) / den.unwrap_or(T::one());
    coef * if sqrt { ratio.sqrt() } else { ratio }
}

/// `y = y + value * x`.
pub fn axpy_device<T: CpuReal>(value: T, x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += value * x;
    }
}

/// `out = value * x`.
pub fn scale_device<T: CpuReal>(value: T, x: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = value * x;
    }
}
