// A softmax per row over the entries its mask row keeps: attention's probabilities over the
// keys of a sequence that are tokens, not padding. Row r of x (rows x cols) reads mask row
// r / rows_per_mask_row (the scores of all heads and queries of one sequence share its mask);
// a mask entry other than 0 keeps its column. Masked entries are exactly 0, as is every entry
// of a row that keeps nothing. One invocation per row: rows are short (a sequence's keys) and
// many (sequences x heads x queries); the maximum and the sum run in increasing column order.

struct MaskedSoftmaxParams {
    rows: u32,
    cols: u32,
    rows_per_mask_row: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: MaskedSoftmaxParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;

@compute @workgroup_size(64)
fn masked_softmax(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let r = flat_workgroup_id(workgroup_id, num_workgroups) * 64u + local_index;
    if r >= params.rows {
        return;
    }
    let base = r * params.cols;
    let mask_base = (r / params.rows_per_mask_row) * params.cols;
    var row_max = LOWEST_F32;
    for (var j = 0u; j < params.cols; j++) {
        if mask[mask_base + j] != 0.0 {
            row_max = max(row_max, x[base + j]);
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < params.cols; j++) {
        var e = 0.0;
        if mask[mask_base + j] != 0.0 {
            e = exp(x[base + j] - row_max);
        }
        out[base + j] = e;
        sum += e;
    }
    if sum != 0.0 {
        for (var j = 0u; j < params.cols; j++) {
            out[base + j] = out[base + j] / sum;
        }
    }
}
