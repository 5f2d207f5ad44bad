//! The encoder's training step against host oracles, in f64: the uniform (suppression) target's
//! loss and gradient, and AdaHessian's first step, whose Hutchinson diagonal comes from the
//! forward-mode transform of the gradient recording, against the same step computed from
//! central differences of the gradient. On the fetched model's first block (without it these
//! tests say so and pass, unless SPECDEF_REQUIRE_TRANSFORMER=1).

mod common;

use specdef::encoder::{
    self, ClassTarget, EncoderHost, EncoderOptimizer, EncoderTrainable, TokenBatch,
    record_train_step, trainable_tensors,
};
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{Engine, Recording};
use specdef::model::Trainable;
use specdef::tokenizer::WordPiece;
use specdef::training::{AdaHessianSettings, OptimizerHyper, OptimizerKind, mean_cross_entropy};
use specdef::transformer_files::model_dir;
use specdef::transformer_scenario::{DeviceClassifier, HostClassifier};

const GLOSSES: [&str; 4] = [
    "dog: a member of the genus Canis",
    "bread: food made from dough of flour or meal and usually raised with yeast",
    "hammer: a hand tool with a heavy rigid head and a handle",
    "oak: a deciduous tree of the genus Quercus",
];
const CLASSES: usize = 10;
/// Labelled rows and suppressed ones, mixed.
const TARGETS: [ClassTarget; 4] = [
    ClassTarget::Label(0),
    ClassTarget::Uniform,
    ClassTarget::Label(7),
    ClassTarget::Uniform,
];

fn setup() -> Option<(HostClassifier, TokenBatch)> {
    let folder = model_dir();
    if !common::fetched(&folder.join("model.safetensors")) {
        return None;
    }
    let (config, weights) = encoder::load(&folder, Some(1)).unwrap();
    let tokenizer = WordPiece::from_file(&folder.join("tokenizer.json")).unwrap();
    let encodings: Vec<_> = (GLOSSES.iter())
        .map(|t| tokenizer.encode(t, 20).unwrap())
        .collect();
    let mut rng = common::rng(3);
    let mut model = HostClassifier::new(
        EncoderHost::from_weights(&config, &weights),
        CLASSES,
        &mut rng,
    );
    // A head with logits well away from uniform, so every term of the loss is felt.
    let head = &mut model.head.factors[0].matrix;
    head.values = common::uniform(&mut rng, head.values.len(), 0.5);
    Some((model, TokenBatch::new(&encodings)))
}

/// Only the head trains: its weight and bias.
fn head_only() -> EncoderTrainable {
    EncoderTrainable {
        layers: Trainable::only(&[]),
        norms: false,
        embeddings: false,
        head: Some(Trainable::default()),
    }
}

/// One step of `optimizer` on `model` (head only); returns (loss per row, logits before the
/// update, the head's weight and bias after it).
fn step(
    e: &mut CpuEngine64,
    model: &HostClassifier,
    batch: &TokenBatch,
    optimizer: &mut EncoderOptimizer,
) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    let device = DeviceClassifier::upload(e, model).unwrap();
    let trained = trainable_tensors(&device.encoder, &device.head, head_only());
    let recorded = record_train_step(
        e,
        &device.encoder,
        &device.head,
        batch,
        &TARGETS,
        &trained,
        optimizer,
    )
    .unwrap();
    e.run(&recorded.recording).unwrap();
    let loss = e.read_one(recorded.loss).unwrap()[0] / TARGETS.len() as f64;
    let logits = e.read_one(recorded.logits).unwrap();
    let weight = e.read_one(device.head.factors[0].matrix).unwrap();
    let bias = e.read_one(device.head.bias).unwrap();
    (loss, logits, weight, bias)
}

