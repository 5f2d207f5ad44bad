//! The second-order and curvature-aware optimisers (`training/second_order.rs`), each on a problem
//! with a known answer: undamped Newton-CG solves a least-squares problem in one step;
//! AdaHessian's Hutchinson diagonal is exact on a diagonal quadratic; Sophia never moves an
//! entry by more than lr (beyond its weight decay); Muon's update has the singular values the
//! Newton-Schulz polynomial gives. Each runs on the f64 engine (tight tolerances), the f32 CPU
//! engine and the GPU engine where there is one (f32 tolerances). Then every one of them trains
//! through the real training loop and scenario runner.

mod common;

use common::{Call, CallLog, Logging, every_form_model, gpu, rng, uniform};
use faer::Mat;
use faer::prelude::SolveLstsq;
use specdef::data::teacher_student;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::{Engine, Recording};
use specdef::linalg::faer_svd;
use specdef::model::{
    ActivationChoice, DeviceModel, HostModel, Loss, Matrix, ModelSpec, ParamGroup, ParamKey,
    ParamRole, Trainable, Workspace,
};
use specdef::scenario::{Scenario, TaskData};
use specdef::training::{
    HessianAverage, NEWTON_SCHULZ, OptimizerKind, Schedule, SecondOrderConfig, SecondOrderHyper,
    SecondOrderState, SophiaEstimator, TrainSession, TrainSettings,
};

/// Runs `body` on the f64 engine (`exact` true), then on the f32 CPU engine and the GPU engine
/// where there is one (`exact` false).
fn on_every_engine(body: impl Fn(&mut dyn Engine, bool)) {
    body(&mut CpuEngine64::new(), true);
    body(&mut CpuEngine32::new(), false);
    if let Some(mut gpu) = gpu() {
        body(&mut *gpu, false);
    }
}

fn close(actual: f64, expected: f64, abs: f64, rel: f64) -> bool {
    (actual - expected).abs() <= abs + rel * expected.abs()
}

/// A model's parameters read back, by key.
fn parameters(e: &mut dyn Engine, device: &DeviceModel) -> Vec<(ParamKey, Matrix)> {
    let host = device.download(e).unwrap();
    host.parameters()
        .into_iter()
        .map(|(k, m)| (k, m.clone()))
        .collect()
}

fn read(e: &mut dyn Engine, t: specdef::Tensor) -> Vec<f64> {
    e.read_one(t).unwrap()
}

/// A workspace of `device` holding `inputs` and `targets`.
fn workspace(
    e: &mut dyn Engine,
    device: &DeviceModel,
    (inputs, targets, target_cols): (&[f64], &[f64], usize),
) -> specdef::engine::Owned<Workspace> {
    let batch = inputs.len() / device.spec.widths[0];
    let ws = Workspace::alloc(e, device, batch, target_cols).unwrap();
    e.upload(ws.inputs, inputs).unwrap();
    e.upload(ws.targets, targets).unwrap();
    ws
}

