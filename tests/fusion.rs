//! The fusion pass and the plan: which runs of recorded ops fuse and which must not (where
//! fusing would change a result), what the default model's Adam step costs before and after,
//! and every fused kernel against the f64 CPU engine, which runs the same recording unfused (its
//! CPU twin), on awkward shapes: M = 1, N = 1, N = 10, K not a multiple of 4, K = 1, more rows
//! than one tile, more rows than one workgroup's invocations.

mod common;

use common::{check_on_every_engine, gpu, rng, uniform};
use specdef::benchmark::{AttackShape, prepare_attack_steps};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::fusion::{Fused, Fusion, Step, fuse};
use specdef::engine::gpu::plan::{PlanFigures, PlanLimits, lower_recording};
use specdef::engine::{Activation, AdamHyper, Engine, Recording, ReduceAxis, Reduction, Tensor};
use specdef::tolerance::Tolerance;

/// What each step of the fused recording is under WebGPU's default limits: "op" or the fused
/// family's name.
fn kinds(recording: &Recording) -> Vec<String> {
    kinds_with(recording, PlanLimits::WEBGPU.max_storage_buffers_per_stage)
}

/// The same with `max_storage_buffers` storage buffers per stage (an Adam group's size).
fn kinds_with(recording: &Recording, max_storage_buffers: u32) -> Vec<String> {
    fuse(recording.ops(), max_storage_buffers)
        .iter()
        .map(|step| match step {
            Step::Op(_) => "op".to_string(),
            Step::Fused(Fused::LinearForward(_)) => "forward".to_string(),
            Step::Fused(Fused::LinearWeightGrad(_)) => "weight_grad".to_string(),
            Step::Fused(Fused::LinearInputGrad(_)) => "input_grad".to_string(),
            Step::Fused(Fused::CrossEntropySum(_)) => "cross_entropy_sum".to_string(),
            Step::Fused(Fused::AdamGroup(g)) => format!("adam_group_{}", g.tensor_count()),
            Step::Fused(Fused::ProductPair(p)) => {
                let (first, second) = p.kinds();
                format!("pair({}, {})", first.name(), second.name())
            }
        })
        .collect()
}

fn tensors(e: &mut CpuEngine32, shapes: &[(usize, usize)]) -> Vec<Tensor> {
    shapes
        .iter()
        .map(|&(r, c)| e.alloc("t", r, c).unwrap())
        .collect()
}

