//! Layer normalisation (Ba, Kiros and Hinton 2016), as BERT-style encoders apply it to each
//! token's vector: per row, `y = gamma (x - mean) / sqrt(var + eps) + beta`, with the biased
//! variance (the mean of the squared deviations). It is recorded from primitive ops (products
//! with a ones vector for the means and the broadcasts, elementwise arithmetic, `rsqrt`), so
//! every engine runs it, and forward- and reverse-mode differentiation give its tangent, its
//! gradient and its Hessian-vector products with no rule of its own. A fused kernel can replace
//! the run later, with this recording as its CPU twin.

use crate::engine::{Allocation, BinaryOp, Engine, EngineError, Recording, Tensor, UnaryOp};

/// The intermediates of one layer normalisation of `rows x cols` inputs: each use in a
/// recording needs its own (reverse mode reads them after the forward pass).
pub struct LayerNorm {
    eps: f64,
    ones_col: Tensor,
    ones_row: Tensor,
    ones_rows: Tensor,
    mean: Tensor,
    /// Each row's value spread along the row: the mean, 1 / deviation, gamma, beta.
    wide_mean: Tensor,
    wide_inverse_deviation: Tensor,
    wide_gamma: Tensor,
    wide_beta: Tensor,
    centered: Tensor,
    squared: Tensor,
    variance: Tensor,
    inverse_deviation: Tensor,
    normalized: Tensor,
    scaled: Tensor,
    _owner: Allocation,
}

impl LayerNorm {
    /// The intermediates for `rows x cols` inputs; `eps` keeps the deviation above zero (BERT
    /// and all-MiniLM-L6-v2: 1e-12).
    pub fn alloc(
        engine: &mut dyn Engine,
        rows: usize,
        cols: usize,
        eps: f64,
    ) -> Result<Self, EngineError> {
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(EngineError::Shape {
                op: "layer_norm",
                message: format!("eps must be positive and finite, got {eps}"),
            });
        }
        let mut owner = Allocation::new(engine);
        let mut ones = |label, r, c| owner.tensor_from(engine, label, r, c, &vec![1.0; r * c]);
        let (ones_col, ones_row, ones_rows) = (
            ones("layer_norm.ones_col", cols, 1)?,
            ones("layer_norm.ones_row", 1, cols)?,
            ones("layer_norm.ones_rows", rows, 1)?,
        );
        let mut alloc = |label, r, c| owner.alloc(engine, label, r, c);
        Ok(Self {
            eps,
            ones_col,
            ones_row,
            ones_rows,
            mean: alloc("layer_norm.mean", rows, 1)?,
            wide_mean: alloc("layer_norm.wide_mean", rows, cols)?,
            wide_inverse_deviation: alloc("layer_norm.wide_inverse_deviation", rows, cols)?,
            wide_gamma: alloc("layer_norm.wide_gamma", rows, cols)?,
            wide_beta: alloc("layer_norm.wide_beta", rows, cols)?,
            centered: alloc("layer_norm.centered", rows, cols)?,
            squared: alloc("layer_norm.squared", rows, cols)?,
            variance: alloc("layer_norm.variance", rows, 1)?,
            inverse_deviation: alloc("layer_norm.inverse_deviation", rows, 1)?,
            normalized: alloc("layer_norm.normalized", rows, cols)?,
            scaled: alloc("layer_norm.scaled", rows, cols)?,
            _owner: owner,
        })
    }

    /// Records `y = gamma (x - mean) / sqrt(var + eps) + beta` per row of `x`, with `gamma`
    /// and `beta` `1 x cols`.
    pub fn record(
        &self,
        rec: &mut Recording,
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        y: Tensor,
    ) -> Result<(), EngineError> {
        let cols = self.ones_row.cols();
        if x.shape() != self.centered.shape()
            || gamma.shape() != (1, cols)
            || beta.shape() != (1, cols)
        {
            return Err(EngineError::Shape {
                op: "layer_norm",
                message: format!(
                    "x must be {} and gamma and beta 1x{cols}, got x {x}, gamma {gamma}, \
                     beta {beta}",
                    self.centered
                ),
            });
        }
        let per_col = 1.0 / cols as f64;
        // The mean of each row, subtracted from it.
        rec.matmul_scaled(x, self.ones_col, self.mean, false, false, per_col, 0.0)?;
        rec.matmul(self.mean, self.ones_row, self.wide_mean, false, false)?;
        rec.binary(BinaryOp::Sub, x, self.wide_mean, self.centered)?;
        // 1 / sqrt(variance + eps) of each row, applied to it.
        rec.binary(BinaryOp::Mul, self.centered, self.centered, self.squared)?;
        rec.matmul_scaled(
            self.squared,
            self.ones_col,
            self.variance,
            false,
            false,
            per_col,
            0.0,
        )?;
        rec.axpy(self.eps, self.ones_rows, self.variance)?;
        rec.unary(UnaryOp::Rsqrt, self.variance, self.inverse_deviation)?;
        let wide_deviation = self.wide_inverse_deviation;
        rec.matmul(
            self.inverse_deviation,
            self.ones_row,
            wide_deviation,
            false,
            false,
        )?;
        rec.binary(
            BinaryOp::Mul,
            self.centered,
            wide_deviation,
            self.normalized,
        )?;
        // gamma and beta, the same for every row.
        rec.matmul(self.ones_rows, gamma, self.wide_gamma, false, false)?;
        rec.binary(BinaryOp::Mul, self.normalized, self.wide_gamma, self.scaled)?;
        rec.matmul(self.ones_rows, beta, self.wide_beta, false, false)?;
        rec.binary(BinaryOp::Add, self.scaled, self.wide_beta, y)?;
        Ok(())
    }
}
