// C = alpha * op(A) op(B) + beta * C, row-major, any shape.
//
// Workgroup tiling with register blocking: a 16x16 workgroup computes a 64x64 tile of C; each
// invocation owns a 4x4 block of it, strided by 16 in both directions so that neighbouring
// invocations read neighbouring words of workgroup memory (no bank conflicts) and write
// neighbouring words of C (coalesced). K advances in slices of 16 staged in workgroup memory
// (2 x 16 x 64 floats = 8 KiB). Transposition is a pipeline constant: the loads read A and B in
// whichever order is contiguous in memory, so all four variants stream memory the same way.
// The accumulators are four vec4 rows indexed by constants in the inner loop, so every driver
// keeps them in registers (a private f32 array indexed in loops ran 1.5x slower on lavapipe).

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

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const BLOCK: u32 = 4u;      // outputs per invocation in each direction
const SIDE: u32 = 16u;      // invocations per workgroup side
const INVOCATIONS: u32 = 256u;

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

// Staged slices, k-major: a_tile[kk * TILE_M + row], b_tile[kk * TILE_N + col].
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;

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
    // Row i of this invocation's 4x4 block is acc[i]; its column j is at col0 + lx + 16 j.
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        // Stage 64x16 of op(A) and 16x64 of op(B): four words per invocation each, with
        // consecutive invocations reading consecutive addresses of the source.
        for (var i = 0u; i < TILE_M * TILE_K / INVOCATIONS; i++) {
            let l = local_index + i * INVOCATIONS;
            var row: u32;
            var kk: u32;
            if TRANS_A {
                kk = l / TILE_M;
                row = l % TILE_M;
            } else {
                row = l / TILE_K;
                kk = l % TILE_K;
            }
            a_tile[kk * TILE_M + row] = load_a(row0 + row, k0 + kk);

            var col: u32;
            if TRANS_B {
                col = l / TILE_K;
                kk = l % TILE_K;
            } else {
                kk = l / TILE_N;
                col = l % TILE_N;
            }
            b_tile[kk * TILE_N + col] = load_b(k0 + kk, col0 + col);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
            let a_row = kk * TILE_M + local_id.y;
            let b_row = kk * TILE_N + local_id.x;
            let b_vec = vec4<f32>(
                b_tile[b_row],
                b_tile[b_row + SIDE],
                b_tile[b_row + 2u * SIDE],
                b_tile[b_row + 3u * SIDE],
            );
            acc[0] = fma(vec4<f32>(a_tile[a_row]), b_vec, acc[0]);
            acc[1] = fma(vec4<f32>(a_tile[a_row + SIDE]), b_vec, acc[1]);
            acc[2] = fma(vec4<f32>(a_tile[a_row + 2u * SIDE]), b_vec, acc[2]);
            acc[3] = fma(vec4<f32>(a_tile[a_row + 3u * SIDE]), b_vec, acc[3]);
        }
        workgroupBarrier();
    }

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
