//! A closed-form lower bound on sigma_1 of the loss Hessian from a SpecDef layer's spectrum and
//! the alignment of its inputs with it: PAPER.md 2's bound in the shape of the paper's Theorem 3
//! (a singular value of the weight between two factors, times the other factors' and the
//! alignment angles' cosines), for the Hessian block the suite measures growing like alpha^2,
//! the compensation layer's own. The project's derivation, not the paper's text:
//!
//! For a layer whose chain is `[W~, C]`, the logits depend on C through `z = C u + b`,
//! `u = W~ h` (h the layer's input). With a piecewise-linear activation after the layer (ReLU,
//! identity) or none (the last layer), the logits are linear in C almost everywhere, so the C
//! block of the mean cross-entropy's Hessian is its Gauss-Newton part:
//!
//! ```text
//! H_CC = sum_n (u_n u_n^T) (x) G_n,   G_n = M_n^T (diag(p_n) - p_n p_n^T) M_n / N,
//! ```
//!
//! M_n the Jacobian of the logits in z, p_n the softmax. For a unit `dC = q e^T`,
//! `dC . H_CC dC = sum_n (e . u_n)^2 q^T G_n q`; with e = U_r, W~'s r-th left singular vector,
//! `e . u_n = sigma_r(W~) |h_n| cos(t_n)`, t_n the angle between h_n and V_r. So, for every r,
//!
//! ```text
//! sigma_1(H) >= sigma_1(H_CC) >= sigma_r(W~)^2 lambda_max(sum_n |h_n|^2 cos^2(t_n) G_n),
//! ```
//!
//! which grows like alpha^2 (sigma_r(W~) = alpha sigma_r(W) for SpecDef's top k) while C
//! trains; the suite takes the supremum over W~'s largest singular directions. It bounds the
//! Hessian over any parameter set that includes that C.

use crate::data::Dataset;
use crate::engine::cpu::elementwise::{activation_derivative, activation_value};
use crate::linalg::{Matrix, faer_svd};
use crate::model::{ActivationChoice, FactorRole, HostModel};

/// Singular directions of W~ tried per layer (the supremum over r is taken over these).
const MAX_DIRECTIONS: usize = 32;
/// Entries of the per-direction sums held at once (128 MiB of f64).
const MAX_SUM_ENTRIES: usize = 1 << 24;

/// The bound for one SpecDef layer at the singular direction r of W~ that gives the most (the
/// supremum over r of the paper's form), with its factors.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CompensationBound {
    pub layer: usize,
    /// r, 1 for W~'s largest singular value.
    pub direction: usize,
    /// sigma_r(W~): the weight between the two factors (alpha sigma_r(W) where SpecDef scaled
    /// it).
    pub sigma_weight: f64,
    /// The batch's mean cos^2 of the angle between a layer input and W~'s r-th right singular
    /// vector.
    pub mean_cos2: f64,
    /// lambda_max(sum_n |h_n|^2 cos^2(t_n) G_n): what the layers after it and the loss add.
    pub output_curvature: f64,
    /// sigma_r(W~)^2 times `output_curvature`: a lower bound on sigma_1(H).
    pub bound: f64,
}

/// The bound for every layer whose chain is SpecDef's `[W~, C]` (no adapter, nothing injected)
/// and after which only piecewise-linear activations follow; where the activation is smooth
/// (tanh, GELU) the C block has a residual part the bound leaves out, so those layers get an
/// error naming why.
pub fn compensation_bounds(
    model: &HostModel,
    batch: &Dataset,
) -> Vec<(usize, Result<CompensationBound, String>)> {
    let forward = Forward::run(model, batch);
    (0..model.layers.len())
        .filter(|&l| is_specdef_chain(model, l))
        .map(|l| (l, bound_of(model, &forward, l)))
        .collect()
}

fn is_specdef_chain(model: &HostModel, layer: usize) -> bool {
    let roles: Vec<FactorRole> = model.layers[layer].factors.iter().map(|f| f.role).collect();
    roles == [FactorRole::Weight, FactorRole::Compensation]
        && model.layers[layer].factors.iter().all(|f| f.lora.is_none())
}

