//! The f64 CPU twins are the ground truth, so they are checked against independent definitions:
//! a naive triple loop for matmul, central finite differences for every derivative.

mod common;

use common::{rng, uniform};
use specdef::Tolerance;
use specdef::engine::Activation;
use specdef::engine::cpu::{
    device_scalar, elementwise, matmul, reduce, softmax_cross_entropy, transpose,
};
use specdef::engine::{ReduceAxis, Reduction};

/// f64 rounding over a short computation.
const F64_TIGHT: Tolerance = Tolerance::new(1e-12, 1e-12);
/// A central difference with step h has error O(h^2) plus O(eps / h) from rounding.
const FINITE_DIFFERENCE: Tolerance = Tolerance::new(1e-7, 1e-6);
const H: f64 = 1e-5;

#[test]
fn matmul_twin_matches_a_naive_triple_loop() {
    let (m, n, k) = (13, 7, 29);
    let mut r = rng(1);
    for trans_a in [false, true] {
        for trans_b in [false, true] {
            let a = uniform(&mut r, m * k, 1.0);
            let b = uniform(&mut r, k * n, 1.0);
            let c0 = uniform(&mut r, m * n, 1.0);
            let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
            let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
            let (alpha, beta) = (0.75, -0.5);
            let expected: Vec<f64> = (0..m * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    let dot: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                    alpha * dot + beta * c0[idx]
                })
                .collect();
            let mut c = c0.clone();
            matmul::matmul(&a, &b, &mut c, (m, n, k), trans_a, trans_b, alpha, beta);
            F64_TIGHT.check(&c, &expected).unwrap();
        }
    }
}

#[test]
fn activation_derivatives_match_finite_differences() {
    let xs = uniform(&mut rng(2), 200, 4.0);
    for f in Activation::ALL {
        // relu has no derivative at 0; keep away from the kink.
        let xs: Vec<f64> = xs.iter().copied().filter(|x| x.abs() > 10.0 * H).collect();
        let analytic: Vec<f64> = xs
            .iter()
            .map(|&x| elementwise::activation_derivative(f, x))
            .collect();
        let numeric: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let up = elementwise::activation_value(f, x + H);
                let down = elementwise::activation_value(f, x - H);
                (up - down) / (2.0 * H)
            })
            .collect();
        FINITE_DIFFERENCE
            .check(&analytic, &numeric)
            .unwrap_or_else(|e| panic!("{}: {e}", f.name()));
    }
}

#[test]
fn activation_second_derivatives_match_finite_differences() {
    let xs = uniform(&mut rng(5), 200, 4.0);
    for f in Activation::ALL {
        // relu's derivative jumps at 0; keep away from the kink.
        let xs: Vec<f64> = xs.iter().copied().filter(|x| x.abs() > 10.0 * H).collect();
        let analytic: Vec<f64> = xs
            .iter()
            .map(|&x| elementwise::activation_second_derivative(f, x))
            .collect();
        let numeric: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let up = elementwise::activation_derivative(f, x + H);
                let down = elementwise::activation_derivative(f, x - H);
                (up - down) / (2.0 * H)
            })
            .collect();
        FINITE_DIFFERENCE
            .check(&analytic, &numeric)
            .unwrap_or_else(|e| panic!("{}: {e}", f.name()));
    }
}

