//! Layer normalisation recorded from primitive ops (`model::LayerNorm`): its values against the
//! formula written out in f64, on every engine; its gradient (reverse mode) and its
//! Hessian-vector product (forward over reverse) against central differences in f64.

mod common;

use common::{check_on_every_engine, relative_error, rng, uniform};
use specdef::Tolerance;
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{
    Engine, Recording, ReduceAxis, Reduction, Tensor, gradient_recording, tangent_recording,
};
use specdef::model::LayerNorm;

const ROWS: usize = 5;
const COLS: usize = 7;
const EPS: f64 = 1e-5;

/// `gamma (x - mean) / sqrt(var + eps) + beta` per row, in f64, written out.
fn formula(x: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    x.chunks(COLS)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / COLS as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / COLS as f64;
            let deviation = (var + EPS).sqrt();
            (row.iter().zip(gamma).zip(beta)).map(move |((v, g), b)| g * (v - mean) / deviation + b)
        })
        .collect()
}

fn inputs() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    // Rows of different scales and offsets, one nearly constant.
    let mut x = uniform(&mut rng(61), ROWS * COLS, 2.0);
    for (r, row) in x.chunks_mut(COLS).enumerate() {
        let (scale, offset) = ([1.0, 10.0, 0.01, 3.0, 1e-3][r], r as f64 - 2.0);
        row.iter_mut().for_each(|v| *v = *v * scale + offset);
    }
    let gamma = uniform(&mut rng(62), COLS, 1.0);
    let beta = uniform(&mut rng(63), COLS, 1.0);
    (x, gamma, beta)
}

/// The layer norm of `x` on `e`, with its tensors.
fn record(
    e: &mut dyn Engine,
    rec: &mut Recording,
    (x, gamma, beta): (&[f64], &[f64], &[f64]),
) -> (LayerNorm, [Tensor; 4]) {
    let norm = LayerNorm::alloc(e, ROWS, COLS, EPS).unwrap();
    let xt = e.tensor_from("x", ROWS, COLS, x).unwrap();
    let gt = e.tensor_from("gamma", 1, COLS, gamma).unwrap();
    let bt = e.tensor_from("beta", 1, COLS, beta).unwrap();
    let y = e.alloc("y", ROWS, COLS).unwrap();
    norm.record(rec, xt, gt, bt, y).unwrap();
    (norm, [xt, gt, bt, y])
}

#[test]
fn layer_norm_matches_its_formula_on_every_engine() {
    let (x, gamma, beta) = inputs();
    let want = formula(&x, &gamma, &beta);
    let body = |e: &mut dyn Engine| {
        let mut rec = Recording::new();
        let (_norm, [.., y]) = record(e, &mut rec, (&x, &gamma, &beta));
        e.run(&rec).unwrap();
        e.read_one(y).unwrap()
    };
    let exact = body(&mut CpuEngine64::new());
    Tolerance::new(1e-12, 1e-12).check(&exact, &want).unwrap();
    // f32: the rows' deviations are computed from their squares (cancellation in the
    // nearly constant row) and normalised to order 1.
    check_on_every_engine("layer_norm", Tolerance::new(1e-4, 1e-4), body);
}

/// The loss `sum((y * w)^2)` of the layer norm, for a fixed `w`: a scalar depending on every
/// output, so every path of the gradient counts.
fn loss(e: &mut dyn Engine, rec: &mut Recording, y: Tensor) -> Tensor {
    let w = e
        .tensor_from("w", ROWS, COLS, &uniform(&mut rng(64), ROWS * COLS, 1.0))
        .unwrap();
    let (weighted, total) = (
        e.alloc("weighted", ROWS, COLS).unwrap(),
        e.alloc("total", 1, 1).unwrap(),
    );
    rec.binary(specdef::engine::BinaryOp::Mul, y, w, weighted)
        .unwrap();
    rec.reduce(Reduction::SumOfSquares, ReduceAxis::Whole, weighted, total)
        .unwrap();
    total
}

fn loss_at(x: &[f64], gamma: &[f64], beta: &[f64]) -> f64 {
    let mut e = CpuEngine64::new();
    let mut rec = Recording::new();
    let (_norm, [.., y]) = record(&mut e, &mut rec, (x, gamma, beta));
    let total = loss(&mut e, &mut rec, y);
    e.run(&rec).unwrap();
    e.read_one(total).unwrap()[0]
}

