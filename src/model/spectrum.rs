//! The Hessian's spectrum from Hessian-vector products only (the Hessian is never formed):
//! power iteration for sigma_1(H), Lanczos for the extreme eigenvalues, and Hutchinson's
//! estimate of the trace. All three work on a prepared [`HessianVectorProduct`], whose recording
//! computes H v for every trainable parameter block at once, and keep their scalars (dot
//! products, norms) on the device in 1x1 tensors: iterations are recorded into one submission
//! and read back once, never value by value.
//!
//! A vector over the trainable parameters is one tensor per block, shaped like the block; the
//! product's own v tensors are its input and its H v tensors its output (and, between products,
//! scratch: the product writes them before it reads them).

use super::HessianVectorProduct;
use crate::engine::{
    Allocation, BinaryOp, DeviceScalar, Engine, EngineError, Recording, ReduceAxis, Reduction,
    Tensor,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpectrumError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("spectrum: {0}")]
    Settings(String),
    #[error("spectrum: the Hessian-vector product has no trainable parameters")]
    NoParameters,
    #[error("lanczos: the eigensolver of the tridiagonal matrix failed: {0}")]
    Eigensolver(String),
}

/// Power iteration's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerSettings {
    /// Seeds the random start vector.
    pub seed: u64,
    /// Iterations recorded into one submission; the Rayleigh quotients are read once per chunk.
    pub chunk: usize,
    pub max_iterations: usize,
    /// An iteration is settled when the Rayleigh quotient changed by at most this, relative to
    /// its value. 1e-6 sits above the f32 engines' rounding noise of the quotient.
    pub tolerance: f64,
    /// Settled iterations in a row that count as converged.
    pub patience: usize,
}

impl Default for PowerSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            chunk: 20,
            max_iterations: 1000,
            tolerance: 1e-6,
            patience: 3,
        }
    }
}

/// What power iteration found.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerIteration {
    /// The last Rayleigh quotient: the eigenvalue of largest magnitude, with its sign
    /// (sigma_1(H) is its absolute value).
    pub estimate: f64,
    /// Iterations run on the device (whole chunks, at most `max_iterations`).
    pub iterations: usize,
    /// Whether the stopping rule was met (see [`power_iteration`]).
    pub converged: bool,
    /// The Rayleigh quotient of every iteration run.
    pub history: Vec<f64>,
}

impl PowerIteration {
    /// sigma_1(H), the largest |eigenvalue|.
    pub fn sigma_1(&self) -> f64 {
        self.estimate.abs()
    }
}

/// Lanczos's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LanczosSettings {
    /// Seeds the random start vector.
    pub seed: u64,
    /// Lanczos steps m (the size of the tridiagonal matrix); at most the parameter count is used.
    pub steps: usize,
    /// A step breaks down where its beta is at most this times the largest alpha or beta before
    /// it (the Krylov space is then invariant). f64 rounding leaves betas near 1e-16 of that
    /// scale at a breakdown, f32 rounding near 1e-7: at 1e-10 an f32 engine continues with the
    /// rounding noise, which full reorthogonalisation turns into a fresh orthogonal direction.
    pub breakdown_tolerance: f64,
}

impl Default for LanczosSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 30,
            breakdown_tolerance: 1e-10,
        }
    }
}

/// What Lanczos found: the eigenvalues of the tridiagonal matrix T (Ritz values).
#[derive(Clone, Debug, PartialEq)]
pub struct Lanczos {
    /// Ascending. The extreme ones converge first, to the extreme eigenvalues of H.
    pub ritz_values: Vec<f64>,
    /// Per Ritz value, `beta_last |last component of its eigenvector of T|`: the residual norm
    /// of its Ritz vector (in exact arithmetic), so a bound on its distance to H's spectrum.
    pub residual_bounds: Vec<f64>,
    /// The size of T: the steps run, or fewer where the recurrence broke down.
    pub steps: usize,
    /// Whether the recurrence broke down (beta ~ 0, or non-finite) before the steps asked for:
    /// the Krylov space is invariant and the Ritz values are eigenvalues of H.
    pub broke_down: bool,
    /// T's diagonal and off-diagonal (`betas[j]` couples steps j and j + 1) as read back, every
    /// step run, including any after a breakdown.
    pub alphas: Vec<f64>,
    pub betas: Vec<f64>,
}

