//! all-MiniLM-L6-v2's forward pass on every engine against the reference implementation
//! (sentence-transformers on PyTorch, float32): tests/data/reference_embeddings.json, made by
//! scripts/reference/reference_embeddings.py (a dev step, its command at its top). The eight
//! sentences run as one batch padded to the longest, so the mask has to hide the padding from
//! attention and pooling for the embeddings to agree.
//!
//! The model is fetched by scripts/fetch-transformer.sh; without it these tests say so and
//! pass, unless SPECDEF_REQUIRE_TRANSFORMER=1.

mod common;

use serde::Deserialize;
use specdef::encoder::{
    self, DeviceEncoder, EncoderConfig, EncoderHost, EncoderWeights, TokenBatch,
};
use specdef::engine::Engine;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::tokenizer::WordPiece;
use specdef::transformer_files::model_dir;
use specdef::{Recording, Tolerance};

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    cosine: Vec<(usize, usize, f64)>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    mean_pooled: Vec<f64>,
    normalized: Vec<f64>,
    first_token_last_hidden: Vec<f64>,
    embedding_output_token1: Vec<f64>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/reference_embeddings.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fetched model, or None (with the reason printed) where it is absent.
fn model() -> Option<(EncoderConfig, EncoderWeights, WordPiece)> {
    let folder = model_dir();
    if !common::fetched(&folder.join("model.safetensors")) {
        return None;
    }
    let (config, weights) = encoder::load(&folder, None).unwrap();
    let tokenizer = WordPiece::from_file(&folder.join("tokenizer.json")).unwrap();
    Some((config, weights, tokenizer))
}

/// What the forward pass gives for the reference's sentences, padded into one batch: per case
/// its mean-pooled embedding, token 0's last hidden state and token 1's embedding output
/// (the first 8 values of each, as the reference stores them).
struct Outputs {
    pooled: Vec<Vec<f64>>,
    first_token_last_hidden: Vec<Vec<f64>>,
    embedding_output_token1: Vec<Vec<f64>>,
}

