// A linear layer's matrix products with the element-wise work around them done in the same
// pass (the fusions of src/engine/fusion/linear.rs; each equals the ops it replaces):
//   linear_forward:          C = alpha op(A) op(B) + aux bias^T          (aux: a column, m x 1)
//   linear_forward_activate: the same, and C2 = f(C)
//   linear_weight_grad:      [C | C2^T] = alpha op(A) [B | aux]          (aux: a column, k x 1)
//   linear_input_grad:       C = alpha op(A) op(B), and C2 = C * f'(aux) (aux: m x n)
// The tiling is common/matmul_tile.wgsl's. In the forward pass aux is the ones column and bias
// the layer's bias row, so the bias is the rank-one update the unfused recording adds; in the
// weight gradient aux is the ones column, so C2 is the bias gradient, each of its sums over k
// in the same order as the weight gradient's.

struct LinearParams {
    m: u32,
    // The result's columns: b_cols, plus one where the weight gradient appends aux to B.
    n: u32,
    k: u32,
    // B's columns as stored (its row stride when not transposed).
    b_cols: u32,
    alpha: f32,
    _pad: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// The activation's code (common/activation.wgsl): read by the entry points that apply f or f'.
override ACTIVATION: u32 = 0u;

@group(0) @binding(0) var<uniform> params: LinearParams;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
// Unused by linear_forward, whose layout leaves binding 2 out.
@group(0) @binding(2) var<storage, read_write> c2: array<f32>;
@group(0) @binding(3) var<storage, read> a: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read> aux: array<f32>;
// Read by the forward entry points only.
@group(0) @binding(6) var<storage, read> bias: array<f32>;

fn load_a(row: u32, kk: u32) -> f32 {
    if row >= params.m || kk >= params.k {
        return 0.0;
    }
    if TRANS_A {
        return a[kk * params.m + row];
    }
    return a[row * params.k + kk];
}

// op(B), with aux as one more column after B's own (the weight gradient's ones column).
fn load_b(kk: u32, col: u32) -> f32 {
    if kk >= params.k || col >= params.n {
        return 0.0;
    }
    if col >= params.b_cols {
        return aux[kk];
    }
    if TRANS_B {
        return b[col * params.k + kk];
    }
    return b[kk * params.b_cols + col];
}

// The position of element [i][j] of this invocation's block, and whether it is in the result.
fn block_position(row0: u32, col0: u32, local_id: vec3<u32>, i: u32, j: u32) -> vec3<u32> {
    let row = row0 + local_id.y + i * SIDE;
    let col = col0 + local_id.x + j * SIDE;
    return vec3<u32>(row, col, u32(row < params.m && col < params.n));
}

@compute @workgroup_size(16, 16)
fn linear_forward(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row0 = workgroup_id.y * TILE_M;
    let col0 = workgroup_id.x * TILE_N;
    let acc = tile_product(row0, col0, params.k, local_id, local_index);
    for (var i = 0u; i < BLOCK; i++) {
        for (var j = 0u; j < BLOCK; j++) {
            let at = block_position(row0, col0, local_id, i, j);
            if at.z != 0u {
                c[at.x * params.n + at.y] = aux[at.x] * bias[at.y] + params.alpha * acc[i][j];
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn linear_forward_activate(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row0 = workgroup_id.y * TILE_M;
    let col0 = workgroup_id.x * TILE_N;
    let acc = tile_product(row0, col0, params.k, local_id, local_index);
    for (var i = 0u; i < BLOCK; i++) {
        for (var j = 0u; j < BLOCK; j++) {
            let at = block_position(row0, col0, local_id, i, j);
            if at.z != 0u {
                let index = at.x * params.n + at.y;
                let value = aux[at.x] * bias[at.y] + params.alpha * acc[i][j];
                c[index] = value;
                c2[index] = activation_value(ACTIVATION, value);
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn linear_weight_grad(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row0 = workgroup_id.y * TILE_M;
    let col0 = workgroup_id.x * TILE_N;
    let acc = tile_product(row0, col0, params.k, local_id, local_index);
    for (var i = 0u; i < BLOCK; i++) {
        for (var j = 0u; j < BLOCK; j++) {
            let at = block_position(row0, col0, local_id, i, j);
            if at.z != 0u {
                let value = params.alpha * acc[i][j];
                if at.y < params.b_cols {
                    c[at.x * params.b_cols + at.y] = value;
                } else {
                    c2[at.x] = value;
                }
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn linear_input_grad(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row0 = workgroup_id.y * TILE_M;
    let col0 = workgroup_id.x * TILE_N;
    let acc = tile_product(row0, col0, params.k, local_id, local_index);
    for (var i = 0u; i < BLOCK; i++) {
        for (var j = 0u; j < BLOCK; j++) {
            let at = block_position(row0, col0, local_id, i, j);
            if at.z != 0u {
                let index = at.x * params.n + at.y;
                let value = params.alpha * acc[i][j];
                c[index] = value;
                c2[index] = value * activation_derivative(ACTIVATION, aux[index]);
            }
        }
    }
}
