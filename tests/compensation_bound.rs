//! The closed-form bound on sigma_1(H) from a SpecDef layer's spectrum and its inputs' alignment
//! (src/compensation_bound.rs) against the dense f64 Hessian of a tiny ReLU network: a lower
//! bound on the compensation layer's block, hence on the whole Hessian, at every alpha; tight
//! once alpha dominates; exactly alpha^2 between alphas (the function, and so every other factor
//! of the bound, is unchanged).

mod common;

use common::{rng, uniform};
use specdef::compensation_bound::{CompensationBound, compensation_bounds};
use specdef::data::Dataset;
use specdef::defense::{LayerSelection, SpecDef};
use specdef::engine::Engine;
use specdef::engine::cpu::CpuEngine64;
use specdef::model::{
    ActivationChoice, DeviceModel, FactorRole, HessianVectorProduct, HostModel, Loss, ModelSpec,
    ParamRole, Trainable, Workspace,
};

const SAMPLES: usize = 8;

fn model(activation: ActivationChoice) -> HostModel {
    let spec = ModelSpec {
        widths: vec![5, 4, 4, 3],
        activation,
    };
    HostModel::init(&spec, 41)
}

fn batch() -> Dataset {
    Dataset {
        inputs: uniform(&mut rng(42), SAMPLES * 5, 1.5),
        labels: (0..SAMPLES).map(|i| (i * 7 + 1) % 3).collect(),
        features: 5,
    }
}

fn defend(model: &HostModel, alpha: f64) -> HostModel {
    SpecDef {
        alpha,
        k: 1,
        layers: LayerSelection::All,
        compensate: true,
        compensation: Default::default(),
    }
    .apply(model, 0)
    .unwrap()
}

/// The largest |eigenvalue| of a symmetric matrix given row by row.
fn sigma_1(rows: &[Vec<f64>]) -> f64 {
    let n = rows.len();
    let m = faer::Mat::from_fn(n, n, |i, j| 0.5 * (rows[i][j] + rows[j][i]));
    m.self_adjoint_eigenvalues(faer::Side::Lower)
        .unwrap()
        .into_iter()
        .fold(0.0f64, |a, e| a.max(e.abs()))
}

/// The dense Hessian of the mean cross-entropy over every parameter (column i is H e_i) and
/// the indices of each layer's compensation block.
fn dense_hessian(model: &HostModel, batch: &Dataset) -> (Vec<Vec<f64>>, Vec<Vec<usize>>) {
    let mut e = CpuEngine64::new();
    let device = DeviceModel::upload(&mut e, model).unwrap();
    let ws = Workspace::alloc(&mut e, &device, batch.len(), 1).unwrap();
    e.upload(ws.inputs, &batch.inputs).unwrap();
    e.upload(ws.targets, &batch.label_values()).unwrap();
    let product = HessianVectorProduct::prepare(
        &mut e,
        &device,
        &ws,
        Loss::CrossEntropy,
        Trainable::default(),
    )
    .unwrap();
    let lens: Vec<usize> = product.slots().iter().map(|s| s.1.len()).collect();
    let n: usize = lens.iter().sum();
    let mut blocks = vec![Vec::new(); model.layers.len()];
    let mut at = 0;
    for (slot, len) in product.slots().iter().zip(&lens) {
        if slot.0.role == ParamRole::Factor(FactorRole::Compensation) {
            blocks[slot.0.layer].extend(at..at + len);
        }
        at += len;
    }
    let columns = (0..n)
        .map(|i| {
            let mut split = Vec::new();
            let mut start = 0;
            for len in &lens {
                split.push((start..start + len).map(|j| f64::from(j == i)).collect());
                start += len;
            }
            product.apply(&mut e, &split).unwrap().concat()
        })
        .collect();
    (columns, blocks)
}

fn bounds(model: &HostModel) -> Vec<CompensationBound> {
    compensation_bounds(model, &batch())
        .into_iter()
        .map(|(layer, b)| b.unwrap_or_else(|e| panic!("layer {layer}: {e}")))
        .collect()
}

#[test]
fn the_bound_lies_below_the_compensation_block_and_is_tight_once_alpha_dominates() {
    let base = model(ActivationChoice::Relu);
    for alpha in [1.0, 10.0, 1e3] {
        let defended = defend(&base, alpha);
        let (hessian, blocks) = dense_hessian(&defended, &batch());
        let whole = sigma_1(&hessian);
        let found = bounds(&defended);
        assert_eq!(found.len(), 3, "every layer is SpecDef's chain");
        for bound in &found {
            let indices = &blocks[bound.layer];
            let block: Vec<Vec<f64>> = (indices.iter())
                .map(|&i| indices.iter().map(|&j| hessian[j][i]).collect())
                .collect();
            let measured = sigma_1(&block);
            let context = format!("alpha {alpha:e}, layer {}: {bound:?}", bound.layer);
            eprintln!(
                "alpha {alpha:e}, layer {}: bound {:.4e}, C block {measured:.4e}, H {whole:.4e}",
                bound.layer, bound.bound
            );
            assert!(bound.bound > 0.0, "{context}");
            assert!(
                bound.bound <= measured * (1.0 + 1e-9),
                "{context}: block {measured}"
            );
            assert!(measured <= whole * (1.0 + 1e-9), "{context}: H {whole}");
            if alpha >= 1e3 {
                // The alpha-scaled direction carries the block: the bound is its top eigenvalue
                // up to terms a factor alpha smaller.
                assert!(
                    bound.bound >= 0.9 * measured,
                    "{context}: {} of the block's {measured}",
                    bound.bound
                );
            }
        }
    }
}

#[test]
fn the_bound_grows_exactly_like_alpha_squared() {
    let base = model(ActivationChoice::Relu);
    let (low, high) = (bounds(&defend(&base, 10.0)), bounds(&defend(&base, 1e4)));
    for (a, b) in low.iter().zip(&high) {
        let ratio = b.bound / a.bound;
        assert!(
            (ratio / 1e6 - 1.0).abs() < 1e-6,
            "layer {}: {ratio} for alpha 10 -> 1e4",
            a.layer
        );
        assert!((b.output_curvature / a.output_curvature - 1.0).abs() < 1e-6);
        assert!((b.mean_cos2 - a.mean_cos2).abs() < 1e-9);
        assert_eq!(
            (a.direction, b.direction),
            (1, 1),
            "the alpha-scaled direction"
        );
    }
}

#[test]
fn layers_the_bound_does_not_cover_are_named_or_left_out() {
    // Undefended: no SpecDef chain, nothing to bound.
    assert!(compensation_bounds(&model(ActivationChoice::Relu), &batch()).is_empty());
    // tanh after a layer gives its C block a residual part: refused, naming why; the last
    // layer (no activation after it) is still bounded.
    let smooth = defend(&model(ActivationChoice::Tanh), 1e3);
    let found = compensation_bounds(&smooth, &batch());
    assert_eq!(found.len(), 3);
    for (layer, result) in &found {
        match (layer, result) {
            (2, Ok(bound)) => assert!(bound.bound > 0.0),
            (_, Err(e)) => assert!(e.contains("Tanh") && e.contains("piecewise"), "{e}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
