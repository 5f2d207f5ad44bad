//! The released classifier file (`specdef release-transformer`) and the app's transformer demo
//! that starts from it: the file round-trips bit for bit and refuses corruption and another
//! scenario's release by name; the demo's attack runs on the f64 CPU engine and on the GPU
//! (lavapipe), keeps the defended model's function before the attack, moves the undefended one,
//! and the two engines agree. Needs the fetched model and WordNet (without them it says so and
//! passes, unless SPECDEF_REQUIRE_TRANSFORMER=1).

mod common;

use specdef::Engine;
use specdef::engine::cpu::CpuEngine64;
use specdef::transformer_files::{model_dir, wordnet_dir};
use specdef::transformer_scenario::{
    AttackDemo, DemoInputs, DemoOutcome, DemoSettings, ReleasedClassifier, TransformerScenario,
};

fn released_bytes() -> Option<Vec<u8>> {
    Some(std::fs::read(common::tiny_released()?).unwrap())
}

#[test]
fn the_released_file_round_trips_and_refuses_what_is_not_it() {
    let Some(bytes) = released_bytes() else {
        return;
    };
    let released = ReleasedClassifier::decode(&bytes).unwrap();
    assert_eq!(released.scenario.name, "tiny-transformer");
    assert_eq!(released.classifier.encoder.config.num_hidden_layers, 1);
    let m = released.measured;
    for accuracy in [
        m.harmful_accuracy,
        m.harmful_accuracy_before_suppression,
        m.utility_accuracy,
    ] {
        assert!((0.0..=1.0).contains(&accuracy), "{m:?}");
    }
    // Trained in f32, stored in f32: written again, it reads back exactly (the header's JSON
    // map may come out in another order, so the bytes are not compared).
    let again = released.encode().unwrap();
    assert_eq!(again.len(), bytes.len());
    assert!(
        ReleasedClassifier::decode(&again).unwrap() == released,
        "the round trip moved a value"
    );

    let refused = |bytes: &[u8]| ReleasedClassifier::decode(bytes).unwrap_err().to_string();
    let message = refused(&bytes[..bytes.len() - 100]);
    assert!(message.contains("released classifier"), "{message}");
    let message = refused(b"not a model");
    assert!(message.contains("not a safetensors file"), "{message}");
    // Header fields edited in place (the same length, so the file still parses).
    let edit = |from: &str, to: &str| {
        assert_eq!(from.len(), to.len());
        let text = replaced(&bytes, from.as_bytes(), to.as_bytes());
        refused(&text)
    };
    let message = edit(
        "specdef-released-classifier/1",
        "specdef-released-classifier/9",
    );
    assert!(message.contains("format"), "{message}");
    let message = edit("animal", "animus");
    assert!(message.contains("its head classifies"), "{message}");
    // The header's values are JSON text inside JSON strings: their quotes are escaped.
    let message = edit(r#"num_hidden_layers\":1"#, r#"num_hidden_layers\":2"#);
    assert!(message.contains("blocks"), "{message}");

    // Another scenario's release is refused, naming what differs.
    let mut other: TransformerScenario = released.scenario.clone();
    other.seed += 1;
    other.encoder.tokens += 8;
    let message = released.check_made_by(&other).unwrap_err().to_string();
    assert!(message.contains("seed, [encoder]"), "{message}");
    assert!(released.check_made_by(&released.scenario).is_ok());
    // A defended encoder has no published form.
    let mut defended = released.clone();
    let spec = specdef::defense::SpecDef {
        alpha: 1e4,
        k: 4,
        layers: specdef::defense::LayerSelection::All,
        compensate: true,
        compensation: specdef::defense::CompensationForm::Full,
    };
    spec.apply_to_layers(&mut defended.classifier.encoder.linear, 0)
        .unwrap();
    let message = defended.encode().unwrap_err().to_string();
    assert!(message.contains("not one plain weight"), "{message}");
}

/// `bytes` with the first occurrence of `from` replaced by `to` (of the same length).
fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = (bytes.windows(from.len()))
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} is not in the file", String::from_utf8_lossy(from)));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

fn demo_inputs(bytes: &[u8]) -> DemoInputs {
    let tokenizer = std::fs::read_to_string(model_dir().join("tokenizer.json")).unwrap();
    let data_noun = std::fs::read_to_string(wordnet_dir().join("data.noun")).unwrap();
    DemoInputs::from_bytes(bytes, &tokenizer, &data_noun).unwrap()
}

/// The demo's attack to its end on `engine`, waiting for readbacks as a native caller may.
fn run_demo(engine: &mut dyn Engine, inputs: &DemoInputs, settings: DemoSettings) -> DemoOutcome {
    let mut demo = AttackDemo::start(inputs, settings).unwrap();
    let mut calls = 0;
    while !demo.is_done() {
        demo.advance(engine, inputs).unwrap();
        calls += 1;
        assert!(calls < 10_000, "the demo does not end: {}", demo.describe());
    }
    demo.outcome(inputs)
}

fn largest_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn the_demo_attacks_both_models_and_the_gpu_agrees_with_the_f64_engine() {
    let Some(bytes) = released_bytes() else {
        return;
    };
    let inputs = demo_inputs(&bytes);
    let settings = DemoSettings {
        steps: 3,
        lr: 1e-3,
        ..DemoSettings::default()
    };
    let exact = run_demo(&mut CpuEngine64::new(), &inputs, settings.clone());
    assert_eq!(exact.tokens.first().map(String::as_str), Some("[CLS]"));
    assert_eq!(exact.tokens.last().map(String::as_str), Some("[SEP]"));
    assert!(
        exact.tokens.contains(&"wolf".to_string()),
        "{:?}",
        exact.tokens
    );
    assert_eq!(exact.models.len(), 2);
    assert_eq!(exact.models[0].model, "undefended");
    assert!(exact.models[1].model.starts_with("SpecDef alpha=1e4"));
    for model in &exact.models {
        for p in [&model.probabilities_before, &model.probabilities_after] {
            assert_eq!(p.len(), 10);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{p:?}");
        }
    }
    let (undefended, defended) = (&exact.models[0], &exact.models[1]);
    // SpecDef keeps the function: in f64 the defended model classifies as the released one.
    let kept = largest_difference(
        &undefended.probabilities_before,
        &defended.probabilities_before,
    );
    assert!(
        kept < 1e-8,
        "defended before the attack differs by {kept:e}"
    );
    assert_eq!(
        undefended.harmful_accuracy_before,
        defended.harmful_accuracy_before
    );
    // The attack moved the undefended model.
    let moved = largest_difference(
        &undefended.probabilities_before,
        &undefended.probabilities_after,
    );
    assert!(
        moved > 1e-4,
        "three Adam steps at 1e-3 left the sentence at {moved:e}"
    );

    let Some(mut gpu) = common::gpu() else {
        return;
    };
    let on_gpu = run_demo(&mut *gpu, &inputs, settings);
    for (index, (g, e)) in on_gpu.models.iter().zip(&exact.models).enumerate() {
        let before = largest_difference(&g.probabilities_before, &e.probabilities_before);
        let after = largest_difference(&g.probabilities_after, &e.probabilities_after);
        println!(
            "{}: GPU against f64, before {before:.2e}, after {after:.2e}",
            g.model
        );
        let (before_within, after_within) = common::demo_tolerance(index == 1);
        assert!(
            before < before_within,
            "{}: before the attack {before:e}",
            g.model
        );
        assert!(
            after < after_within,
            "{}: after the attack {after:e}",
            g.model
        );
    }
}
