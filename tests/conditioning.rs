//! Condition-number immunisation (issue: the defences SpecDef is compared with). Its
//! regularisers' gradients against central differences of their values on the host in f64, its
//! stated property on every engine (the harmful probe Hessian's condition number rises by orders
//! of magnitude, the utility one's does not, and the utility task stays), and its refusals.

mod common;

use common::{
    SMALL_FEATURES, flat, gpu, learnable_task, numeric_gradient, rng, short_quick, small_spec,
    train_settings, uniform,
};
use specdef::data::Dataset;
use specdef::defense::{Conditioning, Defense, StageData, TrainingStage};
use specdef::engine::Engine;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::linalg::Matrix;
use specdef::model::{DeviceModel, HostModel};
use specdef::training::{
    condition_number, ill_conditioning, mean_cross_entropy, probe_hessian, train, well_conditioning,
};

const FEATURES: usize = SMALL_FEATURES;

/// `dr/dH = 2 H dr/dS / n` (what the engine injects) against central differences of
/// `r(H^T H / n)` in every entry of H, for both regularisers, on features with distinct
/// eigenvalues (the gradient of an eigenvalue is defined there).
#[test]
fn the_regularisers_gradients_match_central_differences() {
    let (n, k) = (12, 5);
    let h = Matrix::new(n, k, uniform(&mut rng(3), n * k, 1.0));
    type Regulariser = fn(&Matrix) -> Result<(f64, Matrix), String>;
    let regularisers: [(&str, Regulariser); 2] =
        [("well", well_conditioning), ("ill", ill_conditioning)];
    for (name, regulariser) in regularisers {
        let value = |h: &Matrix| regulariser(&probe_hessian(h)).unwrap().0;
        let (_, g) = regulariser(&probe_hessian(&h)).unwrap();
        let analytic = h.matmul(&g);
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for i in 0..n * k {
            let mut up = h.clone();
            up.values[i] += eps;
            let mut down = h.clone();
            down.values[i] -= eps;
            let numeric = (value(&up) - value(&down)) / (2.0 * eps);
            let got = 2.0 / n as f64 * analytic.values[i];
            worst = worst.max((got - numeric).abs() / numeric.abs().max(1e-3));
        }
        eprintln!("{name}: largest relative difference {worst:.1e}");
        assert!(worst < 1e-5, "{name}: {worst:e}");
    }
    // r_well is zero where every eigenvalue is equal (an orthogonal design), positive otherwise.
    let identity = Matrix::identity(k);
    assert!(well_conditioning(&identity).unwrap().0.abs() < 1e-12);
    assert!(well_conditioning(&probe_hessian(&h)).unwrap().0 > 0.0);
}

/// The immunisation loss on the host in f64: the utility rows' mean cross-entropy plus the
/// weighted regularisers of both sets' probe Hessians on `layer`.
fn host_loss(model: &HostModel, c: &Conditioning, utility: &Dataset, harmful: &Dataset) -> f64 {
    let features = |data: &Dataset, layer| {
        model.layer_output(
            &Matrix::new(data.len(), FEATURES, data.inputs.clone()),
            layer,
        )
    };
    let ce = mean_cross_entropy(&features(utility, 2).values, &utility.labels);
    let well = well_conditioning(&probe_hessian(&features(utility, c.layer)))
        .unwrap()
        .0;
    let ill = ill_conditioning(&probe_hessian(&features(harmful, c.layer)))
        .unwrap()
        .0;
    ce + c.well_weight * well + c.ill_weight * ill
}

/// One SGD step of the session on every engine against central differences of the host's
/// loss: the step the engine took (the cross-entropy's gradient, the regularisers' gradients
/// injected at the feature layer and carried down to layer 0) is `lr` times the loss's gradient.
#[test]
fn one_step_follows_the_gradient_of_the_whole_loss_on_every_engine() {
    let (harmful, utility) = (
        learnable_task(91, 20, 0.5, 2),
        learnable_task(92, 20, -0.5, 0),
    );
    let base = HostModel::init(&small_spec(), 23);
    let lr = 0.01;
    let conditioning = Conditioning {
        layer: 1,
        well_weight: 0.3,
        ill_weight: 2.0,
        train: train_settings(&format!(
            "optimizer = 'sgd'\nlr = {lr}\nsteps = 1\neval_every = 1"
        )),
    };
    let gradient = numeric_gradient(&base, &|m| host_loss(m, &conditioning, &utility, &harmful));
    let expected: Vec<f64> = (flat(&base).iter().zip(&gradient))
        .map(|(p, g)| p - lr * g)
        .collect();
    let first_layer = 6 * 9 + 9;
    let moved = (flat(&base).iter().zip(&expected).take(first_layer))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-5, "the step moves layer 0 ({moved})");
    let data = StageData {
        utility: &utility,
        harmful: &harmful,
        eval: &utility,
    };
    let run = |engine: &mut dyn Engine, tolerance: f64| {
        let name = engine.info().engine;
        let device = DeviceModel::upload(engine, &base).unwrap();
        let mut session = conditioning.start(engine, &device, &base, data, 0).unwrap();
        session.run_to_end(engine).unwrap();
        let got = flat(&device.download(engine).unwrap());
        let error = (got.iter().zip(&expected))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!("{name}: largest difference from the host's step {error:.2e}");
        assert!(error < tolerance, "{name}: {error:e} >= {tolerance:e}");
    };
    // Central differences are good to about 1e-9 here; f32 features to about 1e-7.
    run(&mut CpuEngine64::new(), 1e-9);
    run(&mut CpuEngine32::new(), 1e-5);
    if let Some(mut gpu) = gpu() {
        run(&mut *gpu, 1e-5);
    }
}

