// AdamW (Adam when weight_decay is 0), one invocation per parameter, updating the parameter and
// both moments in place:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p -= lr (m / c1) / (sqrt(v / c2) + eps) + lr wd p     (decoupled weight decay)
// The bias corrections c1 = 1 - b1^t, c2 = 1 - b2^t come from the host, per step.

struct AdamParams {
    len: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    correction1: f32,
    correction2: f32,
}

@group(0) @binding(0) var<uniform> adam_params: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> first_moment: array<f32>;
@group(0) @binding(3) var<storage, read_write> second_moment: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;

@compute @workgroup_size(256)
fn adam(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i >= adam_params.len {
        return;
    }
    let g = grad[i];
    let m = adam_params.beta1 * first_moment[i] + (1.0 - adam_params.beta1) * g;
    let v = adam_params.beta2 * second_moment[i] + (1.0 - adam_params.beta2) * g * g;
    first_moment[i] = m;
    second_moment[i] = v;
    let p = param[i];
    let update = (m / adam_params.correction1) / (sqrt(v / adam_params.correction2) + adam_params.eps);
    param[i] = p - adam_params.lr * (update + adam_params.weight_decay * p);
}
