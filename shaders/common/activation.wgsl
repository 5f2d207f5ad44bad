// Activation functions and their first two derivatives, shared by elementwise.wgsl and
// linear.wgsl (included by the kernel registry). `f` is always a pipeline constant at the call
// site, so drivers fold the switch away. Codes as in src/engine/gpu/kernels.rs.

const RELU: u32 = 0u;
const GELU: u32 = 1u;
const TANH: u32 = 2u;

const GELU_SCALE: f32 = 0.7978845608028654; // sqrt(2 / pi)
const GELU_CUBIC: f32 = 0.044715;

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
        default: {
            let t = safe_tanh(x);
            return 1.0 - t * t;
        }
    }
}

// f''(x). For GELU, with u = s (x + c x^3), u' = s (1 + 3 c x^2) and t = tanh(u), the exact
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
        default: {
            let t = safe_tanh(x);
            return -2.0 * t * (1.0 - t * t);
        }
    }
}
