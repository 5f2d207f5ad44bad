//! SpecDef and the adaptive rewrites on all-MiniLM-L6-v2's linear maps (Q, K, V, the
//! attention's output, both feed-forward maps), through the same layer chains as the MLP's and
//! with no code of their own: the defended encoder computes the same embeddings, the ablation
//! without compensation does not, the rewrites keep the function, and reverse mode reaches the
//! deformed weight through the chain (its gradient is `C^T` times the undefended one).
//! On the first block, with SpecDef on its four attention maps (a few layers, as the paper's
//! settings), to keep the f64 runs short in debug builds. Needs the fetched model (see
//! tests/encoder.rs); without it the tests say so and pass, unless SPECDEF_REQUIRE_TRANSFORMER=1.

mod common;

use specdef::attack::{AdaptiveAttack, LoraPlacement};
use specdef::defense::{CompensationForm, LayerSelection, SpecDef};
use specdef::encoder::{self, DeviceEncoder, EncoderHost, TokenBatch};
use specdef::engine::cpu::CpuEngine64;
use specdef::engine::{Engine, ReduceAxis, Reduction, gradient_recording};
use specdef::model::{FactorRole, Matrix};
use specdef::tokenizer::WordPiece;
use specdef::transformer_files::model_dir;
use specdef::{Recording, Tolerance};

const SENTENCES: [&str; 3] = [
    "A man is playing a guitar.",
    "dog: a member of the genus Canis",
    "The stock market fell sharply today.",
];

fn truncated_encoder() -> Option<(EncoderHost, WordPiece)> {
    let folder = model_dir();
    if !common::fetched(&folder.join("model.safetensors")) {
        return None;
    }
    let (config, weights) = encoder::load(&folder, Some(1)).unwrap();
    let tokenizer = WordPiece::from_file(&folder.join("tokenizer.json")).unwrap();
    Some((EncoderHost::from_weights(&config, &weights), tokenizer))
}

fn batch(tokenizer: &WordPiece) -> TokenBatch {
    let encodings: Vec<_> = SENTENCES
        .iter()
        .map(|s| tokenizer.encode(s, 16).unwrap())
        .collect();
    TokenBatch::new(&encodings)
}

/// The pooled embeddings in f64.
fn pooled(host: &EncoderHost, batch: &TokenBatch) -> Vec<f64> {
    let mut e = CpuEngine64::new();
    let device = DeviceEncoder::upload(&mut e, host).unwrap();
    let mut rec = Recording::new();
    let run = device.record(&mut e, &mut rec, batch).unwrap();
    e.run(&rec).unwrap();
    e.read_one(run.pooled).unwrap()
}

/// The gradient of `sum(pooled * w)`, for a fixed `w`, with respect to the weight factor of
/// linear map `map`.
fn weight_gradient(host: &EncoderHost, batch: &TokenBatch, map: usize) -> Vec<f64> {
    let mut e = CpuEngine64::new();
    let device = DeviceEncoder::upload(&mut e, host).unwrap();
    let mut rec = Recording::new();
    let run = device.record(&mut e, &mut rec, batch).unwrap();
    let (rows, cols) = (run.pooled.rows(), run.pooled.cols());
    let w: Vec<f64> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
        .collect();
    let w = e.tensor_from("w", rows, cols, &w).unwrap();
    let weighted = e.alloc("weighted", rows, cols).unwrap();
    let total = e.alloc("total", 1, 1).unwrap();
    rec.binary(specdef::engine::BinaryOp::Mul, run.pooled, w, weighted)
        .unwrap();
    rec.reduce(Reduction::Sum, ReduceAxis::Whole, weighted, total)
        .unwrap();
    let reverse = gradient_recording(&mut e, &rec, total, 1.0).unwrap();
    e.run(&reverse.recording).unwrap();
    let weight = device.linear[map]
        .factor(FactorRole::Weight)
        .unwrap()
        .matrix;
    e.read_one(reverse.gradient_of(weight).unwrap()).unwrap()
}

/// Q, K, V and the attention's output of block 0.
const DEFENDED: [usize; 4] = [0, 1, 2, 3];

fn specdef(compensate: bool) -> SpecDef {
    SpecDef {
        alpha: 1e4,
        k: 25,
        layers: LayerSelection::Indices(DEFENDED.to_vec()),
        compensate,
        compensation: CompensationForm::Full,
    }
}

