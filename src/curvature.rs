//! What `specdef curvature` measures: the loss Hessian of a model on one batch, through
//! Hessian-vector products (`model::spectrum`). sigma_1 by power iteration, the extreme
//! eigenvalues with their signs by Lanczos, the trace by Hutchinson; which blocks (pairs of
//! parameter tensors) carry the curvature; a lower bound on sigma_1 from those blocks; the
//! layers' spectra that PAPER.md section 2's bound scales with; and the step sizes they predict.

use crate::compensation_bound::{CompensationBound, compensation_bounds as compensation_bounds_of};
use crate::data::Dataset;
use crate::engine::{Engine, EngineError};
use crate::linalg::faer_svd;
use crate::model::spectrum::{
    LanczosSettings, PowerSettings, SpectrumError, TraceSettings, hutchinson_trace, lanczos,
    power_iteration, preconditioned_power_iteration, rademacher_probes,
};
use crate::model::{
    DeviceModel, FactorRole, HessianVectorProduct, HostModel, Loss, ParamRole, Trainable, Workspace,
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CurvatureError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Spectrum(#[from] SpectrumError),
    #[error("the batch has {found} input features; the model takes {expected}")]
    Features { expected: usize, found: usize },
    #[error("label {label} (row {row}) is not one of the model's {classes} classes")]
    Label {
        row: usize,
        label: usize,
        classes: usize,
    },
    #[error("the batch is empty")]
    Empty,
    #[error("nothing to measure: no parameter of the model is trainable")]
    NothingTrainable,
    #[error("layer {layer}: {message}")]
    Svd { layer: usize, message: String },
    #[error(
        "Adam at lr {lr} diverged in {steps} steps (loss {loss}): there is no sharpness to \
         measure at a non-finite state; use a smaller learning rate"
    )]
    AdamDiverged { lr: f64, steps: usize, loss: f64 },
}

/// The most full-batch Adam steps before the preconditioned sharpness (one recording holds them).
pub const MAX_ADAM_STEPS: usize = 100_000;

/// How hard to look.
#[derive(Clone, Debug)]
pub struct CurvatureSettings {
    /// The parameters the Hessian is over (the attacker's trainable set).
    pub trainable: Trainable,
    pub power: PowerSettings,
    pub lanczos: LanczosSettings,
    pub trace: TraceSettings,
    /// Rademacher probes per block column for the blocks' Frobenius norms.
    pub block_probes: usize,
    /// Power iterations for sigma_1 of each of the heaviest blocks.
    pub block_iterations: usize,
    /// How many of the heaviest blocks get their sigma_1 measured.
    pub top_blocks: usize,
}

impl Default for CurvatureSettings {
    fn default() -> Self {
        Self {
            trainable: Trainable::default(),
            power: PowerSettings::default(),
            lanczos: LanczosSettings::default(),
            trace: TraceSettings::default(),
            block_probes: 8,
            block_iterations: 30,
            top_blocks: 3,
        }
    }
}

/// One block `H_ij` (rows: parameter tensor i, columns: tensor j) of the Hessian.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Block {
    pub rows: String,
    pub cols: String,
    /// Hutchinson's estimate of ||H_ij||_F (E ||H_ij z||^2 = ||H_ij||_F^2 for Rademacher z).
    pub frobenius: f64,
    /// The share of ||H||_F^2 in this block and its mirror H_ji (estimated the same way).
    pub share: f64,
    /// sigma_1(H_ij) by power iteration on H_ij^T H_ij, for the heaviest blocks only.
    pub sigma_1: Option<f64>,
}

/// The largest singular value of one factor of a layer (the `B` of the section-2 bound).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FactorSpectrum {
    pub layer: usize,
    pub role: String,
    pub sigma_1: f64,
    /// sigma_1 of the layer's effective weight (the product of its factors), for reference.
    pub effective_sigma_1: f64,
}

