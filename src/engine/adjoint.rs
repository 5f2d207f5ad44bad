//! Reverse-mode differentiation of a recording: the gradient of one scalar it computes with
//! respect to any of its tensors, from each op family's adjoint rule (`Operation::adjoint`), so
//! a new layer needs no backward pass written by hand. The adjoint ops are ordinary recorded ops
//! with tangent rules of their own, so the tangent transform of a gradient recording gives
//! Hessian-vector products (forward-over-reverse) for anything this transform differentiates.
//!
//! The ops run in reverse order after the primal ones. An op's rule may need the values its
//! inputs had when it ran (a product needs both factors): where a later op of the recording
//! overwrote one, the transform refuses, naming both, rather than differentiate at the wrong
//! point. A tensor whose adjoint is known to be zero has none and its terms are skipped.

use super::op::UnaryOp;
use super::{Allocation, Engine, EngineError, Recording, Tensor};
use std::collections::{HashMap, HashSet};

/// A recording of the primal ops followed by their adjoints, and the adjoint tensors it
/// allocated (freed when this is dropped).
pub struct GradientRecording {
    pub recording: Recording,
    adjoints: HashMap<u32, Tensor>,
    live: HashSet<u32>,
    _owned: Allocation,
}

impl GradientRecording {
    /// The gradient of the output with respect to `primal` (its value before the recording ran,
    /// for a tensor the recording only reads); `None` where it is zero.
    pub fn gradient_of(&self, primal: Tensor) -> Option<Tensor> {
        self.live
            .contains(&primal.id())
            .then(|| self.adjoints[&primal.id()])
    }
}

/// What the tangent and the adjoint rules record into: a recording, and scratch tensors.
pub(crate) trait DerivativeScratch {
    fn recording(&mut self) -> &mut Recording;
    /// A scratch tensor shaped like `like`, for terms that need an intermediate.
    fn scratch(&mut self, like: Tensor) -> Result<Tensor, EngineError>;
    /// A `rows x cols` scratch tensor.
    fn scratch_shaped(&mut self, rows: usize, cols: usize) -> Result<Tensor, EngineError>;
}

/// The transform in progress: the recording so far, each tensor's adjoint, and which tensors
/// later ops overwrote. Each op family's adjoint rule records through it.
pub(crate) struct Adjoint<'e> {
    engine: &'e mut dyn Engine,
    pub(crate) recording: Recording,
    adjoints: HashMap<u32, Tensor>,
    live: HashSet<u32>,
    /// Tensors written by an op after the one whose rule runs.
    written_later: HashSet<u32>,
    ones: HashMap<(usize, usize), Tensor>,
    owned: Allocation,
}

impl Adjoint<'_> {
    /// The adjoint of `t`, where it is not known to be zero.
    pub(crate) fn adjoint(&self, t: Tensor) -> Option<Tensor> {
        self.live.contains(&t.id()).then(|| self.adjoints[&t.id()])
    }

    /// Refuses where the rule of `op` needs the value `t` had when the op ran and a later op
    /// overwrote it.
    pub(crate) fn value(&self, op: &'static str, t: Tensor) -> Result<(), EngineError> {
        if self.written_later.contains(&t.id()) {
            return Err(EngineError::Shape {
                op,
                message: format!(
                    "reverse mode needs the value {t} had when this op ran, and a later op of \
                     the recording overwrites it (record into a tensor of its own)"
                ),
            });
        }
        Ok(())
    }

    /// `t` was overwritten by the op whose rule runs: the value it had before gets no gradient
    /// through it.
    pub(crate) fn overwritten(&mut self, t: Tensor) {
        self.written_later.insert(t.id());
        self.live.remove(&t.id());
    }

    /// `t` was updated in place by the op whose rule runs (its adjoint carries on).
    pub(crate) fn updated(&mut self, t: Tensor) {
        self.written_later.insert(t.id());
    }

    /// Adds a term to the adjoint of `primal`: `write` records the term into the tensor it is
    /// given (the adjoint itself where it was zero, else a scratch tensor added to it).
    pub(crate) fn add_to(
        &mut self,
        primal: Tensor,
        write: impl FnOnce(&mut Self, Tensor) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        match self.adjoint(primal) {
            Some(adjoint) => {
                let term = self.scratch_like(primal)?;
                write(self, term)?;
                self.recording.axpy(1.0, term, adjoint)?;
            }
            None => {
                let adjoint = match self.adjoints.get(&primal.id()) {
                    Some(&t) => t,
                    None => {
                        let label = format!("adjoint.{}", primal.id());
                        let t = self.alloc(&label, primal.rows(), primal.cols())?;
                        self.adjoints.insert(primal.id(), t);
                        t
                    }
                };
                write(self, adjoint)?;
                self.live.insert(primal.id());
            }
        }
        Ok(())
    }

    /// A `rows x cols` tensor of ones (filled once, before its first use).
    pub(crate) fn ones(&mut self, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        if let Some(&t) = self.ones.get(&(rows, cols)) {
            return Ok(t);
        }
        let t = self.alloc("adjoint.ones", rows, cols)?;
        self.recording.fill(1.0, t);
        self.ones.insert((rows, cols), t);
        Ok(t)
    }

    /// `out = v` broadcast along each row: `v` is `rows x 1`, `out` `rows x cols`.
    pub(crate) fn broadcast_rows(&mut self, v: Tensor, out: Tensor) -> Result<(), EngineError> {
        let ones = self.ones(1, out.cols())?;
        self.recording.matmul(v, ones, out, false, false)?;
        Ok(())
    }

    /// A scratch tensor shaped like `like`.
    pub(crate) fn scratch_like(&mut self, like: Tensor) -> Result<Tensor, EngineError> {
        self.alloc("adjoint.scratch", like.rows(), like.cols())
    }

    /// A `rows x cols` scratch tensor.
    pub(crate) fn scratch(&mut self, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        self.alloc("adjoint.scratch", rows, cols)
    }

    fn alloc(&mut self, label: &str, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        (self.owned).alloc(&mut *self.engine, label, rows, cols)
    }
}

