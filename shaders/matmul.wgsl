// C = alpha * op(A) op(B) + beta * C, row-major, any shape. The tiling is
// common/matmul_tile.wgsl's; this file loads A and B and writes C.

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
            let col = col0 + local_id.x + j * SIDE;
            if row < params.m && col < params.n {
                let index = row * params.n + col;
                var value = params.alpha * acc[i][j];
                if params.accumulate != 0u {
                    value += params.beta * c[index];
                }
                c[index] = value;
            }
        }
    }
}
