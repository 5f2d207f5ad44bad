// out = x^T through a 16x16 tile in workgroup memory, so both the read of x and the write of
// out touch consecutive addresses. The tile has 17 columns so the transposed read of it does
// not hit one memory bank 16 times.

struct TransposeParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: TransposeParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

var<workgroup> tile: array<array<f32, 17>, 16>;

@compute @workgroup_size(16, 16)
fn transpose(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
) {
    let row = workgroup_id.y * 16u + local_id.y;
    let col = workgroup_id.x * 16u + local_id.x;
    if row < params.rows && col < params.cols {
        tile[local_id.y][local_id.x] = x[row * params.cols + col];
    }
    workgroupBarrier();

    // out is cols x rows: this invocation writes out[out_row][out_col] = x[out_col][out_row].
    let out_row = workgroup_id.x * 16u + local_id.y;
    let out_col = workgroup_id.y * 16u + local_id.x;
    if out_row < params.cols && out_col < params.rows {
        out[out_row * params.rows + out_col] = tile[local_id.x][local_id.y];
    }
}
