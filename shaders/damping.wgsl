// Levenberg-Marquardt damping for Newton-CG (Martens 2010), one invocation, in place on the 1x1
// lambda (CPU twin: src/engine/cpu/damping.rs):
//   rho = actual / predicted
//   lambda *= increase   unless predicted < 0 and rho is finite and rho >= lower_ratio
//   lambda *= decrease   where rho > upper_ratio (and the above did not apply)
//   lambda = clamp(lambda, min_lambda, max_lambda)
// Comparisons with NaN are false, so a NaN predicted or rho increases the damping.

struct DampingParams {
    increase: f32,
    decrease: f32,
    lower_ratio: f32,
    upper_ratio: f32,
    min_lambda: f32,
    max_lambda: f32,
}

// The largest finite f32, in hex (see LOWEST_F32).
const MAX_F32: f32 = 0x1.fffffep+127f;

@group(0) @binding(0) var<uniform> params: DampingParams;
@group(0) @binding(1) var<storage, read_write> lambda: array<f32>;
@group(0) @binding(2) var<storage, read> actual: array<f32>;
@group(0) @binding(3) var<storage, read> predicted: array<f32>;

@compute @workgroup_size(1)
fn damping_update() {
    let p = predicted[0];
    let rho = actual[0] / p;
    let reliable = p < 0.0 && abs(rho) <= MAX_F32;
    var l = lambda[0];
    if !reliable || rho < params.lower_ratio {
        l = l * params.increase;
    } else if rho > params.upper_ratio {
        l = l * params.decrease;
    }
    lambda[0] = clamp(l, params.min_lambda, params.max_lambda);
}
