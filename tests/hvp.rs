//! Hessian-vector products by forward-over-reverse (the tangent transform of a recorded forward,
//! loss and backward): against the exact dense Hessian of a defended linear layer
//! (`theory::exact_hessian`), against central differences of exact gradients on an MLP with every
//! layer form, and on the f32 engines (CPU and GPU) against the f64 engine.

mod common;

use common::{check_on_every_engine, every_form_model, rng, uniform};
use specdef::Tolerance;
use specdef::data::{Regression, teacher_student};
use specdef::defense::{LayerSelection, SpecDef};
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{Engine, Recording};
use specdef::model::{
    ActivationChoice, DeviceModel, FactorRole, Gradients, HessianVectorProduct, HostModel, Loss,
    ModelSpec, ParamGroup, ParamKey, ParamRole, Trainable, Workspace, graph,
};
use specdef::theory::exact_hessian;

const BATCH: usize = 5;

/// H v on engine `e` for a batch of `inputs` and `targets` (`target_cols` wide).
fn hvp(
    e: &mut dyn Engine,
    model: &HostModel,
    (inputs, targets, target_cols): (&[f64], &[f64], usize),
    loss: Loss,
    trainable: Trainable,
    v: &[Vec<f64>],
) -> Vec<(ParamKey, Vec<f64>)> {
    let device = DeviceModel::upload(e, model).unwrap();
    let ws =
        Workspace::alloc(e, &device, inputs.len() / model.spec.widths[0], target_cols).unwrap();
    e.upload(ws.inputs, inputs).unwrap();
    e.upload(ws.targets, targets).unwrap();
    let product = HessianVectorProduct::prepare(e, &device, &ws, loss, trainable).unwrap();
    let hv = product.apply(e, v).unwrap();
    let keys: Vec<ParamKey> = product.slots().iter().map(|s| s.0).collect();
    keys.into_iter().zip(hv).collect()
}

/// The gradient of every trainable parameter, in f64.
fn gradient(
    model: &HostModel,
    (inputs, targets, target_cols): (&[f64], &[f64], usize),
    loss: Loss,
    trainable: Trainable,
) -> Vec<Vec<f64>> {
    let mut e = CpuEngine64::new();
    let device = DeviceModel::upload(&mut e, model).unwrap();
    let ws = Workspace::alloc(
        &mut e,
        &device,
        inputs.len() / model.spec.widths[0],
        target_cols,
    )
    .unwrap();
    e.upload(ws.inputs, inputs).unwrap();
    e.upload(ws.targets, targets).unwrap();
    let grads = Gradients::alloc(&mut e, &device).unwrap();
    let mut rec = Recording::new();
    graph::forward(&mut rec, &device, &ws).unwrap();
    loss.record(&mut rec, &ws).unwrap();
    graph::backward(&mut rec, &device, &ws, &grads, trainable).unwrap();
    e.run(&rec).unwrap();
    (grads.parameters().into_iter())
        .filter(|(k, _)| trainable.trains(k.group()))
        .map(|(_, t)| e.read_one(t).unwrap())
        .collect()
}

/// A random direction over the trainable parameters of `model`.
fn direction(model: &HostModel, trainable: Trainable, seed: u64) -> Vec<Vec<f64>> {
    let mut r = rng(seed);
    (model.parameters().into_iter())
        .filter(|(k, _)| trainable.trains(k.group()))
        .map(|(_, m)| uniform(&mut r, m.values.len(), 1.0))
        .collect()
}

/// `model` moved by `step` along `v` (over the trainable parameters).
fn moved(model: &HostModel, trainable: Trainable, v: &[Vec<f64>], step: f64) -> HostModel {
    let mut out = model.clone();
    let keys: Vec<ParamKey> = (model.parameters().into_iter())
        .filter(|(k, _)| trainable.trains(k.group()))
        .map(|(k, _)| k)
        .collect();
    for (key, dv) in keys.into_iter().zip(v) {
        let m = out.parameter_mut(key).unwrap();
        m.values
            .iter_mut()
            .zip(dv)
            .for_each(|(x, d)| *x += step * d);
    }
    out
}

fn regression_problem() -> (HostModel, Regression) {
    let data = teacher_student(32, &[6, 5, 4], 3);
    let spec = ModelSpec {
        widths: vec![6, 4],
        activation: ActivationChoice::Identity,
    };
    let defended = SpecDef {
        alpha: 20.0,
        k: 2,
        layers: LayerSelection::All,
        compensate: true,
        compensation: Default::default(),
    }
    .apply(&HostModel::init(&spec, 4), 0)
    .unwrap();
    (defended, data)
}

