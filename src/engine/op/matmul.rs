//! The matrix product (shaders/matmul.wgsl; CPU twin `engine/cpu/matmul.rs`), in two tile
//! configurations chosen by shape.

use super::Operation;
use super::check::{distinct, shape_error};
use crate::engine::adjoint::{Adjoint, scale_in_place};
use crate::engine::cpu::{CpuEngine, CpuReal, matmul};
use crate::engine::gpu::kernels::{Kernel, Module, ShaderFile, transpositions};
use crate::engine::gpu::lower::{
    Dispatch, Operand, ParamsLayout, SCRATCH_LEN, grid_1d, grid_2d, params_layout, words,
};
use crate::engine::tangent::Transform;
use crate::engine::{EngineError, Recording, Tensor};
use bytemuck::{Pod, Zeroable};

/// `c = alpha * op(a) op(b) + beta * c`, where op transposes when asked. With `beta == 0` the
/// old `c` is not read (so NaN or garbage there does not leak in).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matmul {
    pub a: Tensor,
    pub b: Tensor,
    pub c: Tensor,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f64,
    pub beta: f64,
}

impl Matmul {
    /// The inner dimension.
    pub fn k(&self) -> usize {
        if self.trans_a {
            self.a.rows()
        } else {
            self.a.cols()
        }
    }

    /// 2 m n k.
    pub fn flop(&self) -> f64 {
        2.0 * (self.c.rows() * self.c.cols() * self.k()) as f64
    }
}

impl Recording {
    /// `c = op(a) op(b)`.
    pub fn matmul(
        &mut self,
        a: Tensor,
        b: Tensor,
        c: Tensor,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<&mut Self, EngineError> {
        self.matmul_scaled(a, b, c, trans_a, trans_b, 1.0, 0.0)
    }

    /// `c = alpha * op(a) op(b) + beta * c`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_scaled(
        &mut self,
        a: Tensor,
        b: Tensor,
        c: Tensor,
        trans_a: bool,
        trans_b: bool,
        alpha: f64,
        beta: f64,
    ) -> Result<&mut Self, EngineError> {
        self.push(Matmul {
            a,
            b,
            c,
            trans_a,
            trans_b,
            alpha,
            beta,
        })
    }
}

/// shaders/matmul.wgsl: its entry points `matmul` (64x64 tiles) and `matmul_large` (128x128).
pub(crate) static MATMUL_WGSL: ShaderFile = crate::shader_file!(
    "matmul",
    snippets: ["common/matmul_tile.wgsl", "common/matmul_tile_large.wgsl"],
    self_bounded: true
);

/// How a plain product is computed (matmul.wgsl's entry points).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulTile {
    /// 64x64 tiles, 4x4 outputs per invocation.
    Small,
    /// 128x128 tiles, 8x8 outputs per invocation, the next K slice prefetched.
    Large,
    /// 64x64 tiles over `splits` ranges of K side by side, each writing its partial product to
    /// the engine's scratch buffer, then a second pass adding the partials in increasing split
    /// order. A different order of operations from the unsplit tiles (a split's sum is rounded
    /// before it joins the next), the same on every run.
    SplitK { splits: usize },
}

impl MatmulTile {
    /// The configuration for an `m x n` product over `k` terms. Large tiles do four times the
    /// arithmetic per word staged, but a quarter as many workgroups: they are chosen where even
    /// they make at least one wave on a large GPU, `LARGE_TILE_MIN_WORKGROUPS` (128, about one
    /// per streaming multiprocessor of an H100 or H200: 132), with both sides at least
    /// `LARGE_TILE_MIN_SIDE` (a skinny output would leave most of each tile empty): outputs of
    /// 2048 x 1024 and up. A small output over a long K (at most `SPLIT_K_MAX_TILES` 64x64
    /// tiles, K at least twice `SPLIT_K_MIN_LEN`) is split along K ([`split_k`]). Elsewhere the
    /// 64x64 grid's four times as many workgroups keep more of the GPU busy. A starting rule,
    /// to be tuned on a GPU with `benches/gpu.sh`'s per-configuration timings.
    pub fn for_shape(m: usize, n: usize, k: usize) -> Self {
        let large_tiles = m.div_ceil(128) * n.div_ceil(128);
        if m.min(n) >= LARGE_TILE_MIN_SIDE && large_tiles >= LARGE_TILE_MIN_WORKGROUPS {
            return MatmulTile::Large;
        }
        match split_k(m, n, k) {
            Some(splits) => MatmulTile::SplitK { splits },
            None => MatmulTile::Small,
        }
    }

