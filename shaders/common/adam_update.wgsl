// AdamW's update of one parameter, shared by adam.wgsl and the Adam group kernels (included by the
// kernel registry); the including file binds `adam_params`:
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

// The parameter, first and second moment after one step: (p, m, v).
fn adam_update(p: f32, first: f32, second: f32, g: f32) -> vec3<f32> {
    let m = adam_params.beta1 * first + (1.0 - adam_params.beta1) * g;
    let v = adam_params.beta2 * second + (1.0 - adam_params.beta2) * g * g;
    let update = (m / adam_params.correction1) / (sqrt(v / adam_params.correction2) + adam_params.eps);
    return vec3<f32>(p - adam_params.lr * (update + adam_params.weight_decay * p), m, v);
}