impl Lanczos {
    /// The Ritz value of largest magnitude, with its sign (sigma_1(H) is its absolute value).
    pub fn sigma_1(&self) -> f64 {
        self.ritz_values.iter().copied().fold(f64::NAN, |best, x| {
            if best.abs() >= x.abs() { best } else { x }
        })
    }

    /// The `k` largest Ritz values, largest first.
    pub fn largest(&self, k: usize) -> Vec<f64> {
        self.ritz_values.iter().rev().take(k).copied().collect()
    }

    /// The `k` smallest Ritz values, smallest first.
    pub fn smallest(&self, k: usize) -> Vec<f64> {
        self.ritz_values.iter().take(k).copied().collect()
    }
}

/// Hutchinson's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceSettings {
    /// Seeds the probes ([`rademacher_probes`]).
    pub seed: u64,
    pub probes: usize,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            probes: 100,
        }
    }
}

/// Hutchinson's estimate of trace(H).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEstimate {
    /// The mean of z^T H z over the probes.
    pub mean: f64,
    /// The sample standard deviation over sqrt(probes); NaN for one probe.
    pub std_error: f64,
    pub probes: usize,
    /// z^T H z of every probe, in probe order.
    pub samples: Vec<f64>,
}

/// sigma_1(H) by power iteration: v <- H v / ||H v|| from a seeded random unit vector, with the
/// Rayleigh quotient v^T H v of every iteration (v is a unit vector) as the estimate.
///
/// Each iteration runs the product's ops and then, on the device, v^T H v into that iteration's
/// 1x1 tensor, ||H v||^2 into another, and v <- H v / ||H v|| (`scale_device` by
/// `DeviceScalar::inverse_sqrt`) back into the product's v tensors. `chunk` iterations are one
/// recording, one `engine.run` and one `engine.read` of their Rayleigh quotients: one readback
/// per chunk of iterations, none inside a chunk.
///
/// Stopping rule: an iteration is settled when its quotient q_i moved by at most
/// `tolerance |q_i|` from q_{i-1}; the loop stops after the chunk in which `patience` iterations
/// in a row were settled (converged), or at `max_iterations`, or at a non-finite quotient (H v
/// = 0 or overflow; not converged). The rule measures stagnation: the estimate's error is about
/// the last change over (1 - (lambda_2 / lambda_1)^2), larger where the top two eigenvalues are
/// close in magnitude. Where +lambda and -lambda are both of the top magnitude the quotient does
/// not converge.
pub fn power_iteration(
    engine: &mut dyn Engine,
    product: &HessianVectorProduct,
    settings: &PowerSettings,
) -> Result<PowerIteration, SpectrumError> {
    power_iteration_of(engine, product, None, settings)
}

/// The largest |eigenvalue| of `P^-1 H` for a diagonal preconditioner `P`, given as `scaling`
/// = `P^-1/2` (one tensor per slot of the product, shaped like it): power iteration on the
/// symmetric `D H D` with `D = diag(scaling)`, which has the same eigenvalues. Each iteration
/// writes `D x` into the product's v, runs it, and forms `D H D x` on the device; otherwise as
/// [`power_iteration`] (chunks, stopping rule, one readback per chunk).
pub fn preconditioned_power_iteration(
    engine: &mut dyn Engine,
    product: &HessianVectorProduct,
    scaling: &[Tensor],
    settings: &PowerSettings,
) -> Result<PowerIteration, SpectrumError> {
    let slots = product.slots();
    if scaling.len() != slots.len()
        || scaling
            .iter()
            .zip(slots)
            .any(|(d, s)| d.shape() != s.1.shape())
    {
        return Err(SpectrumError::Settings(
            "the preconditioner's scaling must have one tensor per parameter, shaped like it"
                .to_string(),
        ));
    }
    power_iteration_of(engine, product, Some(scaling), settings)
}