#[test]
fn layer_norm_gradient_and_hessian_vector_product_match_central_differences() {
    let (x, gamma, beta) = inputs();
    let mut e = CpuEngine64::new();
    let mut rec = Recording::new();
    let (_norm, [xt, gt, bt, y]) = record(&mut e, &mut rec, (&x, &gamma, &beta));
    let total = loss(&mut e, &mut rec, y);
    let reverse = gradient_recording(&mut e, &rec, total, 1.0).unwrap();
    // H v along a direction in x, gamma and beta.
    let v: Vec<Vec<f64>> = [x.len(), COLS, COLS]
        .iter()
        .enumerate()
        .map(|(i, &len)| uniform(&mut rng(70 + i as u64), len, 1.0))
        .collect();
    let seeds: Vec<(Tensor, Tensor)> = [xt, gt, bt]
        .iter()
        .zip(&v)
        .map(|(&t, values)| (t, e.tensor_from("v", t.rows(), t.cols(), values).unwrap()))
        .collect();
    let tangents = tangent_recording(&mut e, &reverse.recording, &seeds).unwrap();
    e.run(&tangents.recording).unwrap();

    let parts = [x.clone(), gamma.clone(), beta.clone()];
    let moved = |part: usize, i: Option<usize>, delta: f64, along: Option<&[Vec<f64>]>| {
        let mut at = parts.clone();
        match (i, along) {
            (Some(i), _) => at[part][i] += delta,
            (None, Some(v)) => (at.iter_mut().zip(v))
                .for_each(|(p, d)| p.iter_mut().zip(d).for_each(|(p, d)| *p += delta * d)),
            (None, None) => {}
        }
        at
    };
    // The gradient by central differences of the loss, one coordinate at a time.
    let h = 1e-6;
    let gradient_at = |at: &[Vec<f64>]| -> Vec<Vec<f64>> {
        (0..3)
            .map(|part| {
                (0..at[part].len())
                    .map(|i| {
                        let value = |delta: f64| {
                            let mut p = at.to_vec();
                            p[part][i] += delta;
                            loss_at(&p[0], &p[1], &p[2])
                        };
                        (value(h) - value(-h)) / (2.0 * h)
                    })
                    .collect()
            })
            .collect()
    };
    let here = moved(0, None, 0.0, None);
    let numeric = gradient_at(&here);
    // H v by central differences of the exact (reverse-mode) gradient along v.
    let exact_gradient_at = |at: &[Vec<f64>]| -> Vec<Vec<f64>> {
        let mut e = CpuEngine64::new();
        let mut rec = Recording::new();
        let (_norm, [xt, gt, bt, y]) = record(&mut e, &mut rec, (&at[0], &at[1], &at[2]));
        let total = loss(&mut e, &mut rec, y);
        let reverse = gradient_recording(&mut e, &rec, total, 1.0).unwrap();
        e.run(&reverse.recording).unwrap();
        [xt, gt, bt]
            .iter()
            .map(|&t| e.read_one(reverse.gradient_of(t).unwrap()).unwrap())
            .collect()
    };
    // The nearly constant row's curvature is of order 1 / deviation^2, 1e6: a central
    // difference's error (step^2 times third derivatives) needs a small step there.
    let step = 1e-7;
    let (up, down) = (
        exact_gradient_at(&moved(0, None, step, Some(&v))),
        exact_gradient_at(&moved(0, None, -step, Some(&v))),
    );
    for (part, (name, t)) in [("x", xt), ("gamma", gt), ("beta", bt)]
        .into_iter()
        .enumerate()
    {
        let gradient = reverse.gradient_of(t).unwrap();
        let got = e.read_one(gradient).unwrap();
        let error = relative_error(&got, &numeric[part]);
        assert!(error < 1e-6, "gradient {name}: relative error {error:e}");
        let hv = e.read_one(tangents.tangent_of(gradient).unwrap()).unwrap();
        let want: Vec<f64> = (up[part].iter().zip(&down[part]))
            .map(|(u, d)| (u - d) / (2.0 * step))
            .collect();
        let error = relative_error(&hv, &want);
        assert!(error < 1e-6, "H v {name}: relative error {error:e}");
    }
}

#[test]
fn layer_norm_refuses_mismatched_shapes_and_a_bad_eps() {
    let mut e = CpuEngine64::new();
    let message = LayerNorm::alloc(&mut e, ROWS, COLS, 0.0)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("eps must be positive"), "{message}");
    let norm = LayerNorm::alloc(&mut e, ROWS, COLS, EPS).unwrap();
    let x = e.alloc("x", ROWS, COLS).unwrap();
    let short = e.alloc("gamma", 1, COLS - 1).unwrap();
    let y = e.alloc("y", ROWS, COLS).unwrap();
    let message = norm
        .record(&mut Recording::new(), x, short, short, y)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("layer_norm") && message.contains("1x7"),
        "{message}"
    );
}
