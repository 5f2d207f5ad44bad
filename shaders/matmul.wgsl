// C = alpha * op(A) op(B) + beta * C, row-major, any shape, in three configurations chosen per
// shape by src/engine/op/matmul.rs: matmul (64x64 tiles, common/matmul_tile.wgsl), matmul_large
// (128x128 tiles, common/matmul_tile_large.wgsl), and for small outputs over a long K the 64x64
// tiles split along K: matmul_split_k writes each split's partial product, matmul_split_k_sum
// adds the splits in increasing order. This file loads A and B and writes C.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    // 1 when beta * C is added; 0 when the old C must not be read at all.
    accumulate: u32,
    alpha: f32,
    beta: f32,
    // The k of each split (split-K only; a multiple of the tile's K slice).
    split_len: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

// The k range this invocation multiplies over: all of it, or its split's (the tile product
// counts k from 0; the loads add k_begin).
var<private> k_begin: u32 = 0u;
var<private> k_end: u32 = 0u;

fn load_a(row: u32, tile_k: u32) -> f32 {
    let kk = k_begin + tile_k;
    if row >= params.m || kk >= k_end {
        return 0.0;
    }
    if TRANS_A {
        return a[kk * params.m + row];
    }
    return a[row * params.k + kk];
}

fn load_b(tile_k: u32, col: u32) -> f32 {
    let kk = k_begin + tile_k;
    if kk >= k_end || col >= params.n {
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
    k_end = params.k;
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
    k_end = params.k;
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

// Split-K, first pass: workgroup (x, y, z) multiplies tile (y, x) over split z's k range and
// writes the raw partial product (no alpha, no beta) to split z's m x n block of c, which the
// engine binds to its scratch buffer for this pass.
@compute @workgroup_size(16, 16)
fn matmul_split_k(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    // From uniform values only, so the tile loop's barriers stay in uniform control flow.
    let begin = workgroup_id.z * params.split_len;
    let end = min(begin + params.split_len, params.k);
    k_begin = begin;
    k_end = end;
    let row0 = workgroup_id.y * TILE_M;
    let col0 = workgroup_id.x * TILE_N;
    let acc = tile_product(row0, col0, end - begin, local_id, local_index);
    let block = workgroup_id.z * params.m * params.n;
    for (var i = 0u; i < BLOCK; i++) {
        let row = row0 + local_id.y + i * SIDE;
        for (var j = 0u; j < BLOCK; j++) {
            let col = col0 + local_id.x + j * SIDE;
            if row < params.m && col < params.n {
                c[block + row * params.n + col] = acc[i][j];
            }
        }
    }
}

// Split-K, second pass: each output is the sum of its splits' partials in increasing split
// order, then alpha and beta as the other entry points apply them. The partials are read
// through a, which the engine binds to its scratch buffer for this pass.
@compute @workgroup_size(256)
fn matmul_split_k_sum(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let index = element_index(workgroup_id, num_workgroups, local_index);
    let outputs = params.m * params.n;
    if index >= outputs {
        return;
    }
    let splits = (params.k + params.split_len - 1u) / params.split_len;
    var sum = a[index];
    for (var split = 1u; split < splits; split++) {
        sum += a[split * outputs + index];
    }
    store_c(index / params.n, index % params.n, sum);
}
