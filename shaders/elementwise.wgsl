// Elementwise kernels: activations and their derivatives, the tangent of the activation
// gradient, binary ops, unary ops (abs, sign, sigmoid, softplus), scale, axpy, the moving
// average, fill.
// One invocation per element; OP (a pipeline constant) picks the function, so each variant is
// its own pipeline with no branch at run time.

struct ElementwiseParams {
    len: u32,
    _pad: u32,
    alpha: f32,
    // 1 - alpha, computed in f64 on the host (read by ema only).
    one_minus_alpha: f32,
}

override OP: u32 = 0u;

const ADD: u32 = 0u;
const SUB: u32 = 1u;
const MUL: u32 = 2u;

const ABS: u32 = 0u;
const SIGN: u32 = 1u;
const SIGMOID: u32 = 2u;
const SOFTPLUS: u32 = 3u;
const EXP: u32 = 4u;
const LOG1P: u32 = 5u;
const RSQRT: u32 = 6u;

@group(0) @binding(0) var<uniform> params: ElementwiseParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> in0: array<f32>;
@group(0) @binding(3) var<storage, read> in1: array<f32>;
// Only activate_grad_jvp reads four inputs; the other entry points leave these unused.
@group(0) @binding(4) var<storage, read> in2: array<f32>;
@group(0) @binding(5) var<storage, read> in3: array<f32>;

@compute @workgroup_size(256)
fn activate(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = activation_value(OP, in0[i]);
    }
}

// out = in1 * f'(in0): in0 is the activation's input, in1 the gradient of its output.
@compute @workgroup_size(256)
fn activate_grad(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = in1[i] * activation_derivative(OP, in0[i]);
    }
}

// The tangent of activate_grad: out = in3 * f'(in0) + in1 * f''(in0) * in2, where in0 is the
// activation's input x, in1 the gradient of its output, in2 the tangent of x and in3 the
// tangent of the output gradient.
@compute @workgroup_size(256)
fn activate_grad_jvp(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        let x = in0[i];
        out[i] = in3[i] * activation_derivative(OP, x)
            + in1[i] * activation_second_derivative(OP, x) * in2[i];
    }
}

@compute @workgroup_size(256)
fn binary(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        let x = in0[i];
        let y = in1[i];
        switch OP {
            case ADD: {
                out[i] = x + y;
            }
            case SUB: {
                out[i] = x - y;
            }
            default: {
                out[i] = x * y;
            }
        }
    }
}

// out = |in0|; sign(in0): 1 above 0, -1 below, 0 at 0 (and for NaN, where comparisons are
// false; the builtin sign leaves NaN to the implementation); sigmoid(in0) and softplus(in0)
// from e^-|x| <= 1, so no exponential overflows; e^in0; ln(1 + in0) as log(u) x / (u - 1) with
// u = 1 + x rounded, which cancels the rounding of u (log(1 + x) alone loses x's low bits near 0);
// 1 / sqrt(in0) for in0 > 0.
@compute @workgroup_size(256)
fn unary(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        let x = in0[i];
        switch OP {
            case ABS: {
                out[i] = abs(x);
            }
            case SIGMOID: {
                let e = exp(-abs(x));
                out[i] = select(e, 1.0, x >= 0.0) / (1.0 + e);
            }
            case SOFTPLUS: {
                out[i] = max(x, 0.0) + log(1.0 + exp(-abs(x)));
            }
            case EXP: {
                out[i] = exp(x);
            }
            case LOG1P: {
                let u = 1.0 + x;
                out[i] = select(log(u) * x / (u - 1.0), x, u == 1.0);
            }
            case RSQRT: {
                // 1 / sqrt(x), for x > 0 (inverseSqrt is looser: 2 ulp).
                out[i] = 1.0 / sqrt(x);
            }
            default: {
                out[i] = select(select(0.0, -1.0, x < 0.0), 1.0, x > 0.0);
            }
        }
    }
}

// out = alpha * in0
@compute @workgroup_size(256)
fn scale(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = params.alpha * in0[i];
    }
}

// out = out + alpha * in0
@compute @workgroup_size(256)
fn axpy(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = out[i] + params.alpha * in0[i];
    }
}

// The exponential moving average, in place: out = alpha * out + (1 - alpha) * in0, alpha the
// decay (beta), 1 - alpha from the host.
@compute @workgroup_size(256)
fn ema(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = params.alpha * out[i] + params.one_minus_alpha * in0[i];
    }
}

// out = alpha
@compute @workgroup_size(256)
fn fill(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = params.alpha;
    }
}
