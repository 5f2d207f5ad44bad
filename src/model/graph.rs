//! Forward, loss and backward of a model, recorded against the engine interface: the same
//! recording runs on the GPU and on the CPU twins. Per layer:
//!   plain:     Z = A W^T + 1 b^T                     dW = dZ^T A,  dA = dZ W
//!   defended:  H = A W~^T, Z = H C^T + 1 b^T          dC = dZ^T H,  dH = dZ C,
//!                                                      dW~ = dH^T A, dA = dH W~
//! and db = 1^T dZ. Bias broadcast and bias gradient are matmuls with a column of ones.

use super::{DeviceModel, Gradients, Trainable, Workspace};
use crate::engine::{BinaryOp, EngineError, Recording, ReduceAxis, Reduction, Tensor};

/// The tensor layer `i` reads: the inputs, or the previous layer's (activated) output.
fn layer_input(ws: &Workspace, i: usize) -> Tensor {
    if i == 0 {
        ws.inputs
    } else {
        let previous = &ws.layers[i - 1];
        previous.post.unwrap_or(previous.pre)
    }
}

/// Records the forward pass; the logits end in `ws.logits()`.
pub fn forward(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
) -> Result<(), EngineError> {
    let activation = model.spec.activation.activation();
    for (i, (layer, buffers)) in model.layers.iter().zip(&ws.layers).enumerate() {
        let input = layer_input(ws, i);
        match (layer.compensation, buffers.hidden) {
            (Some(c), Some(hidden)) => {
                rec.matmul(input, layer.weight, hidden, false, true)?;
                rec.matmul(hidden, c, buffers.pre, false, true)?;
            }
            _ => {
                rec.matmul(input, layer.weight, buffers.pre, false, true)?;
            }
        }
        rec.matmul_scaled(ws.ones, layer.bias, buffers.pre, false, false, 1.0, 1.0)?;
        if let (Some(f), Some(post)) = (activation, buffers.post) {
            rec.activate(f, buffers.pre, post)?;
        }
    }
    Ok(())
}

/// Mean softmax cross-entropy against the class labels in `ws.targets`: the gradient goes to the
/// last layer's `grad_pre`, the summed loss to `ws.loss_sum` (divide by the batch on the host).
pub fn cross_entropy(rec: &mut Recording, ws: &Workspace) -> Result<(), EngineError> {
    let last = ws.layers[ws.layers.len() - 1];
    rec.softmax_cross_entropy(
        last.pre,
        ws.targets,
        ws.loss_rows,
        last.grad_pre,
        1.0 / ws.batch as f64,
    )?;
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, ws.loss_rows, ws.loss_sum)?;
    Ok(())
}

/// Half the mean squared error against the values in `ws.targets`:
/// loss = sum (Z - Y)^2 / (2 batch), so `ws.loss_sum` holds 2 batch loss; gradient (Z - Y) / batch.
pub fn squared_error(rec: &mut Recording, ws: &Workspace) -> Result<(), EngineError> {
    let last = ws.layers[ws.layers.len() - 1];
    rec.binary(BinaryOp::Sub, last.pre, ws.targets, ws.loss_rows)?;
    rec.scale(1.0 / ws.batch as f64, ws.loss_rows, last.grad_pre)?;
    rec.reduce(
        Reduction::SumOfSquares,
        ReduceAxis::Whole,
        ws.loss_rows,
        ws.loss_sum,
    )?;
    Ok(())
}

/// Records the backward pass from the last layer's `grad_pre` into `grads` (trainable groups
/// only; gradients flow through frozen layers all the same).
pub fn backward(
    rec: &mut Recording,
    model: &DeviceModel,
    ws: &Workspace,
    grads: &Gradients,
    trainable: Trainable,
) -> Result<(), EngineError> {
    let activation = model.spec.activation.activation();
    for i in (0..model.layers.len()).rev() {
        let layer = model.layers[i];
        let buffers = ws.layers[i];
        let grad = grads.layers[i];
        let input = layer_input(ws, i);
        let d_pre = buffers.grad_pre;
        if trainable.biases {
            rec.matmul(ws.ones, d_pre, grad.bias, true, false)?;
        }
        // The gradient that reaches W (dH for a defended layer, dZ otherwise).
        let d_linear = match (layer.compensation, buffers.hidden, buffers.grad_hidden) {
            (Some(c), Some(hidden), Some(d_hidden)) => {
                if let (true, Some(grad_c)) = (trainable.compensation, grad.compensation) {
                    rec.matmul(d_pre, hidden, grad_c, true, false)?;
                }
                rec.matmul(d_pre, c, d_hidden, false, false)?;
                d_hidden
            }
            _ => d_pre,
        };
        if trainable.weights {
            rec.matmul(d_linear, input, grad.weight, true, false)?;
        }
        if i > 0 {
            let previous = ws.layers[i - 1];
            match (activation, previous.grad_post) {
                (Some(f), Some(d_post)) => {
                    rec.matmul(d_linear, layer.weight, d_post, false, false)?;
                    rec.activate_grad(f, previous.pre, d_post, previous.grad_pre)?;
                }
                _ => {
                    rec.matmul(d_linear, layer.weight, previous.grad_pre, false, false)?;
                }
            }
        }
    }
    Ok(())
}
