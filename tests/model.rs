//! Models and the defence: exact gradients (against finite differences in f64), SpecDef's
//! identities, and a training step and 20 steps on the GPU against the f64 CPU reference.

mod common;

use common::{check_on_every_engine, every_form_model, gpu, rng, uniform};
use specdef::Tolerance;
use specdef::defense::{CompensationForm, LayerSelection, SpecDef, function_preservation};
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{Engine, Recording};
use specdef::model::{
    ActivationChoice, DeviceModel, FactorRole, Gradients, HostLayer, HostModel, Matrix, ModelSpec,
    ParamGroup, ParamKey, Trainable, Workspace, graph,
};
use specdef::training::{
    GroupSettings, OptimizerConfig, OptimizerHyper, OptimizerKind, OptimizerState,
};

fn small_spec(activation: ActivationChoice) -> ModelSpec {
    ModelSpec {
        widths: vec![6, 9, 7, 4],
        activation,
    }
}

fn defended_small_model() -> HostModel {
    let base = HostModel::init(&small_spec(ActivationChoice::Tanh), 3);
    SpecDef {
        alpha: 10.0,
        k: 2,
        layers: LayerSelection::Indices(vec![1]),
        compensate: true,
        compensation: Default::default(),
    }
    .apply(&base, 0)
    .unwrap()
}

const BATCH: usize = 5;

/// Mean cross-entropy of `model` on a fixed batch, in f64.
fn loss(model: &HostModel, inputs: &[f64], labels: &[f64]) -> f64 {
    let mut e = CpuEngine64::new();
    let device = DeviceModel::upload(&mut e, model).unwrap();
    let ws = Workspace::alloc(&mut e, &device, BATCH, 1).unwrap();
    e.upload(ws.inputs, inputs).unwrap();
    e.upload(ws.targets, labels).unwrap();
    let mut rec = Recording::new();
    graph::forward(&mut rec, &device, &ws).unwrap();
    graph::cross_entropy(&mut rec, &ws).unwrap();
    e.run(&rec).unwrap();
    e.read_one(ws.loss_sum).unwrap()[0] / BATCH as f64
}

#[test]
fn backward_matches_finite_differences_through_a_defended_layer() {
    let model = defended_small_model();
    let inputs = uniform(&mut rng(1), BATCH * 6, 1.0);
    let labels = vec![0.0, 3.0, 1.0, 2.0, 3.0];
    let (_, analytic) = logits_and_gradients(&mut CpuEngine64::new(), &model, &inputs, &labels);
    check_gradients_by_finite_differences(&model, &analytic, &inputs, &labels);
}

fn read_gradients(e: &mut dyn Engine, grads: &Gradients) -> Vec<(ParamKey, Vec<f64>)> {
    (grads.parameters().into_iter())
        .map(|(key, t)| (key, e.read_one(t).unwrap()))
        .collect()
}

/// Every parameter's gradient against central differences of the f64 loss, parameter by
/// parameter through the registry, whatever the layers' forms.
fn check_gradients_by_finite_differences(
    model: &HostModel,
    analytic: &[(ParamKey, Vec<f64>)],
    inputs: &[f64],
    labels: &[f64],
) {
    let h = 1e-6;
    let tolerance = Tolerance::new(1e-7, 1e-5);
    assert_eq!(analytic.len(), model.parameters().len());
    for (key, gradient) in analytic {
        let numeric: Vec<f64> = (0..gradient.len())
            .map(|j| {
                let (mut up, mut down) = (model.clone(), model.clone());
                up.parameter_mut(*key).unwrap().values[j] += h;
                down.parameter_mut(*key).unwrap().values[j] -= h;
                (loss(&up, inputs, labels) - loss(&down, inputs, labels)) / (2.0 * h)
            })
            .collect();
        tolerance
            .check(gradient, &numeric)
            .unwrap_or_else(|err| panic!("{key}: {err}"));
    }
}