fn run(
    engine: &mut dyn Engine,
    model: &(EncoderConfig, EncoderWeights, WordPiece),
    cases: &[Case],
) -> Outputs {
    let (config, weights, tokenizer) = model;
    let longest = cases.iter().map(|c| c.ids.len()).max().unwrap();
    let encodings: Vec<_> = cases
        .iter()
        .map(|c| tokenizer.encode(&c.text, longest).unwrap())
        .collect();
    for (case, encoding) in cases.iter().zip(&encodings) {
        assert_eq!(
            encoding.ids[..case.ids.len()],
            case.ids,
            "token ids of {:?}",
            case.text
        );
    }
    let batch = TokenBatch::new(&encodings);
    let device =
        DeviceEncoder::upload(engine, &EncoderHost::from_weights(config, weights)).unwrap();
    let mut rec = Recording::new();
    let run = device.record(engine, &mut rec, &batch).unwrap();
    engine.run(&rec).unwrap();
    let hidden_width = config.hidden_size;
    let pooled = engine.read_one(run.pooled).unwrap();
    let hidden = engine.read_one(run.hidden).unwrap();
    let embedded = engine.read_one(run.embedded).unwrap();
    let token = |values: &[f64], sequence: usize, t: usize| {
        values[(sequence * longest + t) * hidden_width..][..8].to_vec()
    };
    Outputs {
        pooled: pooled.chunks(hidden_width).map(<[f64]>::to_vec).collect(),
        first_token_last_hidden: (0..cases.len()).map(|s| token(&hidden, s, 0)).collect(),
        embedding_output_token1: (0..cases.len()).map(|s| token(&embedded, s, 1)).collect(),
    }
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Checks one engine's outputs against the reference. The reference ran in float32 through
/// six blocks: its hidden states (of order 1) carry errors of order 1e-6 to 1e-5, so values
/// are compared at 2e-4 absolute (and the pooled embeddings' directions at 1e-7 in cosine).
fn check(engine: &str, outputs: &Outputs, reference: &Reference) {
    let tolerance = Tolerance::new(2e-4, 1e-3);
    for (i, case) in reference.cases.iter().enumerate() {
        let what = |part: &str| format!("{part} of {:?} on {engine}", case.text);
        let error = |e| panic!("{e}");
        tolerance
            .check(
                &outputs.embedding_output_token1[i],
                &case.embedding_output_token1,
            )
            .unwrap_or_else(|e| error(format!("{}: {e}", what("embedding output"))));
        tolerance
            .check(
                &outputs.first_token_last_hidden[i],
                &case.first_token_last_hidden,
            )
            .unwrap_or_else(|e| error(format!("{}: {e}", what("last hidden state"))));
        tolerance
            .check(&outputs.pooled[i], &case.mean_pooled)
            .unwrap_or_else(|e| error(format!("{}: {e}", what("mean-pooled embedding"))));
        let agreement = cosine(&outputs.pooled[i], &case.normalized);
        assert!(
            agreement > 1.0 - 1e-7,
            "{}: cosine {agreement} with the reference",
            what("direction")
        );
    }
    // Pairwise similarities, and their order (which sentence is nearest to which).
    let mut ours = Vec::new();
    for &(i, j, want) in &reference.cosine {
        let got = cosine(&outputs.pooled[i], &outputs.pooled[j]);
        assert!(
            (got - want).abs() < 1e-5,
            "cosine of cases {i} and {j} on {engine}: {got} against {want}"
        );
        ours.push((got, (i, j)));
    }
    let mut theirs: Vec<(f64, (usize, usize))> = reference
        .cosine
        .iter()
        .map(|&(i, j, c)| (c, (i, j)))
        .collect();
    ours.sort_by(|a, b| a.0.total_cmp(&b.0));
    theirs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let order = |v: &[(f64, (usize, usize))]| v.iter().map(|p| p.1).collect::<Vec<_>>();
    assert_eq!(
        order(&ours),
        order(&theirs),
        "the order of the pairs' similarities on {engine}"
    );
}

#[test]
fn sentence_embeddings_match_the_reference_implementation_on_the_cpu_engines() {
    let Some(model) = model() else { return };
    let reference = reference();
    assert_eq!(reference.cases.len(), 8);
    check(
        "cpu-f64",
        &run(&mut CpuEngine64::new(), &model, &reference.cases),
        &reference,
    );
    check(
        "cpu-f32",
        &run(&mut CpuEngine32::new(), &model, &reference.cases),
        &reference,
    );
}

#[test]
fn sentence_embeddings_match_the_reference_implementation_on_the_gpu() {
    let Some(model) = model() else { return };
    let Some(mut gpu) = common::gpu() else { return };
    let reference = reference();
    check("gpu", &run(&mut *gpu, &model, &reference.cases), &reference);
}

#[test]
fn a_truncated_or_corrupt_model_is_refused_with_the_reason() {
    let Some((config, _, _)) = model() else {
        return;
    };
    let truncated = config.clone().truncated(2).unwrap();
    assert_eq!(truncated.num_hidden_layers, 2);
    let message = config.clone().truncated(7).err().unwrap().to_string();
    assert!(message.contains("cannot keep 7 of 6 blocks"), "{message}");
    let message = EncoderWeights::from_bytes(b"not a model", &config)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("not a safetensors file"), "{message}");
    let bad = r#"{"vocab_size": 10, "hidden_size": 12, "num_attention_heads": 5, "num_hidden_layers": 1,
        "intermediate_size": 8, "max_position_embeddings": 16, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu"}"#;
    let message = EncoderConfig::from_json(bad).err().unwrap().to_string();
    assert!(
        message.contains("not a multiple of num_attention_heads"),
        "{message}"
    );
    let relu = bad
        .replace("\"num_attention_heads\": 5", "\"num_attention_heads\": 4")
        .replace("\"gelu\"", "\"relu\"");
    let message = EncoderConfig::from_json(&relu).err().unwrap().to_string();
    assert!(message.contains("hidden_act is \"relu\""), "{message}");
}

#[test]
fn the_embed_command_prints_ids_and_the_reference_embedding_as_json_lines() {
    let Some(_) = model() else { return };
    let reference = reference();
    let cases = [&reference.cases[0], &reference.cases[4]];
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let mut args = vec!["embed", "--engine", "cpu"];
    args.extend(&texts);
    let stdout = common::succeeded(common::specdef_command(&args, &[]));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, case) in lines.iter().zip(cases) {
        assert_eq!(line["text"], case.text.as_str());
        let ids: Vec<u32> = serde_json::from_value(line["ids"].clone()).unwrap();
        assert_eq!(ids, case.ids, "unpadded ids of {:?}", case.text);
        let embedding: Vec<f64> = serde_json::from_value(line["embedding"].clone()).unwrap();
        Tolerance::new(2e-4, 1e-3)
            .check(&embedding, &case.mean_pooled)
            .unwrap();
    }
    let missing = common::specdef_command(&["embed", "--model", "/nonexistent", "x"], &[]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("/nonexistent has no model.safetensors")
            && stderr.contains("fetch-transformer.sh"),
        "{stderr}"
    );
}