/// The probe's condition number on a layer's features of `data`.
fn probe_condition(model: &HostModel, data: &Dataset, layer: usize) -> f64 {
    let inputs = Matrix::new(data.len(), FEATURES, data.inputs.clone());
    condition_number(&probe_hessian(&model.layer_output(&inputs, layer))).unwrap()
}

/// Its paper's property (Zheng et al. 2025, section 5): training makes the harmful task's
/// linear-probe Hessian ill-conditioned (its condition number up by orders of magnitude) while
/// the utility one's does not rise, and the utility task stays.
#[test]
fn conditioning_makes_the_harmful_probe_ill_conditioned_and_keeps_utility_on_every_engine() {
    let (harmful, utility) = (
        learnable_task(81, 60, 0.5, 2),
        learnable_task(82, 60, -0.5, 0),
    );
    let base = {
        let mut engine = CpuEngine64::new();
        let device = DeviceModel::upload(&mut engine, &HostModel::init(&small_spec(), 19)).unwrap();
        let learn = train_settings("optimizer = 'adam'\nlr = 1e-2\nsteps = 200\neval_every = 200");
        train(&mut engine, &device, &utility, &utility, &learn, 0).unwrap();
        device.download(&mut engine).unwrap()
    };
    let conditioning = Conditioning {
        layer: 1,
        well_weight: 0.1,
        ill_weight: 10.0,
        train: train_settings("optimizer = 'adam'\nlr = 1e-2\nsteps = 200\neval_every = 50"),
    };
    let data = StageData {
        utility: &utility,
        harmful: &harmful,
        eval: &utility,
    };
    let utility_loss = |model: &HostModel| {
        let inputs = Matrix::new(utility.len(), FEATURES, utility.inputs.clone());
        mean_cross_entropy(&model.layer_output(&inputs, 2).values, &utility.labels)
    };
    let (harmful_before, utility_before) = (
        probe_condition(&base, &harmful, 1),
        probe_condition(&base, &utility, 1),
    );
    let run = |engine: &mut dyn Engine| {
        let name = engine.info().engine;
        let device = DeviceModel::upload(engine, &base).unwrap();
        let mut session = conditioning.start(engine, &device, &base, data, 0).unwrap();
        session.run_to_end(engine).unwrap();
        assert_eq!(session.outcome().diverged_at, None, "{name}");
        // The run's own curve of the measure rises too (a looser bound: it is measured in the
        // engine's precision at the evaluations, not in f64 after the last step).
        let curves = session.curves();
        let harmful_curve = (curves.iter())
            .find(|c| c.name == "harmful_condition_number")
            .expect("a harmful condition-number curve");
        let (first, last) = (
            harmful_curve.points[0],
            *harmful_curve.points.last().unwrap(),
        );
        assert_eq!(first.0, 0, "{name}: the curve starts before training");
        assert!(last.1 > 10.0 * first.1, "{name}: {first:?} -> {last:?}");
        let after = device.download(engine).unwrap();
        let (harmful_after, utility_after) = (
            probe_condition(&after, &harmful, 1),
            probe_condition(&after, &utility, 1),
        );
        let (loss_before, loss_after) = (utility_loss(&base), utility_loss(&after));
        eprintln!(
            "{name}: harmful probe condition number {harmful_before:.3e} -> {harmful_after:.3e}; \
             utility {utility_before:.3e} -> {utility_after:.3e}; utility loss {loss_before:.3} \
             -> {loss_after:.3}"
        );
        assert!(harmful_after > 100.0 * harmful_before, "{name}: harmful");
        assert!(utility_after < utility_before, "{name}: utility");
        assert!(loss_after < loss_before + 0.1, "{name}: utility loss");
    };
    run(&mut CpuEngine64::new());
    run(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        run(&mut *gpu);
    }
}

#[test]
fn a_conditioning_defence_that_does_not_fit_is_refused_naming_the_field() {
    let mut scenario = short_quick();
    let good = Conditioning {
        layer: 1,
        well_weight: 1.0,
        ill_weight: 1.0,
        train: train_settings("optimizer = 'adam'\nlr = 1e-3\nsteps = 10"),
    };
    for (field, broken) in [
        ("conditioning.layer", {
            let mut d = good.clone();
            d.layer = 2;
            d
        }),
        ("conditioning.ill_weight", {
            let mut d = good.clone();
            d.ill_weight = -1.0;
            d
        }),
        ("conditioning.train.optimizer", {
            let mut d = good.clone();
            d.train.optimizer = specdef::training::OptimizerKind::Adahessian;
            d
        }),
    ] {
        scenario.defense.baselines = vec![Defense::Conditioning(Box::new(broken))];
        let e = scenario.validate().unwrap_err();
        assert!(
            e.contains("defense.baselines[0]") && e.contains(field),
            "{field}: {e}"
        );
    }
    scenario.defense.baselines = vec![Defense::Conditioning(Box::new(good))];
    scenario.validate().unwrap();
}
