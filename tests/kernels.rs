//! Every kernel on every engine (CPU f32 always, the GPU where an adapter exists) against the CPU
//! f64 reference, within the tolerance its arithmetic implies. Shapes include the odd ones that
//! break tiling: 1x1x1, 17x33x9, 257x129x65, and a full 1024 x 1024 matmul.

mod common;

use common::{check_on_every_engine, gpu, rng, uniform};
use specdef::engine::cpu::random;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::gpu::lower::MatmulTile;
use specdef::engine::{
    Activation, AdaHessianHyper, AdamHyper, BinaryOp, DampingHyper, DeviceScalar, Engine,
    Recording, ReduceAxis, Reduction, SophiaHyper, UnaryOp,
};
use specdef::tolerance::{Tolerance, rms};

const MATMUL_SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (17, 33, 9),
    (257, 129, 65),
    (64, 64, 64),
    (1024, 1024, 1024),
];

/// Row-major `rows x cols` storage of op(X) when op(X) must be `r x c`.
fn stored_shape(r: usize, c: usize, transposed: bool) -> (usize, usize) {
    if transposed { (c, r) } else { (r, c) }
}

/// Records `c = op(a) op(b)` on seeded inputs and reads c back: the same on every engine.
fn matmul_body(
    (m, n, k): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
) -> impl Fn(&mut dyn Engine) -> Vec<f64> {
    let mut r = rng((m * 31 + n * 7 + k) as u64);
    let (ar, ac) = stored_shape(m, k, trans_a);
    let (br, bc) = stored_shape(k, n, trans_b);
    let a = uniform(&mut r, ar * ac, 1.0);
    let b = uniform(&mut r, br * bc, 1.0);
    move |e: &mut dyn Engine| {
        let ta = e.tensor_from("a", ar, ac, &a).unwrap();
        let tb = e.tensor_from("b", br, bc, &b).unwrap();
        let tc = e.alloc("c", m, n).unwrap();
        let mut rec = Recording::new();
        rec.matmul(ta, tb, tc, trans_a, trans_b).unwrap();
        e.run(&rec).unwrap();
        let out = e.read_one(tc).unwrap();
        [ta, tb, tc].into_iter().for_each(|t| e.free(t));
        out
    }
}

/// Each output is a K-term dot product of terms of size ~1/3.
fn matmul_tolerance(k: usize) -> Tolerance {
    Tolerance::f32_sum(k, (k as f64).sqrt() / 3.0)
}

fn matmul_case(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) {
    let what = format!("matmul {m}x{n}x{k} trans_a={trans_a} trans_b={trans_b}");
    let body = matmul_body((m, n, k), trans_a, trans_b);
    check_on_every_engine(&what, matmul_tolerance(k), body);
}

#[test]
fn matmul_all_shapes_and_transpositions() {
    for (m, n, k) in MATMUL_SHAPES {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                matmul_case(m, n, k, trans_a, trans_b);
            }
        }
    }
}

/// Outputs of 2048 x 1024 and up take the 128x128 tiles (`MatmulTile::for_shape`); these shapes
/// cross every boundary of them: M and N one tile row or column past a multiple of 128, K under
/// one slice of 8, exactly one (nothing to prefetch), and several with a partial last one.
const LARGE_MATMUL_SHAPES: [(usize, usize, usize); 4] = [
    (2051, 1029, 37),
    (2049, 1031, 3),
    (2048, 1024, 8),
    (2176, 1153, 9),
];

#[test]
fn large_tiles_are_chosen_by_shape_and_match_the_f64_engine() {
    use specdef::engine::gpu::kernels::Kernel;
    use specdef::engine::gpu::plan::{PlanLimits, lower_recording};
    // The rule: at least 128 workgroups of 128 x 128, both sides at least 1024.
    for ((m, n), large) in [
        ((2048, 1024), true),
        ((1024, 2048), true),
        ((2047, 1024), true),
        ((1920, 1024), false),
        ((1024, 1024), false),
        ((1, 1_000_000), false),
        ((1023, 1_000_000), false),
        ((1024, 16384), true),
    ] {
        assert_eq!(
            MatmulTile::for_shape(m, n, 64) == MatmulTile::Large,
            large,
            "{m} x {n}"
        );
    }
    let mut e = CpuEngine32::new();
    for (m, n, k) in LARGE_MATMUL_SHAPES {
        let (a, b, c) = (
            e.alloc("a", m, k).unwrap(),
            e.alloc("b", k, n).unwrap(),
            e.alloc("c", m, n).unwrap(),
        );
        let mut rec = Recording::new();
        rec.matmul(a, b, c, false, false).unwrap();
        let plan = lower_recording(&rec, Default::default(), PlanLimits::WEBGPU).unwrap();
        let kernels: Vec<Kernel> = plan.iter().map(|d| d.kernel).collect();
        let large = MatmulTile::Large.kernel(false, false);
        assert_eq!(kernels, [large], "{m}x{n}x{k}");
        let grid = [n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1];
        assert_eq!(plan[0].workgroups, grid, "{m}x{n}x{k}");
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                matmul_case(m, n, k, trans_a, trans_b);
            }
        }
    }
}

/// Small outputs over a long K are split along it (`MatmulTile::for_shape`, `split_k`): a
/// split pass with a grid layer per split into the scratch buffer, then the sum pass; the
/// splits' partials sum to the f64 engine's product within the stated tolerance.
#[test]
fn small_outputs_over_a_long_k_are_split_along_it() {
    use specdef::engine::gpu::lower::{SPLIT_K_MAX_TILES, SPLIT_K_MIN_LEN, split_k};
    use specdef::engine::gpu::plan::{PlanLimits, lower_recording};
    // The rule: at most SPLIT_K_MAX_TILES 64x64 tiles, K at least twice SPLIT_K_MIN_LEN;
    // about 64 workgroups, no split shorter than SPLIT_K_MIN_LEN.
    assert_eq!((SPLIT_K_MAX_TILES, SPLIT_K_MIN_LEN), (16, 256));
    for ((m, n, k), splits) in [
        ((128, 10, 2048), Some(8)),
        ((128, 10, 511), None),
        ((128, 10, 512), Some(2)),
        ((256, 128, 4096), Some(2)),
        ((256, 256, 4096), None),
        ((257, 256, 4096), None),
        ((1, 1, 100_000), Some(64)),
        ((128, 256, 256), None),
    ] {
        assert_eq!(split_k(m, n, k), splits, "{m} x {n} x {k}");
        let expected = splits.map_or(MatmulTile::Small, |splits| MatmulTile::SplitK { splits });
        assert_eq!(MatmulTile::for_shape(m, n, k), expected, "{m} x {n} x {k}");
    }
    let mut e = CpuEngine32::new();
    let (a, b, c) = (
        e.alloc("a", 128, 2048).unwrap(),
        e.alloc("b", 2048, 10).unwrap(),
        e.alloc("c", 128, 10).unwrap(),
    );
    let mut rec = Recording::new();
    rec.matmul(a, b, c, false, false).unwrap();
    let plan = lower_recording(&rec, Default::default(), PlanLimits::WEBGPU).unwrap();
    let split = MatmulTile::SplitK { splits: 8 }.kernel(false, false);
    assert_eq!(plan.len(), 2);
    assert_eq!((plan[0].kernel, plan[0].workgroups), (split, [1, 2, 8]));
    assert_eq!(plan[1].kernel.entry_point(), "matmul_split_k_sum");
    for (m, n, k) in [(128, 10, 2048), (1, 1, 5000), (70, 33, 1000)] {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true)] {
            matmul_case(m, n, k, trans_a, trans_b);
        }
    }
}