/// The tangent of activate_grad is the directional derivative of the activate_grad twin along
/// (dx, d_grad_y), by central differences.
#[test]
fn activate_grad_tangent_matches_finite_differences_of_activate_grad() {
    let len = 200;
    let mut r = rng(6);
    let x: Vec<f64> = uniform(&mut r, len, 4.0)
        .into_iter()
        .map(|x| if x.abs() < 10.0 * H { 0.5 } else { x })
        .collect();
    let grad_y = uniform(&mut r, len, 1.0);
    let dx = uniform(&mut r, len, 1.0);
    let d_grad_y = uniform(&mut r, len, 1.0);
    let along = |base: &[f64], direction: &[f64], step: f64| -> Vec<f64> {
        base.iter()
            .zip(direction)
            .map(|(b, d)| b + step * d)
            .collect()
    };
    for f in Activation::ALL {
        let mut analytic = vec![0.0; len];
        elementwise::activate_grad_jvp(f, &x, &grad_y, &dx, &d_grad_y, &mut analytic);
        let grad_x_at = |step: f64| {
            let mut grad_x = vec![0.0; len];
            elementwise::activate_grad(
                f,
                &along(&x, &dx, step),
                &along(&grad_y, &d_grad_y, step),
                &mut grad_x,
            );
            grad_x
        };
        let (up, down) = (grad_x_at(H), grad_x_at(-H));
        let numeric: Vec<f64> = up
            .iter()
            .zip(&down)
            .map(|(u, d)| (u - d) / (2.0 * H))
            .collect();
        FINITE_DIFFERENCE
            .check(&analytic, &numeric)
            .unwrap_or_else(|e| panic!("{}: {e}", f.name()));
    }
}

#[test]
fn gelu_is_the_tanh_approximation() {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) at a few points, written out.
    for x in [-3.0f64, -0.5, 0.0, 0.7, 2.5] {
        let expected = 0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
        let got = elementwise::activation_value(Activation::Gelu, x);
        F64_TIGHT.check(&[got], &[expected]).unwrap();
    }
}

#[test]
fn softmax_gradient_matches_finite_differences_of_the_loss() {
    let (rows, cols) = (4, 6);
    let logits = uniform(&mut rng(3), rows * cols, 3.0);
    let labels = [0.0, 5.0, 2.0, 3.0];
    let scale = 1.0 / rows as f64;
    let total_loss = |logits: &[f64]| {
        let mut loss = vec![0.0; rows];
        let mut grad = vec![0.0; rows * cols];
        softmax_cross_entropy::softmax_cross_entropy(
            logits, &labels, cols, scale, &mut loss, &mut grad,
        );
        (loss.iter().sum::<f64>() * scale, grad)
    };
    let (_, analytic) = total_loss(&logits);
    let numeric: Vec<f64> = (0..logits.len())
        .map(|i| {
            let mut up = logits.clone();
            up[i] += H;
            let mut down = logits.clone();
            down[i] -= H;
            (total_loss(&up).0 - total_loss(&down).0) / (2.0 * H)
        })
        .collect();
    FINITE_DIFFERENCE.check(&analytic, &numeric).unwrap();
}

/// The tangent of the loss and of its gradient along d_logits, against central differences of
/// the softmax cross-entropy twin; a bad label gives NaN there as in the loss.
#[test]
fn softmax_tangent_matches_finite_differences_of_loss_and_gradient() {
    let (rows, cols) = (5, 6);
    let logits = uniform(&mut rng(7), rows * cols, 3.0);
    let d_logits = uniform(&mut rng(8), rows * cols, 1.0);
    let labels = [0.0, 5.0, 2.0, 3.0, 6.0];
    let scale = 1.0 / rows as f64;
    let loss_and_grad = |step: f64| {
        let shifted: Vec<f64> = logits
            .iter()
            .zip(&d_logits)
            .map(|(z, d)| z + step * d)
            .collect();
        let mut loss = vec![0.0; rows];
        let mut grad = vec![0.0; rows * cols];
        softmax_cross_entropy::softmax_cross_entropy(
            &shifted, &labels, cols, scale, &mut loss, &mut grad,
        );
        [loss, grad].concat()
    };
    let (up, down) = (loss_and_grad(H), loss_and_grad(-H));
    let numeric: Vec<f64> = up
        .iter()
        .zip(&down)
        .map(|(u, d)| (u - d) / (2.0 * H))
        .collect();
    let mut d_loss = vec![0.0; rows];
    let mut d_grad = vec![0.0; rows * cols];
    softmax_cross_entropy::softmax_cross_entropy_jvp(
        &logits,
        &labels,
        &d_logits,
        cols,
        scale,
        &mut d_loss,
        &mut d_grad,
    );
    // The last label (6) is out of range: NaN in both, which the check accepts only as NaN.
    assert!(d_loss[4].is_nan() && d_grad[4 * cols..].iter().all(|v| v.is_nan()));
    assert!(
        d_loss[..4]
            .iter()
            .chain(&d_grad[..4 * cols])
            .all(|v| v.is_finite())
    );
    FINITE_DIFFERENCE
        .check(&[d_loss, d_grad].concat(), &numeric)
        .unwrap();
}

