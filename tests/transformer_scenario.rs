//! The transformer scenario: its settings (the built-in file and its variants parse, bad
//! settings are refused by name) and a whole run through `specdef run --released` on a tiny file
//! (one block, a few steps) released by `specdef release-transformer`: SpecDef, the grid, a
//! rewrite and a control, every record valid and the report's claims computed from them. The run needs the fetched model
//! and WordNet (without them it says so and passes, unless SPECDEF_REQUIRE_TRANSFORMER=1).

mod common;

use common::TINY_TRANSFORMER;
use specdef::report;
use specdef::transformer_scenario::{ReleasedClassifier, TransformerScenario};

#[test]
fn the_built_in_variants_parse_and_other_names_are_not_transformer_ones() {
    for name in ["transformer", "transformer-quick", "transformer-full"] {
        let scenario = TransformerScenario::builtin(name)
            .expect("a transformer variant")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(scenario.encoder.blocks >= 1, "{name}");
    }
    let full = TransformerScenario::builtin("transformer-full")
        .unwrap()
        .unwrap();
    assert_eq!(
        full.encoder.blocks, 6,
        "the full variant is the whole encoder"
    );
    let message = TransformerScenario::builtin("transformer-huge")
        .unwrap()
        .unwrap_err();
    assert!(message.contains("no variant \"huge\""), "{message}");
    for other in ["quick", "full", "transformers", "first-order"] {
        assert!(TransformerScenario::builtin(other).is_none(), "{other}");
    }
}

/// The built-in file with one line replaced.
fn edited(from: &str, to: &str) -> Result<TransformerScenario, String> {
    let text = specdef::transformer_scenario::TRANSFORMER_SCENARIO;
    assert!(text.contains(from), "the built-in file has {from:?}");
    TransformerScenario::parse(&text.replacen(from, to, 1), None, "edited.toml")
}

#[test]
fn bad_settings_are_refused_naming_the_field() {
    for (from, to, named) in [
        ("blocks = 2", "blocks = 7", "encoder.blocks = 7"),
        ("tokens = 32", "tokens = 2", "encoder.tokens = 2"),
        ("test_size = 120", "test_size = 0", "encoder.test_size"),
        ("layers = \"all\"", "layers = \"0, 12\"", "defense.layers"),
        ("alphas = [1e4]", "alphas = [0.5]", "defense.alphas"),
        (
            "optimizers = [\"sgd\", \"adam\", \"muon\", \"adahessian\"]",
            "optimizers = [\"sgd\", \"sophia\"]",
            "sophia: not built for the encoder",
        ),
        (
            "blocks = 2",
            "blocks = 2\nwidth = 3",
            "unknown field `width`",
        ),
        ("lr = 1e-4", "lr = -1e-4", "release.lr"),
        (
            "lr_grid = { from = 1e-4, to = 1e-2, per_decade = 1 }",
            "lr_grid = { from = -1e-4, to = 1e-2, per_decade = 1 }",
            "adaptive.lr_grid",
        ),
    ] {
        let message = edited(from, to).unwrap_err();
        assert!(message.contains(named), "{to}: {message}");
        assert!(message.starts_with("edited.toml"), "{message}");
    }
    assert!(edited("blocks = 2", "blocks = 1").is_ok());
}

#[test]
fn a_tiny_scenario_runs_every_phase_into_valid_records_and_a_report() {
    // Released once by `specdef release-transformer`; the run starts from that file.
    let Some(released) = common::tiny_released() else {
        return;
    };
    let measured = ReleasedClassifier::decode(&std::fs::read(released).unwrap())
        .unwrap()
        .measured;
    let dir = common::scratch("transformer-scenario", "tiny");
    let file = dir.join("tiny.toml");
    std::fs::write(&file, TINY_TRANSFORMER).unwrap();
    let out = dir.join("out");
    let args = [
        "run",
        file.to_str().unwrap(),
        "--engine",
        "cpu",
        "--released",
        released.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let stdout = common::succeeded(common::specdef_command(&args, &[]));
    assert!(stdout.contains("scenario tiny-transformer"), "{stdout}");
    let text = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    // Parsing validates every record (its outcome, curves, collapse flag and defence).
    let records = report::from_json_lines(&text).unwrap();
    let labels: Vec<String> = records.iter().map(|r| r.defense_label()).collect();
    // The grid on both models (2 optimisers, 1 rate), fusion on the defended one, the control
    // on both.
    let want = [
        "none",
        "none",
        "specdef a=1e4",
        "specdef a=1e4",
        "specdef a=1e4 + fusion",
        "none + biases-and-norms",
        "specdef a=1e4 + biases-and-norms",
    ];
    assert_eq!(labels, want);
    for r in &records {
        assert_eq!(r.harmful_accuracy_released, Some(measured.harmful_accuracy));
        assert_eq!(r.release.as_deref(), Some("relearning"));
        assert_eq!(r.scenario, "tiny-transformer");
        assert_eq!(r.accuracy_curve.first().map(|p| p.0), Some(0));
        assert!(r.harmful_accuracy_released.is_some());
        assert!(
            r.heldout_harmful_accuracy.is_some(),
            "generalisation is measured"
        );
    }
    let defended = &records[2];
    assert_eq!(defended.k_per_layer.as_deref(), Some("0:25 1:25 2:25 3:25"));
    // SpecDef adds a 384 x 384 compensation per defended map; fusion takes them away again.
    assert_eq!(
        defended.parameter_count - records[0].parameter_count,
        4 * 384 * 384
    );
    assert_eq!(records[4].adaptive_overhead, Some(-(4 * 384 * 384)));
    assert_eq!(records[4].parameter_count, records[0].parameter_count);
    assert!(
        defended.function_error_max > 0.0 && defended.function_error_max < 0.1,
        "f32 keeps the defended function: {}",
        defended.function_error_max
    );
    assert!(
        records[5].trainable.contains("biases"),
        "{}",
        records[5].trainable
    );
    assert!(!records[5].train_weights);
    let claims = report::claims::claims(&records);
    assert!(!claims.is_empty());
}
