//! Forward-mode differentiation of a recording: every op has a tangent rule, so any recording
//! (forward, loss and backward of any layer form) gets its directional derivative without a
//! hand-written tangent pass. Applied to a recording that computes gradients, with the
//! parameters' tangents seeded by a vector v, the gradients' tangents are the Hessian-vector
//! product H v (forward-over-reverse, as `jax.jvp(jax.grad(f))`).
//!
//! Each primal op is followed by its tangent ops; those read the op's inputs only, never its
//! output, so buffers reused across a recording stay correct. A tensor whose tangent is known to
//! be zero has none (`tangent_of` is `None`) and its terms are skipped, not computed as zeros.

use super::op::{Op, Reduction, UnaryOp};
use super::{Allocation, BinaryOp, Engine, EngineError, Recording, Tensor};
use std::collections::{HashMap, HashSet};

/// A recording with its tangent ops, and the tangent tensors it allocated (freed when this is
/// dropped; the seeds stay the caller's).
pub struct TangentRecording {
    pub recording: Recording,
    /// Tangent of each primal tensor (by id) that ever had one.
    tangents: HashMap<u32, Tensor>,
    /// Primal tensors whose tangent is non-zero after the recording.
    live: HashSet<u32>,
    _owned: Allocation,
}

impl TangentRecording {
    /// The tangent of `primal` after the recording runs; `None` where it is zero.
    pub fn tangent_of(&self, primal: Tensor) -> Option<Tensor> {
        self.live
            .contains(&primal.id())
            .then(|| self.tangents[&primal.id()])
    }
}

struct Transform<'e> {
    engine: &'e mut dyn Engine,
    recording: Recording,
    tangents: HashMap<u32, Tensor>,
    live: HashSet<u32>,
    owned: Allocation,
    seeded: HashSet<u32>,
}

fn not_differentiable(op: &Op) -> EngineError {
    EngineError::Shape {
        op: op.kernel_name(),
        message: "has no tangent rule (forward-mode differentiation covers model forward, \
                  loss and backward ops and the elementwise ops, not optimiser updates, \
                  damping updates, device-scalar steps or SVD rounds)"
            .to_string(),
    }
}

