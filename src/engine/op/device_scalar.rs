//! Axpy and scale by a scalar computed on the device from 1x1 tensors
//! (shaders/device_scalar.wgsl; CPU twins in `engine/cpu/device_scalar.rs`), so iterations
//! that need a norm or a ratio of reductions run without a readback.

use super::Operation;
use super::check::{distinct, same_shape, scalar_operands};
use crate::engine::cpu::{CpuEngine, CpuReal, device_scalar as twin};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// A scalar computed on the device from 1x1 tensors: `coef * r`, or `coef * sqrt(r)` when `sqrt`,
/// with `r = num[0] / den[0]`; a missing `num` or `den` counts as 1. Every engine computes it in
/// its own precision (f32 on the GPU, in each invocation) in this order: the ratio, the square
/// root, then `coef` times that. A negative `r` with `sqrt` gives NaN; a zero `den` an infinity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceScalar {
    pub coef: f64,
    pub num: Option<Tensor>,
    pub den: Option<Tensor>,
    pub sqrt: bool,
}

impl DeviceScalar {
    /// The constant `coef` (no tensor read).
    pub fn constant(coef: f64) -> Self {
        Self {
            coef,
            num: None,
            den: None,
            sqrt: false,
        }
    }

    /// `coef * num[0] / den[0]`.
    pub fn ratio(coef: f64, num: Tensor, den: Tensor) -> Self {
        Self {
            coef,
            num: Some(num),
            den: Some(den),
            sqrt: false,
        }
    }

    /// `coef / sqrt(den[0])`, e.g. one over a norm from a sum of squares.
    pub fn inverse_sqrt(coef: f64, den: Tensor) -> Self {
        Self {
            coef,
            num: None,
            den: Some(den),
            sqrt: true,
        }
    }

    /// `coef / den[0]`.
    pub fn over(coef: f64, den: Tensor) -> Self {
        Self {
            coef,
            num: None,
            den: Some(den),
            sqrt: false,
        }
    }

    /// The tensors the scalar reads.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.num.into_iter().chain(self.den).collect()
    }

    /// The shape checks of an op writing `out` from `x` scaled by this scalar (`operands`
    /// names the two in errors).
    fn check(
        &self,
        op: &'static str,
        operands: &str,
        x: Tensor,
        out: Tensor,
    ) -> Result<(), EngineError> {
        same_shape(op, operands, x, out)?;
        scalar_operands(op, self)?;
        let inputs: Vec<Tensor> = [x].into_iter().chain(self.tensors()).collect();
        distinct(op, &[out], &inputs)
    }

    /// Runs `f(value, x, output)` on the CPU engine: the inputs are bound as the shader binds
    /// them (x, then num and den, or x again where one is absent).
    fn run_on_cpu<R: CpuReal>(
        self,
        cpu: &mut CpuEngine<R>,
        x: Tensor,
        out: Tensor,
        f: impl FnOnce(R, &[R], &mut [R]),
    ) -> Result<(), EngineError> {
        let inputs = [x, self.num.unwrap_or(x), self.den.unwrap_or(x)];
        cpu.with_output(out, &inputs, |inp, out| {
            let value = twin::device_scalar_value(
                R::of_f64(self.coef),
                self.num.map(|_| inp[1][0]),
                self.den.map(|_| inp[2][0]),
                self.sqrt,
            );
            f(value, inp[0], out)
        })
    }

    /// The dispatch: x, then the scalar's num and den, with x bound again in place of an
    /// absent one (the shader's flags say which to ignore).
    fn lower(
        self,
        kernel: Kernel,
        x: Tensor,
        out: Tensor,
        max_per_dim: u32,
    ) -> Result<Vec<Dispatch>, EngineError> {
        let len = x.len();
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel,
            params: words(DeviceScalarParams {
                len: len as u32,
                coef: self.coef as f32,
                has_num: u32::from(self.num.is_some()),
                has_den: u32::from(self.den.is_some()),
                take_sqrt: u32::from(self.sqrt),
                _pad: [0; 3],
            }),
            operands: vec![
                T(out),
                T(x),
                T(self.num.unwrap_or(x)),
                T(self.den.unwrap_or(x)),
            ],
            workgroups: grid_1d(kernel.entry_point(), len.div_ceil(256), max_per_dim)?,
        }])
    }
}

static DEVICE_SCALAR_WGSL: ShaderFile = crate::shader_file!("device_scalar");
const AXPY_DEVICE: Kernel = Kernel::of_file(&DEVICE_SCALAR_WGSL, "axpy_device");
const SCALE_DEVICE: Kernel = Kernel::of_file(&DEVICE_SCALAR_WGSL, "scale_device");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DeviceScalarParams {
    len: u32,
    coef: f32,
    has_num: u32,
    has_den: u32,
    take_sqrt: u32,
    _pad: [u32; 3],
}

fn device_scalar_layout() -> Option<ParamsLayout> {
    Some(params_layout!(DeviceScalarParams {
        len,
        coef,
        has_num,
        has_den,
        take_sqrt
    }))
}

/// `y = y + value * x`, with the scalar `value` computed on the device (see [`DeviceScalar`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxpyDevice {
    pub scalar: DeviceScalar,
    pub x: Tensor,
    pub y: Tensor,
}

/// `out = value * x`, with the scalar `value` computed on the device (see [`DeviceScalar`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleDevice {
    pub scalar: DeviceScalar,
    pub x: Tensor,
    pub out: Tensor,
}

impl Recording {
    /// `y = y + value * x`, with `value` computed on the device from `scalar`.
    pub fn axpy_device(
        &mut self,
        scalar: DeviceScalar,
        x: Tensor,
        y: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(AxpyDevice { scalar, x, y })
    }

    /// `out = value * x`, with `value` computed on the device from `scalar`.
    pub fn scale_device(
        &mut self,
        scalar: DeviceScalar,
        x: Tensor,
        out: Tensor,
    ) -> Result<&mut Self, EngineError> {
        self.push(ScaleDevice { scalar, x, out })
    }
}

impl Operation for AxpyDevice {
    const NAME: &'static str = "axpy_device";

    fn kernels() -> Vec<Kernel> {
        vec![AXPY_DEVICE]
    }

    fn tensors(&self) -> Vec<Tensor> {
        [self.x, self.y]
            .into_iter()
            .chain(self.scalar.tensors())
            .collect()
    }

    fn check(&self) -> Result<(), EngineError> {
        self.scalar.check(Self::NAME, "x and y", self.x, self.y)
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        (self.scalar).run_on_cpu(cpu, self.x, self.y, twin::axpy_device)
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        (self.scalar).lower(AXPY_DEVICE, self.x, self.y, max_per_dim)
    }

    fn params_layout() -> Option<ParamsLayout> {
        device_scalar_layout()
    }
}

impl Operation for ScaleDevice {
    const NAME: &'static str = "scale_device";

    fn kernels() -> Vec<Kernel> {
        vec![SCALE_DEVICE]
    }

    fn tensors(&self) -> Vec<Tensor> {
        [self.x, self.out]
            .into_iter()
            .chain(self.scalar.tensors())
            .collect()
    }

    fn check(&self) -> Result<(), EngineError> {
        self.scalar.check(Self::NAME, "x and out", self.x, self.out)
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        (self.scalar).run_on_cpu(cpu, self.x, self.out, twin::scale_device)
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        (self.scalar).lower(SCALE_DEVICE, self.x, self.out, max_per_dim)
    }

    fn params_layout() -> Option<ParamsLayout> {
        device_scalar_layout()
    }
}
