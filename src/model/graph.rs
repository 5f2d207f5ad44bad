//! Forward, loss and backward of a model, recorded against the engine interface: the same
//! recording runs on the GPU and on the CPU twins. Both walk each layer's chain of factors
//! (see `layer.rs`), whatever its form. Per factor F (with input h, output o = h F^T):
//!   dF = do^T h,  dh = do F
//! and with a LoRA branch o += s (h A^T) B^T, m = h A^T:
//!   dB = s do^T m,  dm = s do B,  dA = dm^T h,  dh += dm A.
//! Per layer, Z = h_p + 1 b^T and db = 1^T dZ: bias broadcast and bias gradient are matmuls with
//! a column of ones, so no extra kernels are needed.

use super::layer::{ParamGroup, ParamRole, Trainable};
use super::{DeviceModel, Gradients, Workspace};
use crate::engine::{BinaryOp, EngineError, Recording, ReduceAxis, Reduction, Tensor};

/// The tensor layer `i` reads: the inputs, or the previous layer's (activated) output.
fn layer_input(ws: &Workspace, i: usize) -> Tensor {
    if i == 0 {
        ws.inputs
    } else {
        ws.layers[i - 1].output()
    }
}

/// Records the forward pass; the logits end in `ws.logits()`.
pub fn forward(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
) -> Result<(), EngineError> {
    forward_through(rec, model, ws, model.layers.len() - 1)
}

/// Records the forward pass of layers `0..=last` only; layer `last`'s output ends in
/// `ws.layers[last].output()` (a loss on a hidden layer needs nothing after it).
pub fn forward_through(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
    last: usize,
) -> Result<(), EngineError> {
    let layers = model.layers.iter().zip(&ws.layers).take(last + 1);
    for (i, (layer, buffers)) in layers.enumerate() {
        let mut input = layer_input(ws, i);
        for (factor, out) in layer.factors.iter().zip(&buffers.factors) {
            rec.matmul(input, factor.matrix, out.out, false, true)?;
            if let (Some(lora), Some((mid, _))) = (&factor.lora, out.lora) {
                rec.matmul(input, lora.a, mid, false, true)?;
                rec.matmul_scaled(mid, lora.b, out.out, false, true, lora.scale, 1.0)?;
            }
            input = out.out;
        }
        rec.matmul_scaled(ws.ones, layer.bias, buffers.pre(), false, false, 1.0, 1.0)?;
        if let (Some(f), Some((post, _))) = (model.spec.activation_after(i), buffers.activated) {
            rec.activate(f, buffers.pre(), post)?;
        }
    }
    Ok(())
}

/// Mean softmax cross-entropy against the class labels in `ws.targets`: the gradient goes to the
/// last layer's `grad_pre`, the summed loss to `ws.loss_sum` (divide by the batch on the host).
pub fn cross_entropy(rec: &mut Recording, ws: &Workspace) -> Result<(), EngineError> {
    let last = &ws.layers[ws.layers.len() - 1];
    rec.softmax_cross_entropy(
        last.pre(),
        ws.targets,
        ws.loss_rows,
        last.grad_pre(),
        1.0 / ws.batch as f64,
    )?;
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, ws.loss_rows, ws.loss_sum)?;
    Ok(())
}

/// Half the mean squared error against the values in `ws.targets`:
/// loss = sum (Z - Y)^2 / (2 batch), so `ws.loss_sum` holds 2 batch loss; gradient (Z - Y) / batch.
pub fn squared_error(rec: &mut Recording, ws: &Workspace) -> Result<(), EngineError> {
    let last = &ws.layers[ws.layers.len() - 1];
    rec.binary(BinaryOp::Sub, last.pre(), ws.targets, ws.loss_rows)?;
    rec.scale(1.0 / ws.batch as f64, ws.loss_rows, last.grad_pre())?;
    rec.reduce(
        Reduction::SumOfSquares,
        ReduceAxis::Whole,
        ws.loss_rows,
        ws.loss_sum,
    )?;
    Ok(())
}

/// Records the backward pass from the last layer's `grad_pre` into `grads` (trainable groups
/// only; gradients flow through frozen factors all the same).
pub fn backward(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
    grads: &Gradients,
    trainable: Trainable,
) -> Result<(), EngineError> {
    backward_adding(rec, model, ws, grads, trainable, &[])
}

