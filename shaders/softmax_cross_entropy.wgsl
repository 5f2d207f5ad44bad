// Row-wise softmax cross-entropy and its gradient, one workgroup of 64 invocations per row:
//   loss[r]    = logsumexp(logits[r]) - logits[r][label[r]]
//   grad[r][j] = grad_scale * (softmax(logits[r])[j] - [j == label[r]])
// and (softmax_cross_entropy_jvp) their tangent along d_logits, with p = softmax(logits[r]) and
// s = sum_j p_j d_logits[r][j]:
//   d_loss[r]    = s - d_logits[r][label[r]]
//   d_grad[r][j] = grad_scale * p_j * (d_logits[r][j] - s)
// The row maximum is subtracted before exp, so large logits do not overflow. Labels are class
// indices stored as f32; a label outside 0..cols gives a NaN loss and a NaN gradient row (and a
// NaN d_loss and d_grad row).

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    // The bits of a quiet NaN, passed in because WGSL constant expressions may not be NaN.
    nan_bits: u32,
}

const INVOCATIONS: u32 = 64u;

@group(0) @binding(0) var<uniform> params: SoftmaxParams;
// softmax_cross_entropy_jvp writes d_loss into `loss` and d_grad into `grad`.
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<f32>;
// Read by softmax_cross_entropy_jvp only.
@group(0) @binding(5) var<storage, read> d_logits: array<f32>;

var<workgroup> scratch: array<f32, 64>;

// Tree reduction of scratch[0..64]: max when take_max, else sum. Ends with a barrier.
fn reduce_scratch(local_index: u32, take_max: bool) -> f32 {
    workgroupBarrier();
    for (var stride = INVOCATIONS / 2u; stride > 0u; stride /= 2u) {
        if local_index < stride {
            let other = scratch[local_index + stride];
            if take_max {
                scratch[local_index] = max(scratch[local_index], other);
            } else {
                scratch[local_index] = scratch[local_index] + other;
            }
        }
        workgroupBarrier();
    }
    let result = scratch[0];
    workgroupBarrier();
    return result;
}

// The row's largest logit and sum_j exp(logit_j - max): the stable softmax's two reductions,
// shared by the loss and its tangent.
fn row_max_and_sum(base: u32, local_index: u32) -> vec2<f32> {
    var row_max = LOWEST_F32;
    for (var j = local_index; j < params.cols; j += INVOCATIONS) {
        row_max = max(row_max, logits[base + j]);
    }
    scratch[local_index] = row_max;
    row_max = reduce_scratch(local_index, true);

    var sum = 0.0;
    for (var j = local_index; j < params.cols; j += INVOCATIONS) {
        sum += exp(logits[base + j] - row_max);
    }
    scratch[local_index] = sum;
    sum = reduce_scratch(local_index, false);
    return vec2<f32>(row_max, sum);
}

@compute @workgroup_size(64)
fn softmax_cross_entropy(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row = flat_workgroup_id(workgroup_id, num_workgroups);
    if row >= params.rows {
        return;
    }
    let base = row * params.cols;

    let stats = row_max_and_sum(base, local_index);
    let row_max = stats.x;
    let sum = stats.y;

    let label_value = labels[row];
    let valid = label_value >= 0.0 && label_value < f32(params.cols);
    let label = select(0u, u32(label_value), valid);
    let nan = bitcast<f32>(params.nan_bits);

    if local_index == 0u {
        loss[row] = select(nan, log(sum) + row_max - logits[base + label], valid);
    }
    for (var j = local_index; j < params.cols; j += INVOCATIONS) {
        let p = exp(logits[base + j] - row_max) / sum;
        let target_value = select(0.0, 1.0, j == label);
        grad[base + j] = select(nan, params.grad_scale * (p - target_value), valid);
    }
}

@compute @workgroup_size(64)
fn softmax_cross_entropy_jvp(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let row = flat_workgroup_id(workgroup_id, num_workgroups);
    if row >= params.rows {
        return;
    }
    let base = row * params.cols;

    let stats = row_max_and_sum(base, local_index);
    let row_max = stats.x;
    let sum = stats.y;

    // s = (sum_j e_j d_j) / sum_j e_j.
    var weighted = 0.0;
    for (var j = local_index; j < params.cols; j += INVOCATIONS) {
        weighted += exp(logits[base + j] - row_max) * d_logits[base + j];
    }
    scratch[local_index] = weighted;
    let s = reduce_scratch(local_index, false) / sum;

    let label_value = labels[row];
    let valid = label_value >= 0.0 && label_value < f32(params.cols);
    let label = select(0u, u32(label_value), valid);
    let nan = bitcast<f32>(params.nan_bits);

    if local_index == 0u {
        loss[row] = select(nan, s - d_logits[base + label], valid);
    }
    for (var j = local_index; j < params.cols; j += INVOCATIONS) {
        let p = exp(logits[base + j] - row_max) / sum;
        grad[base + j] = select(nan, params.grad_scale * p * (d_logits[base + j] - s), valid);
    }
}