/// Every configuration computes any shape: each forced on the GPU over the awkward shapes
/// (M = 1, N = 10, K not a multiple of 4, skinny both ways, one tile, several) and a large one,
/// against the f64 engine; split along K too, also where K is shorter than the splits asked for
/// (fewer are made), wherever the partials fit the scratch buffer.
#[test]
fn either_tile_configuration_computes_any_shape() {
    use specdef::engine::gpu::lower::SCRATCH_LEN;
    let Some(mut gpu) = gpu() else {
        return;
    };
    let shapes = (MATMUL_SHAPES.iter().copied())
        .chain([(1, 10, 7), (3, 300, 5), (300, 3, 130), (129, 129, 129)])
        .chain([LARGE_MATMUL_SHAPES[0]]);
    let configurations = [
        MatmulTile::Small,
        MatmulTile::Large,
        MatmulTile::SplitK { splits: 2 },
        MatmulTile::SplitK { splits: 3 },
    ];
    for tile in configurations {
        gpu.set_matmul_tile(Some(tile));
        let split = matches!(tile, MatmulTile::SplitK { .. });
        for (m, n, k) in shapes.clone() {
            if split && 3 * m * n > SCRATCH_LEN {
                continue;
            }
            for (trans_a, trans_b) in [(false, false), (true, true), (false, true)] {
                let body = matmul_body((m, n, k), trans_a, trans_b);
                let reference = body(&mut CpuEngine64::new());
                if let Err(e) = matmul_tolerance(k).check(&body(&mut *gpu), &reference) {
                    panic!("{tile:?} tiles, {m}x{n}x{k} trans_a={trans_a} trans_b={trans_b}: {e}");
                }
            }
        }
    }
    gpu.set_matmul_tile(None);
}

#[test]
fn matmul_scaled_accumulates_and_ignores_old_c_when_beta_is_zero() {
    // A small product, one in large tiles and one split along K.
    for (m, n, k) in [(33, 70, 19), (2051, 1029, 11), (100, 10, 1500)] {
        matmul_scaled_case(m, n, k);
    }
}

fn matmul_scaled_case(m: usize, n: usize, k: usize) {
    let mut r = rng(5);
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let c0 = uniform(&mut r, m * n, 1.0);
    let scale = (k as f64).sqrt();
    for (alpha, beta) in [(0.5, -2.0), (1.0, 1.0), (-3.0, 0.0)] {
        let body = |e: &mut dyn Engine| {
            let ta = e.tensor_from("a", m, k, &a).unwrap();
            let tb = e.tensor_from("b", k, n, &b).unwrap();
            // With beta = 0 the old C holds NaN: it must not leak into the result.
            let old: Vec<f64> = if beta == 0.0 {
                vec![f64::NAN; m * n]
            } else {
                c0.clone()
            };
            let tc = e.tensor_from("c", m, n, &old).unwrap();
            let mut rec = Recording::new();
            rec.matmul_scaled(ta, tb, tc, false, false, alpha, beta)
                .unwrap();
            e.run(&rec).unwrap();
            e.read_one(tc).unwrap()
        };
        let tolerance = Tolerance::f32_sum(k + 1, scale * 3.0);
        check_on_every_engine(
            &format!("matmul {m}x{n}x{k} alpha={alpha} beta={beta}"),
            tolerance,
            body,
        );
    }
}

/// Inputs for activations: a spread of values, exact zeros, and large magnitudes where a naive
/// tanh overflows.
fn activation_inputs(len: usize) -> Vec<f64> {
    let mut values = uniform(&mut rng(11), len, 4.0);
    values[..8].copy_from_slice(&[0.0, -0.0, 20.0, -20.0, 100.0, -100.0, 1e-4, -1e-4]);
    values
}

#[test]
fn activations_forward_and_backward() {
    let (rows, cols) = (257, 129);
    let x = activation_inputs(rows * cols);
    let grad_y = uniform(&mut rng(12), rows * cols, 1.0);
    for f in Activation::ALL {
        let forward = |e: &mut dyn Engine| {
            let tx = e.tensor_from("x", rows, cols, &x).unwrap();
            let ty = e.alloc("y", rows, cols).unwrap();
            let mut rec = Recording::new();
            rec.activate(f, tx, ty).unwrap();
            e.run(&rec).unwrap();
            e.read_one(ty).unwrap()
        };
        let backward = |e: &mut dyn Engine| {
            let tx = e.tensor_from("x", rows, cols, &x).unwrap();
            let tg = e.tensor_from("grad_y", rows, cols, &grad_y).unwrap();
            let out = e.alloc("grad_x", rows, cols).unwrap();
            let mut rec = Recording::new();
            rec.activate_grad(f, tx, tg, out).unwrap();
            e.run(&rec).unwrap();
            e.read_one(out).unwrap()
        };
        let tolerance = match f {
            // relu and its derivative are exact on the rounded input.
            Activation::Relu => Tolerance::f32_rounding().plus(Tolerance::f32_elementwise(1)),
            Activation::Gelu | Activation::Tanh => Tolerance::f32_transcendental(1.0),
            // erfc's fit (1.2e-7 relative) and an exp in the derivative.
            Activation::GeluErf => Tolerance::f32_transcendental(2.0),
        };
        check_on_every_engine(&format!("activate {}", f.name()), tolerance, forward);
        check_on_every_engine(&format!("activate_grad {}", f.name()), tolerance, backward);
    }
}

#[test]
fn activation_gradient_tangents() {
    let (rows, cols) = (257, 129);
    let len = rows * cols;
    let x = activation_inputs(len);
    let mut r = rng(13);
    let grad_y = uniform(&mut r, len, 1.0);
    let dx = uniform(&mut r, len, 1.0);
    let d_grad_y = uniform(&mut r, len, 1.0);
    for f in Activation::ALL {
        let body = |e: &mut dyn Engine| {
            let tx = e.tensor_from("x", rows, cols, &x).unwrap();
            let tg = e.tensor_from("grad_y", rows, cols, &grad_y).unwrap();
            let tdx = e.tensor_from("dx", rows, cols, &dx).unwrap();
            let tdg = e.tensor_from("d_grad_y", rows, cols, &d_grad_y).unwrap();
            let out = e.alloc("out", rows, cols).unwrap();
            let mut rec = Recording::new();
            rec.activate_grad_jvp(f, tx, tg, tdx, tdg, out).unwrap();
            e.run(&rec).unwrap();
            let values = e.read_one(out).unwrap();
            [tx, tg, tdx, tdg, out].into_iter().for_each(|t| e.free(t));
            values
        };
        let tolerance = match f {
            // d_grad_y * f'(x) with f' in {0, 1}, plus an exact zero: one product, one sum.
            Activation::Relu => Tolerance::f32_elementwise(2),
            // An absolute error of t = tanh(..) moves the result by |df'/dt| + |df''/dt| times
            // it (|grad_y|, |dx|, |d_grad_y| <= 1): at most 52 for GELU on |x| <= 4, where
            // df''/dt carries x u'^2 (u' = sqrt(2/pi) (1 + 0.134 x^2)), and at most 6 for tanh
            // (|2 t| + |6 t^2 - 2|). At the inputs beyond 4 (+-20, +-100) tanh is +-1 in f32 and
            // both terms vanish.
            Activation::Gelu => Tolerance::f32_transcendental(52.0),
            Activation::Tanh => Tolerance::f32_transcendental(6.0),
            // Phi and phi each to a few ulp, times |x| <= 4 in x phi and x^2 phi.
            Activation::GeluErf => Tolerance::f32_transcendental(16.0),
        };
        check_on_every_engine(&format!("activate_grad_jvp {}", f.name()), tolerance, body);
    }
}

