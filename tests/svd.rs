//! The one-sided Jacobi SVD (WGSL on the GPU, its twin in f64) against faer's f64 SVD, and
//! SpecDef computed through the GPU's SVD against SpecDef through faer's.

mod common;

use common::{gpu, rng, uniform};
use specdef::Tolerance;
use specdef::defense::{LayerSelection, SpecDef};
use specdef::engine::Engine;
use specdef::engine::cpu::CpuEngine64;
use specdef::linalg::{JACOBI_SWEEPS, Svd, faer_svd, jacobi_svd};
use specdef::model::{ActivationChoice, FactorRole, HostLayer, HostModel, Matrix, ModelSpec};

const SHAPES: [(usize, usize); 4] = [(17, 9), (64, 48), (10, 256), (1, 1)];

fn random_matrix(rows: usize, cols: usize) -> Matrix {
    Matrix::new(
        rows,
        cols,
        uniform(&mut rng((rows * 1000 + cols) as u64), rows * cols, 1.0),
    )
}

/// Singular values and the reconstruction `U S V^T` against faer's, within `tolerance`.
fn check_svd(name: &str, svd: &Svd, a: &Matrix, tolerance: Tolerance) {
    let reference = faer_svd(a).unwrap();
    tolerance
        .check(&svd.s, &reference.s)
        .unwrap_or_else(|e| panic!("{name} {}x{}: singular values: {e}", a.rows, a.cols));
    tolerance
        .check(&svd.reconstruct().values, &a.values)
        .unwrap_or_else(|e| panic!("{name} {}x{}: U S V^T: {e}", a.rows, a.cols));
}

#[test]
fn the_f64_jacobi_twin_matches_faer() {
    for (rows, cols) in SHAPES {
        let a = random_matrix(rows, cols);
        let svd = jacobi_svd(&mut CpuEngine64::new(), &a, JACOBI_SWEEPS).unwrap();
        let scale = faer_svd(&a).unwrap().s[0];
        check_svd("cpu-f64", &svd, &a, Tolerance::new(1e-12 * scale, 1e-12));
    }
}

/// f32 rotations accumulate rounding like a sum over rows x sweeps terms, relative to sigma_1.
fn f32_svd_tolerance(a: &Matrix, sigma_1: f64) -> Tolerance {
    Tolerance::f32_sum(a.rows.max(a.cols) * JACOBI_SWEEPS, sigma_1)
}

#[test]
fn the_wgsl_jacobi_svd_matches_faer() {
    let Some(mut gpu) = gpu() else { return };
    for (rows, cols) in SHAPES {
        let a = random_matrix(rows, cols);
        let svd = jacobi_svd(&mut *gpu, &a, JACOBI_SWEEPS).unwrap();
        let sigma_1 = faer_svd(&a).unwrap().s[0];
        check_svd("gpu", &svd, &a, f32_svd_tolerance(&a, sigma_1));
    }
}

#[test]
fn specdef_through_the_gpu_svd_agrees_with_specdef_through_faer() {
    let Some(mut gpu) = gpu() else { return };
    let spec = ModelSpec {
        widths: vec![64, 48, 10],
        activation: ActivationChoice::Relu,
    };
    let base = HostModel::init(&spec, 4);
    let defence = SpecDef {
        alpha: 1e3,
        k: 5,
        layers: LayerSelection::All,
        compensate: true,
        compensation: Default::default(),
    };
    let on_host = defence.apply(&base, 0).unwrap();
    let engine: &mut dyn Engine = &mut *gpu;
    let on_gpu = defence
        .apply_with(&base, 0, &mut |w| {
            jacobi_svd(engine, w, JACOBI_SWEEPS).map_err(|e| e.to_string())
        })
        .unwrap();
    for (i, ((host, device), original)) in on_host
        .layers
        .iter()
        .zip(&on_gpu.layers)
        .zip(&base.layers)
        .enumerate()
    {
        // The compensated product still equals W to f32 accuracy, scaled by alpha.
        let weight = |l: &HostLayer| l.matrix(FactorRole::Weight).unwrap().clone();
        let original = weight(original);
        let sigma_1 = faer_svd(&original).unwrap().s[0];
        let tolerance = f32_svd_tolerance(&original, sigma_1 * defence.alpha);
        tolerance
            .check(&device.effective_weight().values, &original.values)
            .unwrap_or_else(|e| panic!("layer {i}: C W~ from the GPU SVD: {e}"));
        tolerance
            .check(&weight(device).values, &weight(host).values)
            .unwrap_or_else(|e| panic!("layer {i}: W~ differs from faer's: {e}"));
    }
}