#[test]
fn softmax_loss_is_log_sum_exp_minus_target_logit() {
    let logits = [1.0, 2.0, 3.0];
    let mut loss = [0.0];
    let mut grad = [0.0; 3];
    softmax_cross_entropy::softmax_cross_entropy(&logits, &[1.0], 3, 1.0, &mut loss, &mut grad);
    let expected = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 2.0;
    F64_TIGHT.check(&loss, &[expected]).unwrap();
}

#[test]
fn reductions_and_transpose_match_their_definitions() {
    let (rows, cols) = (5, 7);
    let x = uniform(&mut rng(4), rows * cols, 1.0);
    let mut per_row = vec![0.0; rows];
    reduce::reduce(
        Reduction::SumOfSquares,
        ReduceAxis::PerRow,
        &x,
        cols,
        &mut per_row,
    );
    let expected: Vec<f64> = x
        .chunks(cols)
        .map(|row| row.iter().map(|v| v * v).sum())
        .collect();
    F64_TIGHT.check(&per_row, &expected).unwrap();

    let mut whole = [0.0];
    reduce::reduce(Reduction::Max, ReduceAxis::Whole, &x, cols, &mut whole);
    assert_eq!(whole[0], x.iter().copied().fold(f64::MIN, f64::max));

    let mut t = vec![0.0; rows * cols];
    transpose::transpose(&x, rows, cols, &mut t);
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(t[c * rows + r], x[r * cols + c]);
        }
    }
}

/// The device scalar is `coef * r` or `coef * sqrt(r)`, `r = num / den`, a missing operand 1;
/// axpy and scale by it equal axpy and scale by that value computed on the host.
#[test]
fn device_scalar_twins_match_their_definition() {
    let cases = [
        (2.0, Some(3.0), Some(4.0), true, 2.0 * (3.0f64 / 4.0).sqrt()),
        (2.0, Some(3.0), Some(4.0), false, 1.5),
        (-0.5, None, Some(0.25), true, -1.0),
        (-0.5, None, Some(0.25), false, -2.0),
        (3.0, Some(0.5), None, false, 1.5),
        (3.0, None, None, true, 3.0),
    ];
    let x = uniform(&mut rng(9), 50, 1.0);
    let y0 = uniform(&mut rng(10), 50, 1.0);
    for (coef, num, den, sqrt, expected) in cases {
        let value = device_scalar::device_scalar_value(coef, num, den, sqrt);
        F64_TIGHT.check(&[value], &[expected]).unwrap();

        let mut scaled = vec![0.0; x.len()];
        device_scalar::scale_device(value, &x, &mut scaled);
        let direct: Vec<f64> = x.iter().map(|x| expected * x).collect();
        F64_TIGHT.check(&scaled, &direct).unwrap();

        let mut y = y0.clone();
        device_scalar::axpy_device(value, &x, &mut y);
        let direct: Vec<f64> = y0.iter().zip(&x).map(|(y, x)| y + expected * x).collect();
        F64_TIGHT.check(&y, &direct).unwrap();
    }
    assert!(device_scalar::device_scalar_value(1.0f64, Some(-1.0), None, true).is_nan());
}