/// Everything `specdef curvature` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CurvatureReport {
    pub engine: String,
    pub samples: usize,
    pub parameters: usize,
    /// sigma_1(H) = max |eigenvalue| by power iteration.
    pub sigma_1: f64,
    pub power_iterations: usize,
    pub power_converged: bool,
    /// Lanczos's largest Ritz values, largest first, and smallest, smallest first (signs kept).
    pub top_eigenvalues: Vec<f64>,
    pub bottom_eigenvalues: Vec<f64>,
    pub lanczos_steps: usize,
    pub trace: f64,
    pub trace_std_error: f64,
    /// The blocks, each unordered pair once (H_ij with i <= j), heaviest first.
    pub blocks: Vec<Block>,
    /// max sigma_1(H_ij) over the measured blocks: a lower bound on sigma_1(H) (a block of a
    /// matrix never has a larger norm than the matrix), the first link of PAPER.md section 2.
    pub block_lower_bound: f64,
    pub factor_spectra: Vec<FactorSpectrum>,
    /// The closed-form lower bound from each SpecDef layer's spectrum and its inputs' alignment
    /// (`compensation_bound.rs`), for the layers whose compensation trains.
    pub compensation_bounds: Vec<CompensationBound>,
    /// Layers whose compensation trains but whose bound is not evaluated, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compensation_bounds_skipped: Vec<String>,
    /// 2 / sigma_1: gradient descent on the local quadratic diverges at any larger step.
    pub predicted_stable_sgd_lr: f64,
    /// Adam's preconditioned sharpness, where asked for (`specdef curvature --adam-lr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adam: Option<AdamSharpness>,
}

/// Measures the Hessian of the mean cross-entropy of `model` on `batch`.
pub fn measure(
    engine: &mut dyn Engine,
    model: &HostModel,
    batch: &Dataset,
    settings: &CurvatureSettings,
) -> Result<CurvatureReport, CurvatureError> {
    check_batch(model, batch)?;
    let device = DeviceModel::upload(engine, model)?;
    let ws = Workspace::alloc(engine, &device, batch.len(), 1)?;
    engine.upload(ws.inputs, &batch.inputs)?;
    engine.upload(ws.targets, &batch.label_values())?;
    let product = HessianVectorProduct::prepare(
        engine,
        &device,
        &ws,
        Loss::CrossEntropy,
        settings.trainable,
    )?;
    if product.slots().is_empty() {
        return Err(CurvatureError::NothingTrainable);
    }
    let power = power_iteration(engine, &product, &settings.power)?;
    let lanczos = lanczos(engine, &product, &settings.lanczos)?;
    let trace = hutchinson_trace(engine, &product, &settings.trace)?;
    let blocks = block_norms(engine, &product, settings)?;
    let block_lower_bound = blocks.iter().filter_map(|b| b.sigma_1).fold(0.0, f64::max);
    let sigma_1 = power.sigma_1();
    let (mut compensation_bounds, mut compensation_bounds_skipped) = (Vec::new(), Vec::new());
    let compensation = ParamRole::Factor(FactorRole::Compensation);
    for (layer, bound) in compensation_bounds_of(model, batch) {
        if model.layers[layer].trains(compensation, settings.trainable) {
            match bound {
                Ok(bound) => compensation_bounds.push(bound),
                Err(why) => compensation_bounds_skipped.push(why),
            }
        }
    }
    Ok(CurvatureReport {
        engine: engine.info().to_string(),
        samples: batch.len(),
        parameters: product.slots().iter().map(|s| s.1.len()).sum(),
        sigma_1,
        power_iterations: power.iterations,
        power_converged: power.converged,
        top_eigenvalues: lanczos.largest(3),
        bottom_eigenvalues: lanczos.smallest(3),
        lanczos_steps: lanczos.steps,
        trace: trace.mean,
        trace_std_error: trace.std_error,
        blocks,
        block_lower_bound,
        factor_spectra: factor_spectra(model)?,
        compensation_bounds,
        compensation_bounds_skipped,
        predicted_stable_sgd_lr: 2.0 / sigma_1,
        adam: None,
    })
}

fn check_batch(model: &HostModel, batch: &Dataset) -> Result<(), CurvatureError> {
    if batch.is_empty() {
        return Err(CurvatureError::Empty);
    }
    let widths = &model.spec.widths;
    let (inputs, classes) = (widths[0], widths[widths.len() - 1]);
    if batch.features != inputs {
        return Err(CurvatureError::Features {
            expected: inputs,
            found: batch.features,
        });
    }
    if let Some((row, &label)) = batch
        .labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l >= classes)
    {
        return Err(CurvatureError::Label {
            row,
            label,
            classes,
        });
    }
    Ok(())
}