fn bound_of(model: &HostModel, forward: &Forward, l: usize) -> Result<CompensationBound, String> {
    let last = model.layers.len() - 1;
    let piecewise_linear = matches!(
        model.spec.activation,
        ActivationChoice::Relu | ActivationChoice::Identity
    );
    if l < last && !piecewise_linear {
        return Err(format!(
            "layer {l}: the {:?} activation after it is not piecewise linear, so the C block has \
             a residual part this bound leaves out",
            model.spec.activation
        ));
    }
    let weight = (model.layers[l].matrix(FactorRole::Weight)).ok_or("no W~")?;
    let svd = faer_svd(weight)?;
    let (n, width) = (forward.inputs[l].rows, model.layers[l].bias.cols);
    // The directions tried: W~'s largest singular values first (SpecDef's alpha-scaled ones),
    // as many as fit MAX_SUM_ENTRIES accumulated entries.
    let directions = (svd.s.len())
        .min(MAX_DIRECTIONS)
        .min((MAX_SUM_ENTRIES / (width * width)).max(1));
    let v = &svd.v;
    // along[row][r] = V_r . h_row.
    let along: Vec<Vec<f64>> = (0..n)
        .map(|row| {
            let h = forward.input(l, row);
            (0..directions)
                .map(|r| (0..v.rows).map(|i| v.values[i * v.cols + r] * h[i]).sum())
                .collect()
        })
        .collect();
    let mut sums = vec![faer::Mat::<f64>::zeros(width, width); directions];
    for (row, along) in along.iter().enumerate() {
        let gauss_newton = output_gauss_newton(forward, model, l, row);
        for (sum, a) in sums.iter_mut().zip(along) {
            let weight = a * a / n as f64;
            if weight > 0.0 {
                *sum += faer::Scale(weight) * &gauss_newton;
            }
        }
    }
    let norms2: Vec<f64> = (0..n)
        .map(|row| forward.input(l, row).iter().map(|x| x * x).sum())
        .collect();
    let mut best: Option<CompensationBound> = None;
    for (r, sum) in sums.iter().enumerate() {
        let output_curvature = crate::theory::lambda_max(sum).max(0.0);
        let sigma = svd.s[r];
        let cos2 = (along.iter().zip(&norms2))
            .filter(|(_, norm2)| **norm2 > 0.0)
            .map(|(a, norm2)| a[r] * a[r] / norm2)
            .sum::<f64>()
            / n.max(1) as f64;
        let candidate = CompensationBound {
            layer: l,
            direction: r + 1,
            sigma_weight: sigma,
            mean_cos2: cos2,
            output_curvature,
            bound: sigma * sigma * output_curvature,
        };
        if best.as_ref().is_none_or(|b| candidate.bound > b.bound) {
            best = Some(candidate);
        }
    }
    best.ok_or_else(|| format!("layer {l}: W~ has no singular value"))
}

/// `M^T (diag(p) - p p^T) M` for one row: the Gauss-Newton matrix of the row's cross-entropy
/// in layer l's output, M the logits' Jacobian there.
fn output_gauss_newton(
    forward: &Forward,
    model: &HostModel,
    l: usize,
    row: usize,
) -> faer::Mat<f64> {
    let jacobian = forward.logit_jacobian(model, l, row);
    let p = forward.softmax(row);
    let classes = jacobian.nrows();
    let curvature = faer::Mat::from_fn(classes, classes, |a, b| {
        f64::from(a == b) * p[a] - p[a] * p[b]
    });
    jacobian.transpose() * (&curvature * &jacobian)
}

/// The host forward pass in f64: each layer's input and pre-activation for every row.
struct Forward {
    /// inputs[l]: the rows fed to layer l (row-major, n x width).
    inputs: Vec<Matrix>,
    /// pre[l]: layer l's output before its activation (the logits for the last layer).
    pre: Vec<Matrix>,
}

impl Forward {
    fn run(model: &HostModel, batch: &Dataset) -> Self {
        let n = batch.len();
        let mut h = Matrix::new(n, batch.features, batch.inputs.clone());
        let (mut inputs, mut pre) = (Vec::new(), Vec::new());
        for (l, layer) in model.layers.iter().enumerate() {
            let mut z = h.matmul(&transpose(&layer.effective_weight()));
            for row in 0..n {
                for (j, b) in layer.bias.values.iter().enumerate() {
                    z.values[row * z.cols + j] += b;
                }
            }
            inputs.push(h);
            // The engine's own activation (its CPU twin, in f64).
            let activated = match model.spec.activation_after(l) {
                Some(f) => Matrix::new(
                    z.rows,
                    z.cols,
                    z.values.iter().map(|&v| activation_value(f, v)).collect(),
                ),
                None => z.clone(),
            };
            pre.push(z);
            h = activated;
        }
        Self { inputs, pre }
    }

    fn input(&self, layer: usize, row: usize) -> &[f64] {
        let m = &self.inputs[layer];
        &m.values[row * m.cols..(row + 1) * m.cols]
    }

    fn softmax(&self, row: usize) -> Vec<f64> {
        let logits = self.pre.last().expect("a model has layers");
        let z = &logits.values[row * logits.cols..(row + 1) * logits.cols];
        let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = z.iter().map(|v| (v - top).exp()).collect();
        let total: f64 = exp.iter().sum();
        exp.iter().map(|e| e / total).collect()
    }

    /// d logits / d z_l for one row (classes x width of layer l), through the later layers'
    /// weights and (piecewise-linear) activation slopes.
    fn logit_jacobian(&self, model: &HostModel, l: usize, row: usize) -> faer::Mat<f64> {
        let classes = model.layers.last().expect("a model has layers").bias.cols;
        let mut jacobian = faer::Mat::<f64>::identity(classes, classes);
        for j in (l + 1..model.layers.len()).rev() {
            jacobian = &jacobian * model.layers[j].effective_weight().to_faer();
            let (z, f) = (&self.pre[j - 1], model.spec.activation_after(j - 1));
            for c in 0..jacobian.ncols() {
                let v = z.values[row * z.cols + c];
                let slope = f.map_or(1.0, |f| activation_derivative(f, v));
                for k in 0..classes {
                    jacobian[(k, c)] *= slope;
                }
            }
        }
        jacobian
    }
}

fn transpose(m: &Matrix) -> Matrix {
    let mut t = Matrix::zeros(m.cols, m.rows);
    for r in 0..m.rows {
        for c in 0..m.cols {
            t.values[c * m.rows + r] = m.values[r * m.cols + c];
        }
    }
    t
}