#[test]
fn binary_scale_axpy_fill() {
    let (rows, cols) = (17, 33);
    let mut r = rng(21);
    let a = uniform(&mut r, rows * cols, 2.0);
    let b = uniform(&mut r, rows * cols, 2.0);
    // Two-term sums of values of size ~1: cancellation needs an absolute allowance.
    let two_terms = Tolerance::f32_sum(2, 2.0);
    for op in BinaryOp::ALL {
        let body = |e: &mut dyn Engine| {
            let ta = e.tensor_from("a", rows, cols, &a).unwrap();
            let tb = e.tensor_from("b", rows, cols, &b).unwrap();
            let out = e.alloc("out", rows, cols).unwrap();
            let mut rec = Recording::new();
            rec.binary(op, ta, tb, out).unwrap();
            e.run(&rec).unwrap();
            e.read_one(out).unwrap()
        };
        check_on_every_engine(&format!("binary {}", op.name()), two_terms, body);
    }
    let scale = |e: &mut dyn Engine| {
        let ta = e.tensor_from("a", rows, cols, &a).unwrap();
        let out = e.alloc("out", rows, cols).unwrap();
        let mut rec = Recording::new();
        rec.scale(-0.37, ta, out).unwrap();
        e.run(&rec).unwrap();
        e.read_one(out).unwrap()
    };
    check_on_every_engine("scale", Tolerance::f32_elementwise(3), scale);
    let axpy = |e: &mut dyn Engine| {
        let ta = e.tensor_from("a", rows, cols, &a).unwrap();
        let tb = e.tensor_from("b", rows, cols, &b).unwrap();
        let mut rec = Recording::new();
        rec.axpy(1.5e-3, ta, tb).unwrap();
        e.run(&rec).unwrap();
        e.read_one(tb).unwrap()
    };
    check_on_every_engine("axpy", two_terms, axpy);
    let fill = |e: &mut dyn Engine| {
        let out = e.alloc("out", rows, cols).unwrap();
        let mut rec = Recording::new();
        rec.fill(0.125, out);
        e.run(&rec).unwrap();
        e.read_one(out).unwrap()
    };
    check_on_every_engine("fill", Tolerance::EXACT, fill);
}

#[test]
fn elementwise_beyond_one_grid_dimension() {
    // 65535 * 256 + 1000 elements need a second row of workgroups.
    let len = 65_535 * 256 + 1000;
    let x: Vec<f64> = (0..len).map(|i| (i % 1000) as f64 - 500.0).collect();
    let body = |e: &mut dyn Engine| {
        let tx = e.tensor_from("x", 1, len, &x).unwrap();
        let out = e.alloc("out", 1, len).unwrap();
        let mut rec = Recording::new();
        rec.scale(2.0, tx, out).unwrap();
        e.run(&rec).unwrap();
        let values = e.read_one(out).unwrap();
        e.free(tx);
        e.free(out);
        values
    };
    check_on_every_engine("scale over a 2-D grid", Tolerance::EXACT, body);
}

#[test]
fn reductions_per_row_and_whole() {
    let shapes = [(1, 1), (17, 33), (257, 129), (3, 5000), (1000, 1000)];
    for (rows, cols) in shapes {
        let x = uniform(&mut rng((rows * cols) as u64), rows * cols, 1.0);
        for reduction in Reduction::ALL {
            for axis in [ReduceAxis::PerRow, ReduceAxis::Whole] {
                let out_rows = if axis == ReduceAxis::PerRow { rows } else { 1 };
                let body = |e: &mut dyn Engine| {
                    let tx = e.tensor_from("x", rows, cols, &x).unwrap();
                    let out = e.alloc("out", out_rows, 1).unwrap();
                    let mut rec = Recording::new();
                    rec.reduce(reduction, axis, tx, out).unwrap();
                    e.run(&rec).unwrap();
                    e.read_one(out).unwrap()
                };
                let terms = if axis == ReduceAxis::PerRow {
                    cols
                } else {
                    rows * cols
                };
                let tolerance = match reduction {
                    // Partial sums of uniform [-1, 1] values grow like sqrt(terms / 3).
                    Reduction::Sum => Tolerance::f32_sum(terms, (terms as f64 / 3.0).sqrt()),
                    // Positive terms: the partial sums are at most the result.
                    Reduction::SumOfSquares => Tolerance::f32_sum(terms, terms as f64 / 3.0),
                    Reduction::Max => Tolerance::f32_rounding(),
                };
                let what = format!("reduce {} {axis:?} over {rows}x{cols}", reduction.name());
                check_on_every_engine(&what, tolerance, body);
            }
        }
    }
}

#[test]
fn softmax_cross_entropy_loss_and_gradient() {
    for (rows, cols) in [(1, 1), (17, 10), (128, 10), (5, 1000)] {
        let mut r = rng((rows + cols) as u64);
        let mut logits = uniform(&mut r, rows * cols, 5.0);
        // Large logits must not overflow exp.
        logits[0] = 90.0;
        let labels: Vec<f64> = (0..rows).map(|i| ((i * 7) % cols) as f64).collect();
        let body = |e: &mut dyn Engine| {
            let tl = e.tensor_from("logits", rows, cols, &logits).unwrap();
            let ty = e.tensor_from("labels", rows, 1, &labels).unwrap();
            let loss = e.alloc("loss", rows, 1).unwrap();
            let grad = e.alloc("grad", rows, cols).unwrap();
            let mut rec = Recording::new();
            rec.softmax_cross_entropy(tl, ty, loss, grad, 1.0 / rows as f64)
                .unwrap();
            e.run(&rec).unwrap();
            let mut values = e.read_one(loss).unwrap();
            values.extend(e.read_one(grad).unwrap());
            values
        };
        // exp, a cols-term sum and a log; losses are of size ~5, gradients of size 1/rows.
        let tolerance = Tolerance::f32_transcendental(1.0).plus(Tolerance::f32_sum(cols, 5.0));
        check_on_every_engine(
            &format!("softmax_cross_entropy {rows}x{cols}"),
            tolerance,
            body,
        );
    }
}

#[test]
fn softmax_cross_entropy_out_of_range_label_gives_nan() {
    let (rows, cols) = (3, 4);
    let logits = uniform(&mut rng(3), rows * cols, 1.0);
    let labels = [0.0, 4.0, -1.0];
    let body = |e: &mut dyn Engine| {
        let tl = e.tensor_from("logits", rows, cols, &logits).unwrap();
        let ty = e.tensor_from("labels", rows, 1, &labels).unwrap();
        let loss = e.alloc("loss", rows, 1).unwrap();
        let grad = e.alloc("grad", rows, cols).unwrap();
        let mut rec = Recording::new();
        rec.softmax_cross_entropy(tl, ty, loss, grad, 1.0).unwrap();
        e.run(&rec).unwrap();
        let values = e.read_one(loss).unwrap();
        assert!(values[0].is_finite(), "a valid label gives a finite loss");
        assert!(values[1].is_nan() && values[2].is_nan(), "{values:?}");
        values
    };
    check_on_every_engine(
        "softmax_cross_entropy bad labels",
        Tolerance::f32_transcendental(1.0),
        body,
    );
}