/// The blocks' Frobenius norms from probes on one block column at a time, then sigma_1 of the
/// heaviest by power iteration on `H_ij^T H_ij` (two masked products per iteration, each read
/// back: a handful of blocks, not the inner loop of anything).
fn block_norms(
    engine: &mut dyn Engine,
    product: &HessianVectorProduct,
    settings: &CurvatureSettings,
) -> Result<Vec<Block>, CurvatureError> {
    let slots = product.slots();
    let lens: Vec<usize> = slots.iter().map(|s| s.1.len()).collect();
    let masked = |j: usize, values: Vec<f64>| -> Vec<Vec<f64>> {
        lens.iter()
            .enumerate()
            .map(|(b, &len)| {
                if b == j {
                    values.clone()
                } else {
                    vec![0.0; len]
                }
            })
            .collect()
    };
    let probes = settings.block_probes.max(1);
    let mut squared = vec![vec![0.0; slots.len()]; slots.len()];
    for (j, &len) in lens.iter().enumerate() {
        let seed = settings.trace.seed ^ (0x9e37_79b9 * (j as u64 + 1));
        for z in rademacher_probes(seed, probes, len) {
            let hz = product.apply(engine, &masked(j, z))?;
            for (i, block) in hz.iter().enumerate() {
                squared[i][j] += block.iter().map(|x| x * x).sum::<f64>() / probes as f64;
            }
        }
    }
    // H is symmetric, so H_ji = H_ij^T: each unordered pair once, both estimates averaged.
    let total: f64 = squared.iter().flatten().sum();
    let mut pairs: Vec<(usize, usize, f64, f64)> = (0..slots.len())
        .flat_map(|i| (i..slots.len()).map(move |j| (i, j)))
        .map(|(i, j)| {
            let (mean, both) = if i == j {
                (squared[i][i], squared[i][i])
            } else {
                let sum = squared[i][j] + squared[j][i];
                (sum / 2.0, sum)
            };
            (i, j, mean, both)
        })
        .collect();
    pairs.sort_by(|a, b| b.3.total_cmp(&a.3));
    let mut measured = Vec::with_capacity(pairs.len());
    for (rank, &(i, j, mean, both)) in pairs.iter().enumerate() {
        let sigma_1 = if rank < settings.top_blocks {
            Some(block_sigma_1(engine, product, &lens, i, j, settings)?)
        } else {
            None
        };
        measured.push(Block {
            rows: slots[i].0.to_string(),
            cols: slots[j].0.to_string(),
            frobenius: mean.sqrt(),
            share: if total > 0.0 { both / total } else { 0.0 },
            sigma_1,
        });
    }
    Ok(measured)
}

/// sigma_1(H_ij): power iteration on `H_ij^T H_ij` from a seeded vector on block j.
fn block_sigma_1(
    engine: &mut dyn Engine,
    product: &HessianVectorProduct,
    lens: &[usize],
    i: usize,
    j: usize,
    settings: &CurvatureSettings,
) -> Result<f64, CurvatureError> {
    let embed = |block: usize, values: &[f64]| -> Vec<Vec<f64>> {
        lens.iter()
            .enumerate()
            .map(|(b, &len)| {
                if b == block {
                    values.to_vec()
                } else {
                    vec![0.0; len]
                }
            })
            .collect()
    };
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut v = rademacher_probes(settings.power.seed ^ 0x5bd1_e995, 1, lens[j])
        .next()
        .expect("one probe");
    let mut sigma = 0.0;
    for _ in 0..settings.block_iterations.max(1) {
        let scale = norm(&v);
        if scale == 0.0 {
            return Ok(0.0);
        }
        v.iter_mut().for_each(|x| *x /= scale);
        let u = product.apply(engine, &embed(j, &v))?.swap_remove(i);
        sigma = norm(&u);
        v = product.apply(engine, &embed(i, &u))?.swap_remove(j);
    }
    Ok(sigma)
}

