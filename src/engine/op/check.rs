//! The shape checks the families share, and the refusal of ops without a tangent rule.

use super::DeviceScalar;
use crate::engine::{EngineError, Tensor};

pub(crate) fn shape_error(op: &'static str, message: String) -> EngineError {
    EngineError::Shape { op, message }
}

pub(crate) fn same_shape(
    op: &'static str,
    what: &str,
    a: Tensor,
    b: Tensor,
) -> Result<(), EngineError> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(shape_error(
            op,
            format!("{what} must have the same shape, got {a} and {b}"),
        ))
    }
}

/// Outputs may not alias inputs or each other: a GPU dispatch cannot bind one buffer both
/// read-only and read-write, and both engines refuse the same recordings.
pub(crate) fn distinct(
    op: &'static str,
    outputs: &[Tensor],
    inputs: &[Tensor],
) -> Result<(), EngineError> {
    for (i, out) in outputs.iter().enumerate() {
        if inputs.contains(out) || outputs[..i].contains(out) {
            return Err(shape_error(
                op,
                format!("output {out} must not alias another operand of the same op"),
            ));
        }
    }
    Ok(())
}

/// A device scalar reads `num[0]` and `den[0]`: both must be 1x1.
pub(crate) fn scalar_operands(op: &'static str, scalar: &DeviceScalar) -> Result<(), EngineError> {
    for (what, tensor) in [("num", scalar.num), ("den", scalar.den)] {
        if let Some(t) = tensor
            && t.shape() != (1, 1)
        {
            return Err(shape_error(
                op,
                format!("the scalar's {what} must be 1x1, got {t}"),
            ));
        }
    }
    Ok(())
}

/// Labels and per-row outputs of the softmax cross-entropy ops must be `rows x 1`.
pub(crate) fn per_row(
    op: &'static str,
    what: &str,
    logits: Tensor,
    t: Tensor,
) -> Result<(), EngineError> {
    let rows = logits.rows();
    if t.shape() == (rows, 1) {
        Ok(())
    } else {
        Err(shape_error(
            op,
            format!("{what} must be {rows}x1 for logits {logits}, got {t}"),
        ))
    }
}

/// The error of an op that has no tangent rule.
pub(crate) fn not_differentiable(op: &'static str) -> EngineError {
    EngineError::Shape {
        op,
        message: "has no tangent rule (forward-mode differentiation covers model forward, \
                  loss and backward ops and the elementwise ops, not optimiser updates, \
                  damping updates, device-scalar steps or SVD rounds)"
            .to_string(),
    }
}

/// The error of an op that has no adjoint rule.
pub(crate) fn not_reversible(op: &'static str) -> EngineError {
    EngineError::Shape {
        op,
        message: "has no adjoint rule (reverse-mode differentiation covers the ops of a forward \
                  pass and its loss, not backward passes, optimiser updates or SVD rounds)"
            .to_string(),
    }
}