/// The same function as a plain model: each layer's chain multiplied out in f64.
fn multiplied_out(model: &HostModel) -> HostModel {
    let mut plain = model.clone();
    for (layer, original) in plain.layers.iter_mut().zip(&model.layers) {
        *layer = HostLayer::plain(original.effective_weight(), original.bias.values.clone());
    }
    plain
}

/// Logits and every gradient of `model` on one batch, on engine `e`.
fn logits_and_gradients(
    e: &mut dyn Engine,
    model: &HostModel,
    inputs: &[f64],
    labels: &[f64],
) -> (Vec<f64>, Vec<(ParamKey, Vec<f64>)>) {
    let device = DeviceModel::upload(e, model).unwrap();
    let ws = Workspace::alloc(e, &device, BATCH, 1).unwrap();
    e.upload(ws.inputs, inputs).unwrap();
    e.upload(ws.targets, labels).unwrap();
    let grads = Gradients::alloc(e, &device).unwrap();
    let mut rec = Recording::new();
    graph::forward(&mut rec, &device, &ws).unwrap();
    graph::cross_entropy(&mut rec, &ws).unwrap();
    graph::backward(&mut rec, &device, &ws, &grads, Trainable::default()).unwrap();
    e.run(&rec).unwrap();
    (e.read_one(ws.logits()).unwrap(), read_gradients(e, &grads))
}

#[test]
fn every_layer_form_runs_forward_and_backward_on_every_engine() {
    let inputs = uniform(&mut rng(24), BATCH * 6, 1.0);
    let labels = vec![0.0, 3.0, 1.0, 2.0, 3.0];
    for activation in [ActivationChoice::Tanh, ActivationChoice::Gelu] {
        let model = every_form_model(activation);
        // In f64: forward against the multiplied-out plain model, backward against finite
        // differences of the loss.
        let mut e64 = CpuEngine64::new();
        let (logits, gradients) = logits_and_gradients(&mut e64, &model, &inputs, &labels);
        let (plain_logits, _) =
            logits_and_gradients(&mut e64, &multiplied_out(&model), &inputs, &labels);
        Tolerance::new(1e-12, 1e-10)
            .check(&logits, &plain_logits)
            .unwrap_or_else(|e| panic!("{activation:?} forward: {e}"));
        check_gradients_by_finite_differences(&model, &gradients, &inputs, &labels);
        // The f32 CPU engine and the GPU against the f64 engine: every value is a chain of at
        // most 5 factors per layer and 3 layers of dot products of at most 9 terms of order 1.
        check_on_every_engine(
            &format!("{activation:?} logits and gradients of every layer form"),
            Tolerance::f32_sum(9 * 16, 1.0),
            |e| {
                let (mut values, gradients) = logits_and_gradients(e, &model, &inputs, &labels);
                values.extend(gradients.into_iter().flat_map(|(_, g)| g));
                values
            },
        );
    }
}

#[test]
fn an_impossible_layer_is_refused_when_the_model_is_built() {
    let mut model = every_form_model(ActivationChoice::Relu);
    // The middle factor of layer 1 no longer fits between its neighbours.
    model.layers[1].factors[1].matrix = Matrix::zeros(8, 4);
    let err = DeviceModel::upload(&mut CpuEngine64::new(), &model)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layers.1.factor2of3") && err.contains("input is 5 wide"),
        "{err}"
    );
    let mut model = every_form_model(ActivationChoice::Relu);
    model.layers[0].factors[0].lora.as_mut().unwrap().b = Matrix::zeros(9, 3);
    let err = DeviceModel::upload(&mut CpuEngine64::new(), &model)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layers.0.weight") && err.contains("LoRA"),
        "{err}"
    );
}

fn sigma_1(m: &Matrix) -> f64 {
    let svd = m.to_faer().thin_svd().unwrap();
    let s = svd.S().column_vector();
    (0..s.nrows()).map(|i| s[i]).fold(0.0, f64::max)
}