#[test]
fn specdef_keeps_the_encoders_function_and_its_ablation_does_not() {
    let Some((host, tokenizer)) = truncated_encoder() else {
        return;
    };
    let batch = batch(&tokenizer);
    let plain = pooled(&host, &batch);
    let plain_gradient = weight_gradient(&host, &batch, 0);

    let mut defended = host.clone();
    specdef(true)
        .apply_to_layers(&mut defended.linear, 7)
        .unwrap();
    for (i, layer) in defended.linear.iter().enumerate() {
        let roles: Vec<FactorRole> = layer.factors.iter().map(|f| f.role).collect();
        match DEFENDED.contains(&i) {
            true => assert_eq!(roles, [FactorRole::Weight, FactorRole::Compensation]),
            false => assert_eq!(roles, [FactorRole::Weight]),
        }
    }
    let kept = pooled(&defended, &batch);
    let deformed_gradient = weight_gradient(&defended, &batch, 0);
    // C W~ equals W to about alpha * 1e-16 relative; through the block the embeddings agree
    // to far better than f32 could tell apart.
    Tolerance::new(1e-9, 1e-8).check(&kept, &plain).unwrap();

    // Reverse mode through the chain [W~, C]: the gradient of W~ is C^T times W's.
    let compensation = &defended.linear[0]
        .factor(FactorRole::Compensation)
        .unwrap()
        .matrix;
    let width = compensation.rows;
    let transposed = Matrix::new(
        width,
        width,
        (0..width * width)
            .map(|i| compensation.values[(i % width) * width + i / width])
            .collect(),
    );
    let want = transposed.matmul(&Matrix::new(
        width,
        plain_gradient.len() / width,
        plain_gradient.clone(),
    ));
    // W~'s top directions are alpha times W's: the backward through them rounds at about
    // alpha * 1e-16 of the gradient's largest entries.
    let largest = want.values.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    Tolerance::new(1e-9 * largest, 1e-6)
        .check(&deformed_gradient, &want.values)
        .unwrap();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(
        norm(&deformed_gradient) < norm(&plain_gradient),
        "C shrinks the top-25 directions of the gradient"
    );

    let mut ablated = host.clone();
    specdef(false)
        .apply_to_layers(&mut ablated.linear, 7)
        .unwrap();
    let broken = pooled(&ablated, &batch);
    assert!(
        Tolerance::new(1e-2, 1e-2).check(&broken, &plain).is_err(),
        "without C the function changes"
    );
}

#[test]
fn adaptive_rewrites_apply_to_the_encoders_linear_maps_and_keep_its_function() {
    let Some((host, tokenizer)) = truncated_encoder() else {
        return;
    };
    let batch = batch(&tokenizer);
    let mut defended = host.clone();
    specdef(true)
        .apply_to_layers(&mut defended.linear, 7)
        .unwrap();
    let plain = pooled(&host, &batch);
    let rewrites = [
        AdaptiveAttack::Lora {
            placement: LoraPlacement::Weight,
            rank: 4,
        },
        AdaptiveAttack::Fusion,
    ];
    for attack in rewrites {
        let mut rewritten = defended.clone();
        attack
            .apply_to_layers(&mut rewritten.linear, 1e4, 3)
            .unwrap();
        Tolerance::new(1e-9, 1e-8)
            .check(&pooled(&rewritten, &batch), &plain)
            .unwrap_or_else(|e| panic!("{attack}: {e}"));
    }
    let mut fused = defended.clone();
    AdaptiveAttack::Fusion
        .apply_to_layers(&mut fused.linear, 1e4, 3)
        .unwrap();
    assert!(fused.linear.iter().all(|layer| layer.is_plain()));
    let mut adapted = defended;
    AdaptiveAttack::Lora {
        placement: LoraPlacement::Weight,
        rank: 4,
    }
    .apply_to_layers(&mut adapted.linear, 1e4, 3)
    .unwrap();
    assert!(
        adapted
            .linear
            .iter()
            .all(|layer| layer.factor(FactorRole::Weight).unwrap().lora.is_some())
    );
    // An adaptive attack that rewrites SpecDef's layers is refused on the undefended encoder.
    let mut undefended = host;
    let message = AdaptiveAttack::Fusion
        .apply_to_layers(&mut undefended.linear, 1e4, 3)
        .err()
        .unwrap();
    assert!(message.contains("this model has none"), "{message}");
}
