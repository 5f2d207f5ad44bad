// Activation functions and their first two derivatives, shared by elementwise.wgsl and
// linear.wgsl (included by the kernel registry). `f` is always a pipeline constant at the call
// site, so drivers fold the switch away. Codes as in src/engine/gpu/kernels.rs.

const RELU: u32 = 0u;
const GELU: u32 = 1u;
const TANH: u32 = 2u;
const GELU_ERF: u32 = 3u;

const GELU_SCALE: f32 = 0.7978845608028654; // sqrt(2 / pi)
const GELU_CUBIC: f32 = 0.044715;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;
const NORMAL_DENSITY_AT_0: f32 = 0.3989422804014327; // 1 / sqrt(2 pi)

// erfc(z) with relative error under 1.2e-7 everywhere (the Chebyshev fit of Numerical Recipes'
// erfcc), so the standard normal distribution function keeps its precision in both tails.
fn erfc_approx(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(-a * a + poly);
    return select(2.0 - r, r, z >= 0.0);
}

fn normal_cdf(x: f32) -> f32 {
    return 0.5 * erfc_approx(-x * FRAC_1_SQRT_2);
}

fn normal_density(x: f32) -> f32 {
    return NORMAL_DENSITY_AT_0 * exp(-0.5 * x * x);
}

// Some drivers evaluate tanh as (e^2x - 1) / (e^2x + 1), which is NaN once e^2x overflows;
// at |x| = 15 tanh already rounds to +-1 in f32, so the clamp changes no result.
fn safe_tanh(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

fn activation_value(f: u32, x: f32) -> f32 {
    switch f {
        case RELU: {
            return max(x, 0.0);
        }
        case GELU: {
            let inner = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
            return 0.5 * x * (1.0 + safe_tanh(inner));
        }
        case GELU_ERF: {
            return x * normal_cdf(x);
        }
        default: {
            return safe_tanh(x);
        }
    }
}

fn activation_derivative(f: u32, x: f32) -> f32 {
    switch f {
        case RELU: {
            return select(0.0, 1.0, x > 0.0);
        }
        case GELU: {
            let t = safe_tanh(GELU_SCALE * (x + GELU_CUBIC * x * x * x));
            let inner_derivative = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x);
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * inner_derivative;
        }
        case GELU_ERF: {
            return normal_cdf(x) + x * normal_density(x);
        }
        default: {
            let t = safe_tanh(x);
            return 1.0 - t * t;
        }
    }
}

// f''(x). For the erf form of GELU, phi(x) (2 - x^2). For GELU, with u = s (x + c x^3), u' = s (1 + 3 c x^2) and t = tanh(u), the exact
// derivative of activation_derivative: (1 - t^2) (u' - x t u'^2 + 3 s c x^2).
fn activation_second_derivative(f: u32, x: f32) -> f32 {
    switch f {
        case RELU: {
            return 0.0;
        }
        case GELU: {
            let t = safe_tanh(GELU_SCALE * (x + GELU_CUBIC * x * x * x));
            let inner_derivative = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x);
            return (1.0 - t * t) * (inner_derivative - x * t * inner_derivative * inner_derivative
                + 3.0 * GELU_SCALE * GELU_CUBIC * x * x);
        }
        case GELU_ERF: {
            return normal_density(x) * (2.0 - x * x);
        }
        default: {
            let t = safe_tanh(x);
            return -2.0 * t * (1.0 - t * t);
        }
    }
}
