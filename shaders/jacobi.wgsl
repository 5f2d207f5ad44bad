// One round of the parallel one-sided Jacobi SVD (Hestenes). `rows` holds the columns of the
// matrix being orthogonalised, one per row (W = A^T, so each column is contiguous); `basis`
// accumulates the same rotations (it starts as the identity and ends as V^T).
//
// A sweep is players - 1 rounds of a round-robin tournament (circle method: player 0 stays, the
// others rotate by one each round), so every pair of columns meets once per sweep and the pairs
// of one round are disjoint: one workgroup per pair, no two touching the same row. For the pair
// (p, q) with alpha = |w_p|^2, beta = |w_q|^2, gamma = w_p . w_q, the rotation
//   zeta = (beta - alpha) / (2 gamma),  t = sign(zeta) / (|zeta| + sqrt(1 + zeta^2)),
//   c = 1 / sqrt(1 + t^2),  s = c t,   w_p <- c w_p - s w_q,  w_q <- s w_p + c w_q
// makes w_p and w_q orthogonal. Pairs already orthogonal to working precision are left alone.

struct JacobiParams {
    // Columns rounded up to even; an odd count gets a dummy player whose pairs are skipped.
    players: u32,
    columns: u32,
    row_len: u32,
    round: u32,
}

const INVOCATIONS: u32 = 64u;
const F32_EPSILON: f32 = 1.1920929e-7;

@group(0) @binding(0) var<uniform> params: JacobiParams;
@group(0) @binding(1) var<storage, read_write> rows: array<f32>;
@group(0) @binding(2) var<storage, read_write> basis: array<f32>;

var<workgroup> sums: array<vec3<f32>, 64>;

fn player(position: u32) -> u32 {
    if position == 0u {
        return 0u;
    }
    return 1u + (position - 1u + params.round) % (params.players - 1u);
}

@compute @workgroup_size(64)
fn jacobi_round(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let pair = flat_workgroup_id(workgroup_id, num_workgroups);
    if pair >= params.players / 2u {
        return;
    }
    let first = player(pair);
    let second = player(params.players - 1u - pair);
    let p = min(first, second);
    let q = max(first, second);
    if q >= params.columns {
        return;
    }
    let len = params.row_len;
    var acc = vec3<f32>(0.0);
    for (var t = local_index; t < len; t += INVOCATIONS) {
        let a = rows[p * len + t];
        let b = rows[q * len + t];
        acc += vec3<f32>(a * a, b * b, a * b);
    }
    sums[local_index] = acc;
    workgroupBarrier();
    for (var stride = INVOCATIONS / 2u; stride > 0u; stride /= 2u) {
        if local_index < stride {
            sums[local_index] = sums[local_index] + sums[local_index + stride];
        }
        workgroupBarrier();
    }
    let alpha = sums[0].x;
    let beta = sums[0].y;
    let gamma = sums[0].z;
    if abs(gamma) <= F32_EPSILON * sqrt(alpha * beta) {
        return;
    }
    let zeta = (beta - alpha) / (2.0 * gamma);
    let t = select(-1.0, 1.0, zeta >= 0.0) / (abs(zeta) + sqrt(1.0 + zeta * zeta));
    let c = 1.0 / sqrt(1.0 + t * t);
    let s = c * t;
    // (Portable WGSL cannot pass storage pointers to functions, hence two loops.)
    for (var i = local_index; i < len; i += INVOCATIONS) {
        let a = rows[p * len + i];
        let b = rows[q * len + i];
        rows[p * len + i] = c * a - s * b;
        rows[q * len + i] = s * a + c * b;
    }
    let n = params.columns;
    for (var i = local_index; i < n; i += INVOCATIONS) {
        let a = basis[p * n + i];
        let b = basis[q * n + i];
        basis[p * n + i] = c * a - s * b;
        basis[q * n + i] = s * a + c * b;
    }
}
