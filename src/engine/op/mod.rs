//! The operations both engines execute, one module per op family. A family's module holds all
//! there is to know about its ops: the payload (the tensors and scalars an op reads and
//! writes) with its documentation, the shape checks made when it is recorded, the builder on
//! [`Recording`], the CPU engine's execution (calling the numeric twin in `engine/cpu/`, named
//! after the WGSL file), the tangent rule of forward-mode differentiation and the adjoint rule of
//! reverse mode, and the lowering to GPU dispatches with its params layout. Adding an op is one module here, one WGSL file, one
//! line in [`ops!`] below and one parity test.

mod activation;
mod adahessian;
mod adam;
mod batched_matmul;
mod check;
mod damping;
mod device_scalar;
mod elementwise;
mod gather;
mod jacobi;
mod matmul;
mod momentum;
mod random;
mod reduce;
mod softmax;
mod softmax_cross_entropy;
mod sophia;
mod transpose;

pub use activation::{Activate, ActivateGrad, ActivateGradJvp, Activation};
pub use adahessian::{AdaHessian, AdaHessianHyper, AdaHessianScalars};
pub use adam::{Adam, AdamHyper};
pub use batched_matmul::{BatchShape, BatchedLayout, BatchedMatmul};
pub use damping::{DampingHyper, DampingUpdate};
pub use device_scalar::{AxpyDevice, DeviceScalar, ScaleDevice};
pub use elementwise::{Axpy, Binary, BinaryOp, Ema, Fill, Scale, Unary, UnaryOp};
pub use gather::{GatherRows, ScatterAddRows};
pub use jacobi::JacobiRound;
pub use matmul::{
    LARGE_TILE_MIN_SIDE, LARGE_TILE_MIN_WORKGROUPS, Matmul, MatmulTile, SPLIT_K_MAX_TILES,
    SPLIT_K_MIN_LEN, split_k,
};
pub use momentum::Momentum;
pub use random::{Rademacher, SampleCategorical};
pub use reduce::{Reduce, ReduceAxis, Reduction};
pub use softmax::MaskedSoftmax;
pub use softmax_cross_entropy::{SoftmaxCrossEntropy, SoftmaxCrossEntropyJvp};
pub use sophia::{Sophia, SophiaHyper};
pub use transpose::Transpose;

pub(crate) use adam::adam_params;
pub use reduce::MAX_REDUCE_PARTIALS;
pub(crate) use softmax_cross_entropy::softmax_params;

use super::adjoint::Adjoint;
use super::cpu::{CpuEngine, CpuReal};
use super::gpu::kernels::Kernel;
use super::gpu::lower::{Dispatch, ParamsLayout};
use super::tangent::Transform;
use super::{EngineError, Recording, Tensor};

/// What every recorded operation provides (each family's module implements it for its
/// payloads). Scalars are f64 so the f64 engine computes at full precision; the GPU and the
/// f32 engine round them to f32.
pub(crate) trait Operation: Clone + Into<Op> {
    /// The kernel family's name, as used in timings and errors.
    const NAME: &'static str;

    /// Every tensor the op touches, so engines can check they are alive.
    fn tensors(&self) -> Vec<Tensor>;

    /// The shape checks made when the op is recorded. Outputs may not alias inputs or each
    /// other: a GPU dispatch cannot bind one buffer both read-only and read-write, and both
    /// engines refuse the same recordings.
    fn check(&self) -> Result<(), EngineError>;

    /// Executes the op on the CPU engine (in f64 the ground truth of every kernel).
    fn run_on_cpu<T: CpuReal>(&self, cpu: &mut CpuEngine<T>) -> Result<(), EngineError>;

    /// Records the op's tangent ops (forward-mode differentiation; see `tangent.rs`). Ops
    /// without a rule refuse to be differentiated.
    fn tangent(&self, _transform: &mut Transform<'_>) -> Result<(), EngineError> {
        Err(check::not_differentiable(Self::NAME))
    }

    /// Records the op's adjoint: adds its contribution to the adjoints of its inputs, given the
    /// adjoints of its outputs (reverse-mode differentiation; see `adjoint.rs`). Ops without a
    /// rule refuse.
    fn adjoint(&self, _adjoint: &mut Adjoint<'_>) -> Result<(), EngineError> {
        Err(check::not_reversible(Self::NAME))
    }