/// sigma_1 of every factor of every layer, and of each layer's effective weight, in f64.
pub fn factor_spectra(model: &HostModel) -> Result<Vec<FactorSpectrum>, CurvatureError> {
    let top = |layer: usize, m: &crate::linalg::Matrix| {
        faer_svd(m)
            .map(|svd| svd.s.first().copied().unwrap_or(0.0))
            .map_err(|message| CurvatureError::Svd { layer, message })
    };
    let mut spectra = Vec::new();
    for (layer, host) in model.layers.iter().enumerate() {
        let effective_sigma_1 = top(layer, &host.effective_weight())?;
        for factor in &host.factors {
            spectra.push(FactorSpectrum {
                layer,
                role: factor.role.name(),
                sigma_1: top(layer, &factor.matrix)?,
                effective_sigma_1,
            });
        }
    }
    Ok(spectra)
}

/// sigma_1 of one defended model, with the compensation trainable and frozen.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SigmaPoint {
    pub alpha: f64,
    pub c_trainable: f64,
    pub c_frozen: f64,
    /// The block lower bound with C trainable.
    pub block_lower_bound: f64,
    /// The closed-form bound (`compensation_bound.rs`): the largest over the layers, C
    /// trainable.
    pub closed_form_bound: f64,
    /// The largest sigma_1 of the layers' W~ (scaled by alpha): the B of section 2's bound.
    pub weight_sigma_1: f64,
}

/// Least-squares slopes of log sigma_1 against log alpha.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SigmaSlopes {
    pub c_trainable: f64,
    pub c_frozen: f64,
    pub weight_sigma_1: f64,
    /// The smallest alpha fitted (below it the undefended curvature dominates).
    pub from_alpha: f64,
}

/// Fits the slopes over the points with alpha >= 10 (all points if fewer than two are).
pub fn sigma_slopes(points: &[SigmaPoint]) -> SigmaSlopes {
    let fitted: Vec<&SigmaPoint> = match points.iter().filter(|p| p.alpha >= 10.0).count() {
        n if n >= 2 => points.iter().filter(|p| p.alpha >= 10.0).collect(),
        _ => points.iter().collect(),
    };
    let slope = |value: &dyn Fn(&SigmaPoint) -> f64| {
        let xy: Vec<(f64, f64)> = fitted
            .iter()
            .map(|p| (p.alpha.ln(), value(p).ln()))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let n = xy.len() as f64;
        let (mx, my) = (
            xy.iter().map(|p| p.0).sum::<f64>() / n,
            xy.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxy: f64 = xy.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xy.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        sxy / sxx
    };
    SigmaSlopes {
        c_trainable: slope(&|p| p.c_trainable),
        c_frozen: slope(&|p| p.c_frozen),
        weight_sigma_1: slope(&|p| p.weight_sigma_1),
        from_alpha: fitted.iter().map(|p| p.alpha).fold(f64::INFINITY, f64::min),
    }
}

/// Adam's preconditioned sharpness after a run of full-batch Adam on the batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdamSharpness {
    pub lr: f64,
    pub steps: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub loss_before: f64,
    pub loss_after: f64,
    /// The largest |eigenvalue| of P^-1 H at the state reached, with Adam's preconditioner
    /// P = (1 - beta1^t) diag(sqrt(v_t / (1 - beta2^t)) + eps) (Cohen et al. 2022's definition).
    pub preconditioned_sharpness: f64,
    pub power_converged: bool,
    /// (2 + 2 beta1) / ((1 - beta1) lr): where Cohen et al. 2022 report it settles (38 / lr for
    /// beta1 = 0.9).
    pub edge_of_stability: f64,
}

/// The Adam run before the preconditioned sharpness is measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamRun {
    pub lr: f64,
    pub steps: usize,
    pub hyper: crate::training::OptimizerHyper,
}

