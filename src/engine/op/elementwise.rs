//! Elementwise arithmetic: binary and unary ops, scale, axpy, fill and the moving average
//! (shaders/elementwise.wgsl; CPU twins in `engine/cpu/elementwise.rs`).

use super::Operation;
use super::check::{distinct, same_shape};
use crate::engine::adjoint::{Adjoint, scale_in_place, unary_derivative_times};
use crate::engine::cpu::{CpuEngine, CpuReal, elementwise};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// shaders/elementwise.wgsl: activations, their derivatives and the arithmetic below.
pub(crate) static ELEMENTWISE_WGSL: ShaderFile =
    crate::shader_file!("elementwise", snippets: ["common/activation.wgsl"], self_bounded: false);

/// The kernels of the ops without variants.
const SCALE: Kernel = Kernel::of_file(&ELEMENTWISE_WGSL, "scale");
const AXPY: Kernel = Kernel::of_file(&ELEMENTWISE_WGSL, "axpy");
const FILL: Kernel = Kernel::of_file(&ELEMENTWISE_WGSL, "fill");
const EMA: Kernel = Kernel::of_file(&ELEMENTWISE_WGSL, "ema");

/// Elementwise binary operations `out = a (op) b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 3] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
        }
    }

    fn kernel(self) -> Kernel {
        let code = match self {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
        };
        Kernel::of_file(&ELEMENTWISE_WGSL, "binary")
            .with("OP", code)
            .suffixed([self.name(), ""])
    }
}

/// Elementwise unary operations `out = f(x)` outside the activations (no backward kernel of
/// their own): `abs`, `sign` (1 for x > 0, -1 for x < 0, 0 for 0 and NaN), the logistic
/// `sigmoid` 1 / (1 + e^-x) and `softplus` ln(1 + e^x) (NPO's loss and its gradient weight),
/// both written so that no exponential overflows: sigmoid from e^-|x|, softplus as
/// max(x, 0) + ln(1 + e^-|x|); `exp` e^x and `log1p` ln(1 + x) (RepNoise's Gaussian kernels and
/// its log of the harmful loss); `rsqrt` 1 / sqrt(x) for x > 0 (layer normalisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Abs,
    Sign,
    Sigmoid,
    Softplus,
    Exp,
    Log1p,
    Rsqrt,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 7] = [
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Exp,
        UnaryOp::Log1p,
        UnaryOp::Rsqrt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Exp => "exp",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Rsqrt => "rsqrt",
        }
    }

    fn kernel(self) -> Kernel {
        let code = match self {
            UnaryOp::Abs => 0,
            UnaryOp::Sign => 1,
            UnaryOp::Sigmoid => 2,
            UnaryOp::Softplus => 3,
            UnaryOp::Exp => 4,
            UnaryOp::Log1p => 5,
            UnaryOp::Rsqrt => 6,
        };
        Kernel::of_file(&ELEMENTWISE_WGSL, "unary")
            .with("OP", code)
            .suffixed([self.name(), ""])
    }
}

/// `out = a (op) b` elementwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Binary {
    pub op: BinaryOp,
    pub a: Tensor,
    pub b: Tensor,
    pub out: Tensor,
}

/// `out = f(x)` elementwise (see [`UnaryOp`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Unary {
    pub op: UnaryOp,
    pub x: Tensor,
    pub out: Tensor,
}

/// `out = alpha * x`
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub alpha: f64,
    pub x: Tensor,
    pub out: Tensor,
}

/// `y = y + alpha * x`
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Axpy {
    pub alpha: f64,
    pub x: Tensor,
    pub y: Tensor,
}

/// `out = value` everywhere.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fill {
    pub value: f64,
    pub out: Tensor,
}

/// Exponential moving average, in place: `avg = beta avg + (1 - beta) x`, with `1 - beta`
/// computed in f64 on the host (so a beta near 1 keeps its complement's precision in f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ema {
    pub beta: f64,
    pub x: Tensor,
    pub avg: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    len: u32,
    _pad: u32,
    alpha: f32,
    /// `1 - alpha` in f64, rounded (the moving average reads it).
    one_minus_alpha: f32,
    _pad2: [u32; 4],
}

