// Row-wise softmax cross-entropy, its gradient and the sum of the losses in one dispatch (the
// fusion of src/engine/fusion/cross_entropy_sum.rs; it equals softmax_cross_entropy followed by
// a whole-array sum):
//   loss[r]     = logsumexp(logits[r]) - logits[r][label[r]]
//   grad[r][j]  = grad_scale * (softmax(logits[r])[j] - [j == label[r]])
//   loss_sum[0] = sum_r loss[r]
// One workgroup: invocation i owns rows i, i + 256, ..., each computed in column order (as the
// CPU twin does), and adds their losses in that order; a fixed tree then adds the 256 partial
// sums, the order reduce.wgsl uses for one segment. The fusion is used for at most 4096 rows.
// A label outside 0..cols gives a NaN loss, gradient row and sum.

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    // The bits of a quiet NaN, passed in because WGSL constant expressions may not be NaN.
    nan_bits: u32,
}

const INVOCATIONS: u32 = 256u;

@group(0) @binding(0) var<uniform> params: SoftmaxParams;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss_sum: array<f32>;
@group(0) @binding(4) var<storage, read> logits: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<f32>;

var<workgroup> partial: array<f32, 256>;

// Writes row r's gradient and returns its loss.
fn row_loss(row: u32) -> f32 {
    let base = row * params.cols;
    var row_max = LOWEST_F32;
    for (var j = 0u; j < params.cols; j++) {
        row_max = max(row_max, logits[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < params.cols; j++) {
        sum += exp(logits[base + j] - row_max);
    }
    let label_value = labels[row];
    let valid = label_value >= 0.0 && label_value < f32(params.cols);
    let label = select(0u, u32(label_value), valid);
    let nan = bitcast<f32>(params.nan_bits);
    for (var j = 0u; j < params.cols; j++) {
        let p = exp(logits[base + j] - row_max) / sum;
        let target_value = select(0.0, 1.0, j == label);
        grad[base + j] = select(nan, params.grad_scale * (p - target_value), valid);
    }
    return select(nan, log(sum) + row_max - logits[base + label], valid);
}

@compute @workgroup_size(256)
fn softmax_cross_entropy_sum(@builtin(local_invocation_index) local_index: u32) {
    var acc = 0.0;
    for (var row = local_index; row < params.rows; row += INVOCATIONS) {
        let value = row_loss(row);
        loss[row] = value;
        acc += value;
    }
    partial[local_index] = acc;
    workgroupBarrier();
    for (var stride = INVOCATIONS / 2u; stride > 0u; stride /= 2u) {
        if local_index < stride {
            partial[local_index] = partial[local_index] + partial[local_index + stride];
        }
        workgroupBarrier();
    }
    if local_index == 0u {
        loss_sum[0] = partial[0];
    }
}
