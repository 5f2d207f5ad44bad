// The large-tile product of matmul.wgsl's matmul_large entry point, for outputs big enough to
// fill a GPU with 128x128 tiles (the rule is lower.rs's `MatmulTile::for_shape`): a 16x16
// workgroup computes a 128x128 tile of op(A) op(B), each invocation an 8x8 block of it strided
// by 16 in both directions (neighbouring invocations read neighbouring words of workgroup
// memory and write neighbouring words of the result). Four times the outputs per staged word
// of the 64x64 tile, at 64 accumulators per invocation. K advances in slices of 8 staged in
// workgroup memory (2 x 8 x 128 floats = 8 KiB); each invocation loads its share of the next
// slice into registers before computing on the current one, so global loads overlap the
// arithmetic. Each k is added in increasing order, one fma at a time, as in the 64x64 tile:
// both configurations compute every output in the same order of operations.
//
// The including file defines load_a(row, kk) and load_b(kk, col) (0 outside the problem) and
// the pipeline constants TRANS_A and TRANS_B.

const LARGE_TILE: u32 = 128u;
const LARGE_TILE_K: u32 = 8u;
const LARGE_BLOCK: u32 = 8u;        // outputs per invocation in each direction
const LARGE_SIDE: u32 = 16u;        // invocations per workgroup side
const LARGE_INVOCATIONS: u32 = 256u;
// Words of each operand's slice that one invocation stages.
const LARGE_LOADS: u32 = 4u;        // LARGE_TILE * LARGE_TILE_K / LARGE_INVOCATIONS

// Staged slices, k-major: large_a[kk * LARGE_TILE + row], large_b[kk * LARGE_TILE + col].
var<workgroup> large_a: array<f32, 1024>;
var<workgroup> large_b: array<f32, 1024>;

// Where the l-th word an invocation stages lies in the slice: (row or col, kk), read in
// whichever order is contiguous in memory.
fn large_a_position(l: u32) -> vec2<u32> {
    if TRANS_A {
        return vec2<u32>(l % LARGE_TILE, l / LARGE_TILE);
    }
    return vec2<u32>(l / LARGE_TILE_K, l % LARGE_TILE_K);
}

fn large_b_position(l: u32) -> vec2<u32> {
    if TRANS_B {
        return vec2<u32>(l / LARGE_TILE_K, l % LARGE_TILE_K);
    }
    return vec2<u32>(l % LARGE_TILE, l / LARGE_TILE);
}

// This invocation's 8x8 block of the tile at (row0, col0), over k terms: element
// [2 i + h][c] is the product's (row0 + local_id.y + 16 i, col0 + local_id.x + 16 (4 h + c)).
fn tile_product_large(
    row0: u32,
    col0: u32,
    k: u32,
    local_id: vec3<u32>,
    local_index: u32,
) -> array<vec4<f32>, 16> {
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    // The first slice's words, in registers.
    var next_a: array<f32, 4>;
    var next_b: array<f32, 4>;
    for (var i = 0u; i < LARGE_LOADS; i++) {
        let l = local_index + i * LARGE_INVOCATIONS;
        let pa = large_a_position(l);
        next_a[i] = load_a(row0 + pa.x, pa.y);
        let pb = large_b_position(l);
        next_b[i] = load_b(pb.y, col0 + pb.x);
    }
    for (var k0 = 0u; k0 < k; k0 += LARGE_TILE_K) {
        for (var i = 0u; i < LARGE_LOADS; i++) {
            let l = local_index + i * LARGE_INVOCATIONS;
            let pa = large_a_position(l);
            large_a[pa.y * LARGE_TILE + pa.x] = next_a[i];
            let pb = large_b_position(l);
            large_b[pb.y * LARGE_TILE + pb.x] = next_b[i];
        }
        workgroupBarrier();

        // The next slice's loads are issued before this slice's arithmetic.
        let k1 = k0 + LARGE_TILE_K;
        if k1 < k {
            for (var i = 0u; i < LARGE_LOADS; i++) {
                let l = local_index + i * LARGE_INVOCATIONS;
                let pa = large_a_position(l);
                next_a[i] = load_a(row0 + pa.x, k1 + pa.y);
                let pb = large_b_position(l);
                next_b[i] = load_b(k1 + pb.y, col0 + pb.x);
            }
        }

        for (var kk = 0u; kk < LARGE_TILE_K; kk++) {
            let a_row = kk * LARGE_TILE + local_id.y;
            let b_row = kk * LARGE_TILE + local_id.x;
            let b0 = vec4<f32>(
                large_b[b_row],
                large_b[b_row + LARGE_SIDE],
                large_b[b_row + 2u * LARGE_SIDE],
                large_b[b_row + 3u * LARGE_SIDE],
            );
            let b1 = vec4<f32>(
                large_b[b_row + 4u * LARGE_SIDE],
                large_b[b_row + 5u * LARGE_SIDE],
                large_b[b_row + 6u * LARGE_SIDE],
                large_b[b_row + 7u * LARGE_SIDE],
            );
            for (var i = 0u; i < LARGE_BLOCK; i++) {
                let a = vec4<f32>(large_a[a_row + i * LARGE_SIDE]);
                acc[2u * i] = fma(a, b0, acc[2u * i]);
                acc[2u * i + 1u] = fma(a, b1, acc[2u * i + 1u]);
            }
        }
        workgroupBarrier();
    }
    return acc;
}