/// The one dispatch of an elementwise kernel over `len` values, with its scalar `alpha`.
pub(crate) fn elementwise_dispatch(
    kernel: Kernel,
    len: usize,
    alpha: f64,
    operands: Vec<Operand>,
    max_per_dim: u32,
) -> Result<Vec<Dispatch>, EngineError> {
    Ok(vec![Dispatch {
        flop: 0.0,
        kernel,
        params: words(ElementwiseParams {
            len: len as u32,
            _pad: 0,
            alpha: alpha as f32,
            one_minus_alpha: (1.0 - alpha) as f32,
            _pad2: [0; 4],
        }),
        operands,
        workgroups: grid_1d("elementwise", len.div_ceil(256), max_per_dim)?,
    }])
}

/// The params layout of every elementwise kernel (activations included).
pub(crate) fn elementwise_layout() -> Option<ParamsLayout> {
    Some(params_layout!(ElementwiseParams {
        len,
        alpha,
        one_minus_alpha
    }))
}

impl Recording {
    pub fn binary(
        &mut self,
        op: BinaryOp,
        a: Tensor,
        b: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(Binary { op, a, b, out })
    }

    pub fn scale(&mut self, alpha: f64, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        self.push(Scale { alpha, x, out })
    }

    pub fn axpy(&mut self, alpha: f64, x: Tensor, y: Tensor) -> Result<&mut Self, EngineError> {
        self.push(Axpy { alpha, x, y })
    }

    pub fn fill(&mut self, value: f64, out: Tensor) -> &mut Self {
        self.push_recorded(Fill { value, out }.into());
        self
    }

    /// `out = f(x)` elementwise (see [`UnaryOp`]).
    pub fn unary(&mut self, op: UnaryOp, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        self.push(Unary { op, x, out })
    }

    /// `out = |x|` elementwise.
    pub fn abs(&mut self, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        self.unary(UnaryOp::Abs, x, out)
    }

    /// `out = sign(x)` elementwise: 1, -1, or 0 at 0 (and NaN).
    pub fn sign(&mut self, x: Tensor, out: Tensor) -> Result<&mut Self, EngineError> {
        self.unary(UnaryOp::Sign, x, out)
    }

    /// In place `avg = beta avg + (1 - beta) x` (`x` and `avg` distinct).
    pub fn ema(&mut self, beta: f64, x: Tensor, avg: Tensor) -> Result<&mut Self, EngineError> {
        self.push(Ema { beta, x, avg })
    }
}

impl Operation for Binary {
    const NAME: &'static str = "binary";