impl Transform<'_> {
    fn live(&self, t: Tensor) -> Option<Tensor> {
        self.live.contains(&t.id()).then(|| self.tangents[&t.id()])
    }

    fn alloc(&mut self, label: &str, like: Tensor) -> Result<Tensor, EngineError> {
        (self.owned).alloc(&mut *self.engine, label, like.rows(), like.cols())
    }

    /// The tangent tensor an op writes for `primal` (allocated on first use), marked live.
    fn output(&mut self, op: &Op, primal: Tensor) -> Result<Tensor, EngineError> {
        if self.seeded.contains(&primal.id()) {
            return Err(EngineError::Shape {
                op: op.kernel_name(),
                message: format!("writes {primal}, whose tangent is a seed of the transform"),
            });
        }
        let tangent = match self.tangents.get(&primal.id()) {
            Some(&t) => t,
            None => {
                let t = self.alloc(&format!("tangent.{}", primal.id()), primal)?;
                self.tangents.insert(primal.id(), t);
                t
            }
        };
        self.live.insert(primal.id());
        Ok(tangent)
    }

    fn zero(&mut self, primal: Tensor) {
        self.live.remove(&primal.id());
    }

    /// A scratch tensor shaped like `like`, for terms that need an intermediate.
    fn scratch(&mut self, like: Tensor) -> Result<Tensor, EngineError> {
        self.alloc("tangent.scratch", like)
    }

    fn rule(&mut self, op: &Op) -> Result<(), EngineError> {
        match *op {
            Op::Matmul {
                a,
                b,
                c,
                trans_a,
                trans_b,
                alpha,
                beta,
            } => {
                let keep_old = beta != 0.0 && self.live(c).is_some();
                let terms: Vec<(Tensor, Tensor)> = [
                    self.live(a).map(|da| (da, b)),
                    self.live(b).map(|db| (a, db)),
                ]
                .into_iter()
                .flatten()
                .collect();
                if terms.is_empty() {
                    if keep_old && beta != 1.0 {
                        // dc = beta dc, through a copy (outputs never alias inputs).
                        let dc = self.output(op, c)?;
                        let copy = self.scratch(c)?;
                        let rec = &mut self.recording;
                        rec.scale(1.0, dc, copy)?.scale(beta, copy, dc)?;
                    } else if !keep_old {
                        self.zero(c);
                    }
                    return Ok(());
                }
                let dc = self.output(op, c)?;
                for (i, (x, y)) in terms.into_iter().enumerate() {
                    let beta_here = match (i, keep_old) {
                        (0, true) => beta,
                        (0, false) => 0.0,
                        _ => 1.0,
                    };
                    (self.recording).matmul_scaled(x, y, dc, trans_a, trans_b, alpha, beta_here)?;
                }
            }
            Op::Activate { f, x, y } => match self.live(x) {
                Some(dx) => {
                    let dy = self.output(op, y)?;
                    self.recording.activate_grad(f, x, dx, dy)?;
                }
                None => self.zero(y),
            },
            Op::ActivateGrad {
                f,
                x,
                grad_y,
                grad_x,
            } => match (self.live(x), self.live(grad_y)) {
                (None, None) => self.zero(grad_x),
                (None, Some(d_grad_y)) => {
                    let out = self.output(op, grad_x)?;
                    self.recording.activate_grad(f, x, d_grad_y, out)?;
                }
                (Some(dx), d_grad_y) => {
                    let d_grad_y = match d_grad_y {
                        Some(t) => t,
                        None => {
                            let zeros = self.scratch(grad_y)?;
                            self.recording.fill(0.0, zeros);
                            zeros
                        }
                    };
                    let out = self.output(op, grad_x)?;
                    (self.recording).activate_grad_jvp(f, x, grad_y, dx, d_grad_y, out)?;
                }
            },
            Op::Binary {
                op: kind,
                a,
                b,
                out,
            } => {
                let (da, db) = (self.live(a), self.live(b));
                if da.is_none() && db.is_none() {
                    self.zero(out);
                    return Ok(());
                }
                let d_out = self.output(op, out)?;
                match kind {
                    BinaryOp::Add | BinaryOp::Sub => {
                        let sign = if kind == BinaryOp::Sub { -1.0 } else { 1.0 };
                        let rec = &mut self.recording;
                        match (da, db) {
                            (Some(da), Some(db)) => rec.binary(kind, da, db, d_out)?,
                            (Some(da), None) => rec.scale(1.0, da, d_out)?,
                            (None, Some(db)) => rec.scale(sign, db, d_out)?,
                            (None, None) => unreachable!("handled above"),
                        };
                    }
                    BinaryOp::Mul => {
                        // d(a b) = da b + a db.
                        let second = match (da, db) {
                            (Some(da), Some(db)) => {
                                self.recording.binary(BinaryOp::Mul, da, b, d_out)?;
                                let t = self.scratch(out)?;
                                Some((db, t))
                            }
                            (Some(da), None) => {
                                self.recording.binary(BinaryOp::Mul, da, b, d_out)?;
                                None
                            }
                            (None, Some(db)) => {
                                self.recording.binary(BinaryOp::Mul, a, db, d_out)?;
                                None
                            }
                            (None, None) => unreachable!("handled above"),
                        };
                        if let Some((db, t)) = second {
                            let rec = &mut self.recording;
                            rec.binary(BinaryOp::Mul, a, db, t)?.axpy(1.0, t, d_out)?;
                        }
                    }
                }
            }
            Op::Scale { alpha, x, out } => match self.live(x) {
                Some(dx) => {
                    let d_out = self.output(op, out)?;
                    self.recording.scale(alpha, dx, d_out)?;
                }
                None => self.zero(out),
            },
            Op::Axpy { alpha, x, y } => {
                if let Some(dx) = self.live(x) {
                    let was_live = self.live(y).is_some();
                    let dy = self.output(op, y)?;
                    if was_live {
                        self.recording.axpy(alpha, dx, dy)?;
                    } else {
                        self.recording.scale(alpha, dx, dy)?;
                    }
                }
            }
            Op::Fill { out, .. } => self.zero(out),
            Op::Reduce {
                reduction,
                axis,
                x,
                out,
            } => {
                let Some(dx) = self.live(x) else {
                    self.zero(out);
                    return Ok(());
                };
                match reduction {
                    Reduction::Sum => {
                        let d_out = self.output(op, out)?;
                        self.recording.reduce(Reduction::Sum, axis, dx, d_out)?;
                    }
                    Reduction::SumOfSquares => {
                        // d sum x^2 = 2 sum x dx.
                        let product = self.scratch(x)?;
                        let summed = self.scratch(out)?;
                        let d_out = self.output(op, out)?;
                        let rec = &mut self.recording;
                        rec.binary(BinaryOp::Mul, x, dx, product)?;
                        rec.reduce(Reduction::Sum, axis, product, summed)?;
                        rec.scale(2.0, summed, d_out)?;
                    }
                    Reduction::Max => return Err(not_differentiable(op)),
                }
            }
            Op::SoftmaxCrossEntropy {
                logits,
                labels,
                loss,
                grad,
                grad_scale,
            } => match self.live(logits) {
                Some(d_logits) => {
                    let d_loss = self.output(op, loss)?;
                    let d_grad = self.output(op, grad)?;
                    self.recording.softmax_cross_entropy_jvp(
                        logits, labels, d_logits, d_loss, d_grad, grad_scale,
                    )?;
                }
                None => {
                    self.zero(loss);
                    self.zero(grad);
                }
            },
            Op::Transpose { x, out } => match self.live(x) {
                Some(dx) => {
                    let d_out = self.output(op, out)?;
                    self.recording.transpose(dx, d_out)?;
                }
                None => self.zero(out),
            },
            // d|x| = sign(x) dx (the subgradient 0 at 0, as relu's derivative there).
            Op::Unary {
                op: UnaryOp::Abs,
                x,
                out,
            } => match self.live(x) {
                Some(dx) => {
                    let sign = self.scratch(x)?;
                    let d_out = self.output(op, out)?;
                    let rec = &mut self.recording;
                    rec.sign(x, sign)?.binary(BinaryOp::Mul, sign, dx, d_out)?;
                }
                None => self.zero(out),
            },
            // Piecewise constant: the derivative is 0 wherever it exists.
            Op::Unary {
                op: UnaryOp::Sign,
                out,
                ..
            } => self.zero(out),
            // d sigmoid(x) = s (1 - s) dx, s = sigmoid(x).
            Op::Unary {
                op: UnaryOp::Sigmoid,
                x,
                out,
            } => match self.live(x) {
                Some(dx) => {
                    let (s, one_minus_s, slope) =
                        (self.scratch(x)?, self.scratch(x)?, self.scratch(x)?);
                    let d_out = self.output(op, out)?;
                    let rec = &mut self.recording;
                    rec.unary(UnaryOp::Sigmoid, x, s)?;
                    rec.fill(1.0, one_minus_s).axpy(-1.0, s, one_minus_s)?;
                    rec.binary(BinaryOp::Mul, s, one_minus_s, slope)?;
                    rec.binary(BinaryOp::Mul, slope, dx, d_out)?;
                }
                None => self.zero(out),
            },
            // d softplus(x) = sigmoid(x) dx.
            Op::Unary {
                op: UnaryOp::Softplus,
                x,
                out,
            } => match self.live(x) {
                Some(dx) => {
                    let s = self.scratch(x)?;
                    let d_out = self.output(op, out)?;
                    let rec = &mut self.recording;
                    rec.unary(UnaryOp::Sigmoid, x, s)?;
                    rec.binary(BinaryOp::Mul, s, dx, d_out)?;
                }
                None => self.zero(out),
            },
            // d e^x = e^x dx.
            Op::Unary {
                op: UnaryOp::Exp,
                x,
                out,
            } => match self.live(x) {
                Some(dx) => {
                    let e = self.scratch(x)?;
                    let d_out = self.output(op, out)?;
                    let rec = &mut self.recording;
                    rec.unary(UnaryOp::Exp, x, e)?;
                    rec.binary(BinaryOp::Mul, e, dx, d_out)?;
                }
                None => self.zero(out),
            },
            // d ln(1 + x) = dx / (1 + x), the reciprocal as e^-ln(1 + x) (the engine has no
            // division).
            Op::Unary {
                op: UnaryOp::Log1p,
                x,
                out,
            } => match self.live(x) {
                Some(dx) => {
                    let (log, reciprocal) = (self.scratch(x)?, self.scratch(x)?);
                    let d_out = self.output(op, out)?;
                    let rec = &mut self.recording;
                    rec.unary(UnaryOp::Log1p, x, log)?;
                    rec.scale(-1.0, log, d_out)?;
                    rec.unary(UnaryOp::Exp, d_out, reciprocal)?;
                    rec.binary(BinaryOp::Mul, reciprocal, dx, d_out)?;
                }
                None => self.zero(out),
            },
            // Linear: d avg = beta d avg + (1 - beta) dx.
            Op::Ema { beta, x, avg } => match (self.live(x), self.live(avg)) {
                (None, None) => {}
                (Some(dx), Some(_)) => {
                    let d_avg = self.output(op, avg)?;
                    self.recording.ema(beta, dx, d_avg)?;
                }
                (Some(dx), None) => {
                    let d_avg = self.output(op, avg)?;
                    self.recording.scale(1.0 - beta, dx, d_avg)?;
                }
                (None, Some(_)) => {
                    // d avg = beta d avg, through a copy (outputs never alias inputs).
                    let d_avg = self.output(op, avg)?;
                    let copy = self.scratch(avg)?;
                    let rec = &mut self.recording;
                    rec.scale(1.0, d_avg, copy)?.scale(beta, copy, d_avg)?;
                }
            },
            // Random draws depend on no tensor (rademacher) or are piecewise constant in the
            // logits (sampled labels): zero tangents.
            Op::Rademacher { out, .. } => self.zero(out),
            Op::SampleCategorical { labels, .. } => self.zero(labels),
            Op::ActivateGradJvp { .. }
            | Op::SoftmaxCrossEntropyJvp { .. }
            | Op::AxpyDevice { .. }
            | Op::ScaleDevice { .. }
            | Op::Momentum { .. }
            | Op::Adam { .. }
            | Op::AdaHessian { .. }
            | Op::Sophia { .. }
            | Op::DampingUpdate { .. }
            | Op::JacobiRound { .. } => return Err(not_differentiable(op)),
        }
        Ok(())
    }
}

