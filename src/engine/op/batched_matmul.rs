//! A batch of matrix products over strided views of three tensors (shaders/batched_matmul.wgsl;
//! CPU twin `engine/cpu/batched_matmul.rs`): attention's per-head products `Q_h K_h^T` and
//! `P_h V_h`, whose heads are column blocks of the activations, and masked mean pooling, without
//! a copy that rearranges them.

use super::Operation;
use super::check::{distinct, shape_error};
use crate::engine::adjoint::{Adjoint, scale_in_place};
use crate::engine::cpu::{CpuEngine, CpuReal, batched_matmul as twin};
use crate::engine::gpu::kernels::{Kernel, ShaderFile};
use crate::engine::gpu::lower::{
    Dispatch, Operand::Tensor as T, ParamsLayout, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// The batch: `outer x inner` products, each `m x n` over `k` terms. Two batch indices, because
/// attention's matrices are indexed by sequence and head, at unrelated strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    pub outer: usize,
    pub inner: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// Where an operand's matrices lie in its tensor's storage: matrix `(o, i)` starts at
/// `o * outer + i * inner`, stored row-major with its rows `leading` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchedLayout {
    pub outer: usize,
    pub inner: usize,
    pub leading: usize,
}

impl BatchedLayout {
    /// Where matrix `(o, i)` starts.
    pub fn offset(self, o: usize, i: usize) -> usize {
        o * self.outer + i * self.inner
    }

    /// Whether distinct elements of the batch's `rows x cols` matrices lie at distinct places,
    /// as an output's must (and an input's, for its gradient to be a plain product): sorted by
    /// stride, each index must step over everything the smaller ones reach.
    fn injective(self, shape: BatchShape, (rows, cols): (usize, usize)) -> bool {
        let mut dims = [
            (1, cols),
            (self.leading, rows),
            (self.inner, shape.inner),
            (self.outer, shape.outer),
        ];
        dims.sort();
        let mut reach = 0;
        for (stride, extent) in dims.into_iter().filter(|&(_, extent)| extent > 1) {
            if stride <= reach {
                return false;
            }
            reach += stride * (extent - 1);
        }
        true
    }

    /// The last place a batch of `rows x cols` matrices reaches (`None` for an empty batch).
    fn last(self, shape: BatchShape, (rows, cols): (usize, usize)) -> Option<usize> {
        (shape.outer > 0 && shape.inner > 0 && rows > 0 && cols > 0).then(|| {
            self.offset(shape.outer - 1, shape.inner - 1) + (rows - 1) * self.leading + cols - 1
        })
    }
}

/// `c[o, i] = alpha op(a[o, i]) op(b[o, i]) + beta c[o, i]` for every matrix of the batch, where
/// op transposes the stored matrix when asked (as [`Matmul`](super::Matmul)'s). With
/// `beta == 0` the old `c` is not read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchedMatmul {
    pub a: Tensor,
    pub b: Tensor,
    pub c: Tensor,
    pub shape: BatchShape,
    pub a_layout: BatchedLayout,
    pub b_layout: BatchedLayout,
    pub c_layout: BatchedLayout,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f64,
    pub beta: f64,
}

impl BatchedMatmul {
    /// The stored shape of `a`'s matrices (`m x k`, or `k x m` when transposed).
    fn a_stored(&self) -> (usize, usize) {
        let BatchShape { m, k, .. } = self.shape;
        if self.trans_a { (k, m) } else { (m, k) }
    }

    fn b_stored(&self) -> (usize, usize) {
        let BatchShape { n, k, .. } = self.shape;
        if self.trans_b { (n, k) } else { (k, n) }
    }

    /// 2 m n k per matrix.
    pub fn flop(&self) -> f64 {
        let BatchShape {
            outer,
            inner,
            m,
            n,
            k,
        } = self.shape;
        2.0 * (outer * inner * m * n * k) as f64
    }

    /// The same batch writing `c` from other factors (for the derivative rules).
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        (a, a_layout, trans_a): (Tensor, BatchedLayout, bool),
        (b, b_layout, trans_b): (Tensor, BatchedLayout, bool),
        (c, c_layout): (Tensor, BatchedLayout),
        (m, n, k): (usize, usize, usize),
        alpha: f64,
        beta: f64,
    ) -> BatchedMatmul {
        BatchedMatmul {
            a,
            b,
            c,
            shape: BatchShape {
                m,
                n,
                k,
                ..self.shape
            },
            a_layout,
            b_layout,
            c_layout,
            trans_a,
            trans_b,
            alpha,
            beta,
        }
    }
}

