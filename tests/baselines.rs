//! The baseline defences (issue: the defences SpecDef is compared with). The hidden-layer loss
//! they train with is checked against the host in f64 (its value, and its gradient by central
//! differences); RMU against the property its paper states (harmful activations align with the
//! control vector, utility activations stay) on every engine; and a scenario with an RMU
//! baseline runs it before its attacks and records it as a value.

mod common;

use common::{
    SMALL_FEATURES, flat, gpu, numeric_gradient, rng, run_quietly, run_with_notes, short_quick,
    small_spec, train_settings, uniform,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use specdef::Tolerance;
use specdef::data::Dataset;
use specdef::defense::{Defense, LossStage, Npo, RepNoise, Rmu, row_cross_entropy};
use specdef::engine::Engine;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::linalg::Matrix;
use specdef::model::{DeviceModel, HostModel};
use specdef::training::{
    HiddenTargetSet, NoisingSet, PreferenceSet, TrainRows, TrainSession, TrainSet,
};

const FEATURES: usize = SMALL_FEATURES;

/// A few labelled rows (the evaluation set a session needs).
fn eval_set(rows: usize) -> Dataset {
    Dataset {
        inputs: uniform(&mut rng(7), rows * FEATURES, 1.0),
        labels: (0..rows).map(|r| r % 4).collect(),
        features: FEATURES,
    }
}

/// `sum_r w_r |h_r - t_r|^2 / (rows width)` in f64 on the host.
fn host_loss(model: &HostModel, set: &HiddenTargetSet) -> f64 {
    let rows = set.weights.len();
    let inputs = Matrix::new(rows, set.features, set.inputs.clone());
    let h = model.layer_output(&inputs, set.layer);
    let total: f64 = (h.values.chunks(set.width))
        .zip(set.targets.chunks(set.width))
        .zip(&set.weights)
        .map(|((h, t), w)| w * h.iter().zip(t).map(|(a, b)| (a - b).powi(2)).sum::<f64>())
        .sum();
    total / (rows * set.width) as f64
}

fn hidden_set(model: &HostModel, layer: usize, rows: usize) -> HiddenTargetSet {
    let width = model.spec.layer_shape(layer).1;
    let mut r = rng(11 + layer as u64);
    HiddenTargetSet {
        inputs: uniform(&mut r, rows * FEATURES, 1.0),
        features: FEATURES,
        layer,
        targets: uniform(&mut r, rows * width, 0.8),
        width,
        weights: (0..rows).map(|i| 0.5 + (i % 3) as f64).collect(),
    }
}

/// One SGD step at `LR` on the whole set: (the loss before it, the model after it).
const LR: f64 = 1e-3;
fn one_sgd_step(engine: &mut dyn Engine, model: &HostModel, rows: TrainRows) -> (f64, HostModel) {
    let device = DeviceModel::upload(engine, model).unwrap();
    let settings = train_settings(&format!(
        "optimizer = 'sgd'\nlr = {LR}\nsteps = 1\neval_every = 1"
    ));
    let mut session =
        TrainSession::start_rows(engine, &device, rows, &eval_set(5), &settings, 0).unwrap();
    session.run_to_end(engine).unwrap();
    let outcome = session.finish();
    (outcome.loss_curve[0].1, device.download(engine).unwrap())
}

/// One SGD step on every engine against the host in f64: the loss before it, and the step's
/// gradient ((before - after) / LR) against central differences of the host's loss. Parameters
/// of the layers from `frozen_from` on must not move (bit for bit, at the engine's precision).
fn check_loss_and_gradient(
    what: &str,
    model: &HostModel,
    rows: TrainRows,
    loss: &dyn Fn(&HostModel) -> f64,
    frozen_from: usize,
) {
    let expected_loss = loss(model);
    let numeric = numeric_gradient(model, loss);
    let scale = numeric.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let before = flat(model);
    // f64: central differences are good to ~1e-10. f32: the step's rounding (6e-8 of a parameter
    // near 1, over LR) and the f32 sums.
    let f64_tolerance = Tolerance {
        abs: 1e-7,
        rel: 1e-5,
    };
    let f32_tolerance = Tolerance {
        abs: 2e-3 * scale.max(0.1),
        rel: 1e-2,
    };
    let mut results = vec![
        (
            "cpu-f64",
            one_sgd_step(&mut CpuEngine64::new(), model, rows),
            f64_tolerance,
        ),
        (
            "cpu-f32",
            one_sgd_step(&mut CpuEngine32::new(), model, rows),
            f32_tolerance,
        ),
    ];
    if let Some(mut gpu) = gpu() {
        results.push(("gpu", one_sgd_step(&mut *gpu, model, rows), f32_tolerance));
    }
    let trained: usize = (model.layers.iter().take(frozen_from))
        .map(|l| l.parameter_count())
        .sum();
    for (engine, (loss, after), tolerance) in results {
        tolerance
            .check(&[loss], &[expected_loss])
            .unwrap_or_else(|e| panic!("{what} on {engine}: loss: {e}"));
        // SGD: after = before - LR gradient, exactly.
        let gradient: Vec<f64> = (before.iter().zip(flat(&after)))
            .map(|(b, a)| (b - a) / LR)
            .collect();
        tolerance
            .check(&gradient, &numeric)
            .unwrap_or_else(|e| panic!("{what} on {engine}: gradient: {e}"));
        let released: Vec<f64> = (before[trained..].iter())
            .map(|&v| {
                if engine == "cpu-f64" {
                    v
                } else {
                    v as f32 as f64
                }
            })
            .collect();
        assert_eq!(
            &flat(&after)[trained..],
            &released[..],
            "{what} on {engine}: layers from {frozen_from} on changed"
        );
    }
}

#[test]
fn the_hidden_layer_loss_and_its_gradient_match_the_host_in_f64_on_every_engine() {
    let model = HostModel::init(&small_spec(), 5);
    // Layers 0 and 1 (through tanh) and layer 2 (the logits, no activation after it); the layers
    // after the loss's have no gradient and stay as released.
    for layer in 0..3 {
        let set = hidden_set(&model, layer, 12);
        let what = format!("hidden loss on layer {layer}");
        let loss = |m: &HostModel| host_loss(m, &set);
        check_loss_and_gradient(
            &what,
            &model,
            TrainRows::HiddenTargets(&set),
            &loss,
            layer + 1,
        );
    }
}

/// NPO with a retain term (`PreferenceSet`) in f64 on the host.
fn host_preference_loss(model: &HostModel, set: &PreferenceSet) -> f64 {
    let rows = set.data.len();
    let inputs = Matrix::new(rows, set.data.features, set.data.inputs.clone());
    let logits = model.layer_output(&inputs, model.layers.len() - 1);
    let ce = row_cross_entropy(&logits.values, &set.data.labels);
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let total: f64 = (0..rows)
        .map(|r| {
            if set.forget[r] {
                2.0 / set.beta * softplus(set.beta * (set.reference_loss[r] - ce[r]))
            } else {
                set.retain_weight * ce[r]
            }
        })
        .sum();
    total / rows as f64
}

fn preference_set(model: &HostModel, rows: usize) -> PreferenceSet {
    let data = task(31, rows, 0.0, 1);
    let inputs = Matrix::new(rows, FEATURES, data.inputs.clone());
    let logits = model.layer_output(&inputs, model.layers.len() - 1);
    // References a little off the model's own losses, so the log-ratios are not all zero.
    let reference_loss = (row_cross_entropy(&logits.values, &data.labels).iter())
        .enumerate()
        .map(|(r, l)| l + 0.3 * ((r % 5) as f64 - 2.0))
        .collect();
    PreferenceSet {
        data,
        reference_loss,
        forget: (0..rows).map(|r| r % 3 != 0).collect(),
        beta: 0.5,
        retain_weight: 1.5,
    }
}

#[test]
fn the_preference_loss_and_its_gradient_match_the_host_in_f64_on_every_engine() {
    let model = HostModel::init(&small_spec(), 6);
    let set = preference_set(&model, 12);
    let loss = |m: &HostModel| host_preference_loss(m, &set);
    let layers = model.layers.len();
    check_loss_and_gradient("npo", &model, TrainRows::Preference(&set), &loss, layers);
}

/// The rows of `values` (`cols` wide) where `keep` holds.
fn rows_where(values: &[f64], cols: usize, keep: &[bool]) -> Vec<Vec<f64>> {
    (values.chunks(cols).zip(keep))
        .filter(|(_, k)| **k)
        .map(|(row, _)| row.to_vec())
        .collect()
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// RepNoise's bandwidth: the mean squared distance over all pairs of the samples of `x` and
/// `n` together, / 4.
fn host_bandwidth(x: &[Vec<f64>], n: &[Vec<f64>]) -> f64 {
    let all: Vec<&Vec<f64>> = x.iter().chain(n).collect();
    let total: f64 = (all.iter())
        .flat_map(|a| all.iter().map(move |b| squared_distance(a, b)))
        .sum();
    total / (all.len() * all.len()) as f64 / 4.0
}

/// The MMD of five Gaussian kernels (bandwidths `bandwidth` times 1, 2, 4, 8, 16) between the
/// samples `x` and `n` (as many of each), in f64.
fn host_mmd(x: &[Vec<f64>], n: &[Vec<f64>], bandwidth: f64) -> f64 {
    let k = |a: &[f64], b: &[f64]| -> f64 {
        let d = squared_distance(a, b);
        (0..5)
            .map(|q| (-d / (bandwidth * 2f64.powi(q))).exp())
            .sum()
    };
    let mut total = 0.0;
    for i in 0..x.len() {
        for j in 0..x.len() {
            total += k(&x[i], &x[j]) + k(&n[i], &n[j]) - 2.0 * k(&x[i], &n[j]);
        }
    }
    total / (x.len() * x.len()) as f64
}

/// RepNoise's loss (`NoisingSet`) in f64 on the host, each hidden layer's bandwidth given (the
/// loss holds it constant in the gradient).
fn host_noising_loss(model: &HostModel, set: &NoisingSet, bandwidths: &[f64]) -> f64 {
    let rows = set.data.len();
    let inputs = Matrix::new(rows, FEATURES, set.data.inputs.clone());
    let layers = model.layers.len();
    let ce = row_cross_entropy(
        &model.layer_output(&inputs, layers - 1).values,
        &set.data.labels,
    );
    // Each term over its own rows; a term without rows adds nothing.
    let mean_where = |harmful: bool| {
        let picked: Vec<f64> = (ce.iter().zip(&set.harmful))
            .filter(|(_, h)| **h == harmful)
            .map(|(c, _)| *c)
            .collect();
        picked.iter().sum::<f64>() / picked.len().max(1) as f64
    };
    let mut loss = mean_where(false) - set.alpha * mean_where(true).ln_1p();
    for (l, (noise, &bandwidth)) in set.noise.iter().zip(bandwidths).enumerate() {
        let width = model.spec.layer_shape(l).1;
        let h = model.layer_output(&inputs, l);
        let x = rows_where(&h.values, width, &set.harmful);
        let n = rows_where(noise, width, &set.harmful);
        if !x.is_empty() {
            loss += set.beta / (layers - 1) as f64 * host_mmd(&x, &n, bandwidth);
        }
    }
    loss
}

/// Each hidden layer's bandwidth on `model`, as the loss computes it.
fn host_bandwidths(model: &HostModel, set: &NoisingSet) -> Vec<f64> {
    let inputs = Matrix::new(set.data.len(), FEATURES, set.data.inputs.clone());
    (0..model.layers.len() - 1)
        .map(|l| {
            let width = model.spec.layer_shape(l).1;
            let h = model.layer_output(&inputs, l);
            host_bandwidth(
                &rows_where(&h.values, width, &set.harmful),
                &rows_where(&set.noise[l], width, &set.harmful),
            )
        })
        .collect()
}

fn noising_set(rows: usize, harmful: impl Fn(usize) -> bool) -> NoisingSet {
    let mut r = rng(33);
    NoisingSet {
        data: task(32, rows, 0.0, 1),
        harmful: (0..rows).map(harmful).collect(),
        noise: [9, 7]
            .map(|width| uniform(&mut r, rows * width, 1.5))
            .to_vec(),
        alpha: 0.7,
        beta: 2.0,
    }
}

/// The loss and its gradient against the host, on a batch of harmful and utility rows and on one
/// without harmful rows (the noise and harmful terms vanish; the bandwidth's floor keeps the
/// kernels finite).
#[test]
fn the_noising_loss_and_its_gradient_match_the_host_in_f64_on_every_engine() {
    let model = HostModel::init(&small_spec(), 8);
    let layers = model.layers.len();
    for (what, set) in [
        ("repnoise", noising_set(12, |r| r % 3 != 0)),
        ("repnoise without harmful rows", noising_set(12, |_| false)),
    ] {
        let bandwidths = host_bandwidths(&model, &set);
        let loss = |m: &HostModel| host_noising_loss(m, &set, &bandwidths);
        check_loss_and_gradient(what, &model, TrainRows::Noising(&set), &loss, layers);
    }
}

/// A batch's columns: each row's share of the batch's harmful rows and of its utility rows (the
/// batch's counts, not the set's), and each hidden layer's noise of those rows.
#[test]
fn a_noising_batch_reads_its_own_shares_and_its_rows_noise() {
    let set = noising_set(12, |r| r % 3 != 0);
    let chunk = [3, 0, 5, 7, 9];
    let columns = TrainRows::Noising(&set).columns_of(&chunk);
    let values = |label: &str| -> Vec<f64> {
        let column = columns.iter().find(|c| c.label == label).expect(label);
        column.values.clone()
    };
    // Rows 5 and 7 are harmful (r % 3 != 0), rows 3, 0 and 9 utility.
    assert_eq!(values("batch.harmful_share"), [0.0, 0.0, 0.5, 0.5, 0.0]);
    let third = 1.0 / 3.0;
    assert_eq!(
        values("batch.utility_share"),
        [third, third, 0.0, 0.0, third]
    );
    let noise: Vec<_> = columns
        .iter()
        .filter(|c| c.label == "batch.noise")
        .collect();
    assert_eq!(noise.len(), 2);
    for (column, (layer_noise, width)) in noise.iter().zip(set.noise.iter().zip([9, 7])) {
        assert_eq!(column.cols, width);
        let expected: Vec<f64> = (chunk.iter())
            .flat_map(|&r| layer_noise[r * width..(r + 1) * width].to_vec())
            .collect();
        assert_eq!(column.values, expected);
    }
}

/// RepNoise's stated property (Rosati et al. 2024, section 3): training brings the harmful
/// inputs' representations at every hidden layer toward Gaussian noise (their MMD to a fresh
/// sample of it falls, and further than with the noise term off) and the harmful loss up, while
/// the retain term keeps the utility task.
#[test]
fn repnoise_brings_harmful_representations_toward_noise_and_keeps_utility_on_every_engine() {
    let model = HostModel::init(&small_spec(), 14);
    let (harmful, utility) = (task(51, 40, 0.6, 2), task(52, 40, -0.6, 0));
    let with_beta = |beta| RepNoise {
        alpha: 1.0,
        beta,
        train: train_settings("optimizer = 'adamw'\nlr = 1e-2\nsteps = 200\neval_every = 50"),
    };
    let repnoise = with_beta(4.0);
    let trained = |engine: &mut dyn Engine, stage: &RepNoise| -> HostModel {
        let set = stage.training_set(&model, &utility, &harmful, 0).unwrap();
        let device = DeviceModel::upload(engine, &model).unwrap();
        let mut session =
            TrainSession::start_rows(engine, &device, set.rows(), &utility, &stage.train, 0)
                .unwrap();
        session.run_to_end(engine).unwrap();
        device.download(engine).unwrap()
    };
    // A fresh standard Gaussian sample per harmful row and hidden layer.
    let mut r = ChaCha8Rng::seed_from_u64(53);
    let fresh: Vec<Vec<Vec<f64>>> = [9, 7]
        .iter()
        .map(|&width| {
            (0..harmful.len())
                .map(|_| (0..width).map(|_| r.sample(StandardNormal)).collect())
                .collect()
        })
        .collect();
    let inputs = Matrix::new(harmful.len(), FEATURES, harmful.inputs.clone());
    let mmds = |m: &HostModel| -> Vec<f64> {
        (0..2)
            .map(|l| {
                let width = m.spec.layer_shape(l).1;
                let h = m.layer_output(&inputs, l);
                let x: Vec<Vec<f64>> = h.values.chunks(width).map(<[f64]>::to_vec).collect();
                host_mmd(&x, &fresh[l], host_bandwidth(&x, &fresh[l]))
            })
            .collect()
    };
    let mean_loss = |m: &HostModel, data: &Dataset| {
        let inputs = Matrix::new(data.len(), FEATURES, data.inputs.clone());
        let ce = row_cross_entropy(&m.layer_output(&inputs, 2).values, &data.labels);
        ce.iter().sum::<f64>() / ce.len() as f64
    };
    let before = mmds(&model);
    let (harmful_before, utility_before) =
        (mean_loss(&model, &harmful), mean_loss(&model, &utility));
    // The control: the same training without the noise term.
    let without_noise = mmds(&trained(&mut CpuEngine64::new(), &with_beta(0.0)));
    let run = |engine: &mut dyn Engine| {
        let name = engine.info().engine;
        let after = trained(engine, &repnoise);
        let mmd = mmds(&after);
        let (harmful_after, utility_after) =
            (mean_loss(&after, &harmful), mean_loss(&after, &utility));
        eprintln!(
            "{name}: MMD to noise {before:.3?} -> {mmd:.3?} (without the noise term \
             {without_noise:.3?}); harmful loss {harmful_before:.3} -> {harmful_after:.3}; \
             utility loss {utility_before:.3} -> {utility_after:.3}"
        );
        for l in 0..2 {
            assert!(
                mmd[l] < 0.5 * before[l] && mmd[l] < 0.5 * without_noise[l],
                "{name}: layer {l}: MMD {} -> {} ({} without the noise term)",
                before[l],
                mmd[l],
                without_noise[l]
            );
        }
        assert!(harmful_after > harmful_before + 1.0, "{name}: harmful loss");
        assert!(
            utility_after < utility_before + 0.1,
            "{name}: utility loss {utility_before} -> {utility_after}"
        );
    };
    run(&mut CpuEngine64::new());
    run(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        run(&mut *gpu);
    }
}

/// Inputs of one task: uniform in [-1, 1] around `shift` (harmful and utility images differ in
/// mean, as digits 5-9 and 0-4 do), labelled `first` and `first + 1` in turn (the tasks' classes
/// are disjoint, as the digits').
fn task(seed: u64, rows: usize, shift: f64, first: usize) -> Dataset {
    let inputs = uniform(&mut rng(seed), rows * FEATURES, 1.0);
    Dataset {
        inputs: inputs.iter().map(|v| v + shift).collect(),
        labels: (0..rows).map(|r| first + r % 2).collect(),
        features: FEATURES,
    }
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Per row of `rows`: (mean cosine to `direction`, mean |h - t| / |t|) of layer `layer`'s
/// output against `targets` (one row each, or one for all).
fn alignment(
    model: &HostModel,
    data: &Dataset,
    layer: usize,
    targets: &[f64],
    width: usize,
) -> (f64, f64) {
    let h = model.layer_output(
        &Matrix::new(data.len(), FEATURES, data.inputs.clone()),
        layer,
    );
    let rows = h.values.chunks(width).enumerate();
    let (mut cos, mut dist) = (0.0, 0.0);
    for (r, row) in rows {
        let t = &targets[(r * width) % targets.len()..][..width];
        cos += cosine(row, t);
        let d: f64 = row.iter().zip(t).map(|(a, b)| (a - b).powi(2)).sum();
        dist += d.sqrt() / t.iter().map(|x| x * x).sum::<f64>().sqrt();
    }
    (cos / data.len() as f64, dist / data.len() as f64)
}

/// RMU's stated property (Li et al. 2024, section 5): the steered layer's activations on harmful
/// inputs align with the control vector, while those on utility inputs stay where they were.
#[test]
fn rmu_aligns_harmful_activations_with_its_control_vector_on_every_engine() {
    let model = HostModel::init(&small_spec(), 9);
    let (harmful, utility) = (task(21, 40, 0.6, 2), task(22, 40, -0.6, 0));
    let rmu = Rmu {
        layer: 1,
        // tanh bounds each coordinate by 1: a norm-2 vector of 7 non-negative coordinates fits.
        steering: 2.0,
        retain_weight: 10.0,
        train: train_settings("optimizer = 'adam'\nlr = 1e-2\nsteps = 400\neval_every = 100"),
    };
    let TrainSet::HiddenTargets(set) = rmu.training_set(&model, &utility, &harmful, 4).unwrap()
    else {
        panic!("RMU trains a hidden layer's targets")
    };
    let width = set.width;
    let control = rmu.control_vector(width, 4);
    let released = model.layer_output(
        &Matrix::new(utility.len(), FEATURES, utility.inputs.clone()),
        1,
    );
    let (cos_before, _) = alignment(&model, &harmful, 1, &control, width);
    let run = |engine: &mut dyn Engine| {
        let name = engine.info().engine;
        let device = DeviceModel::upload(engine, &model).unwrap();
        let rows = TrainRows::HiddenTargets(&set);
        let mut session =
            TrainSession::start_rows(engine, &device, rows, &eval_set(5), &rmu.train, 4).unwrap();
        session.run_to_end(engine).unwrap();
        let curve = session.finish().loss_curve;
        let after = device.download(engine).unwrap();
        let (cos, dist) = alignment(&after, &harmful, 1, &control, width);
        let (_, kept) = alignment(&after, &utility, 1, &released.values, width);
        eprintln!(
            "{name}: loss {:.4} -> {:.4}; harmful cosine to c u {cos_before:.3} -> {cos:.3}, \
             distance {dist:.3}; utility activations moved {kept:.3} of their norm",
            curve[0].1,
            curve[curve.len() - 1].1
        );
        assert!(cos > 0.95 && cos > cos_before + 0.3, "{name}: cosine {cos}");
        assert!(
            dist < 0.3,
            "{name}: harmful activations {dist} of |c u| from it"
        );
        assert!(kept < 0.15, "{name}: utility activations moved {kept}");
    };
    run(&mut CpuEngine64::new());
    run(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        run(&mut *gpu);
    }
}

/// A scenario with an RMU baseline trains it on the released model before its attacks, and its
/// records carry it as a value of its own (not as the undefended model).
#[test]
fn a_scenario_runs_its_rmu_baseline_and_records_it_as_a_defence_of_its_own() {
    let mut scenario = short_quick();
    let rmu = Rmu {
        layer: 1,
        steering: 20.0,
        retain_weight: 100.0,
        train: train_settings("optimizer = 'adamw'\nlr = 1e-3\nsteps = 30\neval_every = 10"),
    };
    scenario.defense.baselines = vec![Defense::Rmu(Box::new(rmu.clone()))];
    scenario.validate().unwrap();
    let outcome = run_quietly(&mut CpuEngine32::new(), &scenario, None);
    let baseline = (outcome.defenses.iter())
        .find(|d| d.defense == Defense::Rmu(Box::new(rmu.clone())))
        .expect("a summary of the RMU baseline");
    assert_eq!(baseline.label, "rmu l=1 c=20");
    let runs: Vec<_> = (outcome.records.iter())
        .filter(|r| r.defense == "rmu")
        .collect();
    let per_model = scenario.attack.optimizers.len() * scenario.attack.lr_grid.values().len();
    assert_eq!(runs.len(), per_model);
    for r in &runs {
        r.validate().unwrap();
        assert_eq!(
            r.defense_value().unwrap(),
            Defense::Rmu(Box::new(rmu.clone()))
        );
        assert_eq!(r.defense_label(), "rmu l=1 c=20");
        assert_eq!(r.alpha, None);
    }
    let undefended = outcome
        .records
        .iter()
        .filter(|r| r.defense_label() == "none");
    assert_eq!(undefended.count(), per_model);
}

#[test]
fn a_baseline_with_settings_that_do_not_fit_is_refused_naming_the_field() {
    let mut scenario = short_quick();
    let rmu = |layer| Rmu {
        layer,
        steering: 20.0,
        retain_weight: 100.0,
        train: train_settings("optimizer = 'adam'\nlr = 1e-3\nsteps = 30"),
    };
    // Layer 2 of [64, 64, 64, 10] is the logits, not a hidden layer.
    scenario.defense.baselines = vec![Defense::Rmu(Box::new(rmu(2)))];
    let e = scenario.validate().unwrap_err();
    assert!(
        e.contains("defense.baselines[0]") && e.contains("rmu.layer"),
        "{e}"
    );
    scenario.defense.baselines = vec![
        Defense::Rmu(Box::new(rmu(1))),
        Defense::Rmu(Box::new(rmu(1))),
    ];
    let e = scenario.validate().unwrap_err();
    assert!(e.contains("defense.baselines[1] repeats"), "{e}");
    scenario.defense.baselines = vec![Defense::None];
    let e = scenario.validate().unwrap_err();
    assert!(e.contains("not a baseline"), "{e}");
    let mut second_order = rmu(1);
    second_order.train.optimizer = specdef::training::OptimizerKind::Sophia;
    scenario.defense.baselines = vec![Defense::Rmu(Box::new(second_order))];
    let e = scenario.validate().unwrap_err();
    assert!(e.contains("rmu.train.optimizer"), "{e}");
    let npo = Npo {
        beta: 0.0,
        retain_weight: 1.0,
        train: train_settings("optimizer = 'adam'\nlr = 1e-3\nsteps = 30"),
    };
    scenario.defense.baselines = vec![Defense::Npo(Box::new(npo))];
    let e = scenario.validate().unwrap_err();
    assert!(e.contains("defense.baselines[0]: defence: npo.beta"), "{e}");
    let repnoise = RepNoise {
        alpha: 1.0,
        beta: f64::NAN,
        train: train_settings("optimizer = 'adam'\nlr = 1e-3\nsteps = 30"),
    };
    scenario.defense.baselines = vec![Defense::RepNoise(Box::new(repnoise))];
    let e = scenario.validate().unwrap_err();
    assert!(
        e.contains("defense.baselines[0]: defence: repnoise.beta"),
        "{e}"
    );
}

/// NPO's stated property (Zhang et al. 2024, section 3): training lowers the harmful labels'
/// log-likelihood ratio to the reference, log p(y|x) - log p_ref(y|x), below 0, and as it falls
/// the loss's gradient weight 2 sigmoid(beta ratio) falls below gradient ascent's 1; the retain
/// term keeps the utility task.
#[test]
fn npo_lowers_the_harmful_log_likelihood_ratio_and_keeps_utility_on_every_engine() {
    let model = HostModel::init(&small_spec(), 12);
    let (harmful, utility) = (task(41, 40, 0.6, 2), task(42, 40, -0.6, 0));
    let npo = Npo {
        beta: 0.1,
        retain_weight: 1.0,
        train: train_settings("optimizer = 'adamw'\nlr = 1e-2\nsteps = 200\neval_every = 50"),
    };
    let TrainSet::Preference(set) = npo.training_set(&model, &utility, &harmful, 0).unwrap() else {
        panic!("NPO trains on preference rows")
    };
    let losses = |m: &HostModel, data: &Dataset| {
        let inputs = Matrix::new(data.len(), FEATURES, data.inputs.clone());
        row_cross_entropy(&m.layer_output(&inputs, 2).values, &data.labels)
    };
    let reference = losses(&model, &harmful);
    let utility_before = losses(&model, &utility).iter().sum::<f64>() / utility.len() as f64;
    let run = |engine: &mut dyn Engine| {
        let name = engine.info().engine;
        let device = DeviceModel::upload(engine, &model).unwrap();
        let rows = TrainRows::Preference(&set);
        let mut session =
            TrainSession::start_rows(engine, &device, rows, &utility, &npo.train, 0).unwrap();
        session.run_to_end(engine).unwrap();
        let after = device.download(engine).unwrap();
        let ratios: Vec<f64> = (reference.iter().zip(losses(&after, &harmful)))
            .map(|(reference, loss)| reference - loss)
            .collect();
        let mean_ratio = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let weight = (ratios.iter())
            .map(|d| 2.0 / (1.0 + (-npo.beta * d).exp()))
            .sum::<f64>()
            / ratios.len() as f64;
        let utility_after = losses(&after, &utility).iter().sum::<f64>() / utility.len() as f64;
        eprintln!(
            "{name}: harmful log-likelihood ratio 0 -> {mean_ratio:.2} (every row below 0: {}), \
             gradient weight 1 -> {weight:.3}; utility loss {utility_before:.3} -> \
             {utility_after:.3}",
            ratios.iter().all(|d| *d < 0.0)
        );
        assert!(mean_ratio < -1.0, "{name}: mean log-ratio {mean_ratio}");
        assert!(ratios.iter().all(|d| *d < 0.0), "{name}: {ratios:?}");
        assert!(weight < 1.0, "{name}: gradient weight {weight}");
        assert!(
            utility_after < utility_before + 0.1,
            "{name}: utility loss {utility_before} -> {utility_after}"
        );
    };
    run(&mut CpuEngine64::new());
    run(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        run(&mut *gpu);
    }
}

/// Runs a scenario on the f32 CPU engine to the end, keeping its notes.
/// A baseline attacked by two targets (the harmful task and trainability's benign one) trains
/// once per run, and a second run of the same released model reads it from the cache, with the
/// same outcomes.
#[test]
fn a_baseline_trains_once_per_run_and_is_cached_between_runs() {
    let mut scenario = short_quick();
    scenario.trainability.optimizers = vec![specdef::training::OptimizerKind::Sgd];
    let npo = Npo {
        beta: 0.1,
        retain_weight: 1.0,
        train: train_settings("optimizer = 'adamw'\nlr = 1e-3\nsteps = 20\neval_every = 10"),
    };
    scenario.defense.baselines = vec![Defense::Npo(Box::new(npo))];
    let cache = common::scratch("baselines", "cache");
    let run = || run_with_notes(&scenario, Some(cache.clone()));
    let count = |notes: &[String], text: &str| notes.iter().filter(|n| n.contains(text)).count();
    let (first, notes) = run();
    assert_eq!(count(&notes, "npo b=0.1: trained for"), 1, "{notes:?}");
    assert_eq!(count(&notes, "baseline model from cache"), 0, "{notes:?}");
    let (second, notes) = run();
    assert_eq!(count(&notes, "npo b=0.1: trained for"), 0, "{notes:?}");
    assert_eq!(count(&notes, "baseline model from cache"), 1, "{notes:?}");
    let npo_runs =
        |outcome: &specdef::scenario::ScenarioOutcome| -> Vec<(String, Option<f64>, f64)> {
            (outcome.records.iter())
                .filter(|r| r.defense == "npo")
                .map(|r| (r.optimizer.clone(), r.final_loss, r.utility_after_defense))
                .collect()
        };
    assert_eq!(npo_runs(&first).len(), 2 * 2 + 2);
    assert_eq!(npo_runs(&first), npo_runs(&second));
    // Its training curves: measured at step 0 and each evaluation, kept in the cache entry.
    let curves = |outcome: &specdef::scenario::ScenarioOutcome| {
        let npo = (outcome.defenses.iter())
            .find(|d| d.defense.name() == "npo")
            .expect("the NPO summary");
        npo.training.clone()
    };
    let trained = curves(&first);
    let names: Vec<&str> = trained.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["loss", "eval_accuracy"]);
    for curve in &trained {
        let steps: Vec<usize> = curve.points.iter().map(|p| p.0).collect();
        assert_eq!(steps, [0, 10, 20], "{}", curve.name);
    }
    assert_eq!(
        curves(&second),
        trained,
        "the curves read back from the cache"
    );
    let csv = specdef::report::defense_training_csv(&first.defenses).expect("a trained baseline");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(specdef::report::DEFENSE_TRAINING_HEADER));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(
        rows.len(),
        6,
        "two curves of three points, the baseline once: {csv}"
    );
    assert!(rows.iter().all(|r| r.starts_with("npo b=0.1,")), "{csv}");
    let last_accuracy = trained[1].points[2].1;
    assert!(
        rows[5].ends_with(&format!(",eval_accuracy,20,{last_accuracy}")),
        "{csv}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

/// SpecDef stacked on a baseline rewrites the model the baseline trained (trained once for
/// both), keeping its function: the stack's utility is the baseline's, its size SpecDef's.
#[test]
fn specdef_stacks_on_a_baseline_trained_once() {
    let mut scenario = short_quick();
    let rmu = Rmu {
        layer: 1,
        steering: 20.0,
        retain_weight: 100.0,
        train: train_settings("optimizer = 'adamw'\nlr = 1e-3\nsteps = 30\neval_every = 10"),
    };
    scenario.defense.baselines = vec![Defense::Rmu(Box::new(rmu))];
    scenario.defense.stack_alphas = vec![1e4];
    scenario.validate().unwrap();
    let (outcome, notes) = run_with_notes(&scenario, None);
    let trained = (notes.iter())
        .filter(|n| n.contains("rmu l=1 c=20: trained for"))
        .count();
    assert_eq!(trained, 1, "{notes:?}");
    let summary = |label: &str| {
        (outcome.defenses.iter())
            .find(|d| d.label == label)
            .unwrap_or_else(|| panic!("no summary {label}"))
    };
    let (baseline, stacked, spec_def) = (
        summary("rmu l=1 c=20"),
        summary("rmu l=1 c=20 + specdef a=1e4"),
        summary("specdef a=1e4"),
    );
    assert_eq!(stacked.parameter_count, spec_def.parameter_count);
    let kept = (stacked.utility_after_defense - baseline.utility_after_defense).abs();
    assert!(kept <= 0.01, "{kept}");
    let runs = (outcome.records.iter()).filter(|r| r.defense == "stacked");
    for r in runs {
        r.validate().unwrap();
        assert_eq!(r.defense_label(), "rmu l=1 c=20 + specdef a=1e4");
        assert!(!r.defense_value().unwrap().is_baseline());
    }
    let mut doubled = scenario.clone();
    doubled.defense.stack_alphas = vec![1e4, 1e4];
    let e = doubled.validate().unwrap_err();
    assert!(e.contains("defense.stack_alphas names"), "{e}");
    doubled.defense.baselines.clear();
    doubled.defense.stack_alphas = vec![1e4];
    let e = doubled.validate().unwrap_err();
    assert!(e.contains("defense.baselines is empty"), "{e}");
}

/// A loss other than cross-entropy has no Hessian-vector products here: a second-order optimiser
/// on it is refused by name before any upload, not run as something else.
#[test]
fn a_second_order_optimiser_on_a_baseline_loss_is_refused() {
    let model = HostModel::init(&small_spec(), 6);
    let set = preference_set(&model, 8);
    let mut engine = CpuEngine64::new();
    let device = DeviceModel::upload(&mut engine, &model).unwrap();
    let sophia = train_settings("optimizer = 'sophia'\nlr = 1e-3\nsteps = 1");
    let rows = TrainRows::Preference(&set);
    let e = TrainSession::start_rows(&mut engine, &device, rows, &eval_set(5), &sophia, 0)
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("sophia trains on cross-entropy only"),
        "{e}"
    );
}

/// The adaptive attacker's LoRA on the weights reaches every model of the baselines variant: the
/// undefended one, each baseline and each stack, and SpecDef at the adaptive alpha.
#[test]
fn lora_on_the_weights_attacks_every_baseline_and_stack() {
    let scenario = specdef::scenario::Scenario::builtin(Some("baselines")).unwrap();
    let lora: Vec<String> = (scenario.targets().iter())
        .filter(|t| t.adaptive.is_some())
        .map(|t| t.label())
        .collect();
    let defences = scenario.defense.defenses();
    let trained: Vec<&Defense> = (defences.iter())
        .filter(|d| d.trained_part().is_some())
        .collect();
    let baselines = scenario.defense.baselines.len();
    assert_eq!(baselines, 5, "RMU, NPO, RepNoise, TAR and immunisation");
    assert_eq!(trained.len(), 2 * baselines, "each baseline and its stack");
    for defense in [&Defense::None].into_iter().chain(trained) {
        let expected = format!("{} + lora-weight r=8", defense.label());
        assert!(lora.contains(&expected), "{expected} not in {lora:?}");
    }
    assert!(
        lora.contains(&"specdef a=1e4 + lora-weight r=8".to_string()),
        "{lora:?}"
    );
}
