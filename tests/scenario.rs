//! Scenario files, model files and the quick scenario's outcome.

mod common;

use common::{every_form_model, gpu, run_quietly};
use specdef::Engine;
use specdef::defense::{CompensationForm, Defense, LayerSelection, SpecDef};
use specdef::engine::cpu::CpuEngine32;
use specdef::model::{ActivationChoice, DeviceModel, HostModel, ModelSpec, Trainable, file};
use specdef::report::{self, success_windows};
use specdef::scenario::{RunRecord, Scenario, ScenarioSession, Success};
use specdef::training::{
    OptimizerKind, Schedule, TrainOutcome, TrainSession, TrainSettings, train,
};

/// Every variant of the built-in scenario resolves and validates, and the two that carry the
/// paper's setting further keep it: the paper's alpha range, and the relearning seeds sweep.
#[test]
fn every_builtin_variant_validates() {
    let names = Scenario::variant_names(specdef::scenario::DEFAULT_SCENARIO);
    for expected in [
        "full",
        "paper-alphas",
        "first-order",
        "relearning-seeds",
        "quick",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for name in &names {
        let scenario = Scenario::builtin(Some(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        scenario
            .validate()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let alphas = Scenario::builtin(Some("paper-alphas")).unwrap();
    assert_eq!(alphas.defense.alphas, [1e3, 1e5, 1e7, 1e9]);
    assert_eq!(alphas.release.name(), "relearning");
    let seeds = Scenario::builtin(Some("relearning-seeds")).unwrap();
    assert_eq!(seeds.release.name(), "relearning");
    assert_eq!(seeds.sweep.seeds, 5);
}

#[test]
fn the_builtin_scenario_and_its_quick_variant_parse() {
    let full = Scenario::builtin(None).unwrap();
    let quick = Scenario::builtin(Some("quick")).unwrap();
    assert_eq!(full.model.widths, vec![64, 256, 256, 10]);
    assert_eq!(quick.model.widths, vec![64, 64, 64, 10]);
    assert_eq!(
        full.attack.lr_grid.values().len(),
        11,
        "one lr per decade from 1e-10 to 1"
    );
    assert_eq!(full.attack.lr_grid.values()[0], 1e-10);
    let labels = |scenario: &Scenario| -> Vec<String> {
        (scenario.defense.defenses().iter())
            .map(Defense::label)
            .collect()
    };
    assert_eq!(
        labels(&full),
        [
            "none",
            "specdef a=1e3",
            "specdef a=1e4",
            "specdef a=1e6",
            "specdef-ablation a=1e4"
        ],
        "undefended, the paper's alphas, and the ablation without C"
    );
    // The paper's setting by default; the earlier one kept as `first-order`.
    assert_eq!(full.release.name(), "relearning");
    assert_eq!(
        quick.release.name(),
        "new-classes",
        "the device check's reference"
    );
    let earlier = Scenario::builtin(Some("first-order")).unwrap();
    assert_eq!(earlier.release.name(), "new-classes");
    assert_eq!(
        labels(&earlier),
        [
            "none",
            "specdef a=1e2",
            "specdef a=1e4",
            "specdef a=1e6",
            "specdef-thin a=1e4"
        ]
    );
    let whole = Scenario::builtin(Some("full")).unwrap();
    assert!(whole.attack.optimizers.contains(&OptimizerKind::NewtonCg));
    assert!(!full.attack.optimizers.contains(&OptimizerKind::NewtonCg));
    assert_eq!(quick.defense.defenses().len(), 2, "undefended and 1e4 only");
    // The variant replaces only what it names: of the data, the held-out share (none).
    assert_eq!(quick.data.harmful_classes, full.data.harmful_classes);
    assert_eq!(quick.data.utility_classes, full.data.utility_classes);
    assert_eq!(quick.data.test_fraction, full.data.test_fraction);
    assert_eq!(
        (quick.data.heldout_fraction, full.data.heldout_fraction),
        (0.0, 0.5)
    );
}

#[test]
fn scenario_errors_name_the_field() {
    let base = specdef::scenario::DEFAULT_SCENARIO;
    let unknown = base.replace("steps = 300", "steps = 300\nstepz = 3");
    let err = Scenario::parse(&unknown, None, "bad.toml").unwrap_err();
    assert!(
        err.starts_with("bad.toml") && err.contains("stepz"),
        "{err}"
    );

    let wrong_type = base.replace("k = 25", "k = \"many\"");
    let err = Scenario::parse(&wrong_type, None, "bad.toml").unwrap_err();
    assert!(err.contains("many") || err.contains("integer"), "{err}");

    let err = Scenario::parse(base, Some("huge"), "bad.toml").unwrap_err();
    assert!(
        err.contains("no variant \"huge\"") && err.contains("quick"),
        "{err}"
    );

    let bad_layers = base.replace("layers = \"all\"", "layers = \"first\"");
    let err = Scenario::parse(&bad_layers, None, "bad.toml").unwrap_err();
    assert!(err.contains("first"), "{err}");

    let bad_width = base.replace("widths = [64, 256, 256, 10]", "widths = [63, 10]");
    let err = Scenario::parse(&bad_width, None, "bad.toml").unwrap_err();
    assert!(err.contains("model.widths[0] must be 64"), "{err}");

    let no_classes = base.replace("harmful_classes = [5, 6, 7, 8, 9]", "harmful_classes = []");
    let err = Scenario::parse(&no_classes, None, "bad.toml").unwrap_err();
    assert!(err.contains("at least one class"), "{err}");

    // The first target_accuracy is the attack grid's.
    let bad_beta = base.replacen(
        "target_accuracy = 0.9\n",
        "target_accuracy = 0.9\nhyper = { beta1 = 1.5 }\n",
        1,
    );
    let err = Scenario::parse(&bad_beta, None, "bad.toml").unwrap_err();
    assert!(
        err.contains("attack.hyper: beta1 must be in [0, 1)"),
        "{err}"
    );

    let bad_group = base.replacen(
        "target_accuracy = 0.9\n",
        "target_accuracy = 0.9\ngroups = { biases = { optimizer = \"sgd\", lr_scale = -1.0 } }\n",
        1,
    );
    let err = Scenario::parse(&bad_group, None, "bad.toml").unwrap_err();
    assert!(err.contains("attack.groups.biases.lr_scale"), "{err}");

    let unknown_group = base.replacen(
        "target_accuracy = 0.9\n",
        "target_accuracy = 0.9\ngroups = { gates = { optimizer = \"sgd\" } }\n",
        1,
    );
    let err = Scenario::parse(&unknown_group, None, "bad.toml").unwrap_err();
    assert!(err.contains("gates"), "{err}");

    // The thin form is in the whole study's extra defences.
    let bad_extra = base.replace("compensation = \"thin\"", "compensation = \"half\"");
    let err = Scenario::parse(&bad_extra, Some("full"), "bad.toml").unwrap_err();
    assert!(err.contains("half"), "{err}");

    let err = Scenario::parse("name = ", None, "bad.toml").unwrap_err();
    assert!(err.starts_with("bad.toml"), "{err}");
}

fn sample_model(defended: bool) -> HostModel {
    let spec = ModelSpec {
        widths: vec![64, 12, 10],
        activation: ActivationChoice::Gelu,
    };
    let model = HostModel::init(&spec, 9);
    if !defended {
        return model;
    }
    SpecDef {
        alpha: 1e4,
        k: 5,
        layers: LayerSelection::Indices(vec![0]),
        compensate: true,
        compensation: Default::default(),
    }
    .apply(&model, 0)
    .unwrap()
}

#[test]
fn model_files_round_trip_bit_exactly() {
    let dir = std::env::temp_dir().join(format!("specdef-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for defended in [false, true] {
        let model = sample_model(defended);
        let path = dir.join(format!("model-{defended}.safetensors"));
        file::save(&path, &model, "test").unwrap();
        let (loaded, defense) = file::load(&path).unwrap();
        assert_eq!(defense, "test");
        // PartialEq on f64 values: bit-exact for every finite weight.
        assert_eq!(loaded, model);
    }
    // No temporary file is left beside the saved one.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_with_every_layer_form_round_trips_bit_exactly() {
    let model = every_form_model(ActivationChoice::Gelu);
    let (loaded, defense) = file::decode(&file::encode(&model, "forms").unwrap()).unwrap();
    assert_eq!(defense, "forms");
    assert_eq!(loaded, model);
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn format_1_model_files_still_load_and_specdef_reproduces_them() {
    let (base, none) = file::load(&fixture("format1-base.safetensors")).unwrap();
    let (defended, description) = file::load(&fixture("format1-defended.safetensors")).unwrap();
    assert_eq!(none, "none");
    assert!(description.contains("\"alpha\":10000.0"), "{description}");
    assert_eq!(defended.defended_layers(), vec![0]);
    assert!(defended.layers[1].is_plain());
    // Today's SpecDef (full form, SVD in f64) gives the file the earlier code wrote, bit for bit.
    let again = SpecDef {
        alpha: 1e4,
        k: 5,
        layers: LayerSelection::Indices(vec![0]),
        compensate: true,
        compensation: CompensationForm::Full,
    }
    .apply(&base, 0)
    .unwrap();
    assert_eq!(again, defended);
}

#[test]
fn corrupt_truncated_and_mismatched_model_files_are_refused_clearly() {
    let bytes = file::encode(&sample_model(true), "none").unwrap();
    let truncated = file::decode(&bytes[..bytes.len() - 17]).unwrap_err();
    assert!(truncated.contains("not a safetensors file"), "{truncated}");
    let garbage = file::decode(b"definitely not a model").unwrap_err();
    assert!(garbage.contains("not a safetensors file"), "{garbage}");

    // A header that claims another architecture than the tensors have.
    let (from, to) = (b"[64,12,10]", b"[64,13,10]");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("widths in the header");
    let mut lied = bytes.clone();
    lied[at..at + to.len()].copy_from_slice(to);
    let err = file::decode(&lied).unwrap_err();
    assert!(
        err.contains("layers.0.") && err.contains("the architecture needs"),
        "{err}"
    );

    let err = file::load(std::path::Path::new("/nonexistent/model.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/model.safetensors"),
        "{err}"
    );
}

fn quick_records(engine: &mut dyn Engine) -> Vec<RunRecord> {
    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let outcome = run_quietly(engine, &scenario, Some("quick"));
    assert_eq!(outcome.records.len(), 2 * 2 * 7);
    outcome.records
}

/// The outcome the theory predicts: undefended SGD and Adam reach the target somewhere in the
/// grid; SGD on SpecDef (alpha 1e4, C trainable) reaches it at none of the learning rates where
/// undefended SGD does. What Adam does on the defended model is reported, not asserted.
fn check_quick_outcome(records: &[RunRecord]) {
    let reached = |defense: &str, optimizer: &str| -> Vec<f64> {
        records
            .iter()
            .filter(|r| r.defense == defense && r.optimizer == optimizer && r.reached_target)
            .map(|r| r.lr)
            .collect()
    };
    let undefended_sgd = reached("none", "sgd");
    assert!(
        !undefended_sgd.is_empty(),
        "undefended SGD reached the target nowhere"
    );
    assert!(
        !reached("none", "adam").is_empty(),
        "undefended Adam reached the target nowhere"
    );
    let defended_sgd = reached("specdef", "sgd");
    assert!(
        defended_sgd.iter().all(|lr| !undefended_sgd.contains(lr)),
        "SGD broke SpecDef at {defended_sgd:?}, where undefended SGD also worked"
    );
    for window in success_windows(records) {
        eprintln!("{window:?}");
    }
    // The records survive a trip through the JSON-lines file format.
    let text = report::to_json_lines(records).unwrap();
    assert_eq!(report::from_json_lines(&text).unwrap().len(), records.len());
}

/// The relearning setting on the quick model: pretrained on every digit, the harmful ones then
/// suppressed to about chance while utility stays; the records say so, and a defended run that
/// relearns while losing utility is marked collapsed.
#[test]
fn the_relearning_setting_suppresses_then_the_attacker_relearns() {
    let mut scenario = Scenario::builtin(Some("quick")).unwrap();
    scenario.release = Scenario::builtin(None).unwrap().release;
    scenario.attack.optimizers = vec![OptimizerKind::Adam];
    let records = run_quietly(&mut CpuEngine32::new(), &scenario, None).records;
    assert_eq!(records.len(), 2 * 7);
    for r in &records {
        assert_eq!(r.release.as_deref(), Some("relearning"));
        let suppressed = r.harmful_accuracy_released.unwrap();
        assert!(
            suppressed <= 0.35,
            "harmful accuracy {suppressed} after suppression"
        );
        assert!(
            r.utility_before_defense >= 0.9,
            "utility {}",
            r.utility_before_defense
        );
        let (before, after) = (
            r.utility_loss_before_defense.unwrap(),
            r.utility_loss_after_attack,
        );
        assert_eq!(
            r.collapsed,
            Some(specdef::scenario::is_collapse(before, after))
        );
    }
    // Undefended Adam relearns somewhere keeping utility.
    assert!(
        (records.iter()).any(|r| r.alpha.is_none() && r.succeeded(Success::KeepingUtility)),
        "undefended Adam relearned nowhere"
    );
}

#[test]
fn the_quick_scenario_shows_the_predicted_outcome_on_the_cpu() {
    check_quick_outcome(&quick_records(&mut CpuEngine32::new()));
}

#[test]
fn the_quick_scenario_shows_the_predicted_outcome_on_the_gpu() {
    let Some(mut gpu) = gpu() else { return };
    check_quick_outcome(&quick_records(&mut *gpu));
}

/// Drives a run the way a UI frame loop would: `advance` never blocks.
fn outcome_without_blocking(
    engine: &mut dyn Engine,
    host: &HostModel,
    data: &specdef::scenario::TaskData,
    settings: &TrainSettings,
) -> TrainOutcome {
    let model = DeviceModel::upload(engine, host).unwrap();
    let mut session = TrainSession::start(
        engine,
        &model,
        &data.harmful_train,
        &data.harmful_test,
        settings,
        3,
    )
    .unwrap();
    while !session.is_finished() {
        if !session.advance(engine).unwrap() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    session.finish()
}

#[test]
fn a_session_advanced_without_blocking_measures_what_blocking_training_does() {
    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let data = specdef::scenario::TaskData::load(&scenario).unwrap();
    let host = HostModel::init(
        &ModelSpec {
            widths: vec![64, 32, 10],
            activation: ActivationChoice::Relu,
        },
        1,
    );
    let settings = TrainSettings {
        optimizer: OptimizerKind::Adam,
        lr: 1e-2,
        schedule: Schedule::Constant,
        steps: 60,
        eval_every: 10,
        batch_size: Some(64),
        target_accuracy: None,
        divergence_loss: 1e3,
        trainable: Trainable::default(),
        hyper: Default::default(),
        groups: Default::default(),
        second_order: Default::default(),
    };
    let check = |engine: &mut dyn Engine| {
        let model = DeviceModel::upload(engine, &host).unwrap();
        let blocking = train(
            engine,
            &model,
            &data.harmful_train,
            &data.harmful_test,
            &settings,
            3,
        )
        .unwrap();
        let stepped = outcome_without_blocking(engine, &host, &data, &settings);
        assert_eq!(stepped, blocking, "on {}", engine.info().engine);
        // Step 0 (before any update), then every 10 steps.
        let steps: Vec<usize> = stepped.loss_curve.iter().map(|p| p.0).collect();
        assert_eq!(steps, [0, 10, 20, 30, 40, 50, 60]);
    };
    check(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        check(&mut *gpu);
    }
}

/// The quick scenario, trimmed so the test is quick on lavapipe too.
fn small_scenario() -> Scenario {
    let mut scenario = Scenario::builtin(Some("quick")).unwrap();
    scenario.pretrain.steps = 40;
    scenario.attack.steps = 30;
    scenario.attack.lr_grid = specdef::scenario::LrGrid {
        from: 1e-3,
        to: 1e-1,
        per_decade: 1,
    };
    scenario
}

fn without_wall_time(mut records: Vec<RunRecord>) -> Vec<RunRecord> {
    records.iter_mut().for_each(|r| r.wall_ms = 0.0);
    records
}

#[test]
fn a_scenario_advanced_without_blocking_records_what_the_blocking_runner_does() {
    let scenario = small_scenario();
    let check = |engine: &mut dyn Engine| {
        let blocking = run_quietly(engine, &scenario, None);
        let mut session = ScenarioSession::start(engine, &scenario, None, None).unwrap();
        let mut idle_polls = 0;
        while !session.is_done() {
            if !session.advance(engine, false).unwrap() {
                idle_polls += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        eprintln!(
            "{}: {idle_polls} polls found a readback still in flight",
            engine.info().engine
        );
        let stepped = session.into_outcome();
        assert_eq!(stepped.records.len(), 2 * 2 * 3);
        assert_eq!(
            without_wall_time(stepped.records),
            without_wall_time(blocking.records)
        );
        assert_eq!(stepped.defenses, blocking.defenses);
    };
    check(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        check(&mut *gpu);
    }
}

/// Starts a session on `small_scenario` with a cache folder, returning it and its notes.
fn cached_session(engine: &mut dyn Engine, dir: &std::path::Path) -> (ScenarioSession, String) {
    let mut session =
        ScenarioSession::start(engine, &small_scenario(), None, Some(dir.to_path_buf())).unwrap();
    let notes = session.drain_notes().join("\n");
    (session, notes)
}

/// Runs a session to the end and returns its records.
fn finish(mut session: ScenarioSession, engine: &mut dyn Engine) -> Vec<RunRecord> {
    while !session.is_done() {
        session.advance(engine, true).unwrap();
    }
    session.into_outcome().records
}

#[test]
fn the_pretraining_cache_is_never_trusted_blindly() {
    let dir = std::env::temp_dir().join(format!("specdef-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = &mut CpuEngine32::new();
    // First run: pretrains and caches, and its records say so.
    let (first, notes) = cached_session(engine, &dir);
    assert!(notes.contains("pretraining"), "{notes}");
    let fresh = finish(first, engine);
    assert!(fresh.iter().all(|r| r.pretrain_from_cache == Some(false)));
    let cached: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let path = &cached[0];
    let genuine = std::fs::read(path).unwrap();
    // Second run: the cache is used, and the records match the first run's outcomes.
    let (second, notes) = cached_session(engine, &dir);
    assert!(notes.contains("pretrained model from cache"), "{notes}");
    let reused = finish(second, engine);
    assert!(reused.iter().all(|r| r.pretrain_from_cache == Some(true)));
    for (a, b) in fresh.iter().zip(&reused) {
        assert_eq!(
            (a.steps_to_target, a.utility_after_attack),
            (b.steps_to_target, b.utility_after_attack)
        );
    }
    // A planted model of the right shape, a tampered weight, NaN weights: each is retrained.
    let (model, _) = file::decode(&genuine).unwrap();
    let planted = HostModel::init(&model.spec, 99);
    let mut tampered = model.clone();
    tampered.layers[0].factors[0].matrix.values[0] += 1.0;
    let mut broken = model.clone();
    broken.layers[1].bias.values[0] = f64::NAN;
    let metadata = file::metadata(&genuine).unwrap();
    let keep = |name: &'static str| (name, metadata[name].clone());
    let cases = [
        (
            "planted",
            file::encode(&planted, "none").unwrap(),
            "key differs",
        ),
        (
            "tampered",
            file::encode_with(
                &tampered,
                "none",
                &[keep("specdef.cache_key"), keep("specdef.checksum")],
            )
            .unwrap(),
            "checksum",
        ),
        (
            "non-finite",
            file::encode_with(
                &broken,
                "none",
                &[
                    keep("specdef.cache_key"),
                    ("specdef.checksum", file::parameter_checksum(&broken)),
                ],
            )
            .unwrap(),
            "non-finite",
        ),
        ("garbage", b"not a model".to_vec(), "not a valid model file"),
    ];
    for (case, bytes, why) in cases {
        std::fs::write(path, bytes).unwrap();
        let (session, notes) = cached_session(engine, &dir);
        assert!(
            notes.contains(why) && notes.contains("retraining"),
            "{case}: {notes}"
        );
        let records = finish(session, engine);
        assert!(records.iter().all(|r| r.pretrain_from_cache == Some(false)));
        // Retrained: the same outcomes as the first run, not the planted model's.
        for (a, b) in fresh.iter().zip(&records) {
            assert_eq!(a.utility_before_defense, b.utility_before_defense, "{case}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A defence is a value that records carry: its parameters serialised, `kind` naming it, read
/// back as the same value; records written before `defense_params` existed (the reference
/// records) give the same value from their columns, and pass the checks with it.
#[test]
fn records_carry_the_defence_as_a_value_and_older_records_give_the_same() {
    let thin = Defense::SpecDef(SpecDef {
        alpha: 1e4,
        k: 25,
        layers: "0,2".parse().unwrap(),
        compensate: true,
        compensation: CompensationForm::Thin,
    });
    let params = thin.params();
    assert_eq!(params["kind"], "specdef");
    assert_eq!(params["alpha"], 1e4);
    assert_eq!(params["layers"], "0,2");
    assert_eq!(params["compensation"], "thin");
    assert_eq!(serde_json::from_value::<Defense>(params).unwrap(), thin);
    assert_eq!(Defense::None.params(), serde_json::json!({"kind": "none"}));

    let old = report::from_json_lines(include_str!("../reference/quick-cpu64/runs.jsonl")).unwrap();
    assert!(old.iter().all(|r| r.defense_params.is_none()));
    assert!(old.iter().any(|r| r.defense == "specdef") && old.iter().any(|r| r.defense == "none"));
    for r in &old {
        let value = r.defense_value().unwrap();
        assert_eq!((value.name(), value.alpha()), (r.defense.as_str(), r.alpha));
        if let Some(d) = value.spec_def() {
            assert_eq!(
                (Some(d.k), Some(d.layers.to_string())),
                (r.k, r.layers.clone())
            );
        }
        let written_now = RunRecord {
            defense_params: Some(value.params()),
            ..r.clone()
        };
        written_now.validate().unwrap();
        assert_eq!(written_now.defense_value().unwrap(), value);
    }
}