impl Recording {
    pub fn batched_matmul(&mut self, product: BatchedMatmul) -> Result<&mut Self, EngineError> {
        self.push(product)
    }
}

static BATCHED_MATMUL_WGSL: ShaderFile = crate::shader_file!("batched_matmul");

fn kernel(trans_a: bool, trans_b: bool) -> Kernel {
    Kernel::of_file(&BATCHED_MATMUL_WGSL, "batched_matmul")
        .with_flag("TRANS_A", trans_a)
        .with_flag("TRANS_B", trans_b)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BatchedMatmulParams {
    m: u32,
    n: u32,
    k: u32,
    inner_batches: u32,
    a_outer: u32,
    a_inner: u32,
    a_leading: u32,
    b_outer: u32,
    b_inner: u32,
    b_leading: u32,
    c_outer: u32,
    c_inner: u32,
    c_leading: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

impl Operation for BatchedMatmul {
    const NAME: &'static str = "batched_matmul";

    fn kernels() -> Vec<Kernel> {
        [false, true]
            .into_iter()
            .flat_map(|trans_a| [false, true].map(|trans_b| kernel(trans_a, trans_b)))
            .collect()
    }

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.a, self.b, self.c]
    }

    fn check(&self) -> Result<(), EngineError> {
        let shape = self.shape;
        let operands = [
            ("a", self.a, self.a_layout, self.a_stored()),
            ("b", self.b, self.b_layout, self.b_stored()),
            ("c", self.c, self.c_layout, (shape.m, shape.n)),
        ];
        for (what, tensor, layout, (rows, cols)) in operands {
            if layout.leading < cols {
                return Err(shape_error(
                    Self::NAME,
                    format!(
                        "{what}'s rows ({cols} long) must be at least {cols} apart, got {}",
                        layout.leading
                    ),
                ));
            }
            if let Some(last) = layout.last(shape, (rows, cols))
                && last >= tensor.len()
            {
                return Err(shape_error(
                    Self::NAME,
                    format!(
                        "{what}'s {}x{} batch of {rows}x{cols} matrices reaches element {last} of {tensor}",
                        shape.outer, shape.inner
                    ),
                ));
            }
        }
        if !self.c_layout.injective(shape, (shape.m, shape.n)) {
            return Err(shape_error(
                Self::NAME,
                format!("c's matrices overlap in {}: {:?}", self.c, self.c_layout),
            ));
        }
        if self.beta != 0.0 && self.c.len() != shape.outer * shape.inner * shape.m * shape.n {
            // Elements outside the batch would not be scaled by beta on any engine; refusing
            // keeps "c = beta c + ..." true of the whole tensor.
            return Err(shape_error(
                Self::NAME,
                format!(
                    "accumulating (beta {}) needs the batch to cover all of {}",
                    self.beta, self.c
                ),
            ));
        }
        distinct(Self::NAME, &[self.c], &[self.a, self.b])
    }

    fn run_on_cpu<R: CpuReal>(&self, cpu: &mut CpuEngine<R>) -> Result<(), EngineError> {
        let p = *self;
        cpu.with_output(p.c, &[p.a, p.b], |inp, out| {
            twin::batched_matmul(
                inp[0],
                inp[1],
                out,
                p.shape,
                [p.a_layout, p.b_layout, p.c_layout],
                p.trans_a,
                p.trans_b,
                R::of_f64(p.alpha),
                R::of_f64(p.beta),
            )
        })
    }

    /// `dc = alpha (op(da) op(b) + op(a) op(db)) + beta dc`, in the same layouts.
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let p = *self;
        let keep_old = p.beta != 0.0 && t.live(p.c).is_some();
        let terms: Vec<(Tensor, Tensor)> = [
            t.live(p.a).map(|da| (da, p.b)),
            t.live(p.b).map(|db| (p.a, db)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if terms.is_empty() {
            if keep_old && p.beta != 1.0 {
                let dc = t.output(Self::NAME, p.c)?;
                scale_in_place(t, p.beta, dc)?;
            } else if !keep_old {
                t.zero(p.c);
            }
            return Ok(());
        }
        let dc = t.output(Self::NAME, p.c)?;
        for (index, (a, b)) in terms.into_iter().enumerate() {
            let beta = match (index, keep_old) {
                (0, true) => p.beta,
                (0, false) => 0.0,
                _ => 1.0,
            };
            t.recording.batched_matmul(BatchedMatmul {
                a,
                b,
                c: dc,
                beta,
                ..p
            })?;
        }
        Ok(())
    }

    /// As [`Matmul`](super::Matmul)'s rule, matrix by matrix: `da += alpha dc op(b)^T` and
    /// `db += alpha op(a)^T dc`, each written in its factor's layout (zeros where a factor's
    /// tensor holds more than its batch). A factor whose matrices overlap (one element used
    /// twice) is refused: its gradient would need a sum over the overlap.
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let p = *self;
        t.value(Self::NAME, p.a)?;
        t.value(Self::NAME, p.b)?;
        let Some(dc) = t.adjoint(p.c) else {
            if p.beta == 0.0 {
                t.overwritten(p.c);
            } else {
                t.updated(p.c);
            }
            return Ok(());
        };
        let BatchShape { m, n, k, .. } = p.shape;
        let dc_factor = |trans| (dc, p.c_layout, trans);
        let a_term = match p.trans_a {
            false => p.product(
                dc_factor(false),
                (p.b, p.b_layout, !p.trans_b),
                (p.a, p.a_layout),
                (m, k, n),
                p.alpha,
                0.0,
            ),
            true => p.product(
                (p.b, p.b_layout, p.trans_b),
                dc_factor(true),
                (p.a, p.a_layout),
                (k, m, n),
                p.alpha,
                0.0,
            ),
        };
        let b_term = match p.trans_b {
            false => p.product(
                (p.a, p.a_layout, !p.trans_a),
                dc_factor(false),
                (p.b, p.b_layout),
                (k, n, m),
                p.alpha,
                0.0,
            ),
            true => p.product(
                dc_factor(true),
                (p.a, p.a_layout, p.trans_a),
                (p.b, p.b_layout),
                (n, k, m),
                p.alpha,
                0.0,
            ),
        };
        for term in [a_term, b_term] {
            let factor = term.c;
            let (rows, cols) = (term.shape.m, term.shape.n);
            if !term.c_layout.injective(p.shape, (rows, cols)) {
                return Err(shape_error(
                    Self::NAME,
                    format!(
                        "reverse mode needs {factor}'s matrices not to overlap: {:?}",
                        term.c_layout
                    ),
                ));
            }
            let covers = factor.len() == p.shape.outer * p.shape.inner * rows * cols;
            t.add_to(factor, |t, into| {
                if !covers {
                    t.recording.fill(0.0, into);
                }
                t.recording
                    .batched_matmul(BatchedMatmul { c: into, ..term })
                    .map(|_| ())
            })?;
        }
        if p.beta == 0.0 {
            t.overwritten(p.c);
        } else {
            t.updated(p.c);
            if p.beta != 1.0 {
                scale_in_place(t, p.beta, dc)?;
            }
        }
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let p = *self;
        let BatchShape {
            outer,
            inner,
            m,
            n,
            k,
        } = p.shape;
        let grid = [n.div_ceil(16), m.div_ceil(16), outer * inner];
        if grid.iter().any(|&g| g > max_per_dim as usize) {
            return Err(shape_error(
                Self::NAME,
                format!(
                    "a {grid:?} grid of workgroups exceeds the adapter's {max_per_dim} per dimension"
                ),
            ));
        }
        Ok(vec![Dispatch {
            flop: p.flop(),
            kernel: kernel(p.trans_a, p.trans_b),
            params: words(BatchedMatmulParams {
                m: m as u32,
                n: n as u32,
                k: k as u32,
                inner_batches: inner as u32,
                a_outer: p.a_layout.outer as u32,
                a_inner: p.a_layout.inner as u32,
                a_leading: p.a_layout.leading as u32,
                b_outer: p.b_layout.outer as u32,
                b_inner: p.b_layout.inner as u32,
                b_leading: p.b_layout.leading as u32,
                c_outer: p.c_layout.outer as u32,
                c_inner: p.c_layout.inner as u32,
                c_leading: p.c_layout.leading as u32,
                alpha: p.alpha as f32,
                beta: p.beta as f32,
                _pad: 0,
            }),
            operands: vec![T(p.c), T(p.a), T(p.b)],
            workgroups: grid.map(|g| g.max(1) as u32),
        }])
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(BatchedMatmulParams {
            m,
            n,
            k,
            inner_batches,
            a_outer,
            a_inner,
            a_leading,
            b_outer,
            b_inner,
            b_leading,
            c_outer,
            c_inner,
            c_leading,
            alpha,
            beta
        }))
    }
}