/// `backward`, with a loss's gradients on hidden layers' outputs added to what flows down to
/// them: `(layer, gradient of its output)` (RepNoise's noise term on every hidden layer).
pub fn backward_adding(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
    grads: &Gradients,
    trainable: Trainable,
    added: &[(usize, Tensor)],
) -> Result<(), EngineError> {
    backward_layers(
        rec,
        model,
        ws,
        grads,
        trainable,
        model.layers.len() - 1,
        added,
    )
}

/// The tensor that holds the gradient of layer `i`'s output (`f(Z)`, or `Z` without an
/// activation): where a loss on that layer writes its gradient before `backward_from`.
pub fn output_grad(ws: &Workspace, i: usize) -> Tensor {
    let buffers = &ws.layers[i];
    buffers
        .activated
        .map_or(buffers.grad_pre(), |(_, d_post)| d_post)
}

/// Records the backward pass of layers `0..=layer` from the gradient of layer `layer`'s output
/// (in `output_grad(ws, layer)`): for a loss on a hidden layer. The layers after it get no
/// gradient, so their gradient tensors are left as they were.
pub fn backward_from(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
    grads: &Gradients,
    trainable: Trainable,
    layer: usize,
) -> Result<(), EngineError> {
    let buffers = &ws.layers[layer];
    if let (Some(f), Some((_, d_post))) = (model.spec.activation_after(layer), buffers.activated) {
        rec.activate_grad(f, buffers.pre(), d_post, buffers.grad_pre())?;
    }
    backward_layers(rec, model, ws, grads, trainable, layer, &[])
}

/// Layers `top..=0` from layer `top`'s `grad_pre`, adding `added`'s gradients to the outputs of
/// the layers they name.
fn backward_layers(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
    grads: &Gradients,
    trainable: Trainable,
    top: usize,
    added: &[(usize, Tensor)],
) -> Result<(), EngineError> {
    for i in (0..=top).rev() {
        let (layer, buffers, grad) = (&model.layers[i], &ws.layers[i], &grads.layers[i]);
        if trainable.trains(ParamGroup::Biases) {
            rec.matmul(ws.ones, buffers.grad_pre(), grad.bias, true, false)?;
        }
        for j in (0..layer.factors.len()).rev() {
            let (factor, out, grad_factor) =
                (&layer.factors[j], &buffers.factors[j], &grad.factors[j]);
            let input = if j == 0 {
                layer_input(ws, i)
            } else {
                buffers.factors[j - 1].out
            };
            let d_out = out.grad_out;
            if layer.trains(ParamRole::Factor(factor.role), trainable) {
                rec.matmul(d_out, input, grad_factor.matrix, true, false)?;
            }
            let lora = match (&factor.lora, out.lora, &grad_factor.lora) {
                (Some(lora), Some((mid, d_mid)), Some(grad_lora)) => {
                    if trainable.trains(ParamGroup::Lora) {
                        rec.matmul_scaled(d_out, mid, grad_lora.b, true, false, lora.scale, 0.0)?;
                    }
                    rec.matmul_scaled(d_out, lora.b, d_mid, false, false, lora.scale, 0.0)?;
                    if trainable.trains(ParamGroup::Lora) {
                        rec.matmul(d_mid, input, grad_lora.a, true, false)?;
                    }
                    Some((lora.a, d_mid))
                }
                _ => None,
            };
            // Where the gradient of this factor's input goes: the previous factor's output,
            // or the previous layer's (through its activation); nowhere for the model's input.
            let (d_input, activation) = if j > 0 {
                (buffers.factors[j - 1].grad_out, None)
            } else if i > 0 {
                let previous = &ws.layers[i - 1];
                match previous.activated {
                    Some((_, d_post)) => (d_post, model.spec.activation_after(i - 1)),
                    None => (previous.grad_pre(), None),
                }
            } else {
                continue;
            };
            rec.matmul(d_out, factor.matrix, d_input, false, false)?;
            if let Some((a, d_mid)) = lora {
                rec.matmul_scaled(d_mid, a, d_input, false, false, 1.0, 1.0)?;
            }
            // The previous layer's output gradient is complete but for a loss's own term on it.
            if j == 0
                && let Some(&(_, extra)) = added.iter().find(|(layer, _)| *layer == i - 1)
            {
                rec.axpy(1.0, extra, d_input)?;
            }
            if let Some(f) = activation {
                let previous = &ws.layers[i - 1];
                rec.activate_grad(f, previous.pre(), d_input, previous.grad_pre())?;
            }
        }
    }
    Ok(())
}