    /// The tile's side, in outputs.
    pub fn side(self) -> usize {
        match self {
            MatmulTile::Small | MatmulTile::SplitK { .. } => 64,
            MatmulTile::Large => 128,
        }
    }

    /// The kernel that multiplies (for split-K, its first pass).
    pub fn kernel(self, trans_a: bool, trans_b: bool) -> Kernel {
        let entry_point = match self {
            MatmulTile::Small => "matmul",
            MatmulTile::Large => "matmul_large",
            MatmulTile::SplitK { .. } => "matmul_split_k",
        };
        Kernel::of_file(&MATMUL_WGSL, entry_point)
            .with_flag("TRANS_A", trans_a)
            .with_flag("TRANS_B", trans_b)
            .suffixed([transpositions(trans_a, trans_b), ""])
    }

    /// The transpositions of a plain product's kernel in the unsplit configurations; `None`
    /// for any other kernel.
    pub fn transpositions_of(kernel: &Kernel) -> Option<(bool, bool)> {
        let unsplit = ["matmul", "matmul_large"].contains(&kernel.entry_point());
        if kernel.module != Module::File(&MATMUL_WGSL) || !unsplit {
            return None;
        }
        let flag = |name| kernel.constant(name) == Some(1);
        Some((flag("TRANS_A"), flag("TRANS_B")))
    }
}

/// Split-K's second pass: each output's partials summed in split order.
const SPLIT_K_SUM: Kernel = Kernel::of_file(&MATMUL_WGSL, "matmul_split_k_sum");

/// The fewest 128x128 workgroups for which a product takes the large tiles.
pub const LARGE_TILE_MIN_WORKGROUPS: usize = 128;
/// The shortest side of an output that takes the large tiles.
pub const LARGE_TILE_MIN_SIDE: usize = 1024;
/// Products of at most this many 64x64 tiles are split along a long K.
pub const SPLIT_K_MAX_TILES: usize = 16;
/// Each split covers at least this many k.
pub const SPLIT_K_MIN_LEN: usize = 256;
/// Splits aim at this many workgroups in all (about half the SMs of an H100).
const SPLIT_K_TARGET_WORKGROUPS: usize = 64;
/// The K slice of the 64x64 tile (common/matmul_tile.wgsl's TILE_K): splits start on one.
const TILE_K: usize = 16;

/// How many splits of K an `m x n` product over `k` terms takes, where it is split at all:
/// enough for about `SPLIT_K_TARGET_WORKGROUPS` workgroups, none shorter than
/// `SPLIT_K_MIN_LEN`, and no more partials than the scratch buffer holds.
pub fn split_k(m: usize, n: usize, k: usize) -> Option<usize> {
    let tiles = m.div_ceil(64) * n.div_ceil(64);
    if tiles == 0 || tiles > SPLIT_K_MAX_TILES || k < 2 * SPLIT_K_MIN_LEN {
        return None;
    }
    let splits = (SPLIT_K_TARGET_WORKGROUPS / tiles)
        .min(k / SPLIT_K_MIN_LEN)
        .min(SCRATCH_LEN / (m * n));
    (splits >= 2).then_some(splits)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    alpha: f32,
    beta: f32,
    split_len: u32,
    _pad: u32,
}

/// The k of each of `splits` splits: a whole number of K slices.
fn split_len(k: usize, splits: usize) -> usize {
    k.div_ceil(splits.max(1)).next_multiple_of(TILE_K)
}

