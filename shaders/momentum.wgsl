// SGD with momentum, one invocation per parameter, updating the parameter and velocity in place:
//   v = mu v + g;  p -= lr (g + mu v) with Nesterov, else p -= lr v

struct MomentumParams {
    len: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
}

@group(0) @binding(0) var<uniform> momentum_params: MomentumParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> velocity: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;

@compute @workgroup_size(256)
fn momentum(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i >= momentum_params.len {
        return;
    }
    let g = grad[i];
    let v = momentum_params.momentum * velocity[i] + g;
    velocity[i] = v;
    var step = v;
    if momentum_params.nesterov != 0u {
        step = g + momentum_params.momentum * v;
    }
    param[i] = param[i] - momentum_params.lr * step;
}