#[test]
fn softmax_cross_entropy_tangent() {
    for (rows, cols) in [(1, 1), (17, 10), (128, 10), (5, 1000)] {
        let mut r = rng((rows * cols + 1) as u64);
        let mut logits = uniform(&mut r, rows * cols, 5.0);
        // Large logits must not overflow exp.
        logits[0] = 90.0;
        let d_logits = uniform(&mut r, rows * cols, 1.0);
        let labels: Vec<f64> = (0..rows).map(|i| ((i * 7) % cols) as f64).collect();
        let grad_scale = 1.0 / rows as f64;
        let body = |e: &mut dyn Engine| {
            let tl = e.tensor_from("logits", rows, cols, &logits).unwrap();
            let ty = e.tensor_from("labels", rows, 1, &labels).unwrap();
            let td = e.tensor_from("d_logits", rows, cols, &d_logits).unwrap();
            let d_loss = e.alloc("d_loss", rows, 1).unwrap();
            let d_grad = e.alloc("d_grad", rows, cols).unwrap();
            let mut rec = Recording::new();
            rec.softmax_cross_entropy_jvp(tl, ty, td, d_loss, d_grad, grad_scale)
                .unwrap();
            e.run(&rec).unwrap();
            e.read(&[d_loss, d_grad]).unwrap().concat()
        };
        // exp, cols-term sums and a division; s is an average of d_logits (|s| <= 1), d_loss is
        // at most 2 and d_grad of size grad_scale.
        let tolerance = Tolerance::f32_transcendental(1.0).plus(Tolerance::f32_sum(cols, 2.0));
        check_on_every_engine(
            &format!("softmax_cross_entropy_jvp {rows}x{cols}"),
            tolerance,
            body,
        );
    }
}

#[test]
fn softmax_cross_entropy_tangent_of_an_out_of_range_label_is_nan() {
    let (rows, cols) = (3, 4);
    let logits = uniform(&mut rng(4), rows * cols, 1.0);
    let d_logits = uniform(&mut rng(5), rows * cols, 1.0);
    let labels = [0.0, 4.0, -1.0];
    let body = |e: &mut dyn Engine| {
        let tl = e.tensor_from("logits", rows, cols, &logits).unwrap();
        let ty = e.tensor_from("labels", rows, 1, &labels).unwrap();
        let td = e.tensor_from("d_logits", rows, cols, &d_logits).unwrap();
        let d_loss = e.alloc("d_loss", rows, 1).unwrap();
        let d_grad = e.alloc("d_grad", rows, cols).unwrap();
        let mut rec = Recording::new();
        rec.softmax_cross_entropy_jvp(tl, ty, td, d_loss, d_grad, 1.0)
            .unwrap();
        e.run(&rec).unwrap();
        let values = e.read(&[d_loss, d_grad]).unwrap();
        let name = e.info().engine;
        assert!(values[0][0].is_finite(), "{name}: a valid label");
        assert!(
            values[0][1..].iter().all(|v| v.is_nan()),
            "{name}: {values:?}"
        );
        assert!(values[1][..cols].iter().all(|v| v.is_finite()), "{name}");
        assert!(values[1][cols..].iter().all(|v| v.is_nan()), "{name}");
        values.concat()
    };
    check_on_every_engine(
        "softmax_cross_entropy_jvp bad labels",
        Tolerance::f32_transcendental(1.0).plus(Tolerance::f32_sum(cols, 2.0)),
        body,
    );
}

#[test]
fn transpose_any_shape() {
    for (rows, cols) in [(1, 1), (17, 33), (257, 129), (1024, 1024)] {
        let x = uniform(&mut rng(7), rows * cols, 1.0);
        let body = |e: &mut dyn Engine| {
            let tx = e.tensor_from("x", rows, cols, &x).unwrap();
            let out = e.alloc("out", cols, rows).unwrap();
            let mut rec = Recording::new();
            rec.transpose(tx, out).unwrap();
            e.run(&rec).unwrap();
            e.read_one(out).unwrap()
        };
        check_on_every_engine(
            &format!("transpose {rows}x{cols}"),
            Tolerance::f32_rounding(),
            body,
        );
    }
}

#[test]
fn results_are_bit_identical_run_to_run() {
    let x = uniform(&mut rng(99), 1000 * 1000, 1.0);
    let body = |e: &mut dyn Engine| -> Vec<f64> {
        let tx = e.tensor_from("x", 1000, 1000, &x).unwrap();
        let out = e.alloc("out", 1, 1).unwrap();
        let mut rec = Recording::new();
        rec.reduce(Reduction::Sum, ReduceAxis::Whole, tx, out)
            .unwrap();
        e.run(&rec).unwrap();
        let first = e.read_one(out).unwrap();
        e.run(&rec).unwrap();
        let second = e.read_one(out).unwrap();
        assert_eq!(
            first[0].to_bits(),
            second[0].to_bits(),
            "on {}",
            e.info().engine
        );
        first
    };
    let scale = (1e6f64 / 3.0).sqrt();
    check_on_every_engine(
        "repeated whole sum",
        Tolerance::f32_sum(1_000_000, scale),
        body,
    );
    let _ = rms(&x);
}

