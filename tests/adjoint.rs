//! Reverse-mode differentiation of recordings (`gradient_recording`): the gradients of every
//! layer form's forward pass and loss equal the hand-written backward pass's; each op family's
//! adjoint rule equals central differences in f64; the tangent transform of a gradient recording
//! gives the same Hessian-vector products as the hand-written backward's; and what the transform
//! cannot differentiate is refused by name.

mod common;

use common::{every_form_model, relative_error, rng, uniform};
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{
    Activation, AdamHyper, BinaryOp, Engine, Recording, ReduceAxis, Reduction, Tensor, UnaryOp,
    gradient_recording, tangent_recording,
};
use specdef::model::{
    ActivationChoice, DeviceModel, Gradients, HessianVectorProduct, HostModel, Loss, Trainable,
    Workspace, graph,
};

const BATCH: usize = 5;

/// A batch for `model`: inputs, and targets for `loss` (class indices or regression values).
fn batch(model: &HostModel, loss: Loss) -> (Vec<f64>, Vec<f64>, usize) {
    let (inputs_width, outputs) = (model.spec.widths[0], *model.spec.widths.last().unwrap());
    let inputs = uniform(&mut rng(31), BATCH * inputs_width, 1.0);
    match loss {
        Loss::CrossEntropy => {
            let labels = (0..BATCH).map(|r| (r % outputs) as f64).collect();
            (inputs, labels, 1)
        }
        Loss::SquaredError => (inputs, uniform(&mut rng(32), BATCH * outputs, 1.0), outputs),
    }
}

/// The loss's scale against the hand-written backward's gradient: cross-entropy's sum over the
/// batch against its mean; squared error's sum of squares against half its mean.
fn seed(loss: Loss) -> f64 {
    match loss {
        Loss::CrossEntropy => 1.0 / BATCH as f64,
        Loss::SquaredError => 0.5 / BATCH as f64,
    }
}

#[test]
fn gradients_of_every_layer_form_equal_the_hand_written_backward() {
    for activation in [
        ActivationChoice::Relu,
        ActivationChoice::Gelu,
        ActivationChoice::Tanh,
    ] {
        let model = every_form_model(activation);
        for loss in [Loss::CrossEntropy, Loss::SquaredError] {
            let (inputs, targets, target_cols) = batch(&model, loss);
            let mut e = CpuEngine64::new();
            let device = DeviceModel::upload(&mut e, &model).unwrap();
            let ws = Workspace::alloc(&mut e, &device, BATCH, target_cols).unwrap();
            e.upload(ws.inputs, &inputs).unwrap();
            e.upload(ws.targets, &targets).unwrap();
            let mut forward = Recording::new();
            graph::forward(&mut forward, &device, &ws).unwrap();
            loss.record(&mut forward, &ws).unwrap();
            let reverse = gradient_recording(&mut e, &forward, ws.loss_sum, seed(loss)).unwrap();
            e.run(&reverse.recording).unwrap();
            let got: Vec<(_, Vec<f64>)> = (device.parameters().into_iter())
                .map(|(key, t)| {
                    let gradient = reverse.gradient_of(t).expect("every parameter has one");
                    (key, e.read_one(gradient).unwrap())
                })
                .collect();

            let grads = Gradients::alloc(&mut e, &device).unwrap();
            let mut backward = forward.clone();
            graph::backward(&mut backward, &device, &ws, &grads, Trainable::default()).unwrap();
            e.run(&backward).unwrap();
            let want: Vec<Vec<f64>> = (grads.parameters().into_iter())
                .map(|(_, t)| e.read_one(t).unwrap())
                .collect();
            assert_eq!(got.len(), want.len());
            for ((key, got), want) in got.iter().zip(&want) {
                let error = relative_error(got, want);
                assert!(
                    error < 1e-12,
                    "{activation:?} {loss:?} {key:?}: relative error {error:e}"
                );
            }
        }
    }
}

