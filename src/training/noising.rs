//! RepNoise's loss (Rosati et al. 2024, "Representation Noising"; the reference is its code's
//! `rep_noise_loss` in `representation_noising/loss.py`): keep the utility task, push the
//! harmful task's loss up, and make the harmful inputs' representations at every hidden layer
//! indistinguishable from Gaussian noise:
//!   loss = E_utility[ce] + beta (1/H) sum_l MMD(h_l(harmful), N(0, I)) - alpha ln(1 + E_harmful[ce]),
//! with H hidden layers and the MMD of a sum of five Gaussian kernels whose bandwidths are the
//! batch's mean squared distance / 4 times 1, 2, 4, 8, 16 (the reference's `MMD_loss`: kernel_mul
//! 2, kernel_num 5), held constant in the gradient as the reference detaches it.
//!
//! Differences from the reference: a sequence model's loss also reads the harmful loss of every
//! hidden state through the output head (a logit lens); an MLP's hidden layers have no head, so
//! the harmful term is the model's own loss. The noise is drawn once per row (the reference
//! draws it every step), so each harmful row meets the same noise vector every epoch (the
//! property test measures against a fresh sample); the bandwidth's mean includes each sample's
//! zero distance to itself (the reference leaves those out: ours is (2n - 1) / 2n of its
//! bandwidth, within 1% at 64 harmful rows).

use super::objective::{Column, gather, shape_error};
use crate::data::Dataset;
use crate::engine::{
    Activation, BinaryOp, DeviceScalar, EngineError, Recording, ReduceAxis, Reduction, Tensor,
    UnaryOp,
};
use crate::model::{DeviceModel, Workspace};

/// Kernels of the MMD, each bandwidth twice the one before (the reference's `kernel_num`).
const KERNELS: i32 = 5;

/// Added to the bandwidth so that a batch without harmful rows (a zero mean distance) divides by
/// no zero: its MMD and gradient are zero all the same.
const BANDWIDTH_FLOOR: f64 = 1e-20;

/// A training set for RepNoise: harmful rows (to noise, and whose loss rises) and utility rows
/// (to retain), with per row and hidden layer a standard Gaussian sample of that layer's width.
#[derive(Clone, Debug, PartialEq)]
pub struct NoisingSet {
    pub data: Dataset,
    /// Per row: harmful (true) or utility.
    pub harmful: Vec<bool>,
    /// Per hidden layer l (every layer but the last), `rows x width_l` noise.
    pub noise: Vec<Vec<f64>>,
    /// The harmful term's weight (the reference's 1).
    pub alpha: f64,
    /// The noise term's weight (the reference's 0.001).
    pub beta: f64,
}

impl NoisingSet {
    /// The labels, each row's share of the batch's harmful and of its utility rows (1/count, or
    /// 0), and each hidden layer's noise.
    pub fn columns_of(&self, chunk: &[usize]) -> Vec<Column> {
        let harmful = chunk.iter().filter(|&&r| self.harmful[r]).count();
        let share = |count: usize| if count == 0 { 0.0 } else { 1.0 / count as f64 };
        let (harmful_share, utility_share) = (share(harmful), share(chunk.len() - harmful));
        let per_row = |label, value: &dyn Fn(bool) -> f64| Column {
            label,
            cols: 1,
            values: chunk.iter().map(|&r| value(self.harmful[r])).collect(),
        };
        let mut columns = vec![
            Column {
                label: "batch.labels",
                cols: 1,
                values: chunk.iter().map(|&r| self.data.labels[r] as f64).collect(),
            },
            per_row("batch.harmful_share", &|h| {
                if h { harmful_share } else { 0.0 }
            }),
            per_row("batch.utility_share", &|h| {
                if h { 0.0 } else { utility_share }
            }),
        ];
        for noise in &self.noise {
            let cols = noise.len() / self.harmful.len().max(1);
            columns.push(Column {
                label: "batch.noise",
                cols,
                values: gather(noise, cols, chunk),
            });
        }
        columns
    }

    /// Checks the set against the model before any upload.
    pub fn check(&self, model: &DeviceModel) -> Result<(), EngineError> {
        let rows = self.data.len();
        if self.harmful.len() != rows {
            return Err(shape_error(format!(
                "{rows} rows need {rows} harmful flags, got {}",
                self.harmful.len()
            )));
        }
        let hidden = model.layers.len() - 1;
        if self.noise.len() != hidden {
            return Err(shape_error(format!(
                "the model has {hidden} hidden layers, the set noise for {}",
                self.noise.len()
            )));
        }
        for (l, noise) in self.noise.iter().enumerate() {
            let width = model.spec.layer_shape(l).1;
            if noise.len() != rows * width {
                return Err(shape_error(format!(
                    "hidden layer {l} is {width} wide: {rows} rows need {} noise values, got {}",
                    rows * width,
                    noise.len()
                )));
            }
        }
        for (name, value) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(shape_error(format!(
                    "{name} must be finite and non-negative, got {value}"
                )));
            }
        }
        Ok(())
    }
}