#[test]
fn specdef_keeps_the_function_and_scales_the_top_singular_value() {
    let spec = ModelSpec {
        widths: vec![64, 48, 32, 10],
        activation: ActivationChoice::Relu,
    };
    let base = HostModel::init(&spec, 11);
    for alpha in [1e2, 1e4, 1e6] {
        let defence = SpecDef {
            alpha,
            k: 25,
            layers: LayerSelection::All,
            compensate: true,
            compensation: Default::default(),
        };
        let defended = defence.apply(&base, 0).unwrap();
        for (i, (orig, layer)) in base.layers.iter().zip(&defended.layers).enumerate() {
            let original = orig.matrix(FactorRole::Weight).unwrap();
            let stored = layer.matrix(FactorRole::Weight).unwrap();
            // C W~ = W up to f64 rounding of entries of size alpha |W|.
            let scale = original.values.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let tolerance = Tolerance::new(64.0 * alpha * f64::EPSILON * scale, 0.0);
            tolerance
                .check(&layer.effective_weight().values, &original.values)
                .unwrap_or_else(|e| panic!("alpha {alpha}, layer {i}: C W~ != W: {e}"));
            let ratio = sigma_1(stored) / sigma_1(original);
            Tolerance::new(0.0, 1e-9)
                .check(&[ratio], &[alpha])
                .unwrap_or_else(|e| panic!("alpha {alpha}, layer {i}: sigma_1 ratio: {e}"));
            assert_eq!(layer.bias, orig.bias);
        }
        assert_eq!(defended.defended_layers(), vec![0, 1, 2]);
    }
}

/// The rank of a matrix in f64 (singular values above 1e-9 of the largest).
fn rank(m: &Matrix) -> usize {
    let svd = m.to_faer().thin_svd().unwrap();
    let s = svd.S().column_vector();
    let largest = (0..s.nrows()).map(|i| s[i]).fold(0.0, f64::max);
    (0..s.nrows()).filter(|&i| s[i] > 1e-9 * largest).count()
}

#[test]
fn both_compensation_forms_keep_the_function_and_differ_only_on_tall_layers() {
    // Layer 0 is tall (12 x 6), layer 1 square (12 x 12), layer 2 wide (5 x 12).
    let spec = ModelSpec {
        widths: vec![6, 12, 12, 5],
        activation: ActivationChoice::Relu,
    };
    let base = HostModel::init(&spec, 8);
    let defend = |compensation| {
        SpecDef {
            alpha: 1e3,
            k: 2,
            layers: LayerSelection::All,
            compensate: true,
            compensation,
        }
        .apply(&base, 0)
        .unwrap()
    };
    let (full, thin) = (
        defend(CompensationForm::Full),
        defend(CompensationForm::Thin),
    );
    let compensation = |m: &HostModel, i: usize| {
        m.layers[i]
            .matrix(FactorRole::Compensation)
            .unwrap()
            .clone()
    };
    for i in 0..3 {
        let original = base.layers[i].matrix(FactorRole::Weight).unwrap();
        for (form, model) in [("full", &full), ("thin", &thin)] {
            Tolerance::new(1e-9, 1e-9)
                .check(&model.layers[i].effective_weight().values, &original.values)
                .unwrap_or_else(|e| panic!("{form} layer {i}: C W~ != W: {e}"));
        }
        assert_eq!(
            full.layers[i].matrix(FactorRole::Weight),
            thin.layers[i].matrix(FactorRole::Weight),
            "W~ does not depend on the form"
        );
    }
    // The tall layer: the thin C has rank n = 6 (it annihilates what leaves W's column space),
    // the full C rank m = 12; they differ.
    assert_eq!(rank(&compensation(&thin, 0)), 6);
    assert_eq!(rank(&compensation(&full, 0)), 12);
    // Square and wide layers: the thin U is square and orthogonal, so the forms coincide.
    for i in [1, 2] {
        Tolerance::new(1e-12, 0.0)
            .check(
                &compensation(&thin, i).values,
                &compensation(&full, i).values,
            )
            .unwrap_or_else(|e| panic!("layer {i}: the forms differ: {e}"));
    }
}