#[test]
fn hvp_of_a_defended_linear_layer_equals_the_exact_hessian_times_v() {
    let (model, data) = regression_problem();
    let batch = (&data.inputs[..], &data.targets[..], data.outputs);
    let trainable = Trainable::default();
    let v = direction(&model, trainable, 5);
    let hv = hvp(
        &mut CpuEngine64::new(),
        &model,
        batch,
        Loss::SquaredError,
        trainable,
        &v,
    );
    // The exact Hessian orders the parameters W, b, C; the registry W, C, b.
    let block = |role: ParamRole, values: &[(ParamKey, Vec<f64>)]| {
        values
            .iter()
            .find(|(k, _)| k.role == role)
            .unwrap()
            .1
            .clone()
    };
    let keyed_v: Vec<(ParamKey, Vec<f64>)> = hv.iter().map(|(k, _)| *k).zip(v).collect();
    let in_theory_order = |values: &[(ParamKey, Vec<f64>)]| -> Vec<f64> {
        [
            ParamRole::Factor(FactorRole::Weight),
            ParamRole::Bias,
            ParamRole::Factor(FactorRole::Compensation),
        ]
        .into_iter()
        .flat_map(|role| block(role, values))
        .collect()
    };
    let flat_v = in_theory_order(&keyed_v);
    let hessian = exact_hessian(&model.layers[0], &data);
    let expected: Vec<f64> = (0..flat_v.len())
        .map(|i| (0..flat_v.len()).map(|j| hessian[(i, j)] * flat_v[j]).sum())
        .collect();
    let scale = expected.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    // Both are f64 sums of a few hundred terms of size up to alpha^2.
    Tolerance::new(1e-12 * scale, 1e-10)
        .check(&in_theory_order(&hv), &expected)
        .unwrap();
}

#[test]
fn hvp_equals_central_differences_of_exact_gradients_for_every_layer_form() {
    let inputs = uniform(&mut rng(30), BATCH * 6, 1.0);
    let labels = [0.0, 3.0, 1.0, 2.0, 3.0];
    let batch = (&inputs[..], &labels[..], 1);
    let frozen_defence = Trainable {
        weights: false,
        compensation: false,
        ..Trainable::default()
    };
    for activation in [ActivationChoice::Tanh, ActivationChoice::Gelu] {
        let model = every_form_model(activation);
        for trainable in [Trainable::default(), frozen_defence] {
            let v = direction(&model, trainable, 31);
            let hv = hvp(
                &mut CpuEngine64::new(),
                &model,
                batch,
                Loss::CrossEntropy,
                trainable,
                &v,
            );
            // (g(theta + h v) - g(theta - h v)) / 2h: error h^2 |g'''| / 6 plus the rounding
            // of f64 gradients over 2h.
            let h = 1e-5;
            let up = gradient(
                &moved(&model, trainable, &v, h),
                batch,
                Loss::CrossEntropy,
                trainable,
            );
            let down = gradient(
                &moved(&model, trainable, &v, -h),
                batch,
                Loss::CrossEntropy,
                trainable,
            );
            for (((key, actual), up), down) in hv.iter().zip(up).zip(down) {
                let numeric: Vec<f64> = up
                    .iter()
                    .zip(&down)
                    .map(|(u, d)| (u - d) / (2.0 * h))
                    .collect();
                Tolerance::new(1e-7, 1e-5)
                    .check(actual, &numeric)
                    .unwrap_or_else(|e| {
                        panic!("{activation:?} {} {key}: {e}", trainable.describe())
                    });
            }
        }
    }
}

#[test]
fn hvp_on_the_f32_engines_matches_the_f64_engine() {
    let inputs = uniform(&mut rng(40), BATCH * 6, 1.0);
    let labels = vec![1.0, 0.0, 2.0, 3.0, 3.0];
    let model = every_form_model(ActivationChoice::Gelu);
    let trainable = Trainable::default();
    let v = direction(&model, trainable, 41);
    // Forward, backward and their tangents chain about four times the ops of a gradient; every
    // value is built from dot products of at most 9 terms of order 1.
    check_on_every_engine(
        "H v of a model with every layer form",
        Tolerance::f32_sum(4 * 9 * 16, 1.0),
        |e| {
            hvp(
                e,
                &model,
                (&inputs, &labels, 1),
                Loss::CrossEntropy,
                trainable,
                &v,
            )
            .into_iter()
            .flat_map(|(_, hv)| hv)
            .collect()
        },
    );
}

#[test]
fn a_frozen_group_has_no_block_in_the_product() {
    let model = every_form_model(ActivationChoice::Tanh);
    let trainable = Trainable::only(&[ParamGroup::Lora, ParamGroup::Injected]);
    let inputs = uniform(&mut rng(50), BATCH * 6, 1.0);
    let labels = vec![0.0, 1.0, 2.0, 3.0, 0.0];
    let v = direction(&model, trainable, 51);
    let hv = hvp(
        &mut CpuEngine64::new(),
        &model,
        (&inputs, &labels, 1),
        Loss::CrossEntropy,
        trainable,
        &v,
    );
    let groups: Vec<ParamGroup> = hv.iter().map(|(k, _)| k.group()).collect();
    assert!(
        groups
            .iter()
            .all(|g| [ParamGroup::Lora, ParamGroup::Injected].contains(g)),
        "{groups:?}"
    );
    // Layer 0's and layer 1's LoRA branches (A and B each) and layer 2's injected factor.
    assert_eq!(hv.len(), 5);
}
