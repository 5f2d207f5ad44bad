// Sophia's clipped update (Liu et al. 2023, SophiaG), one invocation per parameter, updating the
// parameter and the gradient's moving average in place (CPU twin: sophia in
// src/engine/cpu/optimizer.rs):
//   p = p decay_factor                                        (decay_factor = 1 - lr wd)
//   m = b1 m + (1 - b1) g
//   ratio = min(|m| / (curvature_scale h + eps), 1)           (curvature_scale = rho bs)
//   p = p - lr sign(m) ratio                                  (sign(0) = 0)
// h is the caller's moving average of g_hat^2 (g_hat: the gradient on labels sampled from the
// model's logits, averaged over bs samples), so rho bs h is rho times the Gauss-Newton-Bartlett
// Hessian-diagonal estimate. decay_factor and curvature_scale come from the host in f64.

struct SophiaParams {
    len: u32,
    lr: f32,
    beta1: f32,
    decay_factor: f32,
    curvature_scale: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> params: SophiaParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> first_moment: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read> hess: array<f32>;

@compute @workgroup_size(256)
fn sophia(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i >= params.len {
        return;
    }
    let decayed = param[i] * params.decay_factor;
    let m = params.beta1 * first_moment[i] + (1.0 - params.beta1) * grad[i];
    first_moment[i] = m;
    let ratio = min(abs(m) / (params.curvature_scale * hess[i] + params.eps), 1.0);
    // sign(m), 0 at 0 (explicit: the builtin leaves NaN to the implementation).
    let direction = select(select(0.0, -1.0, m < 0.0), 1.0, m > 0.0);
    param[i] = decayed - params.lr * direction * ratio;
}