/// One op of every family with an adjoint rule (each unary and binary op, scale, axpy in place,
/// the moving average, transpose, both reductions per row and whole, products with every
/// transposition and an accumulating one, an activation, softmax cross-entropy) on the way from
/// `x` (4x3) and `w` (3x3) to one number.
fn every_op(
    rec: &mut Recording,
    e: &mut dyn Engine,
    x: Tensor,
    w: Tensor,
    labels: Tensor,
) -> Tensor {
    let mut t = |rows, cols| e.alloc("t", rows, cols).unwrap();
    let (h, h2, acc) = (t(4, 3), t(4, 3), t(4, 3));
    rec.matmul(x, w, h, false, false).unwrap();
    rec.matmul_scaled(x, w, acc, false, true, 0.5, 0.0).unwrap();
    rec.matmul_scaled(h, w, acc, false, false, -0.7, 0.3)
        .unwrap();
    rec.activate(Activation::Gelu, acc, h2).unwrap();
    let mut current = h2;
    for op in UnaryOp::ALL {
        let next = t(4, 3);
        // ln(1 + x) needs x > -1 (square first), 1 / sqrt(x) x > 0 (exponentiate first).
        let argument = match op {
            UnaryOp::Log1p | UnaryOp::Rsqrt => {
                let positive = t(4, 3);
                match op {
                    UnaryOp::Log1p => rec.binary(BinaryOp::Mul, current, current, positive),
                    _ => rec.unary(UnaryOp::Exp, current, positive),
                }
                .unwrap();
                positive
            }
            _ => current,
        };
        rec.unary(op, argument, next).unwrap();
        let mixed = t(4, 3);
        rec.binary(BinaryOp::Add, next, h, mixed).unwrap();
        current = mixed;
    }
    let (product, difference) = (t(4, 3), t(4, 3));
    rec.binary(BinaryOp::Mul, current, x, product).unwrap();
    rec.binary(BinaryOp::Sub, product, h, difference).unwrap();
    rec.axpy(0.25, x, difference).unwrap();
    let average = t(4, 3);
    rec.scale(0.5, h, average).unwrap();
    rec.ema(0.9, difference, average).unwrap();
    let transposed = t(3, 4);
    rec.transpose(average, transposed).unwrap();
    let back = t(4, 4);
    rec.matmul_scaled(transposed, transposed, back, true, false, 1.0, 0.0)
        .unwrap();
    let (rows, logits_loss, logits_grad) = (t(4, 1), t(4, 1), t(4, 4));
    rec.reduce(Reduction::Sum, ReduceAxis::PerRow, back, rows)
        .unwrap();
    rec.softmax_cross_entropy(back, labels, logits_loss, logits_grad, 0.25)
        .unwrap();
    let (both, total) = (t(4, 1), t(1, 1));
    rec.binary(BinaryOp::Add, rows, logits_loss, both).unwrap();
    rec.reduce(Reduction::SumOfSquares, ReduceAxis::Whole, both, total)
        .unwrap();
    total
}

#[test]
fn every_adjoint_rule_equals_central_differences() {
    let (x_values, w_values) = (
        uniform(&mut rng(41), 12, 0.8),
        uniform(&mut rng(42), 9, 0.8),
    );
    let labels_values = [0.0, 3.0, 1.0, 2.0];
    let value_at = |x: &[f64], w: &[f64]| -> f64 {
        let mut e = CpuEngine64::new();
        let xt = e.tensor_from("x", 4, 3, x).unwrap();
        let wt = e.tensor_from("w", 3, 3, w).unwrap();
        let labels = e.tensor_from("labels", 4, 1, &labels_values).unwrap();
        let mut rec = Recording::new();
        let out = every_op(&mut rec, &mut e, xt, wt, labels);
        e.run(&rec).unwrap();
        e.read_one(out).unwrap()[0]
    };
    let mut e = CpuEngine64::new();
    let xt = e.tensor_from("x", 4, 3, &x_values).unwrap();
    let wt = e.tensor_from("w", 3, 3, &w_values).unwrap();
    let labels = e.tensor_from("labels", 4, 1, &labels_values).unwrap();
    let mut rec = Recording::new();
    let out = every_op(&mut rec, &mut e, xt, wt, labels);
    let reverse = gradient_recording(&mut e, &rec, out, 1.0).unwrap();
    e.run(&reverse.recording).unwrap();
    let step = 1e-6;
    for (name, tensor, values) in [("x", xt, &x_values), ("w", wt, &w_values)] {
        let got = e.read_one(reverse.gradient_of(tensor).unwrap()).unwrap();
        let want: Vec<f64> = (0..values.len())
            .map(|i| {
                let at = |delta: f64| {
                    let mut moved = values.clone();
                    moved[i] += delta;
                    match name {
                        "x" => value_at(&moved, &w_values),
                        _ => value_at(&x_values, &moved),
                    }
                };
                (at(step) - at(-step)) / (2.0 * step)
            })
            .collect();
        let error = relative_error(&got, &want);
        assert!(
            error < 1e-6,
            "d out / d {name}: relative error {error:e}\n{got:?}\n{want:?}"
        );
    }
}

