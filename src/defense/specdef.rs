//! SpecDef (spectral deformation), one shot, no training: a function from a host model to a
//! host model. For each defended weight W (m x n):
//!   W = U S V^T (thin SVD in f64),  S~ = T S with the top-k singular values times alpha,
//!   W~ = U S~ V^T,  and the compensation C (m x m) in one of two forms:
//!     full: C = I + (1/alpha - 1) U_k U_k^T          (1 on everything outside the top k)
//!     thin: C = U S S~^-1 U^T with the thin U (m x r) (0 outside W's column space when m > n)
//! so C W~ = W in both: the function is unchanged in exact arithmetic, sigma_1(W~) = alpha
//! sigma_1(W). The forms coincide for square and wide W and differ on a tall one once C or W~
//! trains. The layer's chain becomes [weight (W~), compensation (C)]; the ablation keeps W~
//! and drops C.

use super::LayerSelection;
use crate::engine::{Engine, EngineError};
use crate::linalg::{Svd, faer_svd};
use crate::model::{FactorOf, FactorRole, HostLayer, HostModel, Matrix, predict};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DefenseError {
    #[error("defence: {0}")]
    Config(String),
    /// A defence trained on the engine failed there.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("defence: layer {0} is already defended")]
    AlreadyDefended(usize),
    #[error(
        "defence: layer {layer} is {form}, SpecDef rewrites plain layers (one weight, no LoRA)"
    )]
    NotPlain { layer: usize, form: String },
    #[error("defence: the SVD of layer {layer} failed: {message}")]
    Svd { layer: usize, message: String },
    #[error(
        "defence: alpha {alpha:e} is beyond what f64 can compensate: on layer {layer}, C W~ differs \
         from W by {error:.1e} of W's largest entry (the bound is {bound:.0e}); use a smaller alpha"
    )]
    Precision {
        layer: usize,
        alpha: f64,
        error: f64,
        bound: f64,
    },
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
    /// Which compensation matrix (PAPER.md section 3); `full` unless a scenario says otherwise.
    #[serde(default)]
    pub compensation: CompensationForm,
}

fn yes() -> bool {
    true
}

/// The two compensation forms of PAPER.md section 3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompensationForm {
    /// `C = I + (1/alpha - 1) U_k U_k^T`: identity outside the top-k directions.
    #[default]
    Full,
    /// `C = U S S~^-1 U^T` with the thin SVD's U, the literal formula (and glm-locking's):
    /// rank min(m, n), so it annihilates what leaves W's column space on a tall layer.
    Thin,
}

