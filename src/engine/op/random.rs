//! Random draws from a counter-based hash, the same bits on every engine
//! (shaders/random.wgsl; CPU twins in `engine/cpu/random.rs`).

use super::Operation;
use super::check::{distinct, per_row};
use crate::engine::adjoint::Adjoint;
use crate::engine::cpu::random::split_u64;
use crate::engine::cpu::{CpuEngine, CpuReal, random};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamWords, ParamsLayout, grid_1d, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// `out[i] = +1 or -1`, from bit 31 of [`random_bits`](crate::engine::cpu::random::random_bits)
/// `(seed, stream, i)` (clear: +1): a counter-based hash in u32 arithmetic, the same bits on
/// every engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rademacher {
    pub out: Tensor,
    pub seed: u64,
    pub stream: u64,
}

/// For each row r of `logits` (`rows x classes`), a class drawn from `softmax(logits[r])` by
/// the inverse CDF: with `e_j = exp(logits[r][j] - max_j logits[r][j])`, `c_j` their running
/// sums and `u` the 24-bit uniform in [0, 1) of `(seed, stream, r)`
/// ([`uniform`](crate::engine::cpu::random::uniform)), the label is the smallest `j` with
/// `u c_last < c_j`. Written as a float into `labels` (`rows x 1`), as
/// `SoftmaxCrossEntropy` reads labels. A row with a NaN or +inf logit (or only -inf ones)
/// gets a NaN label. Engines agree except where `u` lies within rounding of a CDF boundary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleCategorical {
    pub logits: Tensor,
    pub labels: Tensor,
    pub seed: u64,
    pub stream: u64,
}

impl Recording {
    /// Fills `out` with +1/-1 from a counter-based hash of `(seed, stream, index)`: the same
    /// values on every engine (see [`Rademacher`]). Use a different `stream` per probe.
    pub fn rademacher(&mut self, out: Tensor, seed: u64, stream: u64) -> &mut Self {
        self.push_recorded(Rademacher { out, seed, stream }.into());
        self
    }

    /// Draws one class per row of `logits` from its softmax into `labels_out` (`rows x 1`, class
    /// indices as floats, as `softmax_cross_entropy` reads them); see [`SampleCategorical`].
    /// The row's uniform comes from the hash `rademacher` uses, at index r: give the two
    /// different streams.
    pub fn sample_categorical(
        &mut self,
        logits: Tensor,
        labels_out: Tensor,
        seed: u64,
        stream: u64,
    ) -> Result<&mut Self, EngineError> {
        self.push(SampleCategorical {
            logits,
            labels: labels_out,
            seed,
            stream,
        })
    }
}

static RANDOM_WGSL: ShaderFile = crate::shader_file!("random");
const RADEMACHER: Kernel = Kernel::of_file(&RANDOM_WGSL, "rademacher");
const SAMPLE_CATEGORICAL: Kernel = Kernel::of_file(&RANDOM_WGSL, "sample_categorical");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RandomParams {
    len: u32,
    cols: u32,
    seed_lo: u32,
    seed_hi: u32,
    stream_lo: u32,
    stream_hi: u32,
    nan_bits: u32,
    _pad: u32,
}

/// The params of both random kernels: `len` elements (rademacher) or rows (sample_categorical).
fn random_params(len: usize, cols: usize, seed: u64, stream: u64) -> ParamWords {
    let (seed_lo, seed_hi) = split_u64(seed);
    let (stream_lo, stream_hi) = split_u64(stream);
    words(RandomParams {
        len: len as u32,
        cols: cols as u32,
        seed_lo,
        seed_hi,
        stream_lo,
        stream_hi,
        nan_bits: f32::NAN.to_bits(),
        _pad: 0,
    })
}

fn random_layout() -> Option<ParamsLayout> {
    Some(params_layout!(RandomParams {
        len,
        cols,
        seed_lo,
        seed_hi,
        stream_lo,
        stream_hi,
        nan_bits
    }))
}

impl Operation for Rademacher {
    const NAME: &'static str = "rademacher";

    fn kernels() -> Vec<Kernel> {
        vec![RADEMACHER]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.out]
    }

    fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let Rademacher { out, seed, stream } = *self;
        cpu.with_output(out, &[], |_, out| random::rademacher(seed, stream, out))
    }

    /// The draw depends on no tensor: a zero tangent.
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        t.zero(self.out);
        Ok(())
    }

    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        t.overwritten(self.out);
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let len = self.out.len();
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: RADEMACHER,
            params: random_params(len, 1, self.seed, self.stream),
            operands: vec![T(self.out)],
            workgroups: grid_1d(Self::NAME, len.div_ceil(256), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        random_layout()
    }
}

impl Operation for SampleCategorical {
    const NAME: &'static str = "sample_categorical";

    fn kernels() -> Vec<Kernel> {
        vec![SAMPLE_CATEGORICAL]
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.logits, self.labels]
    }

    fn check(&self) -> Result<(), EngineError> {
        per_row(Self::NAME, "labels_out", self.logits, self.labels)?;
        distinct(Self::NAME, &[self.labels], &[self.logits])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let SampleCategorical {
            logits,
            labels,
            seed,
            stream,
        } = *self;
        cpu.with_output(labels, &[logits], |inp, out| {
            random::sample_categorical(inp[0], logits.cols(), seed, stream, out)
        })
    }

    /// Piecewise constant in the logits: a zero tangent.
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        t.zero(self.labels);
        Ok(())
    }

    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        t.overwritten(self.labels);
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let logits = self.logits;
        Ok(vec![Dispatch {
            flop: 0.0,
            kernel: SAMPLE_CATEGORICAL,
            params: random_params(logits.rows(), logits.cols(), self.seed, self.stream),
            operands: vec![T(self.labels), T(logits)],
            workgroups: grid_1d(Self::NAME, logits.rows(), max_per_dim)?,
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        random_layout()
    }
}