/// Forward-over-reverse on the transform: the tangent of a gradient recording along v is H v,
/// equal to the hand-written backward's (`HessianVectorProduct`).
#[test]
fn hessian_vector_products_through_the_transform_equal_the_hand_written_ones() {
    let model = every_form_model(ActivationChoice::Tanh);
    let loss = Loss::CrossEntropy;
    let (inputs, targets, target_cols) = batch(&model, loss);
    let mut e = CpuEngine64::new();
    let device = DeviceModel::upload(&mut e, &model).unwrap();
    let ws = Workspace::alloc(&mut e, &device, BATCH, target_cols).unwrap();
    e.upload(ws.inputs, &inputs).unwrap();
    e.upload(ws.targets, &targets).unwrap();
    let parameters = device.parameters();
    let v: Vec<Vec<f64>> = (parameters.iter().enumerate())
        .map(|(i, (_, t))| uniform(&mut rng(50 + i as u64), t.len(), 1.0))
        .collect();

    let product =
        HessianVectorProduct::prepare(&mut e, &device, &ws, loss, Trainable::default()).unwrap();
    let want = product.apply(&mut e, &v).unwrap();

    let mut forward = Recording::new();
    graph::forward(&mut forward, &device, &ws).unwrap();
    loss.record(&mut forward, &ws).unwrap();
    let reverse = gradient_recording(&mut e, &forward, ws.loss_sum, seed(loss)).unwrap();
    let seeds: Vec<(Tensor, Tensor)> = (parameters.iter().zip(&v))
        .map(|((_, t), values)| (*t, e.tensor_from("v", t.rows(), t.cols(), values).unwrap()))
        .collect();
    let tangents = tangent_recording(&mut e, &reverse.recording, &seeds).unwrap();
    e.run(&tangents.recording).unwrap();
    for (((key, t), want), _) in parameters.iter().zip(&want).zip(&v) {
        let gradient = reverse.gradient_of(*t).unwrap();
        let hv = tangents
            .tangent_of(gradient)
            .expect("every gradient has a tangent");
        let got = e.read_one(hv).unwrap();
        let error = relative_error(&got, want);
        assert!(error < 1e-10, "{key:?}: relative error {error:e}");
    }
}

/// The transform's error on `rec`, which it must refuse.
fn refusal(e: &mut dyn Engine, rec: &Recording, output: Tensor) -> String {
    match gradient_recording(e, rec, output, 1.0) {
        Ok(_) => panic!("differentiated what it must refuse"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn what_reverse_mode_cannot_differentiate_is_refused_by_name() {
    let mut e = CpuEngine64::new();
    let x = e.tensor_from("x", 2, 2, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let (y, g, m, v, total) = (
        e.alloc("y", 2, 2).unwrap(),
        e.alloc("g", 2, 2).unwrap(),
        e.alloc("m", 2, 2).unwrap(),
        e.alloc("v", 2, 2).unwrap(),
        e.alloc("total", 1, 1).unwrap(),
    );
    // An optimiser update on the way to the output.
    let hyper = AdamHyper {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut rec = Recording::new();
    rec.adam(x, g, (m, v), hyper, 1).unwrap();
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, x, total)
        .unwrap();
    let message = refusal(&mut e, &rec, total);
    assert!(
        message.contains("adam") && message.contains("no adjoint rule"),
        "{message}"
    );

    // A value the rule needs, overwritten later: y = x * x, then x filled.
    let mut rec = Recording::new();
    rec.binary(BinaryOp::Mul, x, x, y).unwrap();
    rec.fill(0.0, x);
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, y, total)
        .unwrap();
    let message = refusal(&mut e, &rec, total);
    assert!(
        message.contains("binary") && message.contains("overwrites"),
        "{message}"
    );

    // The output must be one number.
    let message = refusal(&mut e, &rec, y);
    assert!(message.contains("must be 1x1"), "{message}");
}
