//! Activations, their gradients and the gradients' tangents (shaders/elementwise.wgsl; CPU twins
//! in `engine/cpu/elementwise.rs`).

use super::Operation;
use super::check::{distinct, same_shape};
use super::elementwise::{ELEMENTWISE_WGSL, elementwise_dispatch};
use crate::engine::adjoint::Adjoint;
use crate::engine::cpu::{CpuEngine, CpuReal, elementwise};
use crate::engine::gpu::kernels::Kernel;
use crate::engine::gpu::lower::{Dispatch, Operand::Tensor as T};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};

/// Activation functions (forward `y = f(x)`, backward `dx = dy * f'(x)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    /// The tanh approximation of GELU (as in GPT-2), the same formula on every engine.
    Gelu,
    Tanh,
    /// GELU in its exact form, `x Phi(x)` with `Phi` the standard normal distribution function
    /// (`erfc(-x / sqrt 2) / 2`), as BERT and all-MiniLM-L6-v2 apply it: libm's erfc in the CPU
    /// twins, a rational approximation with relative error under 1.2e-7 in WGSL.
    GeluErf,
}

impl Activation {
    pub const ALL: [Activation; 4] = [
        Activation::Relu,
        Activation::Gelu,
        Activation::Tanh,
        Activation::GeluErf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::Tanh => "tanh",
            Activation::GeluErf => "gelu_erf",
        }
    }

    /// Its code in common/activation.wgsl (the `OP` or `ACTIVATION` pipeline constant).
    pub fn code(self) -> u8 {
        match self {
            Activation::Relu => 0,
            Activation::Gelu => 1,
            Activation::Tanh => 2,
            Activation::GeluErf => 3,
        }
    }

    /// The kernel of elementwise.wgsl's `entry_point` for this activation.
    fn kernel(self, entry_point: &'static str) -> Kernel {
        Kernel::of_file(&ELEMENTWISE_WGSL, entry_point)
            .with("OP", self.code())
            .suffixed([self.name(), ""])
    }

    /// The kernels of `entry_point` for every activation.
    fn kernels(entry_point: &'static str) -> Vec<Kernel> {
        Activation::ALL.map(|f| f.kernel(entry_point)).to_vec()
    }
}

/// `y = f(x)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Activate {
    pub f: Activation,
    pub x: Tensor,
    pub y: Tensor,
}

/// `grad_x = grad_y * f'(x)`, with `x` the activation's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivateGrad {
    pub f: Activation,
    pub x: Tensor,
    pub grad_y: Tensor,
    pub grad_x: Tensor,
}

/// The tangent (forward-mode derivative) of [`ActivateGrad`] along `(dx, d_grad_y)`:
/// `out = d_grad_y * f'(x) + grad_y * f''(x) * dx`. `f''` is 0 everywhere for relu (its
/// derivative is piecewise constant), the exact derivative of the tanh-form GELU's `f'`, and
/// `-2 t (1 - t^2)` with `t = tanh(x)` for tanh.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivateGradJvp {
    pub f: Activation,
    pub x: Tensor,
    pub grad_y: Tensor,
    pub dx: Tensor,
    pub d_grad_y: Tensor,
    pub out: Tensor,
}

impl Recording {
    pub fn activate(
        &mut self,
        f: Activation,
        x: Tensor,
        y: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(Activate { f, x, y })
    }

    pub fn activate_grad(
        &mut self,
        f: Activation,
        x: Tensor,
        grad_y: Tensor,
        grad_x: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(ActivateGrad {
            f,
            x,
            grad_y,
            grad_x,
        })
    }

    /// `out = d_grad_y * f'(x) + grad_y * f''(x) * dx`: the tangent of `activate_grad`.
    pub fn activate_grad_jvp(
        &mut self,
        f: Activation,
        x: Tensor,
        grad_y: Tensor,
        dx: Tensor,
        d_grad_y: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(ActivateGradJvp {
            f,
            x,
            grad_y,
            dx,
            d_grad_y,
            out,
        })
    }
}

impl Operation for Activate {
    const NAME: &'static str = "activate";