impl CompensationForm {
    pub fn name(self) -> &'static str {
        match self {
            CompensationForm::Full => "full",
            CompensationForm::Thin => "thin",
        }
    }
}
impl SpecDef {
    /// `specdef`, `specdef-thin` (the thin compensation form) or `specdef-ablation` (no C):
    /// the defence's name in records, tables and plots.
    pub fn kind_name(&self) -> &'static str {
        match (self.compensate, self.compensation) {
            (false, _) => "specdef-ablation",
            (true, CompensationForm::Full) => "specdef",
            (true, CompensationForm::Thin) => "specdef-thin",
        }
    }

    /// `specdef a=1e4`: the defence with its alpha.
    pub fn label(&self) -> String {
        format!("{} a={:.0e}", self.kind_name(), self.alpha)
    }

    pub fn validate(&self) -> Result<(), DefenseError> {
        // alpha scales the top singular values up; below 1 it would shrink them, and its
        // compensation 1/alpha overflows long before alpha reaches f64's smallest numbers.
        if !(self.alpha.is_finite() && self.alpha >= 1.0) {
            return Err(DefenseError::Config(format!(
                "alpha must be a number of at least 1 (it multiplies the top singular values), got {}",
                self.alpha
            )));
        }
        if self.k == 0 {
            return Err(DefenseError::Config("k must be at least 1".to_string()));
        }
        Ok(())
    }

    /// The singular values scaled in each defended layer of a model of `spec`, as records show
    /// them (`0:25 1:25 2:10`): k, or the layer's rank where that is smaller.
    pub fn k_per_layer(&self, spec: &crate::model::ModelSpec, seed: u64) -> String {
        let layers = (self.layers)
            .resolve(spec.layer_count(), seed)
            .unwrap_or_default();
        let kept: Vec<String> = (layers.iter())
            .map(|&i| {
                let rank = spec.widths[i].min(spec.widths[i + 1]);
                format!("{i}:{}", self.k.min(rank))
            })
            .collect();
        kept.join(" ")
    }

    /// The defended copy of `model`, with the SVD in f64 on the host (faer). Refused where
    /// `C W~` is further from `W` in f64 than `F64_COMPENSATION_BOUND` (an alpha f64 cannot
    /// compensate).
    pub fn apply(&self, model: &HostModel, seed: u64) -> Result<HostModel, DefenseError> {
        self.defend(model, seed, &mut |w| faer_svd(w), true)
    }

    /// The defended copy of `model`, with the SVD from `svd` (for example `jacobi_svd` on the
    /// GPU engine, where the whole run stays on the GPU). An f32 SVD's error is amplified by
    /// alpha into `C W~ - W`; that is a measured outcome here (the function error each run
    /// records), not a reason to refuse.
    pub fn apply_with(
        &self,
        model: &HostModel,
        seed: u64,
        svd: &mut dyn FnMut(&Matrix) -> Result<Svd, String>,
    ) -> Result<HostModel, DefenseError> {
        self.defend(model, seed, svd, false)
    }

    fn defend(
        &self,
        model: &HostModel,
        seed: u64,
        svd: &mut dyn FnMut(&Matrix) -> Result<Svd, String>,
        check_f64_compensation: bool,
    ) -> Result<HostModel, DefenseError> {
        let mut defended = model.clone();
        self.defend_layers(&mut defended.layers, seed, svd, check_f64_compensation)?;
        Ok(defended)
    }

    /// Defends the chosen layers of any list of layers in place, with the SVD in f64 on the
    /// host: an MLP's, or the linear maps of a transformer (`encoder::EncoderHost`), which are
    /// the same layer chains. Layer indices in errors and in `layers` are positions in `layers`.
    pub fn apply_to_layers(&self, layers: &mut [HostLayer], seed: u64) -> Result<(), DefenseError> {
        self.defend_layers(layers, seed, &mut |w| faer_svd(w), true)
    }

    fn defend_layers(
        &self,
        layers: &mut [HostLayer],
        seed: u64,
        svd: &mut dyn FnMut(&Matrix) -> Result<Svd, String>,
        check_f64_compensation: bool,
    ) -> Result<(), DefenseError> {
        self.validate()?;
        let chosen = self
            .layers
            .resolve(layers.len(), seed)
            .map_err(DefenseError::Config)?;
        for i in chosen {
            let layer = &mut layers[i];
            if layer.factor(FactorRole::Compensation).is_some() {
                return Err(DefenseError::AlreadyDefended(i));
            }
            if !layer.is_plain() {
                return Err(DefenseError::NotPlain {
                    layer: i,
                    form: layer.form(),
                });
            }
            let weight = &layer.factors[0].matrix;
            let bias = &layer.bias.values;
            if weight.values.iter().chain(bias).any(|v| !v.is_finite()) {
                return Err(DefenseError::Svd {
                    layer: i,
                    message:
                        "the weight or bias has non-finite entries (a diverged or corrupt model)"
                            .to_string(),
                });
            }
            let decomposition =
                svd(weight).map_err(|message| DefenseError::Svd { layer: i, message })?;
            let (tilde, compensation) =
                deform(&decomposition, self.alpha, self.k, self.compensation);
            if self.compensate && check_f64_compensation {
                let error = compensation_error(weight, &tilde, &compensation);
                // NaN (an overflow) is refused too.
                if error.is_nan() || error > F64_COMPENSATION_BOUND {
                    return Err(DefenseError::Precision {
                        layer: i,
                        alpha: self.alpha,
                        error,
                        bound: F64_COMPENSATION_BOUND,
                    });
                }
            }
            let factor = FactorOf::plain;
            layer.factors = vec![factor(FactorRole::Weight, tilde)];
            if self.compensate {
                layer
                    .factors
                    .push(factor(FactorRole::Compensation, compensation));
            }
        }
        Ok(())
    }
}

/// How far `C W~` may be from `W` in f64, relative to W's largest entry, before the defence is
/// refused: f64 leaves about alpha * 1e-16 * sqrt(width) of it, so alphas up to about 1e11 pass
/// (the paper's 1e9 included) and alphas whose compensation undoes nothing (1e38, 1e300) do not.
/// The function error the defence leaves on each engine is measured and recorded per run.
pub const F64_COMPENSATION_BOUND: f64 = 1e-3;

/// max |C W~ - W| / max |W|, computed in f64.
fn compensation_error(weight: &Matrix, tilde: &Matrix, compensation: &Matrix) -> f64 {
    let product = compensation.matmul(tilde);
    let scale = weight.values.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let worst = (product.values.iter().zip(&weight.values))
        .map(|(p, w)| (p - w).abs())
        .fold(0.0f64, |a, d| {
            if d.is_nan() || a.is_nan() {
                f64::NAN
            } else {
                a.max(d)
            }
        });
    worst / scale.max(f64::MIN_POSITIVE)
}

/// (W~, C) for one weight from its SVD (singular values largest first).
fn deform(svd: &Svd, alpha: f64, k: usize, form: CompensationForm) -> (Matrix, Matrix) {
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
            match form {
                CompensationForm::Full => {
                    let identity = if r == c { 1.0 } else { 0.0 };
                    let top_part: f64 = (0..top).map(|j| u(r, j) * u(c, j)).sum();
                    identity + (1.0 / alpha - 1.0) * top_part
                }
                CompensationForm::Thin => (0..rank).map(|j| u(r, j) * u(c, j) / scale(j)).sum(),
            }
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
