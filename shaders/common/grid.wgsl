// Prepended to every kernel by the kernel registry (src/engine/gpu/kernels.rs).
//
// Conventions shared by all kernels:
// - @binding(0) is the per-dispatch uniform (one 256-byte slot per dispatch, dynamic offset);
//   then the outputs (read_write), then the inputs (read).
// - Portable limits: f32 only, no subgroups, at most 256 invocations and 16 KiB of workgroup
//   storage per workgroup (WebGPU's defaults).
// - Long 1-D problems run on a 2-D grid of workgroups, since one grid dimension holds at most
//   65535 workgroups; flat_workgroup_id undoes that.

fn flat_workgroup_id(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>) -> u32 {
    return workgroup_id.y * num_workgroups.x + workgroup_id.x;
}

// The element an invocation of a 256-wide, one-element-per-invocation kernel owns.
fn element_index(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, local_index: u32) -> u32 {
    return flat_workgroup_id(workgroup_id, num_workgroups) * 256u + local_index;
}

// The lowest finite f32: the identity of max. (WGSL constant expressions may not be infinite.)
// Written in hex: browsers (Tint) reject a decimal literal that is not exactly an f32.
const LOWEST_F32: f32 = -0x1.fffffep+127f;