fn power_iteration_of(
    engine: &mut dyn Engine,
    product: &HessianVectorProduct,
    scaling: Option<&[Tensor]>,
    settings: &PowerSettings,
) -> Result<PowerIteration, SpectrumError> {
    for (name, value) in [
        ("chunk", settings.chunk),
        ("max_iterations", settings.max_iterations),
        ("patience", settings.patience),
    ] {
        if value == 0 {
            return Err(SpectrumError::Settings(format!(
                "power iteration's {name} must be at least 1"
            )));
        }
    }
    let vectors = Vectors::of(product)?;
    let mut owner = Allocation::new(engine);
    let reducer = Reducer::alloc(engine, &mut owner, &vectors.v, "spectrum.power")?;
    let norm_sq = owner.alloc(engine, "spectrum.power.norm_sq", 1, 1)?;
    let chunk = settings.chunk.min(settings.max_iterations);
    let quotients = (0..chunk)
        .map(|i| owner.alloc(engine, &format!("spectrum.power.rayleigh.{i}"), 1, 1))
        .collect::<Result<Vec<_>, _>>()?;
    // With a preconditioner the iterate x and D H D x live in tensors of their own; without
    // one, x is the product's v and H x its H v.
    let (x, mx) = match scaling {
        None => (vectors.v.clone(), vectors.hv.clone()),
        Some(_) => {
            let own = |owner: &mut Allocation, engine: &mut dyn Engine, name: &str| {
                (vectors.v.iter().enumerate())
                    .map(|(b, t)| {
                        let label = format!("spectrum.power.{name}.{b}");
                        owner.alloc(engine, &label, t.rows(), t.cols())
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            (
                own(&mut owner, engine, "x")?,
                own(&mut owner, engine, "dhdx")?,
            )
        }
    };
    let record_chunk = |len: usize| -> Result<Recording, EngineError> {
        let mut rec = Recording::new();
        for &quotient in &quotients[..len] {
            if let Some(d) = scaling {
                for b in 0..x.len() {
                    rec.binary(BinaryOp::Mul, x[b], d[b], vectors.v[b])?;
                }
            }
            rec.extend(&product.recording);
            if let Some(d) = scaling {
                for b in 0..x.len() {
                    rec.binary(BinaryOp::Mul, vectors.hv[b], d[b], mx[b])?;
                }
            }
            reducer.dot(&mut rec, &x, &mx, quotient)?;
            reducer.sum_of_squares(&mut rec, &mx, norm_sq)?;
            for (&m, &x) in mx.iter().zip(&x) {
                rec.scale_device(DeviceScalar::inverse_sqrt(1.0, norm_sq), m, x)?;
            }
        }
        Ok(rec)
    };
    upload_blocks(
        engine,
        &x,
        &random_unit_vector(settings.seed, vectors.len()),
    )?;
    let full_chunk = record_chunk(chunk)?;
    let mut history: Vec<f64> = Vec::new();
    let mut settled = 0;
    let mut converged = false;
    let mut diverged = false;
    while !converged && !diverged && history.len() < settings.max_iterations {
        let len = chunk.min(settings.max_iterations - history.len());
        let short_chunk;
        let rec = if len == chunk {
            &full_chunk
        } else {
            short_chunk = record_chunk(len)?;
            &short_chunk
        };
        engine.run(rec)?;
        for value in engine.read(&quotients[..len])? {
            let quotient = value[0];
            diverged |= !quotient.is_finite();
            if let Some(&previous) = history.last() {
                let change = quotient - previous;
                if change.abs() <= settings.tolerance * quotient.abs() {
                    settled += 1;
                } else {
                    settled = 0;
                }
            }
            converged |= settled >= settings.patience && !diverged;
            history.push(quotient);
        }
    }
    Ok(PowerIteration {
        estimate: history.last().copied().unwrap_or(f64::NAN),
        iterations: history.len(),
        converged: converged && !diverged,
        history,
    })
}

/// The extreme eigenvalues of H by Lanczos with full reorthogonalisation, from a seeded random
/// unit vector q_0. Step j computes w = H q_j, alpha_j = q_j^T w,
/// w -= alpha_j q_j + beta_{j-1} q_{j-1}, then (full reorthogonalisation, modified Gram-Schmidt)
/// w -= (q_i^T w) q_i for every i <= j, beta_j = ||w|| and q_{j+1} = w / beta_j. Every dot
/// product and norm is a 1x1 tensor on the device and every update an `axpy_device` against
/// the stored Lanczos vectors, so all m steps are one submission; the alphas and betas are read
/// back once at the end, and the tridiagonal matrix's eigenvalues computed on the host in f64
/// (faer). It stores m vectors of the parameter count and records O(m^2) small ops.
pub fn lanczos(
    engine: &mut dyn Engine,
    product: &HessianVectorProduct,
    settings: &LanczosSettings,
) -> Result<Lanczos, SpectrumError> {
    if settings.steps == 0 {
        return Err(SpectrumError::Settings(
            "lanczos needs at least 1 step".to_string(),
        ));
    }
    let vectors = Vectors::of(product)?;
    // A Krylov space has at most as many dimensions as there are parameters.
    let steps = settings.steps.min(vectors.len());
    let mut owner = Allocation::new(engine);
    let reducer = Reducer::alloc(engine, &mut owner, &vectors.v, "spectrum.lanczos")?;
    let mut scalar = |name: String| owner.alloc(engine, &name, 1, 1);
    let alphas = (0..steps)
        .map(|j| scalar(format!("spectrum.lanczos.alpha.{j}")))
        .collect::<Result<Vec<_>, _>>()?;
    // ||w||^2 of each step; beta is its square root.
    let beta_squares = (0..steps)
        .map(|j| scalar(format!("spectrum.lanczos.beta_sq.{j}")))
        .collect::<Result<Vec<_>, _>>()?;
    let projection = scalar("spectrum.lanczos.projection".to_string())?;
    let mut basis: Vec<Vec<Tensor>> = Vec::with_capacity(steps);
    for j in 0..steps {
        let q = (vectors.v.iter().enumerate())
            .map(|(b, t)| {
                let label = format!("spectrum.lanczos.q{j}.{b}");
                owner.alloc(engine, &label, t.rows(), t.cols())
            })
            .collect::<Result<Vec<_>, _>>()?;
        basis.push(q);
    }

    // w lives in the product's H v tensors: the next product overwrites them anyway.
    let (v, w) = (&vectors.v, &vectors.hv);
    let mut rec = Recording::new();
    for j in 0..steps {
        rec.extend(&product.recording);
        reducer.dot(&mut rec, &basis[j], w, alphas[j])?;
        for b in 0..w.len() {
            rec.axpy_device(times(-1.0, alphas[j]), basis[j][b], w[b])?;
            if j > 0 {
                rec.axpy_device(times_sqrt(-1.0, beta_squares[j - 1]), basis[j - 1][b], w[b])?;
            }
        }
        for q in &basis[..=j] {
            reducer.dot(&mut rec, q, w, projection)?;
            for (&q, &w) in q.iter().zip(w) {
                rec.axpy_device(times(-1.0, projection), q, w)?;
            }
        }
        reducer.sum_of_squares(&mut rec, w, beta_squares[j])?;
        if j + 1 < steps {
            let normalise = DeviceScalar::inverse_sqrt(1.0, beta_squares[j]);
            for b in 0..w.len() {
                rec.scale_device(normalise, w[b], basis[j + 1][b])?;
                rec.scale_device(normalise, w[b], v[b])?;
            }
        }
    }

    let start = random_unit_vector(settings.seed, vectors.len());
    upload_blocks(engine, &basis[0], &start)?;
    upload_blocks(engine, v, &start)?;
    engine.run(&rec)?;
    let read: Vec<Tensor> = alphas.iter().chain(&beta_squares).copied().collect();
    let values: Vec<f64> = engine.read(&read)?.into_iter().map(|v| v[0]).collect();
    let (alphas, beta_squares) = values.split_at(steps);
    let betas: Vec<f64> = beta_squares.iter().map(|b| b.sqrt()).collect();
    tridiagonal_ritz_values(alphas, &betas, settings.breakdown_tolerance)
}

/// Interprets Lanczos's alphas and betas on the host: T's size (cut at a breakdown) and its
/// eigendecomposition in f64.
fn tridiagonal_ritz_values(
    alphas: &[f64],
    betas: &[f64],
    breakdown_tolerance: f64,
) -> Result<Lanczos, SpectrumError> {
    let steps = alphas.len();
    let mut size = steps;
    let mut scale = 0.0f64;
    for j in 0..steps {
        if !alphas[j].is_finite() {
            size = j;
            break;
        }
        scale = scale.max(alphas[j].abs());
        // beta of the last step couples to nothing; it only bounds the residuals. A non-finite
        // beta (overflow, or NaN) ends T there too.
        let beta = betas[j];
        let broke_down = !beta.is_finite() || beta <= breakdown_tolerance * scale;
        if j + 1 < steps && broke_down {
            size = j + 1;
            break;
        }
        scale = scale.max(beta);
    }
    let (ritz_values, residual_bounds) = if size == 0 {
        (Vec::new(), Vec::new())
    } else {
        let t = faer::Mat::<f64>::from_fn(size, size, |i, k| {
            if i == k {
                alphas[i]
            } else if i.abs_diff(k) == 1 {
                betas[i.min(k)]
            } else {
                0.0
            }
        });
        let eigen = t
            .self_adjoint_eigen(faer::Side::Lower)
            .map_err(|e| SpectrumError::Eigensolver(format!("{e:?}")))?;
        let values: Vec<f64> = (0..size).map(|i| eigen.S()[i]).collect();
        let last_beta = betas[size - 1];
        let bounds = (0..size)
            .map(|i| last_beta * eigen.U()[(size - 1, i)].abs())
            .collect();
        (values, bounds)
    };
    Ok(Lanczos {
        ritz_values,
        residual_bounds,
        steps: size,
        broke_down: size < steps,
        alphas: alphas.to_vec(),
        betas: betas.to_vec(),
    })
}

/// trace(H) by Hutchinson's estimator: the mean of z^T H z over Rademacher probes z (entries
/// +-1, [`rademacher_probes`] with the seed), whose expectation is trace(H). Each probe is
/// uploaded into the product's v tensors and run (the product, then z^T H z into that probe's
/// 1x1 tensor on the device): one run per probe, and one readback of every probe's value at the
/// end. The variance of one sample is 2 sum_{i != j} H_ij^2.
pub fn hutchinson_trace(
    engine: &mut dyn Engine,
    product: &HessianVectorProduct,
    settings: &TraceSettings,
) -> Result<TraceEstimate, SpectrumError> {
    if settings.probes == 0 {
        return Err(SpectrumError::Settings(
            "hutchinson's estimate needs at least 1 probe".to_string(),
        ));
    }
    let vectors = Vectors::of(product)?;
    let mut owner = Allocation::new(engine);
    let reducer = Reducer::alloc(engine, &mut owner, &vectors.v, "spectrum.trace")?;
    let quadratic_forms = (0..settings.probes)
        .map(|p| owner.alloc(engine, &format!("spectrum.trace.zHz.{p}"), 1, 1))
        .collect::<Result<Vec<_>, _>>()?;
    let probes = rademacher_probes(settings.seed, settings.probes, vectors.len());
    for (probe, &quadratic_form) in probes.zip(&quadratic_forms) {
        upload_blocks(engine, &vectors.v, &probe)?;
        let mut rec = product.recording.clone();
        reducer.dot(&mut rec, &vectors.v, &vectors.hv, quadratic_form)?;
        engine.run(&rec)?;
    }
    let samples: Vec<f64> = (engine.read(&quadratic_forms)?.into_iter())
        .map(|v| v[0])
        .collect();
    let count = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / count;
    let variance = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (count - 1.0);
    Ok(TraceEstimate {
        mean,
        std_error: if samples.len() > 1 {
            (variance / count).sqrt()
        } else {
            f64::NAN
        },
        probes: samples.len(),
        samples,
    })
}

/// The probes of [`hutchinson_trace`]: `probes` vectors of `len` entries +-1 with equal
/// probability, from ChaCha8 seeded with `seed`, in order (over the parameters in registry order,
/// block after block).
pub fn rademacher_probes(seed: u64, probes: usize, len: usize) -> impl Iterator<Item = Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..probes).map(move |_| {
        (0..len)
            .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
            .collect()
    })
}

/// The product's input and output blocks, one tensor per trainable parameter.
struct Vectors {
    v: Vec<Tensor>,
    hv: Vec<Tensor>,
}

impl Vectors {
    fn of(product: &HessianVectorProduct) -> Result<Self, SpectrumError> {
        if product.slots().is_empty() {
            return Err(SpectrumError::NoParameters);
        }
        Ok(Self {
            v: product.slots().iter().map(|s| s.1).collect(),
            hv: product.slots().iter().map(|s| s.2).collect(),
        })
    }

    /// The parameter count.
    fn len(&self) -> usize {
        self.v.iter().map(|t| t.len()).sum()
    }
}

/// Scratch to reduce over every block of a vector into one 1x1 tensor: a product per block
/// (the elementwise product of a dot), and a partial sum per block, added up across blocks.
struct Reducer {
    products: Vec<Tensor>,
    /// Empty with a single block, which reduces straight into the result.
    partials: Vec<Tensor>,
}

impl Reducer {
    fn alloc(
        engine: &mut dyn Engine,
        owner: &mut Allocation,
        blocks: &[Tensor],
        label: &str,
    ) -> Result<Self, EngineError> {
        let products = (blocks.iter().enumerate())
            .map(|(b, t)| owner.alloc(engine, &format!("{label}.product.{b}"), t.rows(), t.cols()))
            .collect::<Result<_, _>>()?;
        let partials = if blocks.len() > 1 {
            (0..blocks.len())
                .map(|b| owner.alloc(engine, &format!("{label}.partial.{b}"), 1, 1))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Self { products, partials })
    }

    /// `out = a . b`, over every block.
    fn dot(
        &self,
        rec: &mut Recording,
        a: &[Tensor],
        b: &[Tensor],
        out: Tensor,
    ) -> Result<(), EngineError> {
        for (block, ((&a, &b), &product)) in a.iter().zip(b).zip(&self.products).enumerate() {
            rec.binary(BinaryOp::Mul, a, b, product)?;
            rec.reduce(
                Reduction::Sum,
                ReduceAxis::Whole,
                product,
                self.partial(block, out),
            )?;
        }
        self.add_partials(rec, out)
    }

    /// `out = ||a||^2`, over every block.
    fn sum_of_squares(
        &self,
        rec: &mut Recording,
        a: &[Tensor],
        out: Tensor,
    ) -> Result<(), EngineError> {
        for (block, &a) in a.iter().enumerate() {
            rec.reduce(
                Reduction::SumOfSquares,
                ReduceAxis::Whole,
                a,
                self.partial(block, out),
            )?;
        }
        self.add_partials(rec, out)
    }

    fn partial(&self, block: usize, out: Tensor) -> Tensor {
        self.partials.get(block).copied().unwrap_or(out)
    }

    fn add_partials(&self, rec: &mut Recording, out: Tensor) -> Result<(), EngineError> {
        if let Some((&first, rest)) = self.partials.split_first() {
            rec.scale(1.0, first, out)?;
            for &partial in rest {
                rec.axpy(1.0, partial, out)?;
            }
        }
        Ok(())
    }
}

/// The device scalar `coef * t[0]`.
fn times(coef: f64, t: Tensor) -> DeviceScalar {
    DeviceScalar {
        coef,
        num: Some(t),
        den: None,
        sqrt: false,
    }
}

/// The device scalar `coef * sqrt(t[0])`.
fn times_sqrt(coef: f64, t: Tensor) -> DeviceScalar {
    DeviceScalar {
        sqrt: true,
        ..times(coef, t)
    }
}

/// A seeded random vector of unit length (entries uniform in [-1, 1], then normalised).
fn random_unit_vector(seed: u64, len: usize) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..=1.0)).collect();
    let norm = values.iter().map(|x| x * x).sum::<f64>().sqrt();
    values.into_iter().map(|x| x / norm).collect()
}