/// Trains a copy of `model` with full-batch Adam on `batch` for `steps` steps at `lr` (one
/// submission, the loss read before and after), then measures lambda_max(P^-1 H) there by
/// preconditioned power iteration.
pub fn adam_sharpness(
    engine: &mut dyn Engine,
    model: &HostModel,
    batch: &Dataset,
    trainable: Trainable,
    run: &AdamRun,
    power: &PowerSettings,
) -> Result<AdamSharpness, CurvatureError> {
    let AdamRun { lr, steps, hyper } = *run;
    use crate::engine::{AdamHyper, Allocation, Recording};
    use crate::model::{Gradients, graph};
    check_batch(model, batch)?;
    let device = DeviceModel::upload(engine, model)?;
    let ws = Workspace::alloc(engine, &device, batch.len(), 1)?;
    engine.upload(ws.inputs, &batch.inputs)?;
    engine.upload(ws.targets, &batch.label_values())?;
    let grads = Gradients::alloc(engine, &device)?;
    let pairs = grads.trainable_pairs(&device, trainable);
    if pairs.is_empty() {
        return Err(CurvatureError::NothingTrainable);
    }
    let mut moments = Allocation::new(engine);
    let state = pairs
        .iter()
        .map(|(key, param, _)| {
            let zeros = vec![0.0; param.len()];
            let (rows, cols) = param.shape();
            Ok((
                moments.tensor_from(engine, &format!("sharpness.m.{key}"), rows, cols, &zeros)?,
                moments.tensor_from(engine, &format!("sharpness.v.{key}"), rows, cols, &zeros)?,
            ))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let adam = AdamHyper {
        lr,
        beta1: hyper.beta1,
        beta2: hyper.beta2,
        eps: hyper.eps,
        weight_decay: 0.0,
    };
    let loss = |engine: &mut dyn Engine| -> Result<f64, EngineError> {
        let mut rec = Recording::new();
        graph::forward(&mut rec, &device, &ws)?;
        graph::cross_entropy(&mut rec, &ws)?;
        engine.run(&rec)?;
        Ok(engine.read_one(ws.loss_sum)?[0] / batch.len() as f64)
    };
    let loss_before = loss(engine)?;
    let mut rec = Recording::new();
    for step in 1..=steps as u32 {
        graph::forward(&mut rec, &device, &ws)?;
        graph::cross_entropy(&mut rec, &ws)?;
        graph::backward(&mut rec, &device, &ws, &grads, trainable)?;
        for (&(_, param, grad), &(m, v)) in pairs.iter().zip(&state) {
            rec.adam(param, grad, (m, v), adam, step)?;
        }
    }
    engine.run(&rec)?;
    let loss_after = loss(engine)?;
    if !loss_after.is_finite() {
        return Err(CurvatureError::AdamDiverged {
            lr,
            steps,
            loss: loss_after,
        });
    }

    // D = P^-1/2 from the second moments, read once.
    let (c1, c2) = adam.corrections(steps as u32);
    let second: Vec<_> = state.iter().map(|s| s.1).collect();
    let mut scaling_owner = Allocation::new(engine);
    let mut scaling_of = std::collections::HashMap::new();
    for ((key, param, _), v) in pairs.iter().zip(engine.read(&second)?) {
        let d: Vec<f64> = v
            .iter()
            .map(|&v| 1.0 / (c1 * ((v / c2).sqrt() + hyper.eps)).sqrt())
            .collect();
        let (rows, cols) = param.shape();
        let label = format!("sharpness.scaling.{key}");
        scaling_of.insert(
            *key,
            scaling_owner.tensor_from(engine, &label, rows, cols, &d)?,
        );
    }
    let product =
        HessianVectorProduct::prepare(engine, &device, &ws, Loss::CrossEntropy, trainable)?;
    let scaling: Vec<_> = product.slots().iter().map(|s| scaling_of[&s.0]).collect();
    let sharpness = preconditioned_power_iteration(engine, &product, &scaling, power)?;
    Ok(AdamSharpness {
        lr,
        steps,
        beta1: hyper.beta1,
        beta2: hyper.beta2,
        eps: hyper.eps,
        loss_before,
        loss_after,
        preconditioned_sharpness: sharpness.sigma_1(),
        power_converged: sharpness.converged,
        edge_of_stability: (2.0 + 2.0 * hyper.beta1) / ((1.0 - hyper.beta1) * lr),
    })
}
