//! Models and the defence: exact gradients (against finite differences in f64), SpecDef's
//! identities, and a training step and 20 steps on the GPU against the f64 CPU reference.

mod common;

use common::{gpu, rng, uniform};
use specdef::Tolerance;
use specdef::attack::{OptimizerKind, OptimizerState};
use specdef::defense::{LayerSelection, SpecDef, function_preservation};
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{Engine, Recording};
use specdef::model::{
    ActivationChoice, DeviceModel, Gradients, HostModel, Matrix, ModelSpec, Trainable, Workspace,
    graph,
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

    let mut e = CpuEngine64::new();
    let device = DeviceModel::upload(&mut e, &model).unwrap();
    let ws = Workspace::alloc(&mut e, &device, BATCH, 1).unwrap();
    e.upload(ws.inputs, &inputs).unwrap();
    e.upload(ws.targets, &labels).unwrap();
    let grads = Gradients::alloc(&mut e, &device).unwrap();
    let mut rec = Recording::new();
    graph::forward(&mut rec, &device, &ws).unwrap();
    graph::cross_entropy(&mut rec, &ws).unwrap();
    graph::backward(&mut rec, &device, &ws, &grads, Trainable::default()).unwrap();
    e.run(&rec).unwrap();

    let h = 1e-6;
    let tolerance = Tolerance::new(1e-7, 1e-5);
    for (i, layer) in grads.layers.iter().enumerate() {
        let check =
            |name: &str, analytic: Vec<f64>, perturb: &dyn Fn(&mut HostModel, usize, f64)| {
                let numeric: Vec<f64> = (0..analytic.len())
                    .map(|j| {
                        let (mut up, mut down) = (model.clone(), model.clone());
                        perturb(&mut up, j, h);
                        perturb(&mut down, j, -h);
                        (loss(&up, &inputs, &labels) - loss(&down, &inputs, &labels)) / (2.0 * h)
                    })
                    .collect();
                tolerance
                    .check(&analytic, &numeric)
                    .unwrap_or_else(|err| panic!("layers.{i}.{name}: {err}"));
            };
        check("weight", e.read_one(layer.weight).unwrap(), &|m, j, d| {
            m.layers[i].weight.values[j] += d
        });
        check("bias", e.read_one(layer.bias).unwrap(), &|m, j, d| {
            m.layers[i].bias[j] += d
        });
        if let Some(c) = layer.compensation {
            check("compensation", e.read_one(c).unwrap(), &|m, j, d| {
                m.layers[i].compensation.as_mut().unwrap().values[j] += d
            });
        }
    }
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
        };
        let defended = defence.apply(&base, 0).unwrap();
        for (i, (orig, layer)) in base.layers.iter().zip(&defended.layers).enumerate() {
            // C W~ = W up to f64 rounding of entries of size alpha |W|.
            let scale = orig
                .weight
                .values
                .iter()
                .fold(0.0f64, |a, v| a.max(v.abs()));
            let tolerance = Tolerance::new(64.0 * alpha * f64::EPSILON * scale, 0.0);
            tolerance
                .check(&layer.effective_weight().values, &orig.weight.values)
                .unwrap_or_else(|e| panic!("alpha {alpha}, layer {i}: C W~ != W: {e}"));
            let ratio = sigma_1(&layer.weight) / sigma_1(&orig.weight);
            Tolerance::new(0.0, 1e-9)
                .check(&[ratio], &[alpha])
                .unwrap_or_else(|e| panic!("alpha {alpha}, layer {i}: sigma_1 ratio: {e}"));
            assert_eq!(layer.bias, orig.bias);
        }
        assert_eq!(defended.defended_layers(), vec![0, 1, 2]);
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
    host.layers
        .iter()
        .flat_map(|l| {
            let mut v = l.weight.values.clone();
            v.extend(&l.bias);
            v.extend(l.compensation.iter().flat_map(|c| c.values.clone()));
            v
        })
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