#[test]
fn optimizer_updates_over_several_steps() {
    let (rows, cols) = (17, 33);
    let len = rows * cols;
    let p0 = uniform(&mut rng(31), len, 1.0);
    let grads: Vec<Vec<f64>> = (0..5)
        .map(|s| uniform(&mut rng(40 + s), len, 1.0))
        .collect();
    for nesterov in [false, true] {
        let body = |e: &mut dyn Engine| {
            let p = e.tensor_from("param", rows, cols, &p0).unwrap();
            let v = e
                .tensor_from("velocity", rows, cols, &vec![0.0; len])
                .unwrap();
            let g = e.alloc("grad", rows, cols).unwrap();
            for grad in &grads {
                e.upload(g, grad).unwrap();
                let mut rec = Recording::new();
                rec.momentum(p, g, v, 0.05, 0.9, nesterov).unwrap();
                e.run(&rec).unwrap();
            }
            e.read_one(p).unwrap()
        };
        let what = format!("momentum nesterov={nesterov}");
        check_on_every_engine(&what, Tolerance::f32_sum(3 * grads.len(), 1.0), body);
    }
    let hyper = AdamHyper {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let body = |e: &mut dyn Engine| {
        let p = e.tensor_from("param", rows, cols, &p0).unwrap();
        let m = e.tensor_from("m", rows, cols, &vec![0.0; len]).unwrap();
        let v = e.tensor_from("v", rows, cols, &vec![0.0; len]).unwrap();
        let g = e.alloc("grad", rows, cols).unwrap();
        for (step, grad) in grads.iter().enumerate() {
            e.upload(g, grad).unwrap();
            let mut rec = Recording::new();
            rec.adam(p, g, (m, v), hyper, step as u32 + 1).unwrap();
            e.run(&rec).unwrap();
        }
        e.read_one(p).unwrap()
    };
    // Each step moves a parameter by about lr; sqrt and division add a few roundings.
    check_on_every_engine("adamw", Tolerance::f32_transcendental(1.0), body);
}

#[test]
fn jacobi_rounds_match_the_f64_twin() {
    // Odd column count (a dummy player), a sweep and a half of rounds.
    let (columns, len) = (9, 17);
    let w = uniform(&mut rng(61), columns * len, 1.0);
    let identity: Vec<f64> = (0..columns * columns)
        .map(|i| if i / columns == i % columns { 1.0 } else { 0.0 })
        .collect();
    let body = |e: &mut dyn Engine| {
        let rows = e.tensor_from("rows", columns, len, &w).unwrap();
        let basis = e.tensor_from("basis", columns, columns, &identity).unwrap();
        let mut rec = Recording::new();
        for round in 0..12 {
            rec.jacobi_round(rows, basis, round).unwrap();
        }
        e.run(&rec).unwrap();
        e.read(&[rows, basis]).unwrap().concat()
    };
    // Each round is a 17-term dot product and a rotation; twelve of them compound.
    check_on_every_engine("jacobi rounds", Tolerance::f32_sum(len * 12, 1.0), body);
}

/// (name, coef, num, den, sqrt): num and den are the values of 1x1 tensors, None where absent.
/// Every combination, and a negative ratio under the square root (NaN on every engine).
type DeviceScalarCase = (&'static str, f64, Option<f64>, Option<f64>, bool);
const DEVICE_SCALAR_CASES: [DeviceScalarCase; 8] = [
    ("constant", -0.37, None, None, false),
    ("num", 0.5, Some(3.25), None, false),
    ("den", 2.0, None, Some(0.7), false),
    ("num/den", -1.5, Some(3.25), Some(0.7), false),
    ("sqrt(num/den)", 0.75, Some(3.25), Some(0.7), true),
    ("1/sqrt(den)", 1.0, None, Some(0.7), true),
    ("sqrt(num)", 1.0, Some(3.25), None, true),
    ("sqrt of a negative ratio", 1.0, Some(-2.0), Some(0.7), true),
];

#[test]
fn axpy_and_scale_by_device_scalars() {
    // More than one workgroup, and a length that is not a multiple of 256.
    let (rows, cols) = (17, 33);
    let mut r = rng(71);
    let a = uniform(&mut r, rows * cols, 2.0);
    let b = uniform(&mut r, rows * cols, 2.0);
    for (name, coef, num, den, sqrt) in DEVICE_SCALAR_CASES {
        for axpy in [false, true] {
            let body = |e: &mut dyn Engine| {
                let ta = e.tensor_from("a", rows, cols, &a).unwrap();
                let tb = e.tensor_from("b", rows, cols, &b).unwrap();
                let mut scalar_tensor = |label, value: Option<f64>| {
                    value.map(|v| e.tensor_from(label, 1, 1, &[v]).unwrap())
                };
                let scalar = DeviceScalar {
                    coef,
                    num: scalar_tensor("num", num),
                    den: scalar_tensor("den", den),
                    sqrt,
                };
                let mut rec = Recording::new();
                if axpy {
                    rec.axpy_device(scalar, ta, tb).unwrap();
                } else {
                    rec.scale_device(scalar, ta, tb).unwrap();
                }
                e.run(&rec).unwrap();
                let values = e.read_one(tb).unwrap();
                let tensors = [ta, tb].into_iter().chain(scalar.tensors());
                tensors.for_each(|t| e.free(t));
                values
            };
            let kernel = if axpy { "axpy_device" } else { "scale_device" };
            // The scalar takes up to three roundings (ratio, sqrt, product), its product with x
            // one more; axpy adds a two-term sum of values of size ~2 that may cancel.
            let tolerance = if axpy {
                Tolerance::f32_elementwise(4).plus(Tolerance::f32_sum(2, 2.0))
            } else {
                Tolerance::f32_elementwise(4)
            };
            check_on_every_engine(&format!("{kernel} by {name}"), tolerance, body);
        }
    }
}

/// A symmetric `n x n` matrix with eigenvalues `spectrum` and random eigenvectors: `Q diag Q^T`
/// with `Q` the Householder reflection `I - 2 w w^T / (w^T w)` of a random `w`.
fn symmetric_with_spectrum(spectrum: &[f64], seed: u64) -> Vec<f64> {
    let n = spectrum.len();
    let w = uniform(&mut rng(seed), n, 1.0);
    let ww: f64 = w.iter().map(|v| v * v).sum();
    let q = |i: usize, j: usize| f64::from(u8::from(i == j)) - 2.0 * w[i] * w[j] / ww;
    (0..n * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            (0..n).map(|l| q(i, l) * spectrum[l] * q(j, l)).sum()
        })
        .collect()
}

#[test]
fn power_iteration_runs_in_one_submission_with_device_scalars() {
    // Dominant eigenvalue 2, the next largest in magnitude -1: the error shrinks by 1/2 per
    // iteration.
    let n = 24;
    let iterations = 20;
    let mut spectrum = vec![2.0, -1.0];
    spectrum.extend(uniform(&mut rng(81), n - 2, 0.9));
    let ratio: f64 = 0.5;
    let a = symmetric_with_spectrum(&spectrum, 82);
    let v0 = uniform(&mut rng(83), n, 1.0);

    // The dominant eigenvector, directly from the matrix (faer's symmetric eigensolver).
    let matrix = faer::Mat::from_fn(n, n, |i, j| a[i * n + j]);
    let eigen = matrix.self_adjoint_eigen(faer::Side::Lower).unwrap();
    let values = matrix.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
    let dominant = (0..n)
        .max_by(|&i, &j| values[i].abs().total_cmp(&values[j].abs()))
        .unwrap();
    Tolerance::new(1e-12, 1e-12)
        .check(&[values[dominant]], &[2.0])
        .expect("the constructed spectrum");
    let u: Vec<f64> = (0..n).map(|i| eigen.U()[(i, dominant)]).collect();
    // Power iteration keeps the sign of v0's component along u (the eigenvalue is positive).
    let v0_norm = v0.iter().map(|v| v * v).sum::<f64>().sqrt();
    let cos0 = v0.iter().zip(&u).map(|(v, u)| v * u).sum::<f64>() / v0_norm;
    let expected: Vec<f64> = u.iter().map(|u| u * cos0.signum()).collect();
    // The angle to u after k iterations: tan(theta_k) <= ratio^k tan(theta_0), which bounds
    // every component's error. f32 adds each iteration's rounding (an n-term product whose
    // results, the components of v, are of size 1/sqrt(n), then a sqrt, a division and a
    // product), damped by `ratio` per iteration: at most twice one iteration's in all.
    let tan0 = (1.0 - cos0 * cos0).sqrt() / cos0.abs();
    let convergence = Tolerance::new(ratio.powi(iterations) * tan0, 0.0);
    let one_iteration =
        Tolerance::f32_sum(n, 1.0 / (n as f64).sqrt()).plus(Tolerance::f32_elementwise(3));
    let rounding = one_iteration.plus(one_iteration);

    let body = |e: &mut dyn Engine| {
        let ta = e.tensor_from("a", n, n, &a).unwrap();
        let v = e.tensor_from("v", n, 1, &v0).unwrap();
        let w = e.alloc("w", n, 1).unwrap();
        let sum_of_squares = e.alloc("sum_of_squares", 1, 1).unwrap();
        let mut rec = Recording::new();
        for _ in 0..iterations {
            rec.matmul(ta, v, w, false, false).unwrap();
            rec.reduce(
                Reduction::SumOfSquares,
                ReduceAxis::Whole,
                w,
                sum_of_squares,
            )
            .unwrap();
            rec.scale_device(DeviceScalar::inverse_sqrt(1.0, sum_of_squares), w, v)
                .unwrap();
        }
        assert_eq!(rec.len(), 3 * iterations as usize);
        e.run(&rec).unwrap();
        let values = e.read_one(v).unwrap();
        let name = e.info().engine;
        convergence
            .plus(rounding)
            .check(&values, &expected)
            .unwrap_or_else(|err| {
                panic!("power iteration on {name} against the eigenvector: {err}")
            });
        [ta, v, w, sum_of_squares]
            .into_iter()
            .for_each(|t| e.free(t));
        values
    };
    check_on_every_engine("power iteration", rounding, body);
}

/// Runs `body` on the f32 engines: the CPU f32 twin always, the GPU where there is one.
fn on_f32_engines(mut body: impl FnMut(&mut dyn Engine)) {
    body(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        body(&mut *gpu);
    }
}

fn rademacher_values(
    e: &mut dyn Engine,
    rows: usize,
    cols: usize,
    seed: u64,
    stream: u64,
) -> Vec<f64> {
    let out = e.alloc("probe", rows, cols).unwrap();
    let mut rec = Recording::new();
    rec.rademacher(out, seed, stream);
    e.run(&rec).unwrap();
    let values = e.read_one(out).unwrap();
    e.free(out);
    values
}

/// Rademacher probes are the same bits on every engine (the hash is u32 arithmetic), balanced,
/// uncorrelated between neighbours, and different for different streams and seeds (including
/// seeds and streams that differ only in their high 32-bit words).
#[test]
fn rademacher_probes_are_identical_on_every_engine_and_balanced() {
    let (rows, cols) = (100, 100);
    let len = rows * cols;
    let seed = 0x0123_4567_89ab_cdef;
    let cases = [
        (seed, 0),
        (seed, 1),
        (seed, 1 << 40),
        (seed ^ (1 << 50), 0),
        (0, 0),
    ];
    let mut draws = Vec::new();
    for (seed, stream) in cases {
        let body = |e: &mut dyn Engine| rademacher_values(e, rows, cols, seed, stream);
        check_on_every_engine(
            &format!("rademacher seed={seed:#x} stream={stream:#x}"),
            Tolerance::EXACT,
            body,
        );
        let values = body(&mut CpuEngine64::new());
        assert!(values.iter().all(|&v| v == 1.0 || v == -1.0));
        // Mean and lag-1 correlation: standard deviation 1/sqrt(10^4) = 0.01 each, so 0.05 is
        // five standard deviations.
        let mean = values.iter().sum::<f64>() / len as f64;
        assert!(mean.abs() < 0.05, "mean {mean} for {seed:#x}/{stream:#x}");
        let lag1 = values.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (len - 1) as f64;
        assert!(lag1.abs() < 0.05, "lag-1 correlation {lag1}");
        draws.push(values);
    }
    for i in 0..draws.len() {
        for j in 0..i {
            // Independent vectors agree on half their entries (standard deviation 0.005).
            let agree = draws[i]
                .iter()
                .zip(&draws[j])
                .filter(|(a, b)| a == b)
                .count();
            let fraction = agree as f64 / len as f64;
            assert!(
                (0.46..0.54).contains(&fraction),
                "cases {i} and {j} agree on {fraction} of their entries"
            );
        }
    }
}

/// The inverse-CDF margin of each row: how far (as a probability) the row's uniform lies from
/// the nearest boundary of the f64 softmax CDF, computed independently of the kernels.
fn cdf_margins(logits: &[f64], cols: usize, seed: u64, stream: u64) -> Vec<f64> {
    logits
        .chunks(cols)
        .enumerate()
        .map(|(r, row)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = row.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let u = random::uniform(seed, stream, r as u32);
            let mut cumulative = 0.0;
            let mut margin = f64::INFINITY;
            for w in &weights[..cols - 1] {
                cumulative += w / total;
                margin = margin.min((u - cumulative).abs());
            }
            margin
        })
        .collect()
}

