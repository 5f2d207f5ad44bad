// AdaHessian (Yao et al. 2021), one invocation per parameter, updating the parameter and both
// moments in place (CPU twin: adahessian in src/engine/cpu/optimizer.rs):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) D^2          (D: the Hessian-diagonal estimate)
//   denom = sqrt(v)^k / correction2_power + eps              (k: the Hessian power)
//   p -= step_size m / denom + decay p                       (decoupled weight decay)
// The host folds the bias corrections per step: step_size = lr / (1 - b1^t),
// correction2_power = sqrt(1 - b2^t)^k, decay = lr * weight_decay.

struct AdaHessianParams {
    len: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    decay: f32,
    correction2_power: f32,
    hessian_power: f32,
}

@group(0) @binding(0) var<uniform> params: AdaHessianParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> first_moment: array<f32>;
@group(0) @binding(3) var<storage, read_write> second_moment: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read> hess_diag: array<f32>;

// x^k for x >= 0: exactly x for k = 1 (the reference's default), exactly 1 for k = 0 (pow(0, 0)
// is undefined), pow otherwise (pow(0, k) = 0 for k > 0).
fn hessian_power(x: f32, k: f32) -> f32 {
    if k == 1.0 {
        return x;
    }
    if k == 0.0 {
        return 1.0;
    }
    return pow(x, k);
}

@compute @workgroup_size(256)
fn adahessian(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i >= params.len {
        return;
    }
    let g = grad[i];
    let d = hess_diag[i];
    let m = params.beta1 * first_moment[i] + (1.0 - params.beta1) * g;
    let v = params.beta2 * second_moment[i] + (1.0 - params.beta2) * d * d;
    first_moment[i] = m;
    second_moment[i] = v;
    let denom = hessian_power(sqrt(v), params.hessian_power) / params.correction2_power + params.eps;
    let p = param[i];
    param[i] = p - (params.step_size * (m / denom) + params.decay * p);
}
