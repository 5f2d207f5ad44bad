// The tiled product shared by matmul.wgsl and linear.wgsl (included by the kernel registry):
// a 16x16 workgroup computes a 64x64 tile of op(A) op(B); each invocation owns a 4x4 block of
// it, strided by 16 in both directions so that neighbouring invocations read neighbouring words
// of workgroup memory (no bank conflicts) and write neighbouring words of the result
// (coalesced). K advances in slices of 16 staged in workgroup memory (2 x 16 x 64 floats =
// 8 KiB). Transposition is a pipeline constant (TRANS_A, TRANS_B, declared by the including
// file): the loads read A and B in whichever order is contiguous in memory, so all four
// variants stream memory the same way. The accumulators are four vec4 rows indexed by constants
// in the inner loop, so every driver keeps them in registers (a private f32 array indexed in
// loops ran 1.5x slower on lavapipe). Each k is added in increasing order, one fma at a time.
//
// The including file defines load_a(row, kk) and load_b(kk, col): op(A) and op(B) at one
// position, 0 outside the problem.

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const BLOCK: u32 = 4u;      // outputs per invocation in each direction
const SIDE: u32 = 16u;      // invocations per workgroup side
const TILE_INVOCATIONS: u32 = 256u;

// Staged slices, k-major: a_tile[kk * TILE_M + row], b_tile[kk * TILE_N + col].
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;

// This invocation's 4x4 block of the tile whose top-left corner is (row0, col0), over k terms:
// element [i][j] is the product's (row0 + local_id.y + 16 i, col0 + local_id.x + 16 j).
fn tile_product(
    row0: u32,
    col0: u32,
    k: u32,
    local_id: vec3<u32>,
    local_index: u32,
) -> array<vec4<f32>, 4> {
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < k; k0 += TILE_K) {
        // Stage 64x16 of op(A) and 16x64 of op(B): four words per invocation each, with
        // consecutive invocations reading consecutive addresses of the source.
        for (var i = 0u; i < TILE_M * TILE_K / TILE_INVOCATIONS; i++) {
            let l = local_index + i * TILE_INVOCATIONS;
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
    return acc;
}
