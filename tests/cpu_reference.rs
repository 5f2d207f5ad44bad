//! The f64 CPU twins are the ground truth, so they are checked against independent definitions:
//! a naive triple loop for matmul, central finite differences for every derivative, the
//! optimisers' reference formulas written out, and the random draws against an independent
//! hash and their distributions.

mod common;

use common::{rng, uniform};
use specdef::Tolerance;
use specdef::engine::cpu::{
    damping, device_scalar, elementwise, matmul, optimizer, random, reduce, softmax_cross_entropy,
    transpose,
};
use specdef::engine::{
    Activation, AdaHessianHyper, DampingHyper, ReduceAxis, Reduction, SophiaHyper, UnaryOp,
};

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
            matmul::matmul(
                &a,
                &b,
                &mut c,
                (m, n, k),
                trans_a,
                trans_b,
                alpha,
                beta,
                faer::Par::Seq,
            );
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
fn gelu_erf_is_x_times_the_normal_distribution_function() {
    // Phi at a few points, from tables of the standard normal distribution.
    for (x, phi) in [
        (-3.0f64, 0.001_349_898_031_630_094_6),
        (-0.5, 0.308_537_538_725_986_9),
        (0.0, 0.5),
        (1.0, 0.841_344_746_068_542_9),
        (2.5, 0.993_790_334_674_223_8),
    ] {
        let got = elementwise::activation_value(Activation::GeluErf, x);
        F64_TIGHT.check(&[got], &[x * phi]).unwrap();
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

/// The PCG hash written again from its definition, in u64 arithmetic reduced mod 2^32 (rather
/// than the twin's wrapping u32 operations).
fn pcg_by_definition(value: u32) -> u32 {
    const MASK: u64 = 0xffff_ffff;
    let state = (u64::from(value) * 747_796_405 + 2_891_336_453) & MASK;
    let shift = (state >> 28) + 4;
    let word = (((state >> shift) ^ state) * 277_803_737) & MASK;
    ((word >> 22) ^ word) as u32
}

#[test]
fn random_bits_match_an_independent_hash_and_are_uniform() {
    let seed: u64 = 0xdead_beef_0bad_f00d;
    let stream: u64 = (3 << 32) | 5;
    let key = [
        seed as u32,
        (seed >> 32) as u32,
        stream as u32,
        (stream >> 32) as u32,
    ]
    .into_iter()
    .fold(None, |h: Option<u32>, word| {
        Some(pcg_by_definition(h.map_or(word, |h| h ^ word)))
    })
    .unwrap();
    assert_eq!(random::stream_key(seed, stream), key);
    for index in (0..100_000u32).chain([u32::MAX - 1, u32::MAX]) {
        assert_eq!(random::pcg_hash(index), pcg_by_definition(index));
        let bits = pcg_by_definition(pcg_by_definition(index) ^ key);
        assert_eq!(random::random_bits(seed, stream, index), bits);
    }
    // The PCG hash is a bijection of u32: no two of 2^16 consecutive inputs collide.
    let mut outputs: Vec<u32> = (0..1u32 << 16).map(random::pcg_hash).collect();
    outputs.sort_unstable();
    outputs.dedup();
    assert_eq!(outputs.len(), 1 << 16);

    // The uniform's first moments (standard errors 0.0009 and 0.0003 over 10^5 draws), every
    // draw in [0, 1) and a multiple of 2^-24; the Rademacher sign is bit 31.
    let n = 100_000u32;
    let draws: Vec<f64> = (0..n).map(|i| random::uniform(seed, stream, i)).collect();
    assert!(
        draws
            .iter()
            .all(|&u| (0.0..1.0).contains(&u) && (u * 16_777_216.0).fract() == 0.0)
    );
    let mean = draws.iter().sum::<f64>() / f64::from(n);
    let variance = draws.iter().map(|u| (u - mean).powi(2)).sum::<f64>() / f64::from(n);
    assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    assert!(
        (variance - 1.0 / 12.0).abs() < 0.0015,
        "variance {variance}"
    );
    // Each of the 16 equal bins holds 1/16 of the draws (standard error 0.0008).
    let mut bins = [0usize; 16];
    draws.iter().for_each(|u| bins[(u * 16.0) as usize] += 1);
    for count in bins {
        let fraction = count as f64 / f64::from(n);
        assert!((fraction - 1.0 / 16.0).abs() < 0.004, "{bins:?}");
    }
    let mut probe = vec![0.0f64; 1000];
    random::rademacher(seed, stream, &mut probe);
    for (i, &value) in probe.iter().enumerate() {
        let bit31 = random::random_bits(seed, stream, i as u32) >> 31;
        assert_eq!(value, if bit31 == 0 { 1.0 } else { -1.0 });
    }
}

/// The f64 twin's labels are the naive inverse CDF (softmax probabilities summed in order in
/// f64, the first class whose cumulative probability exceeds u) except within rounding of a
/// boundary, and its frequencies over many identical rows match the softmax.
#[test]
fn sampled_labels_match_a_naive_inverse_cdf() {
    let (seed, stream) = (21, 22);
    for (rows, cols) in [(2000, 7), (200, 300), (20, 1)] {
        let logits = uniform(&mut rng(cols as u64), rows * cols, 3.0);
        let mut labels = vec![0.0; rows];
        random::sample_categorical(&logits, cols, seed, stream, &mut labels);
        for (r, row) in logits.chunks(cols).enumerate() {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = row.iter().map(|l| (l - max).exp()).sum();
            let u = random::uniform(seed, stream, r as u32);
            // The cumulative probabilities below 1 (the last is 1 by definition).
            let cdf: Vec<f64> = row[..cols - 1]
                .iter()
                .scan(0.0, |cumulative, l| {
                    *cumulative += (l - max).exp() / total;
                    Some(*cumulative)
                })
                .collect();
            let naive = cdf.iter().position(|&c| u < c).unwrap_or(cols - 1);
            let margin = cdf
                .iter()
                .map(|c| (c - u).abs())
                .fold(f64::INFINITY, f64::min);
            if margin > 1e-12 {
                assert_eq!(labels[r], naive as f64, "row {r} of {rows}x{cols}");
            }
        }
    }
    let base = [0.2, -1.0, 1.5, 0.0];
    let rows = 50_000;
    let logits: Vec<f64> = (0..rows).flat_map(|_| base).collect();
    let mut labels = vec![0.0; rows];
    random::sample_categorical(&logits, base.len(), seed, stream + 1, &mut labels);
    let total: f64 = base.iter().map(|l| l.exp()).sum();
    for (j, l) in base.iter().enumerate() {
        let p = l.exp() / total;
        let frequency =
            labels.iter().filter(|&&label| label == j as f64).count() as f64 / rows as f64;
        let standard_error = (p * (1.0 - p) / rows as f64).sqrt();
        assert!(
            (frequency - p).abs() <= 4.5 * standard_error,
            "class {j}: frequency {frequency}, probability {p}"
        );
    }
}

/// Sigmoid and softplus against their textbook forms where those are exact enough, and finite
/// and right where the textbook forms overflow (e^800).
#[test]
fn sigmoid_and_softplus_match_their_definitions_without_overflow() {
    let x: [f64; 8] = [-800.0, -30.0, -1.5, 0.0, 0.25, 4.0, 30.0, 800.0];
    let mut sigmoid = [0.0; 8];
    let mut softplus = [0.0; 8];
    elementwise::unary(UnaryOp::Sigmoid, &x, &mut sigmoid);
    elementwise::unary(UnaryOp::Softplus, &x, &mut softplus);
    for (i, &v) in x.iter().enumerate() {
        if v.abs() < 100.0 {
            let s = 1.0 / (1.0 + (-v).exp());
            let p = v.exp().ln_1p();
            assert!(
                (sigmoid[i] - s).abs() <= 1e-15 * s.max(1e-300) + 1e-300,
                "sigmoid {v}"
            );
            assert!(
                (softplus[i] - p).abs() <= 1e-14 * p.max(1e-13),
                "softplus {v}"
            );
        }
    }
    assert_eq!((sigmoid[0], sigmoid[7]), (0.0, 1.0));
    assert_eq!((softplus[0], softplus[7]), (0.0, 800.0));
}

#[test]
fn abs_sign_and_the_moving_average_match_their_definitions() {
    let x = [-2.5, -0.0, 0.0, 1e-300, 3.0, f64::NAN];
    let mut out = [0.0; 6];
    elementwise::unary(UnaryOp::Abs, &x, &mut out);
    assert_eq!(&out[..5], &[2.5, 0.0, 0.0, 1e-300, 3.0]);
    assert!(out[5].is_nan());
    elementwise::unary(UnaryOp::Sign, &x, &mut out);
    assert_eq!(out, [-1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);

    let xs = uniform(&mut rng(31), 40, 1.0);
    let avg0 = uniform(&mut rng(32), 40, 1.0);
    for beta in [0.0, 0.3, 0.999, 1.0] {
        let mut avg = avg0.clone();
        elementwise::ema(beta, 1.0 - beta, &xs, &mut avg);
        let expected: Vec<f64> = avg0
            .iter()
            .zip(&xs)
            .map(|(a, x)| a + (1.0 - beta) * (x - a))
            .collect();
        F64_TIGHT.check(&avg, &expected).unwrap();
    }
}

/// AdaHessian's reference update written out as the reference implementation states it:
/// `denom = sqrt(v)^k / sqrt(1 - b2^t)^k + eps`, `p = p - lr (m / (1 - b1^t) / denom + wd p)`.
#[test]
fn adahessian_twin_matches_the_reference_formula() {
    let len = 50;
    let p0 = uniform(&mut rng(41), len, 1.0);
    for (hessian_power, weight_decay) in [(1.0, 0.0), (0.5, 0.1), (0.0, 0.0), (0.7, 0.01)] {
        let hyper = AdaHessianHyper {
            lr: 0.1,
            hessian_power,
            weight_decay,
            ..AdaHessianHyper::default()
        };
        let (b1, b2) = (hyper.beta1, hyper.beta2);
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; len], vec![0.0; len]);
        let (mut rp, mut rm, mut rv) = (p0.clone(), vec![0.0; len], vec![0.0; len]);
        for step in 1..=6 {
            let g = uniform(&mut rng(50 + step as u64), len, 1.0);
            let d = uniform(&mut rng(60 + step as u64), len, 2.0);
            optimizer::adahessian(&mut p, &mut m, &mut v, &g, &d, &hyper, step);
            let c1 = 1.0 - b1.powi(step as i32);
            let c2 = 1.0 - b2.powi(step as i32);
            for i in 0..len {
                rm[i] = b1 * rm[i] + (1.0 - b1) * g[i];
                rv[i] = b2 * rv[i] + (1.0 - b2) * d[i] * d[i];
                let denom =
                    rv[i].sqrt().powf(hessian_power) / c2.sqrt().powf(hessian_power) + hyper.eps;
                rp[i] -= hyper.lr * (rm[i] / c1 / denom + weight_decay * rp[i]);
            }
        }
        let what = format!("power {hessian_power}, weight decay {weight_decay}");
        F64_TIGHT
            .check(&[p, m, v].concat(), &[rp, rm, rv].concat())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // The reference's defaults.
    assert_eq!(
        AdaHessianHyper::default(),
        AdaHessianHyper {
            lr: 0.15,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-4,
            weight_decay: 0.0,
            hessian_power: 1.0
        }
    );
}

/// Sophia's reference update (SophiaG) written out: `p *= 1 - lr wd`; `m = b1 m + (1 - b1) g`;
/// `ratio = clamp(|m| / (rho bs h + 1e-15), max = 1)`; `p += -lr sign(m) ratio`, with torch's
/// sign (0 at 0).
#[test]
fn sophia_twin_matches_the_reference_formula() {
    let len = 60;
    let hyper = SophiaHyper {
        lr: 0.02,
        batch_size: 16.0,
        ..SophiaHyper::default()
    };
    let p0 = uniform(&mut rng(71), len, 1.0);
    let (mut p, mut m) = (p0.clone(), vec![0.0; len]);
    let (mut rp, mut rm) = (p0, vec![0.0; len]);
    for step in 0..6u64 {
        let mut g = uniform(&mut rng(80 + step), len, 1.0);
        g[0] = 0.0; // m stays 0 there: no move beyond the decay
        let h: Vec<f64> = uniform(&mut rng(90 + step), len, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, u)| if i % 7 == 0 { 0.0 } else { 0.05 * (1.0 + u) })
            .collect();
        optimizer::sophia(&mut p, &mut m, &g, &h, &hyper);
        for i in 0..len {
            rp[i] *= 1.0 - hyper.lr * hyper.weight_decay;
            rm[i] = hyper.beta1 * rm[i] + (1.0 - hyper.beta1) * g[i];
            let ratio = (rm[i].abs() / (hyper.rho * hyper.batch_size * h[i] + 1e-15)).min(1.0);
            let sign = if rm[i] > 0.0 {
                1.0
            } else if rm[i] < 0.0 {
                -1.0
            } else {
                0.0
            };
            rp[i] += -hyper.lr * sign * ratio;
        }
    }
    F64_TIGHT
        .check(&[p, m].concat(), &[rp, rm].concat())
        .unwrap();
    let defaults = SophiaHyper::default();
    assert_eq!(
        (defaults.lr, defaults.beta1, defaults.beta2, defaults.rho),
        (1e-4, 0.965, 0.99, 0.04)
    );
    assert_eq!(
        (defaults.weight_decay, defaults.batch_size, defaults.eps),
        (0.1, 5120.0, 1e-15)
    );
}

/// Martens' damping rule written out as a decision on rho, against the twin.
#[test]
fn damping_twin_follows_martens_rule() {
    let hyper = DampingHyper::default();
    let rule = |lambda: f64, actual: f64, predicted: f64| {
        let rho = actual / predicted;
        // The quadratic model predicted no decrease, or the ratio is meaningless.
        let unreliable = predicted >= 0.0 || predicted.is_nan() || !rho.is_finite();
        let factor = if unreliable || rho < 0.25 {
            1.5
        } else if rho > 0.75 {
            2.0 / 3.0
        } else {
            1.0
        };
        (lambda * factor).clamp(1e-8, 1e8)
    };
    let cases = [
        (1.0, -0.9, -1.0),
        (1.0, -0.5, -1.0),
        (1.0, -0.1, -1.0),
        (3.0, -0.25, -1.0),
        (3.0, -0.75, -1.0),
        (1.0, 0.2, -1.0),
        (1.0, -1.0, 0.0),
        (1.0, 0.0, 0.0),
        (1.0, 0.3, 0.5),
        (1.0, f64::NAN, -1.0),
        (1.0, -1.0, f64::NAN),
        (1.0, f64::NEG_INFINITY, -1.0),
        (1.0, -2.0, -1.0),
        (0.9e8, -0.1, -1.0),
        (1.2e-8, -0.9, -1.0),
        (1e9, -0.5, -1.0),
    ];
    for (lambda, actual, predicted) in cases {
        let got = damping::damping_update(lambda, actual, predicted, &hyper);
        let expected = rule(lambda, actual, predicted);
        assert_eq!(
            got, expected,
            "lambda {lambda}, actual {actual}, predicted {predicted}"
        );
    }
    assert_eq!(
        hyper,
        DampingHyper {
            increase: 1.5,
            decrease: 2.0 / 3.0,
            lower_ratio: 0.25,
            upper_ratio: 0.75,
            min_lambda: 1e-8,
            max_lambda: 1e8
        }
    );
}
