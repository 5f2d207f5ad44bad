// Axpy and scale by a scalar computed on the device, so iterative methods (a power iteration's
// normalisation, a step length from a ratio of reductions) run many iterations in one submission
// without reading back:
//   value = coef * r, or coef * sqrt(r) when take_sqrt, with r = num[0] / den[0]
// where a missing num or den counts as 1. Every invocation computes the value in f32 from the two
// 1x1 buffers: the ratio, then the square root, then the product by coef. num and den are always
// bound; where one is absent the engine binds x in its place and has_num / has_den is 0.

struct DeviceScalarParams {
    len: u32,
    coef: f32,
    has_num: u32,
    has_den: u32,
    take_sqrt: u32,
}

@group(0) @binding(0) var<uniform> params: DeviceScalarParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> num: array<f32>;
@group(0) @binding(4) var<storage, read> den: array<f32>;

fn scalar_value() -> f32 {
    var n = 1.0;
    if params.has_num != 0u {
        n = num[0];
    }
    var d = 1.0;
    if params.has_den != 0u {
        d = den[0];
    }
    var r = n / d;
    if params.take_sqrt != 0u {
        r = sqrt(r);
    }
    return params.coef * r;
}

// out = out + value * x
@compute @workgroup_size(256)
fn axpy_device(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = out[i] + scalar_value() * x[i];
    }
}

// out = value * x
@compute @workgroup_size(256)
fn scale_device(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = scalar_value() * x[i];
    }
}
