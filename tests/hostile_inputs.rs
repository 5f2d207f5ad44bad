//! Bad input as a hostile new user would give it, through the release's own command line: each
//! case must end in a clear error naming the field (exit code 1, before any work is done), never
//! in a crash, an abort or a silently wrong result.

use specdef::defense::{CompensationForm, F64_COMPENSATION_BOUND, LayerSelection, SpecDef};
use specdef::model::{ActivationChoice, HostModel, ModelSpec};
use specdef::scenario::DEFAULT_SCENARIO;
use std::path::PathBuf;
use std::process::{Command, Output};

fn specdef(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_specdef"))
        .args(args)
        .env("SPECDEF_CACHE_DIR", scratch().join("cache"))
        .output()
        .expect("running specdef")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("specdef-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The built-in scenario with `from` replaced by `to` (which must be there).
fn scenario_with(from: &str, to: &str) -> String {
    assert!(
        DEFAULT_SCENARIO.contains(from),
        "no {from:?} in the scenario"
    );
    DEFAULT_SCENARIO.replacen(from, to, 1)
}

/// Runs `specdef run` on the scenario text and checks it is refused naming `expected`.
fn refused(case: &str, text: &str, expected: &[&str]) {
    let file = scratch().join(format!("{}.toml", case.replace(' ', "_")));
    std::fs::write(&file, text).unwrap();
    let out_dir = scratch().join(format!("out-{}", case.replace(' ', "_")));
    let output = specdef(&[
        "run",
        file.to_str().unwrap(),
        "--engine",
        "cpu",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
    for needle in expected {
        assert!(
            stderr.contains(needle),
            "{case}: {needle:?} not in {stderr}"
        );
    }
    // Refused before the work: no pretrained model cached, no result folder.
    assert!(
        !out_dir.exists(),
        "{case}: {} was written",
        out_dir.display()
    );
    let cached = std::fs::read_dir(scratch().join("cache")).map_or(0, |d| d.count());
    assert_eq!(
        cached, 0,
        "{case}: a model was pretrained before the refusal"
    );
}

#[test]
fn bad_scenario_fields_are_refused_before_any_work_naming_the_field() {
    let grid = "lr_grid = { from = 1e-10, to = 1.0, per_decade = 1 }";
    let cases: [(&str, String, &[&str]); 16] = [
        (
            "infinite grid end",
            scenario_with(grid, "lr_grid = { from = 1e-10, to = inf, per_decade = 1 }"),
            &["attack.lr_grid", "finite"],
        ),
        (
            "huge grid",
            scenario_with(
                grid,
                "lr_grid = { from = 1e-10, to = 1.0, per_decade = 100000000 }",
            ),
            &["attack.lr_grid", "at most 10000"],
        ),
        (
            "huge model",
            scenario_with(
                "widths = [64, 256, 256, 10]",
                "widths = [64, 1000000, 1000000, 10]",
            ),
            &["model.widths", "parameters"],
        ),
        (
            "random zero",
            scenario_with("layers = \"all\"\n", "layers = \"random:0\"\n"),
            &["random:0", "N >= 1"],
        ),
        (
            "unknown layer",
            scenario_with("layers = \"all\"\n", "layers = \"7\"\n"),
            &["defense.layers", "unknown layer 7"],
        ),
        (
            "zero k",
            scenario_with("k = 25\n", "k = 0\n"),
            &["defense.k"],
        ),
        (
            "negative target",
            scenario_with("target_accuracy = 0.9\n", "target_accuracy = -1.0\n"),
            &["attack.target_accuracy", "[0, 1]"],
        ),
        (
            "nan target",
            scenario_with("target_accuracy = 0.9\n", "target_accuracy = nan\n"),
            &["attack.target_accuracy"],
        ),
        (
            "nan divergence",
            scenario_with(
                "target_accuracy = 0.9\n",
                "target_accuracy = 0.9\ndivergence_loss = nan\n",
            ),
            &["attack.divergence_loss"],
        ),
        (
            "zero batch",
            scenario_with(
                "steps = 300\neval_every = 10\nbatch_size = 128",
                "steps = 300\neval_every = 10\nbatch_size = 0",
            ),
            &["attack.batch_size", "at least 1"],
        ),
        (
            "zero eval interval",
            scenario_with(
                "steps = 300\neval_every = 10\n",
                "steps = 300\neval_every = 0\n",
            ),
            &["attack.eval_every", "at least 1"],
        ),
        (
            "zero pretraining lr",
            scenario_with("lr = 1e-3\n", "lr = 0.0\n"),
            &["pretrain.lr", "positive"],
        ),
        (
            "no pretraining steps",
            scenario_with("steps = 400\n", "steps = 0\n"),
            &["pretrain.steps", "at least 1"],
        ),
        (
            "overlapping classes",
            scenario_with(
                "harmful_classes = [5, 6, 7, 8, 9]",
                "harmful_classes = [4, 5, 6]",
            ),
            &["class 4", "utility_classes and harmful_classes"],
        ),
        (
            "repeated class",
            scenario_with(
                "utility_classes = [0, 1, 2, 3, 4]",
                "utility_classes = [0, 1, 1]",
            ),
            &["data.utility_classes", "class 1 twice"],
        ),
        (
            "bad beta",
            scenario_with(
                "target_accuracy = 0.9\n",
                "target_accuracy = 0.9\nhyper = { beta2 = 1.0 }\n",
            ),
            &["attack.hyper", "beta2"],
        ),
    ];
    for (case, text, expected) in cases {
        refused(case, &text, expected);
    }
}

#[test]
fn selftest_sizes_outside_the_range_are_refused() {
    for size in ["0", "1000000"] {
        let output = specdef(&["selftest", "--engine", "cpu", "--matmul-size", size]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{size}: {stderr}");
        assert!(
            stderr.contains("--matmul-size") && stderr.contains("1..=8192"),
            "{stderr}"
        );
    }
}

#[test]
fn compare_refuses_tolerances_that_would_fail_open() {
    let file = scratch().join("empty.jsonl");
    std::fs::write(&file, "").unwrap();
    let path = file.to_str().unwrap();
    for (flag, value) in [("--loss-rel", "NaN"), ("--accuracy-abs", "-0.1")] {
        let output = specdef(&["compare", path, path, &format!("{flag}={value}")]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[test]
fn an_alpha_beyond_f64_and_a_non_finite_model_are_refused_with_the_layer() {
    let spec = ModelSpec {
        widths: vec![8, 6, 4],
        activation: ActivationChoice::Relu,
    };
    let base = HostModel::init(&spec, 1);
    let defend = |alpha: f64, model: &HostModel| {
        SpecDef {
            alpha,
            k: 2,
            layers: LayerSelection::All,
            compensate: true,
            compensation: CompensationForm::Full,
        }
        .apply(model, 0)
    };
    // The paper's largest alpha is kept; 1e38 and 1e300 undo nothing in f64.
    assert!(defend(1e9, &base).is_ok());
    for alpha in [1e38, 1e300] {
        let err = defend(alpha, &base).unwrap_err().to_string();
        assert!(
            err.contains("beyond what f64 can compensate")
                && err.contains("layer 0")
                && err.contains(&format!("{F64_COMPENSATION_BOUND:.0e}")),
            "{err}"
        );
    }
    let mut broken = base.clone();
    broken.layers[1].factors[0].matrix.values[3] = f64::NAN;
    let err = defend(1e4, &broken).unwrap_err().to_string();
    assert!(
        err.contains("layer 1") && err.contains("non-finite"),
        "{err}"
    );
}