/// Uploads one flat vector into its blocks, in order.
fn upload_blocks(
    engine: &mut dyn Engine,
    blocks: &[Tensor],
    flat: &[f64],
) -> Result<(), EngineError> {
    let mut rest = flat;
    for &block in blocks {
        let (values, tail) = rest.split_at(block.len());
        engine.upload(block, values)?;
        rest = tail;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breakdown_cuts_the_tridiagonal_matrix_where_beta_vanishes() {
        // beta_1 = 0: T is [[1, 0.5], [0.5, 2]], whatever the steps after it read back.
        let found = tridiagonal_ritz_values(&[1.0, 2.0, 7.0], &[0.5, 0.0, 3.0], 1e-10).unwrap();
        assert!(found.broke_down);
        assert_eq!(found.steps, 2);
        let (mean, half_gap) = (1.5, (0.25f64 + 0.25).sqrt());
        let expected = [mean - half_gap, mean + half_gap];
        for (actual, expected) in found.ritz_values.iter().zip(expected) {
            assert!((actual - expected).abs() < 1e-14, "{found:?}");
        }
        // beta_1 = 0 makes the residuals vanish: these are eigenvalues of H.
        assert!(found.residual_bounds.iter().all(|&b| b == 0.0), "{found:?}");
    }

    #[test]
    fn a_non_finite_step_ends_the_tridiagonal_matrix_before_it() {
        let found =
            tridiagonal_ritz_values(&[4.0, -3.0, f64::NAN], &[1.0, 2.0, 1.0], 1e-10).unwrap();
        assert_eq!((found.steps, found.broke_down), (2, true));
        let found = tridiagonal_ritz_values(&[4.0, -3.0], &[f64::INFINITY, 1.0], 1e-10).unwrap();
        assert_eq!((found.steps, found.ritz_values.clone()), (1, vec![4.0]));
        assert_eq!(found.sigma_1(), 4.0);
    }

    #[test]
    fn the_last_beta_only_bounds_the_residuals() {
        let found = tridiagonal_ritz_values(&[-5.0, 1.0], &[2.0, 0.0], 1e-10).unwrap();
        assert_eq!((found.steps, found.broke_down), (2, false));
        // [[-5, 2], [2, 1]]: eigenvalues -2 +- sqrt(13); the negative one is the larger in size.
        assert!(
            (found.sigma_1() - (-2.0 - 13f64.sqrt())).abs() < 1e-13,
            "{found:?}"
        );
        assert_eq!(found.largest(1), vec![found.ritz_values[1]]);
        assert_eq!(found.smallest(5), found.ritz_values);
    }
}
