// AdamW (Adam when weight_decay is 0), one invocation per parameter, updating the parameter and
// both moments in place (the update is common/adam_update.wgsl's).

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
    let updated = adam_update(param[i], first_moment[i], second_moment[i], grad[i]);
    param[i] = updated.x;
    first_moment[i] = updated.y;
    second_moment[i] = updated.z;
}
