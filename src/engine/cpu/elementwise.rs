//! CPU twins of shaders/elementwise.wgsl: activations and their first and second derivatives,
//! the tangent of the activation gradient, binary ops, unary ops (abs, sign), scale, axpy, the
//! moving average and fill.

use super::CpuReal;
use crate::engine::op::{Activation, BinaryOp, UnaryOp};

/// sqrt(2 / pi), the GELU tanh-approximation constant.
const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044_715;
/// 1 / sqrt(2).
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi), the standard normal density at 0.
const NORMAL_DENSITY_AT_0: f64 = 0.398_942_280_401_432_7;

/// The standard normal distribution function, `erfc(-x / sqrt 2) / 2` (no cancellation in
/// either tail).
fn normal_cdf<T: CpuReal>(x: T) -> T {
    T::of_f64(0.5) * (-x * T::of_f64(FRAC_1_SQRT_2)).erfc()
}

/// The standard normal density, `exp(-x^2 / 2) / sqrt(2 pi)`.
fn normal_density<T: CpuReal>(x: T) -> T {
    T::of_f64(NORMAL_DENSITY_AT_0) * (T::of_f64(-0.5) * x * x).exp()
}

pub fn activation_value<T: CpuReal>(f: Activation, x: T) -> T {
    match f {
        Activation::Relu => x.max(T::zero()),
        Activation::Gelu => {
            let half = T::of_f64(0.5);
            let inner = T::of_f64(GELU_SCALE) * (x + T::of_f64(GELU_CUBIC) * x * x * x);
            half * x * (T::one() + inner.tanh())
        }
        Activation::Tanh => x.tanh(),
        Activation::GeluErf => x * normal_cdf(x),
    }
}

pub fn activation_derivative<T: CpuReal>(f: Activation, x: T) -> T {
    match f {
        // The subgradient at 0 is taken as 0, as in the shader.
        Activation::Relu => {
            if x > T::zero() {
                T::one()
            } else {
                T::zero()
            }
        }
        Activation::Gelu => {
            let half = T::of_f64(0.5);
            let cubic = T::of_f64(GELU_CUBIC);
            let scale = T::of_f64(GELU_SCALE);
            let t = (scale * (x + cubic * x * x * x)).tanh();
            let inner_derivative = scale * (T::one() + T::of_f64(3.0) * cubic * x * x);
            half * (T::one() + t) + half * x * (T::one() - t * t) * inner_derivative
        }
        Activation::Tanh => {
            let t = x.tanh();
            T::one() - t * t
        }
        // Phi(x) + x phi(x).
        Activation::GeluErf => normal_cdf(x) + x * normal_density(x),
    }
}

/// `f''(x)`. relu's is 0 everywhere (0 at the kink too, consistent with its derivative there).
/// For the tanh-form GELU, with `u = s (x + c x^3)`, `u' = s (1 + 3 c x^2)`, `t = tanh(u)`,
/// `f' = (1 + t) / 2 + x (1 - t^2) u' / 2` differentiates to
/// `f'' = (1 - t^2) (u' - x t u'^2 + 3 s c x^2)` (the last term is `x u'' / 2`).
pub fn activation_second_derivative<T: CpuReal>(f: Activation, x: T) -> T {
    match f {
        Activation::Relu => T::zero(),
        Activation::Gelu => {
            let cubic = T::of_f64(GELU_CUBIC);
            let scale = T::of_f64(GELU_SCALE);
            let three = T::of_f64(3.0);
            let t = (scale * (x + cubic * x * x * x)).tanh();
            let inner_derivative = scale * (T::one() + three * cubic * x * x);
            (T::one() - t * t)
                * (inner_derivative - x * t * inner_derivative * inner_derivative
                    + three * scale * cubic * x * x)
        }
        Activation::Tanh => {
            let t = x.tanh();
            T::of_f64(-2.0) * t * (T::one() - t * t)
        }
        // 2 phi(x) + x phi'(x) = phi(x) (2 - x^2).
        Activation::GeluErf => normal_density(x) * (T::of_f64(2.0) - x * x),
    }
}

pub fn activate<T: CpuReal>(f: Activation, x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = activation_value(f, x);
    }
}

pub fn activate_grad<T: CpuReal>(f: Activation, x: &[T], grad_y: &[T], grad_x: &mut [T]) {
    for ((gx, &x), &gy) in grad_x.iter_mut().zip(x).zip(grad_y) {
        *gx = gy * activation_derivative(f, x);
    }
}

/// `out = d_grad_y * f'(x) + grad_y * f''(x) * dx`: the tangent of `activate_grad` along
/// `(dx, d_grad_y)`.
pub fn activate_grad_jvp<T: CpuReal>(
    f: Activation,
    x: &[T],
    grad_y: &[T],
    dx: &[T],
    d_grad_y: &[T],
    out: &mut [T],
) {
    for ((((o, &x), &gy), &dx), &dgy) in out.iter_mut().zip(x).zip(grad_y).zip(dx).zip(d_grad_y) {
        *o = dgy * activation_derivative(f, x) + gy * activation_second_derivative(f, x) * dx;
    }
}

pub fn binary<T: CpuReal>(op: BinaryOp, a: &[T], b: &[T], out: &mut [T]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
        };
    }
}

pub fn scale<T: CpuReal>(alpha: T, x: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = alpha * x;
    }
}

pub fn axpy<T: CpuReal>(alpha: T, x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

pub fn fill<T: CpuReal>(value: T, out: &mut [T]) {
    out.iter_mut().for_each(|o| *o = value);
}

/// `out = |x|`, `sign(x)` (1, -1, or 0 at 0 and for NaN), `sigmoid(x)` or `softplus(x)` (as
/// the shader writes them: no exponential of a positive number), `e^x` or `ln(1 + x)`.
pub fn unary<T: CpuReal>(op: UnaryOp, x: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = match op {
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sign => super::optimizer::sign(x),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Softplus => x.max(T::zero()) + (-x.abs()).exp().ln_1p(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log1p => x.ln_1p(),
            UnaryOp::Rsqrt => T::one() / x.sqrt(),
        };
    }
}

/// 1 / (1 + e^-x), from e = e^-|x| <= 1: 1 / (1 + e) for x >= 0, e / (1 + e) below.
pub fn sigmoid<T: CpuReal>(x: T) -> T {
    let e = (-x.abs()).exp();
    if x >= T::zero() {
        T::one() / (T::one() + e)
    } else {
        e / (T::one() + e)
    }
}

/// `avg = beta avg + one_minus_beta x`, `one_minus_beta = 1 - beta` from the host.
pub fn ema<T: CpuReal>(beta: T, one_minus_beta: T, x: &[T], avg: &mut [T]) {
    for (a, &x) in avg.iter_mut().zip(x) {
        *a = beta * *a + one_minus_beta * x;
    }
}