#[test]
fn each_fusion_takes_its_pattern_and_nothing_that_would_change_a_result() {
    let mut e = CpuEngine32::new();
    let t = tensors(
        &mut e,
        &[
            (8, 5),
            (6, 5),
            (8, 6),
            (8, 1),
            (1, 6),
            (8, 6),
            (8, 6),
            (6, 6),
        ],
    );
    let (x, w, pre, ones, bias, post, other, square) =
        (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
    let forward = |activation_out: Option<Tensor>, beta: f64| {
        let mut rec = Recording::new();
        rec.matmul_scaled(x, w, pre, false, true, 1.0, beta)
            .unwrap();
        rec.matmul_scaled(ones, bias, pre, false, false, 1.0, 1.0)
            .unwrap();
        if let Some(out) = activation_out {
            rec.activate(Activation::Relu, pre, out).unwrap();
        }
        rec
    };
    assert_eq!(kinds(&forward(Some(post), 0.0)), ["forward"]);
    assert_eq!(kinds(&forward(None, 0.0)), ["forward"]);
    // A product that accumulates into `pre` reads it: not the pattern.
    assert_eq!(kinds(&forward(Some(post), 1.0)), ["op", "op", "op"]);
    // An activation writing over the product's input joins no fused kernel.
    let mut rec = Recording::new();
    rec.matmul(other, square, pre, false, true).unwrap();
    rec.matmul_scaled(ones, bias, pre, false, false, 1.0, 1.0)
        .unwrap();
    rec.activate(Activation::Relu, pre, other).unwrap();
    assert_eq!(kinds(&rec), ["forward", "op"]);

    // Weight and bias gradients of g = pre (8x6) against h = x (8x5).
    let (dw, db) = (e.alloc("dw", 6, 5).unwrap(), e.alloc("db", 1, 6).unwrap());
    let weight_grad = |g_for_dw: Tensor| {
        let mut rec = Recording::new();
        rec.matmul(ones, pre, db, true, false).unwrap();
        rec.matmul(g_for_dw, x, dw, true, false).unwrap();
        rec
    };
    assert_eq!(kinds(&weight_grad(pre)), ["weight_grad"]);
    // Two products of different g do not make a weight gradient, but they are independent.
    assert_eq!(kinds(&weight_grad(post)), ["pair(matmul, matmul)"]);

    // The input gradient through an activation: dh = g w, grad_pre = dh * f'(pre).
    let (dh, grad_pre) = (e.alloc("dh", 8, 5).unwrap(), e.alloc("gp", 8, 5).unwrap());
    let input_grad = |grad_y: Tensor| {
        let mut rec = Recording::new();
        rec.matmul(pre, w, dh, false, false).unwrap();
        rec.activate_grad(Activation::Tanh, x, grad_y, grad_pre)
            .unwrap();
        rec
    };
    assert_eq!(kinds(&input_grad(dh)), ["input_grad"]);
    let unrelated = e.alloc("unrelated", 8, 5).unwrap();
    assert_eq!(kinds(&input_grad(unrelated)), ["op", "op"]);

    // The loss and its sum; not where one workgroup would hold too many rows.
    let cross_entropy = |e: &mut CpuEngine32, rows: usize| {
        let t = tensors(e, &[(rows, 10), (rows, 1), (rows, 1), (rows, 10), (1, 1)]);
        let mut rec = Recording::new();
        rec.softmax_cross_entropy(t[0], t[1], t[2], t[3], 1.0)
            .unwrap();
        rec.reduce(Reduction::Sum, ReduceAxis::Whole, t[2], t[4])
            .unwrap();
        kinds(&rec)
    };
    assert_eq!(cross_entropy(&mut e, 4096), ["cross_entropy_sum"]);
    assert_eq!(cross_entropy(&mut e, 4097), ["op", "op"]);

    // Adam updates group where hyper-parameters and step agree, as many as the device's storage
    // buffers allow (four each).
    let adam = |e: &mut CpuEngine32, steps: &[u32], lrs: &[f64], max_storage: u32| {
        let mut rec = Recording::new();
        for (&step, &lr) in steps.iter().zip(lrs) {
            let t = tensors(e, &[(3, 4), (3, 4), (3, 4), (3, 4)]);
            let hyper = AdamHyper {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            };
            rec.adam(t[0], t[1], (t[2], t[3]), hyper, step).unwrap();
        }
        kinds_with(&rec, max_storage)
    };
    assert_eq!(
        adam(&mut e, &[1, 1, 1], &[0.1; 3], 8),
        ["adam_group_2", "op"]
    );
    assert_eq!(
        adam(&mut e, &[1, 1, 1], &[0.1; 3], 11),
        ["adam_group_2", "op"]
    );
    assert_eq!(adam(&mut e, &[1, 1, 1], &[0.1; 3], 12), ["adam_group_3"]);
    assert_eq!(
        adam(&mut e, &[1, 1, 1, 2], &[0.1; 4], 64),
        ["adam_group_3", "op"]
    );
    assert_eq!(adam(&mut e, &[1, 2], &[0.1; 2], 64), ["op", "op"]);
    assert_eq!(adam(&mut e, &[1, 1], &[0.1, 0.2], 64), ["op", "op"]);
    // A gradient that is also a parameter of the group would be read after it is written.
    let t = tensors(&mut e, &[(3, 4); 7]);
    let mut rec = Recording::new();
    let hyper = AdamHyper {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    rec.adam(t[0], t[1], (t[2], t[3]), hyper, 1).unwrap();
    rec.adam(t[1], t[4], (t[5], t[6]), hyper, 1).unwrap();
    assert_eq!(kinds_with(&rec, 64), ["op", "op"]);
}

/// The plan of one Adam step of the default model (64-256-256-10, batch 128), fused or not.
fn step_plan(defended: bool, fusion: Fusion, limits: PlanLimits) -> (Recording, PlanFigures) {
    let mut engine = CpuEngine32::new();
    let shape = AttackShape::standard(defended);
    let prepared = prepare_attack_steps(&mut engine, shape, Some(1)).unwrap();
    let dispatches = lower_recording(&prepared.recording, fusion, limits).unwrap();
    (prepared.recording.clone(), PlanFigures::of(&dispatches))
}

/// Dispatches per Adam step of the default MLP (3 layers; defended: 2 factors W~, C each, every
/// parameter trained). Unfused, one per recorded op. Fused, per the rules above:
/// - forward: one per layer, plus the product of W~ where defended (3; 6);
/// - the loss and its sum: 1;
/// - backward, undefended: per layer the weight and bias gradients (3) and the input gradient
///   through the activation below layers 2 and 3 (2). The two of a layer read the same output
///   gradient and nothing of each other, so where 10 storage buffers per stage are allowed they
///   are one pair: 3 dispatches. Defended, per layer C's weight and bias gradients, the product
///   back through C, the gradient of W~ and (layers 2 and 3) the input gradient below: 11, paired
///   as (C's gradients, back through C), (W~'s gradient, input gradient) in 8 buffers each: 6;
/// - Adam: under WebGPU's default of 8 storage buffers per stage one per pair of parameter
///   tensors (6 tensors: 3; 9: 5), under a native driver's limits (lavapipe and NVIDIA's Vulkan
///   drivers grant far more than 36) one for all of them.
///
/// The budget (at most 8 and 14) holds under native limits; WebGPU's 8 storage buffers
/// leave the undefended backward unpaired and split the Adam update.
#[test]
fn the_default_steps_plan_before_and_after_fusion() {
    let native = PlanLimits {
        max_storage_buffers_per_stage: 64,
        ..PlanLimits::WEBGPU
    };
    let cases = [
        (false, PlanLimits::WEBGPU, 3 + 1 + 5 + 3),
        (true, PlanLimits::WEBGPU, 6 + 1 + 6 + 5),
        (false, native, 3 + 1 + 3 + 1),
        (true, native, 6 + 1 + 6 + 1),
    ];
    for (defended, limits, fused_expected) in cases {
        let (recording, before) = step_plan(defended, Fusion::Off, limits);
        let (_, after) = step_plan(defended, Fusion::On, limits);
        eprintln!("defended {defended}, {limits:?}: unfused {before:?}\n  fused {after:?}");
        assert_eq!(before.dispatches, recording.len(), "one dispatch per op");
        assert_eq!(
            after.dispatches, fused_expected,
            "defended {defended}, {limits:?}"
        );
        if limits == native {
            let budget = if defended { 14 } else { 8 };
            assert!(after.dispatches <= budget, "over the dispatch budget");
        }
        assert!(after.barrier_stages < before.barrier_stages);
        assert!(after.bytes < before.bytes, "fusion binds fewer bytes");
        // The fused weight gradient's bias column adds the bias gradients' products, which the
        // unfused plan does as products with a ones column: the same FLOPs.
        assert_eq!(after.flop, before.flop);
    }
}

/// Records a case's ops given its input and output tensors.
type RecordCase<'a> = dyn Fn(&mut Recording, &[Tensor], &[Tensor]) + 'a;

/// Records and runs `record` on `e` with tensors made from `inputs` ((rows, cols, values)) and
/// `outputs` ((rows, cols)); returns the outputs' values, concatenated.
fn run_case(
    e: &mut dyn Engine,
    inputs: &[(usize, usize, &[f64])],
    outputs: &[(usize, usize)],
    record: &RecordCase<'_>,
) -> Vec<f64> {
    let limit = PlanLimits::WEBGPU.max_storage_buffers_per_stage;
    run_case_with(limit, e, inputs, outputs, record)
}

/// `run_case` where the case is one fused kernel under `max_storage_buffers` per stage (and on
/// the GPU engine, whose limits are the device's, one dispatch).
fn run_case_with(
    max_storage_buffers: u32,
    e: &mut dyn Engine,
    inputs: &[(usize, usize, &[f64])],
    outputs: &[(usize, usize)],
    record: &RecordCase<'_>,
) -> Vec<f64> {
    let ins: Vec<Tensor> = inputs
        .iter()
        .map(|&(r, c, v)| e.tensor_from("in", r, c, v).unwrap())
        .collect();
    let outs: Vec<Tensor> = outputs
        .iter()
        .map(|&(r, c)| e.alloc("out", r, c).unwrap())
        .collect();
    let mut rec = Recording::new();
    record(&mut rec, &ins, &outs);
    let steps = fuse(rec.ops(), max_storage_buffers);
    assert!(
        steps.len() == 1 && matches!(steps[0], Step::Fused(_)),
        "the case is one fused kernel"
    );
    if let Some(figures) = e.plan_figures(&rec).unwrap() {
        assert_eq!(
            figures.dispatches, 1,
            "the GPU engine runs the case as one kernel"
        );
    }
    e.run(&rec).unwrap();
    let values = outs.iter().flat_map(|&t| e.read_one(t).unwrap()).collect();
    ins.iter().chain(&outs).for_each(|&t| e.free(t));
    values
}

const ACTIVATION_TOLERANCE: [(Activation, f64); 4] = [
    (Activation::Relu, 0.0),
    (Activation::Gelu, 2.0),
    (Activation::Tanh, 2.0),
    (Activation::GeluErf, 2.0),
];

/// (m, n, k): rows of the batch, outputs, inputs.
const LINEAR_SHAPES: [(usize, usize, usize); 5] = [
    (1, 10, 7),
    (128, 256, 64),
    (33, 1, 65),
    (70, 129, 3),
    (5, 6, 1),
];

#[test]
fn fused_linear_forward_matches_the_f64_engine() {
    let activations = [None].into_iter().chain(ACTIVATION_TOLERANCE.map(Some));
    let activations: Vec<Option<(Activation, f64)>> = activations.collect();
    for (m, n, k) in LINEAR_SHAPES {
        let mut r = rng((m * 131 + n * 7 + k) as u64);
        let x = uniform(&mut r, m * k, 1.0);
        let ones = vec![1.0; m];
        let bias = uniform(&mut r, n, 1.0);
        for trans_b in [false, true] {
            let w = uniform(&mut r, n * k, 1.0);
            let w_shape = if trans_b { (n, k) } else { (k, n) };
            for &activation in &activations {
                let outputs: &[(usize, usize)] = match activation {
                    Some(_) => &[(m, n), (m, n)],
                    None => &[(m, n)],
                };
                let body = |e: &mut dyn Engine| {
                    run_case(
                        e,
                        &[
                            (m, k, &x),
                            (w_shape.0, w_shape.1, &w),
                            (m, 1, &ones),
                            (1, n, &bias),
                        ],
                        outputs,
                        &|rec, i, o| {
                            rec.matmul(i[0], i[1], o[0], false, trans_b).unwrap();
                            rec.matmul_scaled(i[2], i[3], o[0], false, false, 1.0, 1.0)
                                .unwrap();
                            if let Some((f, _)) = activation {
                                rec.activate(f, o[0], o[1]).unwrap();
                            }
                        },
                    )
                };
                // A K-term dot product of terms of size ~1/3, one more term (the bias), then f.
                let scale = (k as f64).sqrt() / 3.0 + 1.0;
                let transcendental = activation.map_or(1.0, |(_, t)| t.max(1.0));
                let tolerance = Tolerance::f32_sum(k + 1, scale)
                    .plus(Tolerance::f32_transcendental(transcendental));
                let name = activation.map_or("none", |(f, _)| f.name());
                let what = format!("linear forward {m}x{n}x{k} trans_b={trans_b} {name}");
                check_on_every_engine(&what, tolerance, body);
            }
        }
    }
}

#[test]
fn fused_weight_and_bias_gradients_match_the_f64_engine() {
    // (k, m, b_cols): batch, outputs (rows of dW), inputs (columns of dW).
    for (k, m, b_cols) in [
        (1, 10, 7),
        (128, 256, 64),
        (65, 1, 33),
        (3, 70, 129),
        (128, 10, 256),
    ] {
        let mut r = rng((k * 17 + m * 5 + b_cols) as u64);
        let g = uniform(&mut r, k * m, 1.0);
        let h = uniform(&mut r, k * b_cols, 1.0);
        let ones = vec![1.0; k];
        let body = |e: &mut dyn Engine| {
            run_case(
                e,
                &[(k, m, &g), (k, b_cols, &h), (k, 1, &ones)],
                &[(1, m), (m, b_cols)],
                &|rec, i, o| {
                    rec.matmul(i[2], i[0], o[0], true, false).unwrap();
                    rec.matmul(i[0], i[1], o[1], true, false).unwrap();
                },
            )
        };
        let what = format!("linear weight grad {m}x{b_cols} over {k}");
        check_on_every_engine(&what, Tolerance::f32_sum(k, (k as f64).sqrt() / 3.0), body);
    }
}

#[test]
fn fused_input_gradient_matches_the_f64_engine() {
    for (m, n, k) in LINEAR_SHAPES {
        let mut r = rng((m * 3 + n * 11 + k) as u64);
        let g = uniform(&mut r, m * k, 1.0);
        let pre = uniform(&mut r, m * n, 3.0);
        for trans_b in [false, true] {
            let w = uniform(&mut r, n * k, 1.0);
            let w_shape = if trans_b { (n, k) } else { (k, n) };
            for (f, transcendental) in ACTIVATION_TOLERANCE {
                let body = |e: &mut dyn Engine| {
                    run_case(
                        e,
                        &[(m, k, &g), (w_shape.0, w_shape.1, &w), (m, n, &pre)],
                        &[(m, n), (m, n)],
                        &|rec, i, o| {
                            rec.matmul(i[0], i[1], o[0], false, trans_b).unwrap();
                            rec.activate_grad(f, i[2], o[0], o[1]).unwrap();
                        },
                    )
                };
                let scale = (k as f64).sqrt() / 3.0;
                let tolerance = Tolerance::f32_sum(k, scale).plus(Tolerance::f32_transcendental(
                    transcendental.max(1.0) * scale,
                ));
                let what = format!(
                    "linear input grad {m}x{n}x{k} trans_b={trans_b} {}",
                    f.name()
                );
                check_on_every_engine(&what, tolerance, body);
            }
        }
    }
}

#[test]
fn fused_cross_entropy_and_its_sum_match_the_f64_engine() {
    for (rows, cols) in [(1, 1), (17, 10), (128, 10), (300, 7), (4096, 10), (3, 300)] {
        let mut r = rng((rows * 5 + cols) as u64);
        let mut logits = uniform(&mut r, rows * cols, 5.0);
        logits[0] = 90.0;
        let labels: Vec<f64> = (0..rows).map(|i| ((i * 7) % cols) as f64).collect();
        let body = |e: &mut dyn Engine| {
            run_case(
                e,
                &[(rows, cols, &logits), (rows, 1, &labels)],
                &[(rows, 1), (rows, cols), (1, 1)],
                &|rec, i, o| {
                    rec.softmax_cross_entropy(i[0], i[1], o[0], o[1], 1.0 / rows as f64)
                        .unwrap();
                    rec.reduce(Reduction::Sum, ReduceAxis::Whole, o[0], o[2])
                        .unwrap();
                },
            )
        };
        // Losses of size ~5 (exp, a cols-term sum, a log), then a rows-term sum of them.
        let tolerance = Tolerance::f32_transcendental(1.0)
            .plus(Tolerance::f32_sum(cols, 5.0))
            .plus(Tolerance::f32_sum(rows, 5.0 * (rows as f64).sqrt()));
        check_on_every_engine(&format!("cross entropy sum {rows}x{cols}"), tolerance, body);
    }
}

#[test]
fn a_label_out_of_range_makes_the_fused_sum_nan() {
    let Some(mut gpu) = gpu() else { return };
    let (rows, cols) = (5, 4);
    let logits: Vec<f64> = (0..rows * cols).map(|i| i as f64 * 0.1).collect();
    let labels = [0.0, 1.0, 4.0, 2.0, 3.0];
    let values = run_case(
        &mut *gpu,
        &[(rows, cols, &logits), (rows, 1, &labels)],
        &[(rows, 1), (rows, cols), (1, 1)],
        &|rec, i, o| {
            rec.softmax_cross_entropy(i[0], i[1], o[0], o[1], 1.0)
                .unwrap();
            rec.reduce(Reduction::Sum, ReduceAxis::Whole, o[0], o[2])
                .unwrap();
        },
    );
    let (loss, rest) = values.split_at(rows);
    let (grad, sum) = rest.split_at(rows * cols);
    assert!(loss[2].is_nan() && loss.iter().filter(|v| v.is_nan()).count() == 1);
    assert!(grad[2 * cols..3 * cols].iter().all(|v| v.is_nan()));
    assert!(grad[..2 * cols].iter().all(|v| v.is_finite()));
    assert!(sum[0].is_nan());
}

/// The default model's first Adam step (its loss is read before the update), fused and unfused
/// on the GPU and in f64 on the CPU.
#[test]
fn the_default_step_fused_agrees_with_unfused_and_the_f64_engine() {
    let Some(mut gpu) = gpu() else { return };
    for defended in [false, true] {
        let shape = AttackShape::standard(defended);
        let mut losses = Vec::new();
        for fusion in [Fusion::Off, Fusion::On] {
            gpu.set_fusion(fusion);
            let prepared = prepare_attack_steps(&mut *gpu, shape, Some(1)).unwrap();
            gpu.run(&prepared.recording).unwrap();
            losses.push(gpu.read_one(prepared.probe).unwrap());
        }
        gpu.set_fusion(Fusion::On);
        let mut cpu = CpuEngine64::new();
        let prepared = prepare_attack_steps(&mut cpu, shape, Some(1)).unwrap();
        cpu.run(&prepared.recording).unwrap();
        let reference = cpu.read_one(prepared.probe).unwrap();
        eprintln!("defended {defended}: loss sums unfused, fused {losses:?}; f64 {reference:?}");
        // The same products in the same order; the loss's sums in another order (128 terms).
        Tolerance::f32_sum(128, 2.3 * 128f64.sqrt())
            .check(&losses[1], &losses[0])
            .unwrap();
        // Against f64: a defended layer's f32 forward is off by about alpha (1e4) units of
        // round-off (6e-4 relative), the undefended one by far less.
        let relative = if defended { 1e-3 } else { 1e-5 };
        for loss in &losses {
            Tolerance::new(0.0, relative)
                .check(loss, &reference)
                .unwrap();
        }
    }
}

/// Grouped Adam updates over several steps, lengths that end mid-workgroup and a tensor of one
/// element: against the f64 engine as tests/kernels.rs checks the single update, and bit for bit
/// against the unfused kernel on the same GPU (the same arithmetic per element). Three tensors:
/// a group of three where the device grants 12 storage buffers per stage, a pair and a single
/// update under WebGPU's 8.
#[test]
fn grouped_adam_updates_match_the_f64_engine_and_the_unfused_kernel() {
    let lengths = [[1, 300, 5], [257, 10, 1024], [4096, 513, 1]];
    let hyper = AdamHyper {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    for group in lengths {
        let mut r = rng(group.iter().sum::<usize>() as u64);
        let start: Vec<Vec<f64>> = group
            .iter()
            .flat_map(|&len| [uniform(&mut r, len, 1.0), uniform(&mut r, len, 0.5)])
            .collect();
        let body = |e: &mut dyn Engine| {
            let mut owned = Vec::new();
            let mut rec = Recording::new();
            for (i, &len) in group.iter().enumerate() {
                let p = e.tensor_from("p", 1, len, &start[2 * i]).unwrap();
                let g = e.tensor_from("g", 1, len, &start[2 * i + 1]).unwrap();
                let m = e.tensor_from("m", 1, len, &vec![0.0; len]).unwrap();
                let v = e.tensor_from("v", 1, len, &vec![0.0; len]).unwrap();
                owned.push([p, g, m, v]);
            }
            for step in 1..=3 {
                for &[p, g, m, v] in &owned {
                    rec.adam(p, g, (m, v), hyper, step).unwrap();
                }
            }
            assert_eq!(kinds_with(&rec, 12), ["adam_group_3"; 3]);
            e.run(&rec).unwrap();
            let values: Vec<f64> = owned
                .iter()
                .flat_map(|&[p, _, m, v]| [p, m, v])
                .flat_map(|t| e.read_one(t).unwrap())
                .collect();
            owned.iter().flatten().for_each(|&t| e.free(t));
            values
        };
        // As tests/kernels.rs allows the single update: each step moves a parameter by about
        // lr; the square root and the division add a few roundings.
        check_on_every_engine(
            &format!("adam group {group:?}"),
            Tolerance::f32_transcendental(1.0),
            body,
        );
        if let Some(mut gpu) = gpu() {
            let fused = body(&mut *gpu);
            gpu.set_fusion(Fusion::Off);
            let unfused = body(&mut *gpu);
            gpu.set_fusion(Fusion::On);
            Tolerance::EXACT.check(&fused, &unfused).unwrap();
        }
    }
}

#[test]
fn only_independent_products_side_by_side_make_a_pair() {
    let mut e = CpuEngine32::new();
    let t = tensors(&mut e, &[(4, 4); 8]);
    // Two products of nothing the other writes: one pair; a third product waits for the next.
    let mut rec = Recording::new();
    rec.matmul(t[0], t[1], t[4], false, false).unwrap();
    rec.matmul(t[2], t[3], t[5], true, true).unwrap();
    rec.matmul(t[0], t[3], t[6], false, true).unwrap();
    assert_eq!(kinds(&rec), ["pair(matmul, matmul)", "op"]);
    // The second reads the first's result: it must wait.
    let mut rec = Recording::new();
    rec.matmul(t[0], t[1], t[4], false, false).unwrap();
    rec.matmul(t[4], t[3], t[5], false, false).unwrap();
    assert_eq!(kinds(&rec), ["op", "op"]);
    // The second overwrites what the first reads.
    let mut rec = Recording::new();
    rec.matmul(t[0], t[1], t[4], false, false).unwrap();
    rec.matmul(t[2], t[3], t[1], false, false).unwrap();
    assert_eq!(kinds(&rec), ["op", "op"]);
    // Both write one tensor.
    let mut rec = Recording::new();
    rec.matmul(t[0], t[1], t[4], false, false).unwrap();
    rec.matmul(t[2], t[3], t[4], false, false).unwrap();
    assert_eq!(kinds(&rec), ["op", "op"]);
    // A product that adds to its result (beta = 1) reads it: not a pair's kind.
    let mut rec = Recording::new();
    rec.matmul(t[0], t[1], t[4], false, false).unwrap();
    rec.matmul_scaled(t[2], t[3], t[5], false, false, 1.0, 1.0)
        .unwrap();
    assert_eq!(kinds(&rec), ["op", "op"]);

    // A weight gradient and an input gradient bind ten buffers: a pair only past WebGPU's 8.
    let ones = e.alloc("ones", 4, 1).unwrap();
    let db = e.alloc("db", 1, 4).unwrap();
    let mut rec = Recording::new();
    rec.matmul(ones, t[0], db, true, false).unwrap();
    rec.matmul(t[0], t[1], t[4], true, false).unwrap();
    rec.matmul(t[0], t[2], t[5], false, true).unwrap();
    rec.activate_grad(Activation::Relu, t[3], t[5], t[6])
        .unwrap();
    assert_eq!(kinds(&rec), ["weight_grad", "input_grad"]);
    assert_eq!(kinds_with(&rec, 10), ["pair(weight_grad, input_grad)"]);
}

/// One side of a pair: a product of one of the three kinds.
#[derive(Clone, Copy, Debug)]
enum Side {
    Matmul { trans_a: bool, trans_b: bool },
    WeightGrad,
    InputGrad { trans_b: bool, f: Activation },
}

impl Side {
    /// Its inputs' values and its outputs' shapes for an m x n result over k terms.
    #[allow(clippy::type_complexity)]
    fn operands(
        self,
        (m, n, k): (usize, usize, usize),
        r: &mut rand_chacha::ChaCha8Rng,
    ) -> (Vec<(usize, usize, Vec<f64>)>, Vec<(usize, usize)>) {
        let orient = |transposed: bool, rows, cols| {
            if transposed {
                (cols, rows)
            } else {
                (rows, cols)
            }
        };
        let random = |r: &mut rand_chacha::ChaCha8Rng, (rows, cols): (usize, usize), scale| {
            (rows, cols, uniform(r, rows * cols, scale))
        };
        match self {
            Side::Matmul { trans_a, trans_b } => (
                vec![
                    random(r, orient(trans_a, m, k), 1.0),
                    random(r, orient(trans_b, k, n), 1.0),
                ],
                vec![(m, n)],
            ),
            // dw (m x n) = g^T h and db (1 x m) = ones^T g, with g k x m and h k x n.
            Side::WeightGrad => (
                vec![
                    random(r, (k, m), 1.0),
                    random(r, (k, n), 1.0),
                    (k, 1, vec![1.0; k]),
                ],
                vec![(m, n), (1, m)],
            ),
            Side::InputGrad { trans_b, .. } => (
                vec![
                    random(r, (m, k), 1.0),
                    random(r, orient(trans_b, k, n), 1.0),
                    random(r, (m, n), 3.0),
                ],
                vec![(m, n), (m, n)],
            ),
        }
    }

    fn record(self, rec: &mut Recording, i: &[Tensor], o: &[Tensor]) {
        match self {
            Side::Matmul { trans_a, trans_b } => {
                rec.matmul(i[0], i[1], o[0], trans_a, trans_b).unwrap();
            }
            Side::WeightGrad => {
                rec.matmul(i[2], i[0], o[1], true, false).unwrap();
                rec.matmul(i[0], i[1], o[0], true, false).unwrap();
            }
            Side::InputGrad { trans_b, f } => {
                rec.matmul(i[0], i[1], o[0], false, trans_b).unwrap();
                rec.activate_grad(f, i[2], o[0], o[1]).unwrap();
            }
        }
    }

    fn tolerance(self, k: usize) -> Tolerance {
        let scale = (k as f64).sqrt() / 3.0;
        let sum = Tolerance::f32_sum(k, scale);
        match self {
            Side::InputGrad { f, .. } => {
                let transcendental = ACTIVATION_TOLERANCE.iter().find(|t| t.0 == f).unwrap().1;
                sum.plus(Tolerance::f32_transcendental(
                    transcendental.max(1.0) * scale,
                ))
            }
            _ => sum,
        }
    }
}

/// Every kind beside every other, transposed every way, on awkward shapes whose tile counts
/// differ (1 x 1 tiles beside 2 x 3, a single row, a single column, k = 1, k not a multiple of 4).
#[test]
fn paired_products_match_the_f64_engine() {
    let mut sides = vec![Side::WeightGrad];
    for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
        sides.push(Side::Matmul { trans_a, trans_b });
    }
    for (i, f) in Activation::ALL.into_iter().enumerate() {
        sides.push(Side::InputGrad {
            trans_b: i % 2 == 1,
            f,
        });
    }
    let shapes = [
        (1, 10, 7),
        (70, 129, 3),
        (33, 1, 65),
        (5, 6, 1),
        (128, 64, 20),
    ];
    for (case, &first) in sides.iter().enumerate() {
        for (offset, &second) in sides.iter().enumerate() {
            let shape_first = shapes[(case + offset) % shapes.len()];
            let shape_second = shapes[(case + 2 * offset + 1) % shapes.len()];
            let mut r = rng((case * 31 + offset) as u64);
            let (mut inputs, mut outputs) = first.operands(shape_first, &mut r);
            let (first_inputs, first_outputs) = (inputs.len(), outputs.len());
            let (more_inputs, more_outputs) = second.operands(shape_second, &mut r);
            inputs.extend(more_inputs);
            outputs.extend(more_outputs);
            let inputs: Vec<(usize, usize, &[f64])> =
                inputs.iter().map(|(r, c, v)| (*r, *c, &v[..])).collect();
            let body = |e: &mut dyn Engine| {
                run_case_with(64, e, &inputs, &outputs, &|rec, i, o| {
                    first.record(rec, &i[..first_inputs], &o[..first_outputs]);
                    second.record(rec, &i[first_inputs..], &o[first_outputs..]);
                })
            };
            let tolerance = first
                .tolerance(shape_first.2)
                .looser(second.tolerance(shape_second.2));
            let what = format!("{first:?} {shape_first:?} beside {second:?} {shape_second:?}");
            check_on_every_engine(&what, tolerance, body);
        }
    }
}
