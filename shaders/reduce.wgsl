// Reductions over consecutive segments of a flat array: segment s covers
// [s * segment_len, min((s + 1) * segment_len, len)) and writes out[s]. Per-row reductions use
// one segment per row; a whole-array reduction runs this twice (segments, then their partials).
// The order of every sum is fixed (strided per invocation, then a tree), so results are
// bit-identical run to run on one device. No float atomics.

struct ReduceParams {
    len: u32,
    segment_len: u32,
    segments: u32,
    _pad: u32,
}

override OP: u32 = 0u;

const SUM: u32 = 0u;
const SUM_OF_SQUARES: u32 = 1u;
const MAX: u32 = 2u;

const INVOCATIONS: u32 = 256u;

@group(0) @binding(0) var<uniform> params: ReduceParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

var<workgroup> partial: array<f32, 256>;

fn identity() -> f32 {
    if OP == MAX {
        return LOWEST_F32;
    }
    return 0.0;
}

fn combine(acc: f32, value: f32) -> f32 {
    if OP == MAX {
        return max(acc, value);
    }
    return acc + value;
}

fn load(i: u32) -> f32 {
    let value = x[i];
    if OP == SUM_OF_SQUARES {
        return value * value;
    }
    return value;
}

@compute @workgroup_size(256)
fn reduce_segments(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let segment = flat_workgroup_id(workgroup_id, num_workgroups);
    if segment >= params.segments {
        return;
    }
    let start = segment * params.segment_len;
    let end = min(start + params.segment_len, params.len);

    var acc = identity();
    for (var i = start + local_index; i < end; i += INVOCATIONS) {
        acc = combine(acc, load(i));
    }
    partial[local_index] = acc;
    workgroupBarrier();

    for (var stride = INVOCATIONS / 2u; stride > 0u; stride /= 2u) {
        if local_index < stride {
            // The combine of a tree level adds partials, which are already squared.
            let other = partial[local_index + stride];
            if OP == MAX {
                partial[local_index] = max(partial[local_index], other);
            } else {
                partial[local_index] = partial[local_index] + other;
            }
        }
        workgroupBarrier();
    }
    if local_index == 0u {
        out[segment] = partial[0];
    }
}