impl Matmul {
    /// The dispatches in the configuration `tile`, whatever the shape.
    pub fn lower_in(
        &self,
        tile: MatmulTile,
        max_per_dim: u32,
    ) -> Result<Vec<Dispatch>, EngineError> {
        let (m, n) = self.c.shape();
        let k = self.k();
        let split_len = match tile {
            MatmulTile::SplitK { splits } => split_len(k, splits),
            _ => k,
        };
        // The splits actually made (each a whole number of K slices); one is no split.
        let splits = k.div_ceil(split_len.max(1)).max(1);
        let tile = if splits == 1 && matches!(tile, MatmulTile::SplitK { .. }) {
            MatmulTile::Small
        } else {
            tile
        };
        let params = words(MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            accumulate: u32::from(self.beta != 0.0),
            alpha: self.alpha as f32,
            beta: self.beta as f32,
            split_len: split_len as u32,
            _pad: 0,
        });
        let side = tile.side();
        let grid = grid_2d(Self::NAME, n.div_ceil(side), m.div_ceil(side), max_per_dim)?;
        let (a, b, c) = (
            Operand::Tensor(self.a),
            Operand::Tensor(self.b),
            Operand::Tensor(self.c),
        );
        let product = |out: Operand, workgroups| Dispatch {
            flop: self.flop(),
            kernel: tile.kernel(self.trans_a, self.trans_b),
            params,
            operands: vec![out, a, b],
            workgroups,
        };
        if !matches!(tile, MatmulTile::SplitK { .. }) {
            return Ok(vec![product(c, grid)]);
        }
        if splits * m * n > SCRATCH_LEN {
            return Err(shape_error(
                Self::NAME,
                format!(
                    "{splits} splits of a {m}x{n} product need {} partials; the scratch \
                     buffer holds {SCRATCH_LEN}",
                    splits * m * n
                ),
            ));
        }
        let partials = Operand::Scratch {
            len: splits * m * n,
        };
        let [x, y, _] = grid;
        Ok(vec![
            product(partials, [x, y, splits as u32]),
            Dispatch {
                flop: 0.0,
                kernel: SPLIT_K_SUM,
                params,
                operands: vec![c, partials],
                workgroups: grid_1d(Self::NAME, (m * n).div_ceil(256), max_per_dim)?,
            },
        ])
    }
}

impl Operation for Matmul {
    const NAME: &'static str = "matmul";

    fn tensors(&self) -> Vec<Tensor> {
        vec![self.a, self.b, self.c]
    }

    fn check(&self) -> Result<(), EngineError> {
        let &Matmul {
            a,
            b,
            c,
            trans_a,
            trans_b,
            ..
        } = self;
        let (m, k) = if trans_a {
            (a.cols(), a.rows())
        } else {
            (a.rows(), a.cols())
        };
        let (k2, n) = if trans_b {
            (b.cols(), b.rows())
        } else {
            (b.rows(), b.cols())
        };
        let describe = || {
            format!(
                "A{} is {a}, B{} is {b}, C is {c}",
                if trans_a { "^T" } else { "" },
                if trans_b { "^T" } else { "" }
            )
        };
        if k != k2 {
            return Err(shape_error(
                Self::NAME,
                format!("inner dimensions differ ({k} vs {k2}): {}", describe()),
            ));
        }
        if c.shape() != (m, n) {
            return Err(shape_error(
                Self::NAME,
                format!("C must be {m}x{n}: {}", describe()),
            ));
        }
        distinct(Self::NAME, &[c], &[a, b])
    }

    fn run_on_cpu<T: CpuReal>(&self, cpu: &mut CpuEngine<T>) -> Result<(), EngineError> {
        let &Matmul {
            a,
            b,
            c,
            trans_a,
            trans_b,
            alpha,
            beta,
        } = self;
        let shape = (c.rows(), c.cols(), self.k());
        let par = cpu.workers().matmul_par(shape);
        cpu.with_output(c, &[a, b], |inp, out| {
            matmul::matmul(
                inp[0],
                inp[1],
                out,
                shape,
                trans_a,
                trans_b,
                T::of_f64(alpha),
                T::of_f64(beta),
                par,
            )
        })
    }