    fn kernels() -> Vec<Kernel> {
        BinaryOp::ALL.map(BinaryOp::kernel).to_vec()
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.a, self.b, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "a and b", self.a, self.b)?;
        same_shape(Self::NAME, "a and out", self.a, self.out)?;
        distinct(Self::NAME, &[self.out], &[self.a, self.b])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let op = self.op;
        cpu.with_output(self.out, &[self.a, self.b], |inp, out| {
            elementwise::binary(op, inp[0], inp[1], out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let &Binary { op, a, b, out } = self;
        let (da, db) = (t.live(a), t.live(b));
        if da.is_none() && db.is_none() {
            t.zero(out);
            return Ok(());
        }
        let d_out = t.output(Self::NAME, out)?;
        match op {
            BinaryOp::Add | BinaryOp::Sub => {
                let sign = if op == BinaryOp::Sub { -1.0 } else { 1.0 };
                let rec = &mut t.recording;
                match (da, db) {
                    (Some(da), Some(db)) => rec.binary(op, da, db, d_out)?,
                    (Some(da), None) => rec.scale(1.0, da, d_out)?,
                    (None, Some(db)) => rec.scale(sign, db, d_out)?,
                    (None, None) => unreachable!("handled above"),
                };
            }
            BinaryOp::Mul => {
                // d(a b) = da b + a db.
                let second = match (da, db) {
                    (Some(da), Some(db)) => {
                        t.recording.binary(BinaryOp::Mul, da, b, d_out)?;
                        let scratch = t.scratch(out)?;
                        Some((db, scratch))
                    }
                    (Some(da), None) => {
                        t.recording.binary(BinaryOp::Mul, da, b, d_out)?;
                        None
                    }
                    (None, Some(db)) => {
                        t.recording.binary(BinaryOp::Mul, a, db, d_out)?;
                        None
                    }
                    (None, None) => unreachable!("handled above"),
                };
                if let Some((db, scratch)) = second {
                    let rec = &mut t.recording;
                    (rec.binary(BinaryOp::Mul, a, db, scratch)?).axpy(1.0, scratch, d_out)?;
                }
            }
        }
        Ok(())
    }

    /// `da += d_out` and `db += +-d_out`; for a product `da += d_out b`, `db += a d_out`.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Binary { op, a, b, out } = self;
        if op == BinaryOp::Mul {
            t.value(Self::NAME, a)?;
            t.value(Self::NAME, b)?;
        }
        let d_out = t.adjoint(out);
        t.overwritten(out);
        let Some(d_out) = d_out else {
            return Ok(());
        };
        let (to_a, to_b) = match op {
            BinaryOp::Add => ((None, 1.0), (None, 1.0)),
            BinaryOp::Sub => ((None, 1.0), (None, -1.0)),
            BinaryOp::Mul => ((Some(b), 1.0), (Some(a), 1.0)),
        };
        for (input, (factor, sign)) in [(a, to_a), (b, to_b)] {
            t.add_to(input, |t, term| {
                match factor {
                    Some(factor) => t.recording.binary(BinaryOp::Mul, d_out, factor, term)?,
                    None => t.recording.scale(sign, d_out, term)?,
                };
                Ok(())
            })?;
        }
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.out), T(self.a), T(self.b)];
        elementwise_dispatch(self.op.kernel(), self.a.len(), 0.0, operands, max_per_dim)
    }

    fn params_layout() -> Option<ParamsLayout> {
        elementwise_layout()
    }
}

impl Operation for Scale {
    const NAME: &'static str = "scale";

    fn kernels() -> Vec<Kernel> {
        vec![SCALE]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "x and out", self.x, self.out)?;
        distinct(Self::NAME, &[self.out], &[self.x])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let alpha = R::of_f64(self.alpha);
        cpu.with_output(self.out, &[self.x], |inp, out| {
            elementwise::scale(alpha, inp[0], out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        match t.live(self.x) {
            Some(dx) => {
                let d_out = t.output(Self::NAME, self.out)?;
                t.recording.scale(self.alpha, dx, d_out)?;
            }
            None => t.zero(self.out),
        }
        Ok(())
    }

    /// `dx += alpha d_out`.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Scale { alpha, x, out } = self;
        let d_out = t.adjoint(out);
        t.overwritten(out);
        match d_out {
            Some(d_out) => t.add_to(x, |t, term| {
                t.recording.scale(alpha, d_out, term).map(|_| ())
            }),
            None => Ok(()),
        }
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.out), T(self.x)];
        elementwise_dispatch(SCALE, self.x.len(), self.alpha, operands, max_per_dim)
    }
}

impl Operation for Axpy {
    const NAME: &'static str = "axpy";

    fn kernels() -> Vec<Kernel> {
        vec![AXPY]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.y]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "x and y", self.x, self.y)?;
        distinct(Self::NAME, &[self.y], &[self.x])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let alpha = R::of_f64(self.alpha);
        cpu.with_output(self.y, &[self.x], |inp, out| {
            elementwise::axpy(alpha, inp[0], out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        if let Some(dx) = t.live(self.x) {
            let was_live = t.live(self.y).is_some();
            let dy = t.output(Self::NAME, self.y)?;
            if was_live {
                t.recording.axpy(self.alpha, dx, dy)?;
            } else {
                t.recording.scale(self.alpha, dx, dy)?;
            }
        }
        Ok(())
    }

    /// `dx += alpha dy`; y's adjoint carries on (it was updated in place).
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Axpy { alpha, x, y } = self;
        t.updated(y);
        match t.adjoint(y) {
            Some(dy) => t.add_to(x, |t, term| t.recording.scale(alpha, dy, term).map(|_| ())),
            None => Ok(()),
        }
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.y), T(self.x)];
        elementwise_dispatch(AXPY, self.x.len(), self.alpha, operands, max_per_dim)
    }
}