fn one_step(e: &mut dyn Engine, state: &SecondOrderState, ws: &Workspace, lr: f64, step: u32) {
    let mut rec = Recording::new();
    state.record_step(&mut rec, ws, lr, step).unwrap();
    e.run(&rec).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Newton-CG

#[test]
fn undamped_newton_cg_solves_least_squares_in_one_step() {
    let data = teacher_student(32, &[4, 3, 2], 7);
    let spec = ModelSpec {
        widths: vec![4, 2],
        activation: ActivationChoice::Identity,
    };
    let host = HostModel::init(&spec, 8);
    // The least-squares solution, independently: [X 1] [W^T; b] = Y in the least-squares sense.
    let (n, d, m) = (data.samples, data.features, data.outputs);
    let design = Mat::<f64>::from_fn(
        n,
        d + 1,
        |i, j| {
            if j < d { data.inputs[i * d + j] } else { 1.0 }
        },
    );
    let targets = Mat::<f64>::from_fn(n, m, |i, j| data.targets[i * m + j]);
    let solution = design.qr().solve_lstsq(&targets);
    let mut expected_w = vec![0.0; m * d];
    let mut expected_b = vec![0.0; m];
    for o in 0..m {
        for j in 0..d {
            expected_w[o * d + j] = solution[(j, o)];
        }
        expected_b[o] = solution[(d, o)];
    }
    on_every_engine(|e, exact| {
        let device = DeviceModel::upload(e, &host).unwrap();
        let ws = workspace(e, &device, (&data.inputs, &data.targets, m));
        let mut config = SecondOrderConfig::new(OptimizerKind::NewtonCg);
        config.second_order.newton_cg.initial_damping = 0.0;
        config.second_order.newton_cg.cg_iterations = 12;
        let state = SecondOrderState::new(e, &device, &ws, Loss::SquaredError, &config).unwrap();
        // The loss before the step, as the training loop reads it afterwards.
        let mut before = Recording::new();
        specdef::model::graph::forward(&mut before, &device, &ws).unwrap();
        specdef::model::graph::squared_error(&mut before, &ws).unwrap();
        e.run(&before).unwrap();
        let loss_before = read(e, ws.loss_sum)[0];
        one_step(e, &state, &ws, 1.0, 1);
        let after = device.download(e).unwrap();
        let (abs, rel) = if exact { (1e-8, 1e-8) } else { (2e-3, 2e-3) };
        let name = e.info().engine;
        let layer = &after.layers[0];
        for (got, want) in (layer.factors[0].matrix.values.iter()).zip(&expected_w) {
            assert!(close(*got, *want, abs, rel), "{name}: W {got} vs {want}");
        }
        for (got, want) in layer.bias.values.iter().zip(&expected_b) {
            assert!(close(*got, *want, abs, rel), "{name}: b {got} vs {want}");
        }
        let loss_sum = read(e, ws.loss_sum)[0];
        assert!(
            close(loss_sum, loss_before, 1e-12, 1e-6),
            "{name}: the loss sum left for the training loop is the one before the step"
        );
        if exact {
            // The quadratic model is exact (rho = 1): lambda shrinks, to its floor from 0.
            let lambda = read(e, state.damping().unwrap())[0];
            assert_eq!(lambda, 1e-8, "{name}");
        }
    });
}

#[test]
fn newton_cg_rejects_a_step_that_raises_the_loss_and_raises_the_damping() {
    // lr = 3 overshoots the quadratic's minimum along the Newton direction: the loss after is
    // (1 - 3)^2 = 4 times the gap, the step is undone and lambda grows.
    let data = teacher_student(16, &[3, 2], 9);
    let spec = ModelSpec {
        widths: vec![3, 2],
        activation: ActivationChoice::Identity,
    };
    let host = HostModel::init(&spec, 10);
    on_every_engine(|e, exact| {
        let device = DeviceModel::upload(e, &host).unwrap();
        let ws = workspace(e, &device, (&data.inputs, &data.targets, 2));
        let mut config = SecondOrderConfig::new(OptimizerKind::NewtonCg);
        config.second_order.newton_cg.cg_iterations = 8;
        config.second_order.newton_cg.initial_damping = 1e-3;
        let state = SecondOrderState::new(e, &device, &ws, Loss::SquaredError, &config).unwrap();
        let start = parameters(e, &device);
        one_step(e, &state, &ws, 3.0, 1);
        let end = parameters(e, &device);
        let tolerance = if exact { 1e-12 } else { 1e-5 };
        for ((key, a), (_, b)) in start.iter().zip(&end) {
            for (x, y) in a.values.iter().zip(&b.values) {
                assert!(close(*y, *x, tolerance, tolerance), "{key}: {x} -> {y}");
            }
        }
        let lambda = read(e, state.damping().unwrap())[0];
        assert!(close(lambda, 1.5e-3, 0.0, 1e-6), "lambda {lambda}");
    });
}

// ---------------------------------------------------------------------------------------------
// AdaHessian

#[test]
fn adahessians_hutchinson_diagonal_is_exact_on_a_diagonal_quadratic() {
    // A linear model with only its weights training, on inputs c_i e_i (one sample per basis
    // vector): the squared error's Hessian is diagonal, c_j^2 / n at every W[o][j].
    let (features, outputs) = (5, 3);
    let scales: [f64; 5] = [0.5, 1.0, 2.0, 3.0, 0.25];
    let mut inputs = vec![0.0; features * features];
    for j in 0..features {
        inputs[j * features + j] = scales[j];
    }
    let targets = uniform(&mut rng(3), features * outputs, 1.0);
    let spec = ModelSpec {
        widths: vec![features, outputs],
        activation: ActivationChoice::Identity,
    };
    let host = HostModel::init(&spec, 4);
    let diagonal: Vec<f64> = (0..outputs * features)
        .map(|i| scales[i % features].powi(2) / features as f64)
        .collect();
    let row_mean = diagonal[..features].iter().sum::<f64>() / features as f64;
    for average in [HessianAverage::None, HessianAverage::Rows] {
        on_every_engine(|e, exact| {
            let device = DeviceModel::upload(e, &host).unwrap();
            let ws = workspace(e, &device, (&inputs, &targets, outputs));
            let mut config = SecondOrderConfig::new(OptimizerKind::Adahessian);
            config.trainable = Trainable::only(&[ParamGroup::Weights]);
            config.second_order.adahessian.average = average;
            config.second_order.adahessian.eps = 1e-12;
            config.seed = 11;
            let state =
                SecondOrderState::new(e, &device, &ws, Loss::SquaredError, &config).unwrap();
            let (abs, rel) = if exact { (1e-14, 1e-12) } else { (1e-6, 1e-5) };
            let name = e.info().engine;
            for step in 1..=4 {
                let before = parameters(e, &device);
                one_step(e, &state, &ws, 1.0, step);
                let estimate = state.curvature_estimates();
                assert_eq!(estimate.len(), 1, "the weights only");
                let got = read(e, estimate[0].1);
                let expected: Vec<f64> = match average {
                    HessianAverage::None => diagonal.clone(),
                    HessianAverage::Rows => vec![row_mean; diagonal.len()],
                };
                for (g, w) in got.iter().zip(&expected) {
                    assert!(
                        close(*g, *w, abs, rel),
                        "{name} {average:?} step {step}: D {g} vs {w}"
                    );
                }
                if step == 1 && average == HessianAverage::None {
                    // Step 1 is the diagonal Newton step p - lr g / (|D| + eps): on a diagonal
                    // quadratic, its minimum.
                    let grad = read(e, state.gradients()[0].1);
                    let after = parameters(e, &device);
                    let (w0, w1) = (&before[0].1.values, &after[0].1.values);
                    for i in 0..w0.len() {
                        let want = w0[i] - grad[i] / (diagonal[i] + 1e-12);
                        assert!(close(w1[i], want, abs * 1e3, rel * 1e3), "{name}: W[{i}]");
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Sophia

#[test]
fn sophia_moves_no_entry_by_more_than_lr_beyond_its_weight_decay() {
    // Every layer form; inputs of unit scale, and scaled up so the gradients are large and
    // the clip binds.
    let model = every_form_model(ActivationChoice::Tanh);
    let batch = 16;
    let labels: Vec<f64> = (0..batch).map(|i| (i % 4) as f64).collect();
    let (lr, weight_decay) = (0.05, 0.1);
    let cases = [SophiaEstimator::Gnb, SophiaEstimator::Hutchinson]
        .into_iter()
        .flat_map(|estimator| [(estimator, 1.0, 5), (estimator, 50.0, 6)]);
    for (estimator, scale, seed) in cases {
        let inputs: Vec<f64> = uniform(&mut rng(seed), batch * 6, scale);
        on_every_engine(|e, exact| {
            let device = DeviceModel::upload(e, &model).unwrap();
            let ws = workspace(e, &device, (&inputs, &labels, 1));
            let mut config = SecondOrderConfig::new(OptimizerKind::Sophia);
            config.second_order.sophia.estimator = estimator;
            config.second_order.sophia.update_every = 2;
            config.second_order.sophia.weight_decay = weight_decay;
            let state =
                SecondOrderState::new(e, &device, &ws, Loss::CrossEntropy, &config).unwrap();
            let name = e.info().engine;
            let mut at_the_bound = 0;
            for step in 1..=4 {
                let before = parameters(e, &device);
                one_step(e, &state, &ws, lr, step);
                let after = parameters(e, &device);
                for ((key, a), (_, b)) in before.iter().zip(&after) {
                    for (x, y) in a.values.iter().zip(&b.values) {
                        let moved = (y - x * (1.0 - lr * weight_decay)).abs();
                        let slack = if exact { 1e-15 } else { 1e-6 * (1.0 + x.abs()) };
                        assert!(
                            moved <= lr + slack,
                            "{name} {estimator:?} x{scale} step {step}: {key} moved {moved} > lr"
                        );
                        if moved > lr * (1.0 - 1e-6) {
                            at_the_bound += 1;
                        }
                    }
                }
            }
            assert!(
                at_the_bound > 0,
                "{name} {estimator:?} x{scale}: the clip never bound"
            );
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Muon

/// Newton-Schulz's scalar polynomial `a x + b x^3 + c x^5`, applied `steps` times.
fn newton_schulz(mut x: f64, steps: u32) -> f64 {
    let (a, b, c) = NEWTON_SCHULZ;
    for _ in 0..steps {
        x = a * x + b * x.powi(3) + c * x.powi(5);
    }
    x
}

#[test]
fn muons_update_has_the_singular_values_of_the_newton_schulz_polynomial() {
    // Layer 0's weight is 8x5 (taller than wide: orthogonalised transposed, scaled by
    // sqrt(8/5)), layer 1's 6x8, layer 2's 3x6 (of rank 2: the softmax's gradient rows sum to
    // 0, so one singular value is 0 and stays 0).
    let spec = ModelSpec {
        widths: vec![5, 8, 6, 3],
        activation: ActivationChoice::Relu,
    };
    let host = HostModel::init(&spec, 12);
    let batch = 16;
    let inputs = uniform(&mut rng(13), batch * 5, 1.0);
    let labels: Vec<f64> = (0..batch).map(|i| (i % 3) as f64).collect();
    let lr = 0.1;
    on_every_engine(|e, exact| {
        let device = DeviceModel::upload(e, &host).unwrap();
        let ws = workspace(e, &device, (&inputs, &labels, 1));
        let config = SecondOrderConfig::new(OptimizerKind::Muon);
        let steps = config.second_order.muon.ns_steps;
        let state = SecondOrderState::new(e, &device, &ws, Loss::CrossEntropy, &config).unwrap();
        let before = parameters(e, &device);
        one_step(e, &state, &ws, lr, 1);
        let after = parameters(e, &device);
        let grads = state.gradients();
        let name = e.info().engine;
        let tolerance = if exact { 1e-10 } else { 2e-4 };
        for (((key, a), (_, b)), (_, grad)) in before.iter().zip(&after).zip(&grads) {
            let g = read(e, *grad);
            if key.role == ParamRole::Bias {
                // AdamW's first step: lr (g / (|g| + eps) + 0.01 p).
                for ((x, y), g) in a.values.iter().zip(&b.values).zip(&g) {
                    let want = x - lr * (g / (g.abs() + 1e-8) + 0.01 * x);
                    assert!(close(*y, want, tolerance, tolerance), "{name}: {key}");
                }
                continue;
            }
            let (rows, cols) = (a.rows, a.cols);
            let shape_factor = (rows as f64 / cols as f64).max(1.0).sqrt();
            // The first step's update is the gradient's (momentum starts at 0), orthogonalised.
            let update = Matrix::new(
                rows,
                cols,
                (a.values.iter().zip(&b.values))
                    .map(|(x, y)| (x - y) / (lr * shape_factor))
                    .collect(),
            );
            let sigma_g = faer_svd(&Matrix::new(rows, cols, g)).unwrap().s;
            let norm = sigma_g.iter().map(|s| s * s).sum::<f64>().sqrt();
            let mut expected: Vec<f64> = sigma_g
                .iter()
                .map(|s| newton_schulz(s / norm, steps))
                .collect();
            expected.sort_by(|x, y| y.total_cmp(x));
            let measured = faer_svd(&update).unwrap().s;
            // The band: the polynomial's range from the smallest non-zero normalised singular
            // value up to 1 (the largest any can be after the normalisation).
            let nonzero = |s: f64| s / norm > 1e-6;
            let smallest = (sigma_g.iter().cloned())
                .filter(|&s| nonzero(s))
                .fold(f64::INFINITY, f64::min)
                / norm;
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for i in 0..=100_000 {
                let x = smallest + (1.0 - smallest) * i as f64 / 100_000.0;
                let y = newton_schulz(x, steps);
                (lo, hi) = (lo.min(y), hi.max(y));
            }
            eprintln!(
                "{name} {key}: singular values {measured:.4?} in the Newton-Schulz band \
                 [{lo:.4}, {hi:.4}] (from sigma/|G| >= {smallest:.4})"
            );
            for ((got, want), s) in measured.iter().zip(&expected).zip(&sigma_g) {
                assert!(
                    close(*got, *want, tolerance, tolerance),
                    "{name} {key}: {got} vs {want}"
                );
                assert!(
                    !nonzero(*s) || (*got >= lo - tolerance && *got <= hi + tolerance),
                    "{name} {key}: {got} outside [{lo}, {hi}]"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Through the training loop and the scenario runner

fn settings(optimizer: OptimizerKind, lr: f64) -> TrainSettings {
    TrainSettings {
        optimizer,
        lr,
        schedule: Schedule::Constant,
        steps: 20,
        eval_every: 10,
        batch_size: Some(64),
        target_accuracy: None,
        divergence_loss: 1e3,
        trainable: Trainable::default(),
        hyper: Default::default(),
        groups: Default::default(),
        second_order: SecondOrderHyper::default(),
    }
}

#[test]
fn every_second_order_optimiser_trains_the_digits_through_the_training_loop() {
    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let data = TaskData::load(&scenario).unwrap();
    let host = HostModel::init(
        &ModelSpec {
            widths: vec![64, 32, 10],
            activation: ActivationChoice::Relu,
        },
        1,
    );
    let runs = [
        (OptimizerKind::Muon, 0.02),
        (OptimizerKind::Adahessian, 0.05),
        (OptimizerKind::Sophia, 0.01),
        (OptimizerKind::NewtonCg, 1.0),
    ];
    let check = |engine: &mut dyn Engine| {
        for (optimizer, lr) in runs {
            let mut variants = vec![settings(optimizer, lr)];
            if optimizer == OptimizerKind::Sophia {
                let mut hutchinson = settings(optimizer, lr);
                hutchinson.second_order.sophia.estimator = SophiaEstimator::Hutchinson;
                variants.push(hutchinson);
            }
            for settings in variants {
                settings.validate("attack").unwrap();
                let model = DeviceModel::upload(engine, &host).unwrap();
                let started = std::time::Instant::now();
                let mut session = TrainSession::start(
                    engine,
                    &model,
                    &data.harmful_train,
                    &data.harmful_test,
                    &settings,
                    3,
                )
                .unwrap();
                session.run_to_end(engine).unwrap();
                let outcome = session.finish();
                let losses: Vec<f64> = outcome.loss_curve.iter().map(|p| p.1).collect();
                eprintln!(
                    "{} {} lr {lr}: losses {losses:.3?}, accuracy {:.3}, {:.0} ms",
                    engine.info().engine,
                    optimizer.name(),
                    outcome.final_accuracy,
                    started.elapsed().as_secs_f64() * 1e3
                );
                assert_eq!(outcome.diverged_at, None, "{}", optimizer.name());
                assert_eq!(outcome.steps_run, 20);
                assert!(
                    losses[2] < 0.8 * losses[0],
                    "{}: the loss fell from {} to {} only",
                    optimizer.name(),
                    losses[0],
                    losses[2]
                );
            }
        }
    };
    check(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        check(&mut *gpu);
    }
}

/// The `[attack]` table's own `optimizers = [...]` line of a scenario text.
fn attack_optimizers(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("optimizers = ["))
        .expect("an optimizers line in [attack]")
}

#[test]
fn second_order_settings_parse_validate_and_reach_the_records() {
    let base = specdef::scenario::DEFAULT_SCENARIO;
    // The first target_accuracy line is the attack grid's (trainability has one too).
    let with = |attack_lines: &str| {
        base.replacen(
            "target_accuracy = 0.9\n",
            &format!("target_accuracy = 0.9\n{attack_lines}\n"),
            1,
        )
    };
    let text = with(
        "optimizers = [\"muon\", \"adahessian\", \"sophia\", \"newton-cg\"]\n\
         second_order = { newton_cg = { cg_iterations = 4 }, sophia = { estimator = \"hutchinson\" } }",
    )
    .replace(&format!("{}\n", attack_optimizers(base)), "");
    let scenario = Scenario::parse(&text, None, "s.toml").unwrap();
    let names: Vec<&str> = scenario
        .attack
        .optimizers
        .iter()
        .map(|o| o.name())
        .collect();
    assert_eq!(names, ["muon", "adahessian", "sophia", "newton-cg"]);
    let attack = &scenario.attack.second_order;
    assert_eq!(attack.newton_cg.cg_iterations, 4);
    assert_eq!(
        attack.newton_cg.initial_damping, 45.0,
        "the others keep their defaults"
    );
    assert_eq!(attack.sophia.estimator, SophiaEstimator::Hutchinson);
    assert_eq!(attack.muon.momentum, 0.95);
    let settings = scenario.attack.settings(OptimizerKind::NewtonCg, 1.0);
    assert_eq!(settings.second_order, *attack);

    let err = |text: String| Scenario::parse(&text, None, "bad.toml").unwrap_err();
    let e = err(with("second_order = { muon = { momentum = 1.5 } }"));
    assert!(
        e.contains("attack.second_order.muon.momentum must be in [0, 1)"),
        "{e}"
    );
    let e = err(with("second_order = { sophia = { update_every = 0 } }"));
    assert!(e.contains("attack.second_order.sophia.update_every"), "{e}");
    let e = err(with("second_order = { newton_cg = { damping = 1.0 } }"));
    assert!(e.contains("damping"), "{e}");
    // Groups: not with a second-order run (any of the list), and never a second-order group.
    let e = err(with(
        "optimizers = [\"sgd\", \"newton-cg\"]\ngroups = { biases = { optimizer = \"sgd\" } }",
    )
    .replace(&format!("{}\n", attack_optimizers(base)), ""));
    assert!(
        e.contains("attack.groups (biases) cannot be combined") && e.contains("newton-cg"),
        "{e}"
    );
    let e = err(with("groups = { biases = { optimizer = \"muon\" } }"));
    assert!(e.contains("attack.groups.biases.optimizer: muon"), "{e}");

    // Records carry the run optimiser's effective settings; first-order runs none.
    let mut small = Scenario::builtin(Some("quick")).unwrap();
    small.pretrain.steps = 20;
    small.attack.steps = 10;
    small.attack.optimizers = vec![
        OptimizerKind::Sgd,
        OptimizerKind::Muon,
        OptimizerKind::NewtonCg,
    ];
    small.attack.lr_grid = specdef::scenario::LrGrid {
        from: 0.1,
        to: 0.1,
        per_decade: 1,
    };
    small.defense.alphas.clear();
    let outcome = common::run_quietly(&mut CpuEngine32::new(), &small, None);
    let records = &outcome.records;
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].second_order, None);
    let muon: serde_json::Value =
        serde_json::from_str(records[1].second_order.as_ref().unwrap()).unwrap();
    assert_eq!(muon["momentum"], 0.95);
    assert_eq!(muon["adamw"]["weight_decay"], 0.01);
    let newton: serde_json::Value =
        serde_json::from_str(records[2].second_order.as_ref().unwrap()).unwrap();
    assert_eq!(newton["cg_iterations"], 10);
    assert!(
        records
            .iter()
            .all(|r| r.loss_curve.iter().all(|p| p.1.is_some()))
    );
    let csv = specdef::report::to_csv(records);
    assert!(csv.lines().next().unwrap().contains(",second_order,"));
}

/// A Newton-CG step with 10 CG iterations reads nothing back: a training chunk of 5 steps is one
/// run (holding the 5 x (1 + 10 + 1) products) followed by one read of the loss and logits.
#[test]
fn newton_cg_steps_are_recorded_with_no_readback_inside() {
    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let data = TaskData::load(&scenario).unwrap();
    let host = HostModel::init(
        &ModelSpec {
            widths: vec![64, 16, 10],
            activation: ActivationChoice::Relu,
        },
        1,
    );
    let log = CallLog::default();
    let mut engine = Logging {
        inner: CpuEngine32::new(),
        log: std::rc::Rc::clone(&log),
    };
    let settings = TrainSettings {
        steps: 10,
        eval_every: 5,
        ..settings(OptimizerKind::NewtonCg, 1.0)
    };
    assert_eq!(settings.second_order.newton_cg.cg_iterations, 10);
    let model = DeviceModel::upload(&mut engine, &host).unwrap();
    let mut session = TrainSession::start(
        &mut engine,
        &model,
        &data.harmful_train,
        &data.harmful_test,
        &settings,
        3,
    )
    .unwrap();
    log.borrow_mut().clear();
    session.run_to_end(&mut engine).unwrap();
    assert_eq!(session.finish().steps_run, 10);
    let calls: Vec<String> = log
        .take()
        .into_iter()
        .filter(|c| *c != Call::Upload)
        .map(|c| match c {
            Call::Run(ops) => format!("run of {} ops", ops.len()),
            Call::Read(n) => format!("read {n}"),
            Call::Upload => unreachable!(),
        })
        .collect();
    // Step 0's evaluation, then two chunks of five steps: each one run and one read.
    assert_eq!(calls.len(), 6, "{calls:?}");
    for pair in calls.chunks(2) {
        assert!(
            pair[0].starts_with("run") && pair[1] == "read 2",
            "{calls:?}"
        );
    }
}