    /// `dc = alpha (op(da) op(b) + op(a) op(db)) + beta dc`, each term where its tangent lives.
    fn tangent(&self, t: &mut Transform<'_>) -> Result<(), EngineError> {
        let &Matmul {
            a,
            b,
            c,
            trans_a,
            trans_b,
            alpha,
            beta,
        } = self;
        let keep_old = beta != 0.0 && t.live(c).is_some();
        let terms: Vec<(Tensor, Tensor)> =
            [t.live(a).map(|da| (da, b)), t.live(b).map(|db| (a, db))]
                .into_iter()
                .flatten()
                .collect();
        if terms.is_empty() {
            if keep_old && beta != 1.0 {
                let dc = t.output(Self::NAME, c)?;
                scale_in_place(t, beta, dc)?;
            } else if !keep_old {
                t.zero(c);
            }
            return Ok(());
        }
        let dc = t.output(Self::NAME, c)?;
        for (i, (x, y)) in terms.into_iter().enumerate() {
            let beta_here = match (i, keep_old) {
                (0, true) => beta,
                (0, false) => 0.0,
                _ => 1.0,
            };
            (t.recording).matmul_scaled(x, y, dc, trans_a, trans_b, alpha, beta_here)?;
        }
        Ok(())
    }

    /// `da += alpha dc op(b)^T` (transposed to a's layout), `db += alpha op(a)^T dc` (to b's),
    /// then the old c's adjoint is `beta dc` (none where beta is 0: c was overwritten).
    fn adjoint(&self, t: &mut Adjoint<'_>) -> Result<(), EngineError> {
        let &Matmul {
            a,
            b,
            c,
            trans_a,
            trans_b,
            alpha,
            beta,
        } = self;
        t.value(Self::NAME, a)?;
        t.value(Self::NAME, b)?;
        let Some(dc) = t.adjoint(c) else {
            if beta == 0.0 {
                t.overwritten(c);
            } else {
                t.updated(c);
            }
            return Ok(());
        };
        t.add_to(a, |t, term| {
            let rec = &mut t.recording;
            match trans_a {
                false => rec.matmul_scaled(dc, b, term, false, !trans_b, alpha, 0.0),
                true => rec.matmul_scaled(b, dc, term, trans_b, true, alpha, 0.0),
            }
            .map(|_| ())
        })?;
        t.add_to(b, |t, term| {
            let rec = &mut t.recording;
            match trans_b {
                false => rec.matmul_scaled(a, dc, term, !trans_a, false, alpha, 0.0),
                true => rec.matmul_scaled(dc, a, term, true, trans_a, alpha, 0.0),
            }
            .map(|_| ())
        })?;
        if beta == 0.0 {
            t.overwritten(c);
        } else {
            t.updated(c);
            if beta != 1.0 {
                scale_in_place(t, beta, dc)?;
            }
        }
        Ok(())
    }

    fn lower(&self, max_per_dim: u32) -> Result<Vec<Dispatch>, EngineError> {
        let (m, n) = self.c.shape();
        self.lower_in(MatmulTile::for_shape(m, n, self.k()), max_per_dim)
    }

    fn kernels() -> Vec<Kernel> {
        let mut kernels = vec![SPLIT_K_SUM];
        let split = MatmulTile::SplitK { splits: 2 };
        for tile in [MatmulTile::Small, MatmulTile::Large, split] {
            for trans_a in [false, true] {
                for trans_b in [false, true] {
                    kernels.push(tile.kernel(trans_a, trans_b));
                }
            }
        }
        kernels
    }

    fn params_layout() -> Option<ParamsLayout> {
        Some(params_layout!(MatmulParams {
            m,
            n,
            k,
            accumulate,
            alpha,
            beta,
            split_len
        }))
    }
}
