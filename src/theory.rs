//! Where the theory is exact: one linear layer (plain, or defended as `y = C (W~ x) + b`) fitting
//! a regression by full-batch gradient descent on L = |Z - Y|^2 / (2n). The exact Hessian at a
//! point, its largest eigenvalue, and the largest learning rate at which gradient descent is
//! stable, measured by running it (on any engine).
//!
//! Parameter order of the Hessian: W (row-major), b, then C (row-major) for a defended layer.
//! With R = Z - Y, A = X W~^T:
//!   dZ_ij/dW_kl = C_jk X_il (plain: [j == k] X_il),  dZ_ij/db_j = 1,  dZ_ij/dC_jk = A_ik,
//!   H = J^T J / n  +  residual term d2L/dC_jk dW_kl = sum_i R_ij X_il / n.

use crate::data::Regression;
use crate::engine::{Engine, EngineError, Recording};
use crate::model::{
    DeviceModel, FactorRole, Gradients, HostLayer, HostModel, Trainable, Workspace, graph,
};
use crate::training::{OptimizerKind, OptimizerState};
use faer::Mat;

/// The exact Hessian of the regression loss of a one-layer model at its current parameters; the
/// layer is plain (`[weight]`) or SpecDef's (`[weight, compensation]`).
pub fn exact_hessian(layer: &HostLayer, data: &Regression) -> Mat<f64> {
    let (n, d, m) = (data.samples, data.features, data.outputs);
    let x = |i: usize, l: usize| data.inputs[i * d + l];
    let weight = layer
        .matrix(FactorRole::Weight)
        .expect("a plain or SpecDef layer has a weight");
    let w = |k: usize, l: usize| weight.values[k * d + l];
    let identity = crate::model::Matrix::identity(m);
    let compensation = layer.matrix(FactorRole::Compensation);
    let c_matrix = compensation.unwrap_or(&identity);
    let c = |j: usize, k: usize| c_matrix.values[j * m + k];
    // A = X W^T (n x m), Z = A C^T + b.
    let a: Vec<f64> = (0..n * m)
        .map(|idx| (0..d).map(|l| x(idx / m, l) * w(idx % m, l)).sum())
        .collect();
    let residual: Vec<f64> = (0..n * m)
        .map(|idx| {
            let (i, j) = (idx / m, idx % m);
            let z: f64 = (0..m).map(|k| c(j, k) * a[i * m + k]).sum::<f64>() + layer.bias.values[j];
            z - data.targets[i * m + j]
        })
        .collect();
    let defended = compensation.is_some();
    let (w_params, b_params) = (m * d, m);
    let c_offset = w_params + b_params;
    let params = c_offset + if defended { m * m } else { 0 };
    let mut jacobian = Mat::<f64>::zeros(n * m, params);
    for i in 0..n {
        for j in 0..m {
            let row = i * m + j;
            for k in 0..m {
                for l in 0..d {
                    jacobian[(row, k * d + l)] = c(j, k) * x(i, l);
                }
                if defended {
                    jacobian[(row, c_offset + j * m + k)] = a[i * m + k];
                }
            }
            jacobian[(row, w_params + j)] = 1.0;
        }
    }
    let mut hessian = jacobian.transpose() * &jacobian;
    if defended {
        for j in 0..m {
            for k in 0..m {
                for l in 0..d {
                    let value: f64 = (0..n).map(|i| residual[i * m + j] * x(i, l)).sum();
                    hessian[(c_offset + j * m + k, k * d + l)] += value;
                    hessian[(k * d + l, c_offset + j * m + k)] += value;
                }
            }
        }
    }
    hessian * faer::Scale(1.0 / n as f64)
}

/// The largest eigenvalue of a symmetric matrix.
pub fn lambda_max(hessian: &Mat<f64>) -> f64 {
    hessian
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map(|values| values.into_iter().fold(f64::NEG_INFINITY, f64::max))
        .unwrap_or(f64::NAN)
}

/// Runs `steps` of full-batch gradient descent at `lr`; true when the loss became non-finite or
/// grew a thousandfold over its starting value at any step.
pub fn gradient_descent_diverges(
    engine: &mut dyn Engine,
    model: &HostModel,
    data: &Regression,
    lr: f64,
    steps: usize,
) -> Result<bool, EngineError> {
    let device = DeviceModel::upload(engine, model)?;
    let ws = Workspace::alloc(engine, &device, data.samples, data.outputs)?;
    engine.upload(ws.inputs, &data.inputs)?;
    engine.upload(ws.targets, &data.targets)?;
    let grads = Gradients::alloc(engine, &device)?;
    let pairs = grads.trainable_pairs(&device, Trainable::default());
    let optimizer = OptimizerState::new(engine, OptimizerKind::Sgd, pairs)?;
    let mut loss_only = Recording::new();
    graph::forward(&mut loss_only, &device, &ws)?;
    graph::squared_error(&mut loss_only, &ws)?;
    engine.run(&loss_only)?;
    let initial = engine.read_one(ws.loss_sum)?[0];
    let mut step = Recording::new();
    graph::forward(&mut step, &device, &ws)?;
    graph::squared_error(&mut step, &ws)?;
    graph::backward(&mut step, &device, &ws, &grads, Trainable::default())?;
    optimizer.record_step(&mut step, lr, 1)?;
    // Every step is checked: above 2 / lambda_max the loss can blow up a billionfold and
    // come back down once the sharpness drops (a catapult), which sparse checks would miss.
    for _ in 0..steps {
        engine.run(&step)?;
        let loss = engine.read_one(ws.loss_sum)?[0];
        if !loss.is_finite() || loss > 1e3 * initial {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Bisects (in log space) for the largest learning rate at which gradient descent stays stable,
/// between a stable `low` and an unstable `high`.
pub fn largest_stable_lr(
    engine: &mut dyn Engine,
    model: &HostModel,
    data: &Regression,
    (mut low, mut high): (f64, f64),
    steps: usize,
    bisections: usize,
) -> Result<f64, EngineError> {
    for _ in 0..bisections {
        let mid = (low * high).sqrt();
        if gradient_descent_diverges(engine, model, data, mid, steps)? {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok((low * high).sqrt())
}