fn sgd(e: &dyn Engine, lr: f64) -> EncoderOptimizer {
    EncoderOptimizer::new(e, OptimizerKind::Sgd, lr, OptimizerHyper::default(), 0).unwrap()
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = row.iter().map(|z| (z - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|x| x / sum).collect()
}

#[test]
fn a_uniform_target_is_the_mean_cross_entropy_over_the_classes() {
    let Some((model, batch)) = setup() else {
        return;
    };
    let mut e = CpuEngine64::new();
    let mut optimizer = sgd(&e, 1.0);
    let (loss, logits, _, bias) = step(&mut e, &model, &batch, &mut optimizer);
    let rows: Vec<&[f64]> = logits.chunks(CLASSES).collect();
    let mut want_loss = 0.0;
    let mut want_bias_gradient = vec![0.0; CLASSES];
    for (row, target) in rows.iter().zip(TARGETS) {
        let p = softmax(row);
        let y: Vec<f64> = match target {
            ClassTarget::Label(l) => (0..CLASSES).map(|c| f64::from(c == l)).collect(),
            ClassTarget::Uniform => vec![1.0 / CLASSES as f64; CLASSES],
        };
        want_loss += match target {
            ClassTarget::Label(l) => mean_cross_entropy(row, &[l]),
            ClassTarget::Uniform => -(0..CLASSES).map(|c| p[c].ln()).sum::<f64>() / 10.0,
        };
        for c in 0..CLASSES {
            want_bias_gradient[c] += (p[c] - y[c]) / TARGETS.len() as f64;
        }
    }
    want_loss /= TARGETS.len() as f64;
    assert!(
        (loss - want_loss).abs() < 1e-12,
        "loss {loss}, host {want_loss}"
    );
    // SGD at rate 1 from a zero bias: the bias is minus the gradient.
    let gradient: Vec<f64> = bias.iter().map(|b| -b).collect();
    let error = common::relative_error(&gradient, &want_bias_gradient);
    assert!(error < 1e-10, "bias gradient off by {error:e}");
}

/// The head's gradient at `model`: minus the change of one SGD step at rate 1.
fn head_gradient(e: &mut CpuEngine64, model: &HostClassifier, batch: &TokenBatch) -> Vec<f64> {
    let mut optimizer = sgd(e, 1.0);
    let (_, _, weight, bias) = step(e, model, batch, &mut optimizer);
    let before = (model.head.factors[0].matrix.values.iter()).chain(&model.head.bias.values);
    before
        .zip(weight.iter().chain(&bias))
        .map(|(b, a)| b - a)
        .collect()
}

#[test]
fn adahessian_steps_by_the_hutchinson_diagonal_of_central_differences() {
    let Some((model, batch)) = setup() else {
        return;
    };
    let mut e = CpuEngine64::new();
    let (seed, lr) = (11, 0.05);
    let mut adahessian = EncoderOptimizer::new(
        &e,
        OptimizerKind::Adahessian,
        lr,
        OptimizerHyper::default(),
        seed,
    )
    .unwrap();
    let settings = AdaHessianSettings::default();
    adahessian.adahessian = settings;
    let (_, _, weight, bias) = step(&mut e, &model, &batch, &mut adahessian);

    // The probes the step drew: Rademacher vectors of the weight (slot 0) and bias (slot 1)
    // from the optimiser's seed, stream (step 1 << 32) | slot.
    let w = model.head.factors[0].matrix.clone();
    let b = model.head.bias.clone();
    let mut rec = Recording::new();
    let z_w = e.alloc("z_w", w.rows, w.cols).unwrap();
    let z_b = e.alloc("z_b", 1, b.cols).unwrap();
    rec.rademacher(z_w, seed, 1 << 32);
    rec.rademacher(z_b, seed, (1 << 32) | 1);
    e.run(&rec).unwrap();
    let z: Vec<f64> = (e.read_one(z_w).unwrap().into_iter())
        .chain(e.read_one(z_b).unwrap())
        .collect();
    assert!(z.iter().all(|v| v.abs() == 1.0), "Rademacher probes");

    // H z by central differences of the gradient along z.
    let h = 1e-4;
    let shifted = |sign: f64| {
        let mut m = model.clone();
        let head = &mut m.head;
        let n = w.values.len();
        for (i, v) in head.factors[0].matrix.values.iter_mut().enumerate() {
            *v += sign * h * z[i];
        }
        for (i, v) in head.bias.values.iter_mut().enumerate() {
            *v += sign * h * z[n + i];
        }
        m
    };
    let g = head_gradient(&mut e, &model, &batch);
    let (g_plus, g_minus) = (
        head_gradient(&mut e, &shifted(1.0), &batch),
        head_gradient(&mut e, &shifted(-1.0), &batch),
    );
    let diag: Vec<f64> = (0..z.len())
        .map(|i| z[i] * (g_plus[i] - g_minus[i]) / (2.0 * h))
        .collect();
    // The weight's |D| averaged per row (the matrix rule); the bias keeps its own entries.
    let n = w.values.len();
    let mut scale: Vec<f64> = Vec::with_capacity(z.len());
    for row in diag[..n].chunks(w.cols) {
        let mean = row.iter().map(|d| d.abs()).sum::<f64>() / w.cols as f64;
        scale.extend(std::iter::repeat_n(mean, w.cols));
    }
    scale.extend(diag[n..].iter().map(|d| d.abs()));
    // Step 1: m-hat = g, sqrt(v-hat) = |D|, so the update is lr g / (|D| + eps).
    let want: Vec<f64> = (w.values.iter().chain(&b.values).enumerate())
        .map(|(i, p)| p - lr * g[i] / (scale[i] + settings.eps))
        .collect();
    let got: Vec<f64> = weight.into_iter().chain(bias).collect();
    let moved: Vec<f64> = (got.iter().zip(w.values.iter().chain(&b.values)))
        .map(|(a, p)| a - p)
        .collect();
    let want_moved: Vec<f64> = (want.iter().zip(w.values.iter().chain(&b.values)))
        .map(|(a, p)| a - p)
        .collect();
    let error = common::relative_error(&moved, &want_moved);
    assert!(error < 1e-6, "AdaHessian's update off by {error:e}");
    // And it is not Adam's step (which would be about lr sign(g)): the curvature is felt.
    let adam_like: Vec<f64> = g.iter().map(|gi| -lr * gi.signum()).collect();
    assert!(common::relative_error(&moved, &adam_like) > 1e-2);
}

/// `a b^T` of row-major matrices (`a` r x k, `b` c x k).
fn times_transposed(a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
    let (r, c) = (a.len() / k, b.len() / k);
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[i * c + j] = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
        }
    }
    out
}