    fn kernels() -> Vec<Kernel> {
        Activation::kernels("activate")
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.y]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "x and y", self.x, self.y)?;
        distinct(Self::NAME, &[self.y], &[self.x])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let f = self.f;
        cpu.with_output(self.y, &[self.x], |inp, out| {
            elementwise::activate(f, inp[0], out)
        })
    }

    /// `dy = f'(x) dx`: the activation's gradient applied to the tangent.
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        match t.live(self.x) {
            Some(dx) => {
                let dy = t.output(Self::NAME, self.y)?;
                t.recording.activate_grad(self.f, self.x, dx, dy)?;
            }
            None => t.zero(self.y),
        }
        Ok(())
    }

    /// `dx += f'(x) dy`.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Activate { f, x, y } = self;
        t.value(Self::NAME, x)?;
        let dy = t.adjoint(y);
        t.overwritten(y);
        match dy {
            Some(dy) => t.add_to(x, |t, term| {
                t.recording.activate_grad(f, x, dy, term).map(|_| ())
            }),
            None => Ok(()),
        }
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.y), T(self.x)];
        elementwise_dispatch(
            self.f.kernel("activate"),
            self.x.len(),
            0.0,
            operands,
            max_per_dim,
        )
    }
}

impl Operation for ActivateGrad {
    const NAME: &'static str = "activate_grad";

    fn kernels() -> Vec<Kernel> {
        Activation::kernels("activate_grad")
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.grad_y, self.grad_x]
    }

    fn check(&self) -> Result<(), EngineError> {
        same_shape(Self::NAME, "x and grad_y", self.x, self.grad_y)?;
        same_shape(Self::NAME, "x and grad_x", self.x, self.grad_x)?;
        distinct(Self::NAME, &[self.grad_x], &[self.x, self.grad_y])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let f = self.f;
        cpu.with_output(self.grad_x, &[self.x, self.grad_y], |inp, out| {
            elementwise::activate_grad(f, inp[0], inp[1], out)
        })
    }

    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let &ActivateGrad {
            f,
            x,
            grad_y,
            grad_x,
        } = self;
        match (t.live(x), t.live(grad_y)) {
            (None, None) => t.zero(grad_x),
            (None, Some(d_grad_y)) => {
                let out = t.output(Self::NAME, grad_x)?;
                t.recording.activate_grad(f, x, d_grad_y, out)?;
            }
            (Some(dx), d_grad_y) => {
                let d_grad_y = match d_grad_y {
                    Some(d) => d,
                    None => {
                        let zeros = t.scratch(grad_y)?;
                        t.recording.fill(0.0, zeros);
                        zeros
                    }
                };
                let out = t.output(Self::NAME, grad_x)?;
                (t.recording).activate_grad_jvp(f, x, grad_y, dx, d_grad_y, out)?;
            }
        }
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![T(self.grad_x), T(self.x), T(self.grad_y)];
        let kernel = self.f.kernel("activate_grad");
        elementwise_dispatch(kernel, self.x.len(), 0.0, operands, max_per_dim)
    }
}

impl Operation for ActivateGradJvp {
    const NAME: &'static str = "activate_grad_jvp";

    fn kernels() -> Vec<Kernel> {
        Activation::kernels("activate_grad_jvp")
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.x, self.grad_y, self.dx, self.d_grad_y, self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        let op = Self::NAME;
        same_shape(op, "x and grad_y", self.x, self.grad_y)?;
        same_shape(op, "x and dx", self.x, self.dx)?;
        same_shape(op, "x and d_grad_y", self.x, self.d_grad_y)?;
        same_shape(op, "x and out", self.x, self.out)?;
        distinct(
            op,
            &[self.out],
            &[self.x, self.grad_y, self.dx, self.d_grad_y],
        )
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let f = self.f;
        let inputs = [self.x, self.grad_y, self.dx, self.d_grad_y];
        cpu.with_output(self.out, &inputs, |inp, out| {
            elementwise::activate_grad_jvp(f, inp[0], inp[1], inp[2], inp[3], out)
        })
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let operands = vec![
            T(self.out),
            T(self.x),
            T(self.grad_y),
            T(self.dx),
            T(self.d_grad_y),
        ];
        let kernel = self.f.kernel("activate_grad_jvp");
        elementwise_dispatch(kernel, self.x.len(), 0.0, operands, max_per_dim)
    }
}