#[test]
fn the_ablation_without_compensation_destroys_the_function() {
    let spec = small_spec(ActivationChoice::Relu);
    let base = HostModel::init(&spec, 5);
    let inputs = uniform(&mut rng(2), 50 * 6, 1.0);
    let mut e = CpuEngine64::new();
    let reference = {
        let device = DeviceModel::upload(&mut e, &base).unwrap();
        let ws = Workspace::alloc(&mut e, &device, 50, 1).unwrap();
        e.upload(ws.inputs, &inputs).unwrap();
        let mut rec = Recording::new();
        graph::forward(&mut rec, &device, &ws).unwrap();
        e.run(&rec).unwrap();
        e.read_one(ws.logits()).unwrap()
    };
    let defence = |compensate| SpecDef {
        alpha: 1e3,
        k: 3,
        layers: LayerSelection::All,
        compensate,
        compensation: CompensationForm::Full,
    };
    let kept = defence(true).apply(&base, 0).unwrap();
    let (max_kept, _) = function_preservation(&mut e, &kept, &inputs, &reference).unwrap();
    assert!(max_kept < 1e-9, "with compensation, f64 error {max_kept}");
    let ablated = defence(false).apply(&base, 0).unwrap();
    let (_, mean_ablated) = function_preservation(&mut e, &ablated, &inputs, &reference).unwrap();
    assert!(
        mean_ablated > 1.0,
        "without compensation, mean error only {mean_ablated}"
    );
}

#[test]
fn a_bad_defence_config_names_what_is_wrong() {
    let base = HostModel::init(&small_spec(ActivationChoice::Relu), 1);
    let bad_layer = SpecDef {
        alpha: 10.0,
        k: 2,
        layers: LayerSelection::Indices(vec![7]),
        compensate: true,
        compensation: Default::default(),
    };
    let err = bad_layer.apply(&base, 0).unwrap_err().to_string();
    assert!(err.contains("unknown layer 7"), "{err}");
    let bad_alpha = SpecDef {
        alpha: f64::NAN,
        ..bad_layer
    };
    assert!(
        bad_alpha
            .apply(&base, 0)
            .unwrap_err()
            .to_string()
            .contains("alpha")
    );
}

/// Parameters after `steps` full-batch steps of `kind`, on `engine`.
fn train_steps(e: &mut dyn Engine, kind: OptimizerKind, steps: usize) -> Vec<f64> {
    let model = defended_small_model();
    let inputs = uniform(&mut rng(4), 32 * 6, 1.0);
    let labels: Vec<f64> = (0..32).map(|i| (i % 4) as f64).collect();
    let device = DeviceModel::upload(e, &model).unwrap();
    let ws = Workspace::alloc(e, &device, 32, 1).unwrap();
    e.upload(ws.inputs, &inputs).unwrap();
    e.upload(ws.targets, &labels).unwrap();
    let grads = Gradients::alloc(e, &device).unwrap();
    let optimizer = OptimizerState::new(
        e,
        kind,
        grads.trainable_pairs(&device, Trainable::default()),
    )
    .unwrap();
    let mut rec = Recording::new();
    for step in 0..steps {
        graph::forward(&mut rec, &device, &ws).unwrap();
        graph::cross_entropy(&mut rec, &ws).unwrap();
        graph::backward(&mut rec, &device, &ws, &grads, Trainable::default()).unwrap();
        optimizer
            .record_step(&mut rec, 1e-2, step as u32 + 1)
            .unwrap();
    }
    e.run(&rec).unwrap();
    let host = device.download(e).unwrap();
    (host.parameters().into_iter())
        .flat_map(|(_, m)| m.values.clone())
        .collect()
}