impl Operation for Fill {
    const NAME: &'static str = "fill";

    fn kernels() -> Vec<Kernel> {
        vec![FILL]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let value = R::of_f64(self.value);
        cpu.with_output(self.out, &[], |_, out| elementwise::fill(value, out))
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        t.zero(self.out);
        Ok(())
    }

    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        t.overwritten(self.out);
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.out)];
        elementwise_dispatch(FILL, self.out.len(), self.value, operands, max_per_dim)
    }
}

impl Operation for Unary {
    const NAME: &'static str = "unary";

    fn kernels() -> Vec<Kernel> {
        UnaryOp::ALL.map(UnaryOp::kernel).to_vec()
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(self.op.name(), "x and out", self.x, self.out)?;
        distinct(self.op.name(), &[self.out], &[self.x])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let op = self.op;
        cpu.with_output(self.out, &[self.x], |inp, out| {
            elementwise::unary(op, inp[0], out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let &Unary { op, x, out } = self;
        match t.live(x) {
            // Piecewise constant: the derivative is 0 wherever it exists.
            Some(_) if op == UnaryOp::Sign => t.zero(out),
            Some(dx) => {
                let d_out = t.output(Self::NAME, out)?;
                unary_derivative_times(t, op, x, dx, d_out)?;
            }
            None => t.zero(out),
        }
        Ok(())
    }

    /// `dx += f'(x) d_out`.
    fn adjoint(&self, a: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Unary { op, x, out } = self;
        a.value(Self::NAME, x)?;
        let d_out = a.adjoint(out);
        a.overwritten(out);
        match d_out {
            Some(d_out) if op != UnaryOp::Sign => {
                a.add_to(x, |a, term| unary_derivative_times(a, op, x, d_out, term))
            }
            _ => Ok(()),
        }
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.out), T(self.x)];
        elementwise_dispatch(self.op.kernel(), self.x.len(), 0.0, operands, max_per_dim)
    }
}

impl Operation for Ema {
    const NAME: &'static str = "ema";

    fn kernels() -> Vec<Kernel> {
        vec![EMA]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.avg]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "x and avg", self.x, self.avg)?;
        distinct(Self::NAME, &[self.avg], &[self.x])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let (beta, one_minus_beta) = (R::of_f64(self.beta), R::of_f64(1.0 - self.beta));
        cpu.with_output(self.avg, &[self.x], |inp, out| {
            elementwise::ema(beta, one_minus_beta, inp[0], out)
        })
    }

    /// Linear: `d avg = beta d avg + (1 - beta) dx`.
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let &Ema { beta, x, avg } = self;
        match (t.live(x), t.live(avg)) {
            (None, None) => {}
            (Some(dx), Some(_)) => {
                let d_avg = t.output(Self::NAME, avg)?;
                t.recording.ema(beta, dx, d_avg)?;
            }
            (Some(dx), None) => {
                let d_avg = t.output(Self::NAME, avg)?;
                t.recording.scale(1.0 - beta, dx, d_avg)?;
            }
            (None, Some(_)) => {
                // d avg = beta d avg.
                let d_avg = t.output(Self::NAME, avg)?;
                scale_in_place(t, beta, d_avg)?;
            }
        }
        Ok(())
    }

    /// `dx += (1 - beta) d_avg`, and the old average's adjoint is `beta d_avg`.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Ema { beta, x, avg } = self;
        t.updated(avg);
        let Some(d_avg) = t.adjoint(avg) else {
            return Ok(());
        };
        t.add_to(x, |t, term| {
            t.recording.scale(1.0 - beta, d_avg, term).map(|_| ())
        })?;
        scale_in_place(t, beta, d_avg)
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.avg), T(self.x)];
        elementwise_dispatch(EMA, self.x.len(), self.beta, operands, max_per_dim)
    }
}
