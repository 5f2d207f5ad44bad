// Rows of a table picked by index (an embedding lookup), and its gradient: the rows added back
// into the table. Indices are floats holding integers (exact below 2^24); one that is not a row
// of the table gives a NaN row in the gather and is skipped by the scatter.
//
// The scatter adds without atomics, in a fixed order: the invocation of the first row r that
// names table row t (for one column) adds every row naming t in increasing order, starting from
// the table's value, so the sum equals the CPU twin's sequential loop. It reads the indices
// O(rows) times per invocation: cheap beside the products of a model whose batch has a few
// thousand tokens.

struct GatherParams {
    rows: u32,
    cols: u32,
    table_rows: u32,
    // The bits of a quiet NaN, passed in because WGSL constant expressions may not be NaN.
    nan_bits: u32,
}

@group(0) @binding(0) var<uniform> params: GatherParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> source: array<f32>;
@group(0) @binding(3) var<storage, read> ids: array<f32>;

// The table row index `r` names, or table_rows where it names none.
fn table_row(r: u32) -> u32 {
    let index = ids[r];
    if index >= 0.0 && index < f32(params.table_rows) && fract(index) == 0.0 {
        return u32(index);
    }
    return params.table_rows;
}

// out (rows x cols) = source (the table) rows ids[r].
@compute @workgroup_size(256)
fn gather_rows(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i >= params.rows * params.cols {
        return;
    }
    let r = i / params.cols;
    let c = i % params.cols;
    let t = table_row(r);
    if t == params.table_rows {
        out[i] = bitcast<f32>(params.nan_bits);
    } else {
        out[i] = source[t * params.cols + c];
    }
}

// out (the table) rows ids[r] += source (rows x cols) row r.
@compute @workgroup_size(256)
fn scatter_add_rows(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let i = element_index(workgroup_id, num_workgroups, local_index);
    if i >= params.rows * params.cols {
        return;
    }
    let r = i / params.cols;
    let c = i % params.cols;
    let t = table_row(r);
    if t == params.table_rows {
        return;
    }
    for (var earlier = 0u; earlier < r; earlier++) {
        if table_row(earlier) == t {
            return;
        }
    }
    var acc = out[t * params.cols + c];
    for (var later = r; later < params.rows; later++) {
        if table_row(later) == t {
            acc += source[later * params.cols + c];
        }
    }
    out[t * params.cols + c] = acc;
}
