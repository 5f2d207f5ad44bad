// A batch of products over strided views of three buffers: for every batch index (o, i),
// c[o, i] = alpha op(a[o, i]) op(b[o, i]) + beta c[o, i], where matrix (o, i) of an operand starts
// at o * outer + i * inner and its rows are `leading` apart (src/engine/op/batched_matmul.rs).
// Attention's heads are such views of the query, key and value activations, so no copy
// rearranges them. The workgroup's z is the batch index o * inner_batches + i. One output per
// invocation over 16x16 tiles staged in workgroup memory; each sum runs in increasing k.

struct BatchedMatmulParams {
    m: u32,
    n: u32,
    k: u32,
    inner_batches: u32,
    a_outer: u32,
    a_inner: u32,
    a_leading: u32,
    b_outer: u32,
    b_inner: u32,
    b_leading: u32,
    c_outer: u32,
    c_inner: u32,
    c_leading: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;

@group(0) @binding(0) var<uniform> params: BatchedMatmulParams;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

var<workgroup> a_tile: array<array<f32, 16>, 16>;
var<workgroup> b_tile: array<array<f32, 17>, 16>;

// op(a)[row][col] of the matrix starting at `base`.
fn a_at(base: u32, row: u32, col: u32) -> f32 {
    if TRANS_A {
        return a[base + col * params.a_leading + row];
    }
    return a[base + row * params.a_leading + col];
}

fn b_at(base: u32, row: u32, col: u32) -> f32 {
    if TRANS_B {
        return b[base + col * params.b_leading + row];
    }
    return b[base + row * params.b_leading + col];
}

@compute @workgroup_size(16, 16)
fn batched_matmul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
) {
    let o = workgroup_id.z / params.inner_batches;
    let i = workgroup_id.z % params.inner_batches;
    let a_base = o * params.a_outer + i * params.a_inner;
    let b_base = o * params.b_outer + i * params.b_inner;
    let row = workgroup_id.y * 16u + local_id.y;
    let col = workgroup_id.x * 16u + local_id.x;

    var acc = 0.0;
    for (var k0 = 0u; k0 < params.k; k0 += 16u) {
        // This invocation stages op(a)[row][k0 + x] and op(b)[k0 + y][col].
        let a_k = k0 + local_id.x;
        var a_value = 0.0;
        if row < params.m && a_k < params.k {
            a_value = a_at(a_base, row, a_k);
        }
        a_tile[local_id.y][local_id.x] = a_value;
        let b_k = k0 + local_id.y;
        var b_value = 0.0;
        if b_k < params.k && col < params.n {
            b_value = b_at(b_base, b_k, col);
        }
        b_tile[local_id.y][local_id.x] = b_value;
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            acc += a_tile[local_id.y][kk] * b_tile[kk][local_id.x];
        }
        workgroupBarrier();
    }

    if row < params.m && col < params.n {
        let index = o * params.c_outer + i * params.c_inner + row * params.c_leading + col;
        var value = params.alpha * acc;
        // With beta 0 the old c is not read, so NaN there does not leak in.
        if params.beta != 0.0 {
            value += params.beta * c[index];
        }
        c[index] = value;
    }
}