/// The forward-mode transform of `primal`: its ops, each followed by its tangent ops, with the
/// tangent of each `(tensor, tangent)` seed given by the caller (parameters and v, for an HVP).
/// Tensors without a seed start with a zero tangent.
pub fn tangent_recording(
    engine: &mut dyn Engine,
    primal: &Recording,
    seeds: &[(Tensor, Tensor)],
) -> Result<TangentRecording, EngineError> {
    let owned = Allocation::new(engine);
    let mut transform = Transform {
        engine,
        recording: Recording::new(),
        tangents: HashMap::new(),
        live: HashSet::new(),
        owned,
        seeded: HashSet::new(),
    };
    for &(tensor, tangent) in seeds {
        if tensor.shape() != tangent.shape() {
            return Err(EngineError::Shape {
                op: "tangent_recording",
                message: format!("seed {tangent} must have the shape of {tensor}"),
            });
        }
        transform.tangents.insert(tensor.id(), tangent);
        transform.live.insert(tensor.id());
        transform.seeded.insert(tensor.id());
    }
    for op in primal.ops() {
        transform.recording.push_recorded(op.clone());
        transform.rule(op)?;
    }
    Ok(TangentRecording {
        recording: transform.recording,
        tangents: transform.tangents,
        live: transform.live,
        _owned: transform.owned,
    })
}