fn sampled_labels(
    e: &mut dyn Engine,
    logits: &[f64],
    rows: usize,
    cols: usize,
    seed: u64,
    stream: u64,
) -> Vec<f64> {
    let tl = e.tensor_from("logits", rows, cols, logits).unwrap();
    let labels = e.alloc("labels", rows, 1).unwrap();
    let mut rec = Recording::new();
    rec.sample_categorical(tl, labels, seed, stream).unwrap();
    e.run(&rec).unwrap();
    let values = e.read_one(labels).unwrap();
    e.free(tl);
    e.free(labels);
    values
}

/// The f32 engines draw the f64 engine's labels wherever the row's uniform is more than 1e-5
/// from a CDF boundary (f32 rounding of exp and of the running sums moves a boundary by about
/// 1e-6 at most in these rows); nearer a boundary a label may differ, and those rows are a tiny
/// fraction (at most 2e-5 (cols - 1) of them in expectation).
#[test]
fn sampled_labels_agree_across_engines_away_from_cdf_boundaries() {
    let (seed, stream) = (0xfeed_5eed_0000_0001, 7);
    // 1000 classes cut into 64 chunks of 16 (the last ones short or empty); a single class; a
    // logit of 90 that would overflow exp unshifted.
    for (rows, cols, scale) in [
        (4000, 10, 3.0),
        (300, 1000, 2.0),
        (50, 1, 1.0),
        (500, 3, 4.0),
    ] {
        let mut logits = uniform(&mut rng((rows * cols) as u64), rows * cols, scale);
        logits[0] = 90.0;
        let reference = sampled_labels(&mut CpuEngine64::new(), &logits, rows, cols, seed, stream);
        assert!(
            reference
                .iter()
                .all(|&l| l >= 0.0 && l < cols as f64 && l.fract() == 0.0),
            "labels are class indices"
        );
        let margins = cdf_margins(&logits, cols, seed, stream);
        on_f32_engines(|e| {
            let name = e.info().engine;
            let labels = sampled_labels(e, &logits, rows, cols, seed, stream);
            let differing: Vec<usize> = (0..rows).filter(|&r| labels[r] != reference[r]).collect();
            for &r in &differing {
                assert!(
                    margins[r] <= 1e-5,
                    "{name} {rows}x{cols}: row {r} drew {} against {} with its uniform {} from a boundary",
                    labels[r],
                    reference[r],
                    margins[r]
                );
            }
            assert!(
                differing.len() * 1000 <= rows,
                "{name} {rows}x{cols}: {} of {rows} labels differ",
                differing.len()
            );
        });
    }
}

