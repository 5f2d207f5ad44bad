// Counter-based random numbers in u32 arithmetic (WGSL has no u64), the same bits on every engine
// (CPU twin: src/engine/cpu/random.rs):
//   key          = four PCG-hash rounds over seed_lo, seed_hi, stream_lo, stream_hi
//   bits(i)      = pcg(pcg(i) ^ key)
//   rademacher:  out[i] = +1 where bit 31 of bits(i) is clear, -1 where it is set
//   uniform(r)   = (bits(r) >> 8) * 2^-24, in [0, 1) and exact in f32
// sample_categorical draws one class per row of logits from its softmax by the inverse CDF, one
// workgroup of 64 invocations per row: the row maximum (a tree), e_j = exp(l_j - max), the sums
// of 64 contiguous chunks of ceil(cols / 64) classes, then invocation 0 sums the chunks in order
// (prefixes P_t, total P_64) and walks to the first class j whose running sum P_t + (the chunk's
// sum up to j) exceeds uniform(row) * total. The label is written as a float; a row whose total
// is not in [1/2, 2 cols] (a NaN or +inf logit, or no finite one) gets NaN.

struct RandomParams {
    // rademacher: elements; sample_categorical: rows.
    len: u32,
    // sample_categorical: classes per row.
    cols: u32,
    seed_lo: u32,
    seed_hi: u32,
    stream_lo: u32,
    stream_hi: u32,
    // The bits of a quiet NaN, passed in because WGSL constant expressions may not be NaN.
    nan_bits: u32,
}

const INVOCATIONS: u32 = 64u;

@group(0) @binding(0) var<uniform> params: RandomParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
// Read by sample_categorical only.
@group(0) @binding(2) var<storage, read> logits: array<f32>;

var<workgroup> scratch: array<f32, 64>;

// The PCG hash: an LCG step, then PCG's random xorshift and multiply output (a bijection of u32).
fn pcg_hash(value: u32) -> u32 {
    let state = value * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn stream_key() -> u32 {
    var h = pcg_hash(params.seed_lo);
    h = pcg_hash(h ^ params.seed_hi);
    h = pcg_hash(h ^ params.stream_lo);
    return pcg_hash(h ^ params.stream_hi);
}

fn bits_at(key: u32, index: u32) -> u32 {
    return pcg_hash(pcg_hash(index) ^ key);
}

@compute @workgroup_size(256)
fn rademacher(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i < params.len {
        out[i] = select(1.0, -1.0, (bits_at(stream_key(), i) >> 31u) != 0u);
    }
}

fn class_weight(base: u32, j: u32, row_max: f32) -> f32 {
    return exp(logits[base + j] - row_max);
}

@compute @workgroup_size(64)
fn sample_categorical(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row = flat_workgroup_id(workgroup_id, num_workgroups);
    if row >= params.len {
        return;
    }
    let cols = params.cols;
    let base = row * cols;

    // The row maximum: strided, then a tree (max is exact in any order).
    var row_max = LOWEST_F32;
    for (var j = local_index; j < cols; j += INVOCATIONS) {
        row_max = max(row_max, logits[base + j]);
    }
    scratch[local_index] = row_max;
    workgroupBarrier();
    for (var stride = INVOCATIONS / 2u; stride > 0u; stride /= 2u) {
        if local_index < stride {
            scratch[local_index] = max(scratch[local_index], scratch[local_index + stride]);
        }
        workgroupBarrier();
    }
    row_max = scratch[0];
    workgroupBarrier();

    // Each invocation sums its contiguous chunk in order.
    let chunk = (cols + INVOCATIONS - 1u) / INVOCATIONS;
    let start = min(local_index * chunk, cols);
    let end = min(start + chunk, cols);
    var chunk_sum = 0.0;
    for (var j = start; j < end; j++) {
        chunk_sum += class_weight(base, j, row_max);
    }
    scratch[local_index] = chunk_sum;
    workgroupBarrier();

    if local_index != 0u {
        return;
    }
    var total = 0.0;
    for (var t = 0u; t < INVOCATIONS; t++) {
        total += scratch[t];
    }
    // A finite row has e_j = 1 at its maximum and every e_j <= 1.
    if !(total >= 0.5 && total <= 2.0 * f32(cols)) {
        out[row] = bitcast<f32>(params.nan_bits);
        return;
    }
    let u = f32(bits_at(stream_key(), row) >> 8u) * 0x1p-24f;
    let target_sum = u * total;
    var found = false;
    var label = 0u;
    var prefix = 0.0;
    for (var t = 0u; t < INVOCATIONS; t++) {
        let next = prefix + scratch[t];
        if target_sum < next {
            let first = min(t * chunk, cols);
            let last = min(first + chunk, cols);
            var partial = 0.0;
            for (var j = first; j < last; j++) {
                partial += class_weight(base, j, row_max);
                if target_sum < prefix + partial {
                    found = true;
                    label = j;
                    break;
                }
            }
            break;
        }
        prefix = next;
    }
    // Unreachable with correctly rounded arithmetic (u <= 1 - 2^-24 keeps u * total below
    // total); should it happen, the last class of positive probability.
    if !found {
        for (var j = cols; j > 0u; j--) {
            if class_weight(base, j - 1u, row_max) > 0.0 {
                label = j - 1u;
                break;
            }
        }
    }
    out[row] = f32(label);
}