/// The scratch tensors before the per-layer ones, in `record`'s order.
const SHARED: usize = 28;

/// `SHARED` tensors, then per hidden layer 4 of its width.
pub fn scratch_shapes(batch: usize, model: &DeviceModel) -> Vec<(&'static str, usize, usize)> {
    let classes = model.spec.widths[model.spec.widths.len() - 1];
    let b = batch;
    let mut shapes = vec![
        ("noising.grad", b, classes),
        ("noising.wide", b, classes),
        ("noising.ones_classes", 1, classes),
        ("noising.ones_row", 1, b),
        ("noising.ones_col", b, 1),
    ];
    for label in [
        "noising.ce",
        "noising.weighted",
        "noising.sq_x",
        "noising.sq_n",
        "noising.row_sums",
    ] {
        shapes.push((label, b, 1));
    }
    for label in [
        "noising.one",
        "noising.harmful_loss",
        "noising.one_plus",
        "noising.log",
        "noising.sum",
        "noising.total",
        "noising.bandwidth",
    ] {
        shapes.push((label, 1, 1));
    }
    for label in [
        "noising.pairs",
        "noising.d_xx",
        "noising.d_nn",
        "noising.d_xn",
        "noising.work",
        "noising.product",
        "noising.k_xx",
        "noising.k_nn",
        "noising.k_xn",
        "noising.g_xx",
        "noising.g_xn",
    ] {
        shapes.push((label, b, b));
    }
    debug_assert_eq!(shapes.len(), SHARED);
    for l in 0..model.layers.len() - 1 {
        let width = model.spec.layer_shape(l).1;
        shapes.push(("noising.term", b, width));
        shapes.push(("noising.spread", b, width));
        shapes.push(("noising.ones_width", 1, width));
        shapes.push(("noising.gradient", b, width));
    }
    shapes
}

