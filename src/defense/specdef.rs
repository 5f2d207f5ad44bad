//! SpecDef (spectral deformation), one shot, no training. For each defended weight W (m x n):
//!   W = U S V^T (thin SVD in f64),  S~ = T S with the top-k singular values times alpha,
//!   W~ = U S~ V^T,  C = U S S~^-1 U^T = I + (1/alpha - 1) U_k U_k^T  (m x m),
//! so C W~ = W: the function is unchanged in exact arithmetic, sigma_1(W~) = alpha sigma_1(W).
//! The ablation keeps W~ and drops C.

use super::LayerSelection;
use crate::engine::{Engine, EngineError};
use crate::linalg::{Svd, faer_svd};
use crate::model::{HostModel, Matrix, predict};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DefenseError {
    #[error("defence: {0}")]
    Config(String),
    #[error("defence: layer {0} is already defended")]
    AlreadyDefended(usize),
    #[error("defence: the SVD of layer {layer} failed: {message}")]
    Svd { layer: usize, message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecDef {
    pub alpha: f64,
    /// Singular values scaled per layer (clamped to the layer's rank).
    pub k: usize,
    pub layers: LayerSelection,
    /// false: the ablation that scales singular values without the compensation layer.
    #[serde(default = "yes")]
    pub compensate: bool,
}

fn yes() -> bool {
    true
}

impl SpecDef {
    pub fn validate(&self) -> Result<(), DefenseError> {
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(DefenseError::Config(format!(
                "alpha must be a positive number, got {}",
                self.alpha
            )));
        }
        if self.k == 0 {
            return Err(DefenseError::Config("k must be at least 1".to_string()));
        }
        Ok(())
    }

    /// The defended copy of `model`, with the SVD in f64 on the host (faer).
    pub fn apply(&self, model: &HostModel, seed: u64) -> Result<HostModel, DefenseError> {
        self.apply_with(model, seed, &mut |w| faer_svd(w))
    }

    /// The defended copy of `model`, with the SVD from `svd` (for example `jacobi_svd` on the
    /// GPU engine, where the whole run stays on the GPU).
    pub fn apply_with(
        &self,
        model: &HostModel,
        seed: u64,
        svd: &mut dyn FnMut(&Matrix) -> Result<Svd, String>,
    ) -> Result<HostModel, DefenseError> {
        self.validate()?;
        let chosen = self
            .layers
            .resolve(model.layers.len(), seed)
            .map_err(DefenseError::Config)?;
        let mut defended = model.clone();
        for i in chosen {
            let layer = &mut defended.layers[i];
            if layer.compensation.is_some() {
                return Err(DefenseError::AlreadyDefended(i));
            }
            let decomposition =
                svd(&layer.weight).map_err(|message| DefenseError::Svd { layer: i, message })?;
            let (weight, compensation) = deform(&decomposition, self.alpha, self.k);
            layer.weight = weight;
            layer.compensation = self.compensate.then_some(compensation);
        }
        Ok(defended)
    }
}

/// (W~, C) for one weight from its SVD (singular values largest first).
fn deform(svd: &Svd, alpha: f64, k: usize) -> (Matrix, Matrix) {
    let (m, n, rank) = (svd.u.rows, svd.v.rows, svd.s.len());
    let top = k.min(rank);
    let u = |r: usize, j: usize| svd.u.values[r * rank + j];
    let v = |c: usize, j: usize| svd.v.values[c * rank + j];
    let scale = |j: usize| if j < top { alpha } else { 1.0 };
    let tilde = (0..m * n)
        .map(|idx| {
            let (r, c) = (idx / n, idx % n);
            (0..rank)
                .map(|j| u(r, j) * svd.s[j] * scale(j) * v(c, j))
                .sum()
        })
        .collect();
    let compensation = (0..m * m)
        .map(|idx| {
            let (r, c) = (idx / m, idx % m);
            let identity = if r == c { 1.0 } else { 0.0 };
            let top_part: f64 = (0..top).map(|j| u(r, j) * u(c, j)).sum();
            identity + (1.0 / alpha - 1.0) * top_part
        })
        .collect();
    (Matrix::new(m, n, tilde), Matrix::new(m, m, compensation))
}

/// How far a model's outputs move from reference outputs on `inputs` (rows x features):
/// per row `||z - z_ref|| / ||z_ref||`; returns (max, mean) over rows.
pub fn function_preservation(
    engine: &mut dyn Engine,
    model: &HostModel,
    inputs: &[f64],
    reference: &[f64],
) -> Result<(f64, f64), EngineError> {
    let outputs = model.spec.widths[model.spec.widths.len() - 1];
    Ok(relative_errors(
        &predict(engine, model, inputs)?,
        reference,
        outputs,
    ))
}

/// Per row `||z - z_ref|| / ||z_ref||` of row-major outputs `width` wide: (max, mean). NaN
/// outputs (a broken model) make the max NaN rather than vanish in it.
pub fn relative_errors(outputs: &[f64], reference: &[f64], width: usize) -> (f64, f64) {
    let classes = width.max(1);
    let errors: Vec<f64> = outputs
        .chunks(classes)
        .zip(reference.chunks(classes))
        .map(|(z, r)| {
            let diff: f64 = z.iter().zip(r).map(|(a, b)| (a - b).powi(2)).sum();
            let norm: f64 = r.iter().map(|b| b * b).sum();
            (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
        })
        .collect();
    let max = errors.iter().copied().fold(0.0, |a: f64, b| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    });
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    (max, mean)
}