impl DerivativeScratch for Adjoint<'_> {
    fn recording(&mut self) -> &mut Recording {
        &mut self.recording
    }

    fn scratch(&mut self, like: Tensor) -> Result<Tensor, EngineError> {
        self.scratch_like(like)
    }

    fn scratch_shaped(&mut self, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        self.alloc("adjoint.scratch", rows, cols)
    }
}

/// `t = factor t` in place, through a copy (outputs never alias inputs).
pub(crate) fn scale_in_place(
    w: &mut dyn DerivativeScratch,
    factor: f64,
    t: Tensor,
) -> Result<(), EngineError> {
    let copy = w.scratch(t)?;
    (w.recording().scale(1.0, t, copy)?).scale(factor, copy, t)?;
    Ok(())
}

/// `out = f'(x) v` elementwise for a unary op other than `sign` (whose derivative is zero
/// wherever it exists): the tangent of `f` along `v`, and its adjoint of `v`.
pub(crate) fn unary_derivative_times(
    w: &mut dyn DerivativeScratch,
    op: UnaryOp,
    x: Tensor,
    v: Tensor,
    out: Tensor,
) -> Result<(), EngineError> {
    use super::BinaryOp::Mul;
    match op {
        // d|x| = sign(x) dx (the subgradient 0 at 0, as relu's derivative there).
        UnaryOp::Abs => {
            let sign = w.scratch(x)?;
            (w.recording().sign(x, sign)?).binary(Mul, sign, v, out)?;
        }
        UnaryOp::Sign => {
            w.recording().fill(0.0, out);
        }
        // d sigmoid(x) = s (1 - s) dx, s = sigmoid(x).
        UnaryOp::Sigmoid => {
            let (s, one_minus_s, slope) = (w.scratch(x)?, w.scratch(x)?, w.scratch(x)?);
            let rec = w.recording();
            rec.unary(UnaryOp::Sigmoid, x, s)?;
            rec.fill(1.0, one_minus_s).axpy(-1.0, s, one_minus_s)?;
            rec.binary(Mul, s, one_minus_s, slope)?;
            rec.binary(Mul, slope, v, out)?;
        }
        // d softplus(x) = sigmoid(x) dx.
        UnaryOp::Softplus => {
            let s = w.scratch(x)?;
            let rec = w.recording();
            rec.unary(UnaryOp::Sigmoid, x, s)?.binary(Mul, s, v, out)?;
        }
        // d e^x = e^x dx.
        UnaryOp::Exp => {
            let e = w.scratch(x)?;
            let rec = w.recording();
            rec.unary(UnaryOp::Exp, x, e)?.binary(Mul, e, v, out)?;
        }
        // d ln(1 + x) = dx / (1 + x), the reciprocal as e^-ln(1 + x) (the engine has no
        // division).
        UnaryOp::Log1p => {
            let (log, reciprocal) = (w.scratch(x)?, w.scratch(x)?);
            let rec = w.recording();
            rec.unary(UnaryOp::Log1p, x, log)?;
            rec.scale(-1.0, log, out)?;
            rec.unary(UnaryOp::Exp, out, reciprocal)?;
            rec.binary(Mul, reciprocal, v, out)?;
        }
        // d x^(-1/2) = -x^(-3/2) dx / 2, from r = x^(-1/2): -r^3 dx / 2.
        UnaryOp::Rsqrt => {
            let (r, r_squared, r_cubed) = (w.scratch(x)?, w.scratch(x)?, w.scratch(x)?);
            let rec = w.recording();
            rec.unary(UnaryOp::Rsqrt, x, r)?;
            rec.binary(Mul, r, r, r_squared)?;
            rec.binary(Mul, r_squared, r, r_cubed)?;
            rec.scale(-0.5, r_cubed, r)?.binary(Mul, r, v, out)?;
        }
    }
    Ok(())
}

/// The reverse-mode transform of `primal`: its ops, then the adjoint of each in reverse order,
/// seeded with `seed` times the 1x1 `output` (so the gradients are those of `seed * output`).
pub fn gradient_recording(
    engine: &mut dyn Engine,
    primal: &Recording,
    output: Tensor,
    seed: f64,
) -> Result<GradientRecording, EngineError> {
    if output.shape() != (1, 1) {
        return Err(EngineError::Shape {
            op: "gradient_recording",
            message: format!("the output to differentiate must be 1x1, got {output}"),
        });
    }
    let owned = Allocation::new(engine);
    let mut transform = Adjoint {
        engine,
        recording: primal.clone(),
        adjoints: HashMap::new(),
        live: HashSet::new(),
        written_later: HashSet::new(),
        ones: HashMap::new(),
        owned,
    };
    transform.add_to(output, |t, out| {
        t.recording.fill(seed, out);
        Ok(())
    })?;
    for op in primal.ops().iter().rev() {
        op.adjoint(&mut transform)?;
    }
    Ok(GradientRecording {
        recording: transform.recording,
        adjoints: transform.adjoints,
        live: transform.live,
        _owned: transform.owned,
    })
}