/// Records the loss into `ws.loss_sum` (the loss itself: its divisor is 1) and its gradient on
/// the logits into the last layer's `grad_pre`; returns, per hidden layer, the tensor that holds
/// the noise term's gradient on its output, for the backward pass to add.
pub fn record(
    rec: &mut Recording,
    ws: &Workspace,
    alpha: f64,
    beta: f64,
    columns: &[Tensor],
    scratch: &[Tensor],
) -> Result<Vec<(usize, Tensor)>, EngineError> {
    let hidden = ws.layers.len() - 1;
    if columns.len() != 3 + hidden || scratch.len() != SHARED + 4 * hidden {
        return Err(shape_error(format!(
            "RepNoise over {hidden} hidden layers reads {} columns and {} scratch tensors, got {} \
             and {}",
            3 + hidden,
            SHARED + 4 * hidden,
            columns.len(),
            scratch.len()
        )));
    }
    let (labels, harmful_share, utility_share) = (columns[0], columns[1], columns[2]);
    let (shared, per_layer) = scratch.split_at(SHARED);
    let [
        grad,
        wide,
        ones_classes,
        ones_row,
        ones_col,
        ce,
        weighted,
        sq_x,
        sq_n,
        row_sums,
        one,
        harmful_loss,
        one_plus,
        log,
        sum,
        total,
        bandwidth,
        pairs,
        d_xx,
        d_nn,
        d_xn,
        work,
        product,
        k_xx,
        k_nn,
        k_xn,
        g_xx,
        g_xn,
    ] = <[Tensor; SHARED]>::try_from(shared).expect("SHARED tensors");
    let last = &ws.layers[hidden];
    rec.fill(1.0, one)
        .fill(1.0, ones_classes)
        .fill(1.0, ones_row)
        .fill(1.0, ones_col);

    // The cross-entropy terms: E_utility[ce] - alpha ln(1 + E_harmful[ce]).
    rec.softmax_cross_entropy(last.pre(), labels, ce, grad, 1.0)?;
    rec.binary(BinaryOp::Mul, harmful_share, ce, weighted)?;
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, weighted, harmful_loss)?;
    rec.binary(BinaryOp::Add, harmful_loss, one, one_plus)?;
    rec.unary(UnaryOp::Log1p, harmful_loss, log)?;
    rec.binary(BinaryOp::Mul, utility_share, ce, weighted)?;
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, weighted, ws.loss_sum)?;
    rec.axpy(-alpha, log, ws.loss_sum)?;
    // Their gradient on the logits: (softmax - onehot) per row times
    // utility_share - alpha harmful_share / (1 + E_harmful[ce]).
    rec.scale(1.0, utility_share, weighted)?;
    rec.axpy_device(
        DeviceScalar::over(-alpha, one_plus),
        harmful_share,
        weighted,
    )?;
    rec.matmul(weighted, ones_classes, wide, false, false)?;
    rec.binary(BinaryOp::Mul, grad, wide, last.grad_pre())?;

    // The noise term. Pair weights share_i share_j: the mean over harmful pairs.
    rec.matmul(harmful_share, harmful_share, pairs, false, true)?;
    let mut gradients = Vec::with_capacity(hidden);
    for (l, &noise) in columns[3..].iter().enumerate() {
        let x = ws.layers[l].output();
        let [term, spread, ones_width, gradient] =
            <[Tensor; 4]>::try_from(&per_layer[4 * l..4 * l + 4]).expect("4 per layer");
        rec.fill(1.0, ones_width);
        rec.reduce(Reduction::SumOfSquares, ReduceAxis::PerRow, x, sq_x)?;
        rec.reduce(Reduction::SumOfSquares, ReduceAxis::PerRow, noise, sq_n)?;
        let squared_distances = |rec: &mut Recording,
                                 a: Tensor,
                                 sq_a: Tensor,
                                 b: Tensor,
                                 sq_b: Tensor,
                                 out: Tensor|
         -> Result<(), EngineError> {
            // |a_i|^2 + |b_j|^2 - 2 a_i.b_j, clamped at 0 (rounding leaves -eps on the diagonal).
            rec.matmul(sq_a, ones_row, work, false, false)?;
            rec.matmul_scaled(ones_col, sq_b, work, false, true, 1.0, 1.0)?;
            rec.matmul_scaled(a, b, work, false, true, -2.0, 1.0)?;
            rec.activate(Activation::Relu, work, out).map(|_| ())
        };
        squared_distances(rec, x, sq_x, x, sq_x, d_xx)?;
        squared_distances(rec, noise, sq_n, noise, sq_n, d_nn)?;
        squared_distances(rec, x, sq_x, noise, sq_n, d_xn)?;
        // Bandwidth, detached: the pair weights' 1/n^2 make `total` the sum of the squared
        // distances over all (2n)^2 pairs of harmful and noise samples (the XN block counts twice,
        // as XN and NX) / n^2; / 4 more is their mean, and / 4 again the reference's
        // kernel_mul^(kernel_num / 2).
        for (i, d) in [d_xx, d_nn, d_xn].into_iter().enumerate() {
            rec.binary(BinaryOp::Mul, pairs, d, product)?;
            if i == 0 {
                rec.reduce(Reduction::Sum, ReduceAxis::Whole, product, total)?;
            } else {
                rec.reduce(Reduction::Sum, ReduceAxis::Whole, product, sum)?;
                rec.axpy(if i == 1 { 1.0 } else { 2.0 }, sum, total)?;
            }
        }
        rec.scale(1.0 / 16.0, total, bandwidth)?;
        rec.axpy(BANDWIDTH_FLOOR, one, bandwidth)?;
        // Kernel sums K = sum_q exp(-D / (bw 2^q)) and their slopes in D, G = sum_q -2 e / (bw 2^q)
        // (the gradient of exp(-|x - y|^2 / s) in x is -2 exp(..) (x - y) / s).
        for (d, k, g) in [
            (d_xx, k_xx, Some(g_xx)),
            (d_nn, k_nn, None),
            (d_xn, k_xn, Some(g_xn)),
        ] {
            rec.fill(0.0, k);
            if let Some(g) = g {
                rec.fill(0.0, g);
            }
            for q in 0..KERNELS {
                let width = 2f64.powi(q);
                rec.scale_device(DeviceScalar::over(-1.0 / width, bandwidth), d, work)?;
                rec.unary(UnaryOp::Exp, work, product)?;
                rec.axpy(1.0, product, k)?;
                if let Some(g) = g {
                    rec.axpy_device(DeviceScalar::over(-2.0 / width, bandwidth), product, g)?;
                }
            }
        }
        // MMD = sum_ij pairs_ij (K_xx + K_nn - 2 K_xn)_ij, into the loss with beta / H.
        rec.binary(BinaryOp::Add, k_xx, k_nn, work)?;
        rec.axpy(-2.0, k_xn, work)?;
        rec.binary(BinaryOp::Mul, pairs, work, product)?;
        rec.reduce(Reduction::Sum, ReduceAxis::Whole, product, sum)?;
        rec.axpy(beta / hidden as f64, sum, ws.loss_sum)?;
        // Its gradient in X, with P = pairs o G: 2 [rowsum(P_xx - P_xn) o X - P_xx X + P_xn N]
        // (the K_* sums are spent: their tensors hold the P's).
        let (p_xx, p_xn, p_difference) = (work, product, k_xx);
        rec.binary(BinaryOp::Mul, pairs, g_xx, p_xx)?;
        rec.binary(BinaryOp::Mul, pairs, g_xn, p_xn)?;
        rec.binary(BinaryOp::Sub, p_xx, p_xn, p_difference)?;
        rec.reduce(Reduction::Sum, ReduceAxis::PerRow, p_difference, row_sums)?;
        rec.matmul(row_sums, ones_width, spread, false, false)?;
        rec.binary(BinaryOp::Mul, spread, x, term)?;
        rec.matmul_scaled(p_xx, x, term, false, false, -1.0, 1.0)?;
        rec.matmul_scaled(p_xn, noise, term, false, false, 1.0, 1.0)?;
        rec.scale(2.0 * beta / hidden as f64, term, gradient)?;
        gradients.push((l, gradient));
    }
    Ok(gradients)
}