/// `a b` of row-major matrices (`a` r x k, `b` k x c).
fn times(a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
    let (r, c) = (a.len() / k, b.len() / k);
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for t in 0..k {
            for j in 0..c {
                out[i * c + j] += a[i * k + t] * b[t * c + j];
            }
        }
    }
    out
}

#[test]
fn muon_orthogonalises_the_heads_step_and_trains_its_bias_with_adamw() {
    let Some((model, batch)) = setup() else {
        return;
    };
    let mut e = CpuEngine64::new();
    let lr = 0.02;
    let mut muon =
        EncoderOptimizer::new(&e, OptimizerKind::Muon, lr, OptimizerHyper::default(), 0).unwrap();
    let (_, _, weight, bias) = step(&mut e, &model, &batch, &mut muon);
    let g = head_gradient(&mut e, &model, &batch);
    let w = &model.head.factors[0].matrix;
    let (rows, cols) = (w.rows, w.cols);
    // Step 1 from zero momentum: Nesterov's u is (1 - beta)(1 + beta) g; X = u / |u|_F.
    let beta = muon.muon.momentum;
    let u: Vec<f64> = g[..rows * cols]
        .iter()
        .map(|gi| (1.0 - beta) * (1.0 + beta) * gi)
        .collect();
    let norm = (u.iter().map(|v| v * v).sum::<f64>() + 1e-14).sqrt();
    let mut x: Vec<f64> = u.iter().map(|v| v / norm).collect();
    // The head is wide (10 x 384): no transpose; shape factor 1.
    let (a, b, c) = specdef::training::NEWTON_SCHULZ;
    for _ in 0..muon.muon.ns_steps {
        let gram = times_transposed(&x, &x, cols);
        let gram_sq = times(&gram, &gram, rows);
        let poly: Vec<f64> = (gram.iter().zip(&gram_sq))
            .map(|(g1, g2)| b * g1 + c * g2)
            .collect();
        let bx = times(&poly, &x, rows);
        x = (x.iter().zip(&bx)).map(|(xi, bi)| a * xi + bi).collect();
    }
    let want: Vec<f64> = (w.values.iter().zip(&x)).map(|(p, o)| p - lr * o).collect();
    let moved =
        |after: &[f64]| -> Vec<f64> { after.iter().zip(&w.values).map(|(a, p)| a - p).collect() };
    let error = common::relative_error(&moved(&weight), &moved(&want));
    assert!(error < 1e-9, "Muon's step off by {error:e}");
    // The bias (a vector) by AdamW: step 1 moves each entry by lr g / (|g| + eps), its decay
    // acting on a zero bias.
    let g_bias = &g[rows * cols..];
    for (after, gi) in bias.iter().zip(g_bias) {
        let want = -lr * gi / (gi.abs() + 1e-8);
        assert!((after - want).abs() < 1e-9 * lr, "{after} against {want}");
    }
}
