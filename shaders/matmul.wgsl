// C = alpha * op(A) op(B) + beta * C, row-major, any shape, in two tile configurations: matmul
// (64x64 tiles, common/matmul_tile.wgsl) and matmul_large (128x128 tiles,
// common/matmul_tile_large.wgsl), chosen per shape by lower.rs. This file loads A and B and
// writes C.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    // 1 when beta * C is added; 0 when the old C must not be read at all.
    accumulate: u32,
    alpha: f32,
    beta: f32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

fn load_a(row: u32, kk: u32) -> f32 {
    if row >= params.m || kk >= params.k {
        return 0.0;
    }
    if TRANS_A {
        return a[kk * params.m + row];
    }
    return a[row * params.k + kk];
}

fn load_b(kk: u32, col: u32) -> f32 {
    if kk >= params.k || col >= params.n {
        return 0.0;
    }
    if TRANS_B {
        return b[col * params.k + kk];
    }
    return b[kk * params.n + col];
}

// Writes one output: alpha times the product, plus beta times the old C where asked.
fn store_c(row: u32, col: u32, product: f32) {
    if row < params.m && col < params.n {
        let index = row * params.n + col;
        var value = params.alpha * product;
        if params.accumulate != 0u {
            value += params.beta * c[index];
        }
        c[index] = value;
    }
}

@compute @workgroup_size(16, 16)
fn matmul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row0 = workgroup_id.y * TILE_M;
    let col0 = workgroup_id.x * TILE_N;
    let acc = tile_product(row0, col0, params.k, local_id, local_index);
    for (var i = 0u; i < BLOCK; i++) {
        let row = row0 + local_id.y + i * SIDE;
        for (var j = 0u; j < BLOCK; j++) {
            store_c(row, col0 + local_id.x + j * SIDE, acc[i][j]);
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul_large(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row0 = workgroup_id.y * LARGE_TILE;
    let col0 = workgroup_id.x * LARGE_TILE;
    let acc = tile_product_large(row0, col0, params.k, local_id, local_index);
    for (var i = 0u; i < LARGE_BLOCK; i++) {
        let row = row0 + local_id.y + i * LARGE_SIDE;
        for (var j = 0u; j < LARGE_BLOCK; j++) {
            store_c(row, col0 + local_id.x + j * LARGE_SIDE, acc[2u * i + j / 4u][j % 4u]);
        }
    }
}
