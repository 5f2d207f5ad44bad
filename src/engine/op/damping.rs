//! Levenberg-Marquardt damping of Newton-CG (shaders/damping.wgsl; CPU twin
//! `engine/cpu/damping.rs`).

use super::Operation;
use super::check::{distinct, shape_error};
use crate::engine::cpu::{CpuEngine, CpuReal, damping};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, params_layout, words,
};
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// Levenberg-Marquardt damping of Newton-CG (Martens 2010, "Deep learning via Hessian-free
/// optimization", section 4.1). With `rho = actual / predicted`, `actual = L(theta + d) -
/// L(theta)` and `predicted = g.d + d.(H d) / 2` the quadratic model's change (both negative
/// for a good step):
///
/// ```text
/// lambda *= increase   where predicted >= 0, rho is not finite, or rho < lower_ratio
/// lambda *= decrease   where rho > upper_ratio
/// lambda  = clamp(lambda, min_lambda, max_lambda)
/// ```
///
/// (NaN in `predicted` counts as not negative.) Defaults ([`Default`]): `increase` 3/2,
/// `decrease` 2/3, ratios 1/4 and 3/4 (Martens'), lambda in [1e-8, 1e8].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DampingHyper {
    pub increase: f64,
    pub decrease: f64,
    pub lower_ratio: f64,
    pub upper_ratio: f64,
    pub min_lambda: f64,
    pub max_lambda: f64,
}

impl Default for DampingHyper {
    fn default() -> Self {
        Self {
            increase: 1.5,
            decrease: 2.0 / 3.0,
            lower_ratio: 0.25,
            upper_ratio: 0.75,
            min_lambda: 1e-8,
            max_lambda: 1e8,
        }
    }
}

/// The damping update, on 1x1 tensors, in place on `lambda`; see [`DampingHyper`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DampingUpdate {
    pub lambda: Tensor,
    pub actual: Tensor,
    pub predicted: Tensor,
    pub hyper: DampingHyper,
}

impl Recording {
    /// Levenberg-Marquardt damping from the actual and predicted loss changes, in place on
    /// `lambda`; all three 1x1. See [`DampingHyper`].
    pub fn damping_update(
        &mut self,
        lambda: Tensor,
        actual: Tensor,
        predicted: Tensor,
        hyper: DampingHyper,
    ) -> Result<&mut Self, EngineError> {
        self.push(DampingUpdate {
            lambda,
            actual,
            predicted,
            hyper,
        })
    }
}

static DAMPING_WGSL: ShaderFile = crate::shader_file!("damping");
const DAMPING_UPDATE: Kernel = Kernel::of_file(&DAMPING_WGSL, "damping_update");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DampingParams {
    increase: f32,
    decrease: f32,
    lower_ratio: f32,
    upper_ratio: f32,
    min_lambda: f32,
    max_lambda: f32,
    _pad: [u32; 2],
}

impl Operation for DampingUpdate {
    const NAME: &'static str = "damping_update";

    fn kernels() -> Vec<Kernel> {
        vec![DAMPING_UPDATE]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.lambda, self.actual, self.predicted]
    }

    fn check(&self) -> Result<(), EngineError> {
        let &DampingUpdate {
            lambda,
            actual,
            predicted,
            hyper,
        } = self;
        for (what, t) in [
            ("lambda", lambda),
            ("actual", actual),
            ("predicted", predicted),
        ] {
            if t.shape() != (1, 1) {
                return Err(shape_error(
                    Self::NAME,
                    format!("{what} must be 1x1, got {t}"),
                ));
            }
        }
        distinct(Self::NAME, &[lambda], &[actual, predicted])?;
        // WGSL's clamp is indeterminate for low > high.
        if hyper.min_lambda.is_nan()
            || hyper.max_lambda.is_nan()
            || hyper.min_lambda > hyper.max_lambda
        {
            return Err(shape_error(
                Self::NAME,
                format!(
                    "min_lambda ({}) must not exceed max_lambda ({})",
                    hyper.min_lambda, hyper.max_lambda
                ),
            ));
        }
        Ok(())
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let hyper = self.hyper;
        cpu.with_output(self.lambda, &[self.actual, self.predicted], |inp, out| {
            out[0] = damping::damping_update(out[0], inp[0][0], inp[1][0], &hyper)
        })
    }

    fn lower(&self, _max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let hyper = self.hyper;
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: DAMPING_UPDATE,
            params: words(DampingParams {
                increase: hyper.increase as f32,
                decrease: hyper.decrease as f32,
                lower_ratio: hyper.lower_ratio as f32,
                upper_ratio: hyper.upper_ratio as f32,
                min_lambda: hyper.min_lambda as f32,
                max_lambda: hyper.max_lambda as f32,
                _pad: [0; 2],
            }),
            operands: vec![T(self.lambda), T(self.actual), T(self.predicted)],
            workgroups: [1, 1, 1],
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(DampingParams {
            increase,
            decrease,
            lower_ratio,
            upper_ratio,
            min_lambda,
            max_lambda
        }))
    }
}