/// Rows with a NaN or +inf logit, or no finite logit, get a NaN label on every engine; a class
/// at -inf is never drawn.
#[test]
fn sampled_labels_of_non_finite_rows() {
    let cols = 3;
    let inf = f64::INFINITY;
    let logits = [
        0.0,
        f64::NAN,
        1.0, // NaN
        0.0,
        inf,
        1.0, // +inf
        -inf,
        -inf,
        -inf, // nothing finite
        -inf,
        0.0,
        -inf, // only class 1 can be drawn
        0.5,
        -inf,
        0.5, // class 0 or 2
    ];
    let rows = logits.len() / cols;
    let body = |e: &mut dyn Engine| {
        let labels = sampled_labels(e, &logits, rows, cols, 3, 4);
        let name = e.info().engine;
        assert!(labels[..3].iter().all(|l| l.is_nan()), "{name}: {labels:?}");
        assert_eq!(labels[3], 1.0, "{name}");
        assert!(labels[4] == 0.0 || labels[4] == 2.0, "{name}: {labels:?}");
        labels
    };
    check_on_every_engine("sample_categorical non-finite rows", Tolerance::EXACT, body);
}

/// Many rows with the same logits: the frequency of each class matches its softmax probability
/// within 4.5 standard errors, on every engine; a class at -inf is never drawn.
#[test]
fn sampled_label_frequencies_match_the_softmax() {
    let base = [1.0, -0.5, 2.0, 0.0, 0.3, f64::NEG_INFINITY];
    let cols = base.len();
    let rows = 20_000;
    let logits: Vec<f64> = (0..rows).flat_map(|_| base).collect();
    let max = 2.0;
    let total: f64 = base.iter().map(|l| (l - max).exp()).sum();
    let probabilities: Vec<f64> = base.iter().map(|l| (l - max).exp() / total).collect();
    let check = |e: &mut dyn Engine| {
        let name = e.info().engine;
        let labels = sampled_labels(e, &logits, rows, cols, 11, 12);
        for (j, &p) in probabilities.iter().enumerate() {
            let count = labels.iter().filter(|&&l| l == j as f64).count();
            let frequency = count as f64 / rows as f64;
            let standard_error = (p * (1.0 - p) / rows as f64).sqrt();
            assert!(
                (frequency - p).abs() <= 4.5 * standard_error,
                "{name}: class {j} drawn with frequency {frequency}, probability {p}"
            );
        }
    };
    check(&mut CpuEngine64::new());
    on_f32_engines(check);
}

#[test]
fn unary_ops_and_moving_averages() {
    let (rows, cols) = (17, 33);
    let mut x = uniform(&mut rng(91), rows * cols, 3.0);
    // Exact zeros of both signs, and values of f32's normal range near zero.
    x[..4].copy_from_slice(&[0.0, -0.0, 1e-30, -1e-30]);
    for op in UnaryOp::ALL {
        // ln(1 + x) on its domain, x > -1.
        let x: Vec<f64> = match op {
            UnaryOp::Log1p => x.iter().map(|v| v.abs()).collect(),
            // 1 / sqrt(x) on x > 0, up to 10.
            UnaryOp::Rsqrt => x.iter().map(|v| v.abs() + 0.01).collect(),
            _ => x.clone(),
        };
        let body = |e: &mut dyn Engine| {
            let tx = e.tensor_from("x", rows, cols, &x).unwrap();
            let out = e.alloc("out", rows, cols).unwrap();
            let mut rec = Recording::new();
            rec.unary(op, tx, out).unwrap();
            e.run(&rec).unwrap();
            e.read_one(out).unwrap()
        };
        // |x| is exact on the rounded input; sign is exact; sigmoid and softplus are an exp,
        // a log and a division of values of order 1; e^x up to e^3; ln(1 + x) up to ln 4;
        // 1 / sqrt(x) up to 10.
        let tolerance = match op {
            UnaryOp::Abs => Tolerance::f32_rounding(),
            UnaryOp::Sign => Tolerance::EXACT,
            UnaryOp::Sigmoid | UnaryOp::Softplus | UnaryOp::Log1p => {
                Tolerance::f32_transcendental(3.0)
            }
            UnaryOp::Exp => Tolerance::f32_transcendental(20.0),
            UnaryOp::Rsqrt => Tolerance::f32_transcendental(10.0),
        };
        check_on_every_engine(&format!("unary {}", op.name()), tolerance, body);
    }
    let xs: Vec<Vec<f64>> = (0..5)
        .map(|s| uniform(&mut rng(92 + s), rows * cols, 1.0))
        .collect();
    let avg0 = uniform(&mut rng(97), rows * cols, 1.0);
    for beta in [0.0, 0.9, 0.999, 1.0] {
        let body = |e: &mut dyn Engine| {
            let avg = e.tensor_from("avg", rows, cols, &avg0).unwrap();
            let tx = e.alloc("x", rows, cols).unwrap();
            for x in &xs {
                e.upload(tx, x).unwrap();
                let mut rec = Recording::new();
                rec.ema(beta, tx, avg).unwrap();
                e.run(&rec).unwrap();
            }
            e.read_one(avg).unwrap()
        };
        // Five steps of two products and a sum of values of size ~1 that may cancel; beta and
        // 1 - beta are each one rounding from f64.
        let tolerance =
            Tolerance::f32_elementwise(4 * xs.len()).plus(Tolerance::f32_sum(2 * xs.len(), 1.0));
        check_on_every_engine(&format!("ema beta={beta}"), tolerance, body);
    }
}

fn adahessian_hyper(hessian_power: f64, weight_decay: f64) -> AdaHessianHyper {
    AdaHessianHyper {
        lr: 0.05,
        hessian_power,
        weight_decay,
        ..AdaHessianHyper::default()
    }
}

#[test]
fn adahessian_updates_over_several_steps() {
    let (rows, cols) = (17, 33);
    let len = rows * cols;
    let p0 = uniform(&mut rng(101), len, 1.0);
    let grads: Vec<Vec<f64>> = (0..5)
        .map(|s| uniform(&mut rng(110 + s), len, 1.0))
        .collect();
    // Hessian-diagonal estimates of either sign and magnitude in [0.2, 1.5].
    let diags: Vec<Vec<f64>> = (0..5)
        .map(|s| {
            uniform(&mut rng(120 + s), len, 1.0)
                .into_iter()
                .map(|u| u.signum() * (0.2 + 1.3 * u.abs()))
                .collect()
        })
        .collect();
    for (power, weight_decay) in [(1.0, 0.0), (1.0, 0.01), (0.5, 0.0), (0.0, 0.0)] {
        let hyper = adahessian_hyper(power, weight_decay);
        let body = |e: &mut dyn Engine| {
            let p = e.tensor_from("param", rows, cols, &p0).unwrap();
            let m = e.tensor_from("m", rows, cols, &vec![0.0; len]).unwrap();
            let v = e.tensor_from("v", rows, cols, &vec![0.0; len]).unwrap();
            let g = e.alloc("grad", rows, cols).unwrap();
            let d = e.alloc("hess_diag", rows, cols).unwrap();
            for (step, (grad, diag)) in grads.iter().zip(&diags).enumerate() {
                e.upload(g, grad).unwrap();
                e.upload(d, diag).unwrap();
                let mut rec = Recording::new();
                rec.adahessian(p, g, d, (m, v), hyper, step as u32 + 1)
                    .unwrap();
                e.run(&rec).unwrap();
            }
            e.read(&[p, m, v]).unwrap().concat()
        };
        // Each step moves a parameter by about lr |m_hat| / |D| <= 0.25; the moments, a sqrt, a
        // pow (power 1/2: a few ulp), two divisions add a few roundings per step, and
        // 1 - beta2 in f32 is 1.3e-5 off relatively (as in Adam).
        check_on_every_engine(
            &format!("adahessian power={power} weight_decay={weight_decay}"),
            Tolerance::f32_transcendental(1.0),
            body,
        );
    }
}