#[test]
fn training_steps_on_the_gpu_match_the_f64_reference() {
    let Some(mut gpu) = gpu() else { return };
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        for steps in [1, 20] {
            let reference = train_steps(&mut CpuEngine64::new(), kind, steps);
            let actual = train_steps(&mut *gpu, kind, steps);
            // Each step perturbs parameters by lr times a gradient with f32 error of a 32-term
            // sum; the errors of successive steps add up. Adam's step is lr m / sqrt(v), of
            // size lr whatever the gradient's scale: allow 1e-3 of lr (1e-5) per step.
            let per_step = match kind {
                OptimizerKind::Sgd => Tolerance::f32_sum(32 * 9, 1.0),
                _ => Tolerance::new(1e-2 * 1e-3, 1e-5),
            };
            let tolerance =
                Tolerance::new(per_step.abs * steps as f64, per_step.rel * steps as f64);
            tolerance
                .check(&actual, &reference)
                .unwrap_or_else(|e| panic!("{} x{steps}: {e}", kind.name()));
        }
    }
}

#[test]
fn each_parameter_group_trains_with_its_own_optimizer() {
    // The run's optimiser is Adam; biases train by SGD at a tenth of the learning rate, the
    // compensation layer by Adam with beta2 0.9.
    let model = defended_small_model();
    let inputs = uniform(&mut rng(60), BATCH * 6, 1.0);
    let labels = vec![0.0, 1.0, 2.0, 3.0, 1.0];
    let mut e = CpuEngine64::new();
    let (_, gradients) = logits_and_gradients(&mut e, &model, &inputs, &labels);
    let device = DeviceModel::upload(&mut e, &model).unwrap();
    let ws = Workspace::alloc(&mut e, &device, BATCH, 1).unwrap();
    e.upload(ws.inputs, &inputs).unwrap();
    e.upload(ws.targets, &labels).unwrap();
    let grads = Gradients::alloc(&mut e, &device).unwrap();
    let config = OptimizerConfig {
        kind: Some(OptimizerKind::Adam),
        hyper: OptimizerHyper::default(),
        groups: [
            (
                ParamGroup::Biases,
                GroupSettings {
                    optimizer: OptimizerKind::Sgd,
                    lr_scale: 0.1,
                    hyper: None,
                },
            ),
            (
                ParamGroup::Compensation,
                GroupSettings {
                    optimizer: OptimizerKind::Adam,
                    lr_scale: 1.0,
                    hyper: Some(OptimizerHyper {
                        beta2: 0.9,
                        ..OptimizerHyper::default()
                    }),
                },
            ),
        ]
        .into(),
    };
    let optimizer = OptimizerState::with_config(
        &mut e,
        &config,
        grads.trainable_pairs(&device, Trainable::default()),
    )
    .unwrap();
    let lr = 1e-2;
    let mut rec = Recording::new();
    graph::forward(&mut rec, &device, &ws).unwrap();
    graph::cross_entropy(&mut rec, &ws).unwrap();
    graph::backward(&mut rec, &device, &ws, &grads, Trainable::default()).unwrap();
    optimizer.record_step(&mut rec, lr, 1).unwrap();
    e.run(&rec).unwrap();
    let after = device.download(&mut e).unwrap();
    // Adam's first step is lr g / (|g| + eps) per entry, whatever beta2 (bias-corrected);
    // SGD's is lr_scale lr g.
    let eps = 1e-8;
    for ((key, before), (_, g)) in model.parameters().into_iter().zip(&gradients) {
        let moved = after.clone().parameter_mut(key).unwrap().values.clone();
        let expected: Vec<f64> = (before.values.iter().zip(g))
            .map(|(p, g)| match key.group() {
                ParamGroup::Biases => p - 0.1 * lr * g,
                _ => p - lr * g / (g.abs() + eps),
            })
            .collect();
        Tolerance::new(1e-12, 1e-9)
            .check(&moved, &expected)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}