    /// The GPU dispatches that execute the op. `max_per_dim` is the adapter's
    /// `max_compute_workgroups_per_dimension`.
    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError>;

    /// Every pipeline its lowering can use, each setting of its constants (the validation test
    /// compiles them all; the engine checks their bindings against the device's limits).
    fn kernels() -> Vec<Kernel>;

    /// The layout of the params struct its kernels read, where the family defines one (checked
    /// against the WGSL struct of the same name by tests/shader_validation.rs).
    fn params_layout() -> Option<ParamsLayout> {
        None
    }
}

impl Recording {
    /// Checks `op` and appends it.
    pub(crate) fn push<O: Operation>(&mut self, op: O) -> Result<&mut Self, EngineError> {
        op.check()?;
        self.push_recorded(op.into());
        Ok(self)
    }
}

/// The op enum and its delegations to each family's [`Operation`], from one list.
macro_rules! ops {
    ($($variant:ident),* $(,)?) => {
        /// One recorded operation: a payload of one of the families above.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $($variant($variant),)*
        }

        $(impl From<$variant> for Op {
            fn from(op: $variant) -> Op {
                Op::$variant(op)
            }
        })*

        impl Op {
            /// The kernel family's name, as used in timings and errors.
            pub fn kernel_name(&self) -> &'static str {
                match self {
                    $(Op::$variant(_) => <$variant as Operation>::NAME,)*
                }
            }

            /// Every tensor this op touches, so engines can check they are alive.
            pub fn tensors(&self) -> Vec<Tensor> {
                match self {
                    $(Op::$variant(op) => op.tensors(),)*
                }
            }

            pub(crate) fn run_on_cpu<T: CpuReal>(
                &self,
                cpu: &mut CpuEngine<T>,
            ) -> Result<(), EngineError> {
                match self {
                    $(Op::$variant(op) => op.run_on_cpu(cpu),)*
                }
            }

            pub(crate) fn tangent(&self, transform: &mut Transform<'_>) -> Result<(), EngineError> {
                match self {
                    $(Op::$variant(op) => op.tangent(transform),)*
                }
            }

            pub(crate) fn adjoint(&self, adjoint: &mut Adjoint<'_>) -> Result<(), EngineError> {
                match self {
                    $(Op::$variant(op) => op.adjoint(adjoint),)*
                }
            }

            /// The dispatches that execute the op (see [`Operation::lower`]).
            pub fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
                match self {
                    $(Op::$variant(op) => op.lower(max_per_dim),)*
                }
            }
        }

        /// Every op family's kernels, once each.
        pub(crate) fn kernels() -> Vec<Kernel> {
            let mut kernels: Vec<Kernel> = Vec::new();
            for kernel in [$(<$variant as Operation>::kernels(),)*].into_iter().flatten() {
                if !kernels.contains(&kernel) {
                    kernels.push(kernel);
                }
            }
            kernels
        }

        /// Every family's params layout, once each.
        pub(crate) fn params_layouts() -> Vec<ParamsLayout> {
            let mut layouts: Vec<ParamsLayout> = Vec::new();
            for layout in [$(<$variant as Operation>::params_layout(),)*].into_iter().flatten() {
                if !layouts.iter().any(|known| known.0 == layout.0) {
                    layouts.push(layout);
                }
            }
            layouts
        }
    };
}

ops!(
    Matmul,
    Activate,
    ActivateGrad,
    ActivateGradJvp,
    Binary,
    Scale,
    Axpy,
    Fill,
    Reduce,
    SoftmaxCrossEntropy,
    SoftmaxCrossEntropyJvp,
    Transpose,
    AxpyDevice,
    ScaleDevice,
    Momentum,
    JacobiRound,
    Adam,
    Unary,
    Ema,
    Rademacher,
    SampleCategorical,
    AdaHessian,
    Sophia,
    DampingUpdate,
    GatherRows,
    ScatterAddRows,
    BatchedMatmul,
    MaskedSoftmax,
);