fn sophia_hyper() -> SophiaHyper {
    SophiaHyper {
        lr: 0.01,
        // rho * batch_size = 0.8: |m| / (0.8 h) is above 1 for about half the entries.
        batch_size: 20.0,
        ..SophiaHyper::default()
    }
}

/// Sophia's parameters after five steps against the f64 twin, and on every engine each step
/// moves each entry by at most lr beyond its weight decay (the clip), by exactly lr where the
/// Hessian average is 0.
#[test]
fn sophia_updates_over_several_steps_and_never_move_more_than_lr() {
    let (rows, cols) = (17, 33);
    let len = rows * cols;
    let hyper = sophia_hyper();
    let p0 = uniform(&mut rng(131), len, 1.0);
    let m0 = uniform(&mut rng(132), len, 0.1);
    let grads: Vec<Vec<f64>> = (0..5)
        .map(|s| uniform(&mut rng(140 + s), len, 1.0))
        .collect();
    // Hessian averages in [0, 0.1], a tenth of them exactly 0.
    let hess: Vec<Vec<f64>> = (0..5)
        .map(|s| {
            uniform(&mut rng(150 + s), len, 1.0)
                .into_iter()
                .enumerate()
                .map(|(i, u)| if i % 10 == 0 { 0.0 } else { 0.05 * (1.0 + u) })
                .collect()
        })
        .collect();
    let body = |e: &mut dyn Engine| {
        let name = e.info().engine;
        let p = e.tensor_from("param", rows, cols, &p0).unwrap();
        let m = e.tensor_from("m", rows, cols, &m0).unwrap();
        let g = e.alloc("grad", rows, cols).unwrap();
        let h = e.alloc("hess", rows, cols).unwrap();
        let (mut clipped, mut unclipped) = (0, 0);
        for (grad, hess) in grads.iter().zip(&hess) {
            e.upload(g, grad).unwrap();
            e.upload(h, hess).unwrap();
            let before = e.read_one(p).unwrap();
            let mut rec = Recording::new();
            rec.sophia(p, g, h, m, hyper).unwrap();
            e.run(&rec).unwrap();
            let after = e.read_one(p).unwrap();
            let m_now = e.read_one(m).unwrap();
            for i in 0..len {
                let decayed = before[i] * hyper.decay_factor();
                let moved = (after[i] - decayed).abs();
                // The f32 engines round the decayed parameter and the difference (2^-23 |p|).
                let rounding = 2f64.powi(-22) * before[i].abs();
                assert!(
                    moved <= hyper.lr * (1.0 + 1e-6) + rounding,
                    "{name}: entry {i} moved {moved}, over lr {}",
                    hyper.lr
                );
                if hess[i] == 0.0 && m_now[i] != 0.0 {
                    assert!(
                        (moved - hyper.lr).abs() <= 1e-6 * hyper.lr + rounding,
                        "{name}: {moved}"
                    );
                }
                if moved >= hyper.lr * (1.0 - 1e-6) {
                    clipped += 1;
                } else {
                    unclipped += 1;
                }
            }
        }
        assert!(
            clipped > len && unclipped > len,
            "{name}: {clipped} clipped, {unclipped} not"
        );
        e.read(&[p, m]).unwrap().concat()
    };
    // Five steps of a product, a moving average, a division and a clip: a few roundings each of
    // values of size ~1 (the parameters) and lr (the step).
    check_on_every_engine("sophia", Tolerance::f32_sum(20, 1.0), body);
}

/// Every branch of the damping rule, each case as its own 1x1 tensors in one recording:
/// (name, lambda, actual, predicted, expected lambda).
#[test]
fn damping_update_takes_every_branch() {
    let hyper = DampingHyper::default();
    let (increase, decrease) = (1.5, 2.0 / 3.0);
    let cases: [(&str, f64, f64, f64, f64); 12] = [
        ("good step (rho 0.9)", 1.0, -0.9, -1.0, decrease),
        ("fair step (rho 0.5)", 1.0, -0.5, -1.0, 1.0),
        ("poor step (rho 0.1)", 1.0, -0.1, -1.0, increase),
        ("rho exactly 1/4", 2.0, -0.25, -1.0, 2.0),
        ("rho exactly 3/4", 2.0, -0.75, -1.0, 2.0),
        ("loss went up", 1.0, 0.1, -1.0, increase),
        ("predicted 0", 1.0, -1.0, 0.0, increase),
        ("predicted an increase", 1.0, 0.4, 0.5, increase),
        ("actual NaN", 1.0, f64::NAN, -1.0, increase),
        ("rho infinite", 1.0, f64::NEG_INFINITY, -1.0, increase),
        ("clamped at max", 0.9e8, -0.1, -1.0, 1e8),
        ("clamped at min", 1.2e-8, -0.9, -1.0, 1e-8),
    ];
    let body = |e: &mut dyn Engine| {
        let name = e.info().engine;
        let mut rec = Recording::new();
        let mut lambdas = Vec::new();
        for &(_, lambda, actual, predicted, _) in &cases {
            let l = e.tensor_from("lambda", 1, 1, &[lambda]).unwrap();
            let a = e.tensor_from("actual", 1, 1, &[actual]).unwrap();
            let p = e.tensor_from("predicted", 1, 1, &[predicted]).unwrap();
            rec.damping_update(l, a, p, hyper).unwrap();
            lambdas.push(l);
        }
        e.run(&rec).unwrap();
        let got = e.read(&lambdas).unwrap().concat();
        for (&(case, .., expected), &value) in cases.iter().zip(&got) {
            Tolerance::f32_elementwise(2)
                .check(&[value], &[expected])
                .unwrap_or_else(|err| panic!("{name}: {case}: {err}"));
        }
        got
    };
    // One product and a clamp: the f32 engines round lambda, the factor and the product.
    check_on_every_engine("damping_update", Tolerance::f32_elementwise(3), body);
}

/// Damping updates chain on the device: ten poor steps in one submission multiply lambda by
/// 1.5^10, then clamp at the maximum.
#[test]
fn damping_updates_chain_in_one_submission() {
    let hyper = DampingHyper {
        max_lambda: 50.0,
        ..DampingHyper::default()
    };
    let body = |e: &mut dyn Engine| {
        let l = e.tensor_from("lambda", 1, 1, &[1.0]).unwrap();
        let a = e.tensor_from("actual", 1, 1, &[-0.1]).unwrap();
        let p = e.tensor_from("predicted", 1, 1, &[-1.0]).unwrap();
        let mut rec = Recording::new();
        let mut trace = Vec::new();
        for steps in [5, 5] {
            for _ in 0..steps {
                rec.damping_update(l, a, p, hyper).unwrap();
            }
            e.run(&rec).unwrap();
            trace.push(e.read_one(l).unwrap()[0]);
            rec = Recording::new();
        }
        trace
    };
    let expected = [1.5f64.powi(5), 50.0];
    let got = body(&mut CpuEngine64::new());
    Tolerance::new(0.0, 1e-12).check(&got, &expected).unwrap();
    check_on_every_engine("damping chain", Tolerance::f32_elementwise(10), body);
}
