//! `specdef export-data` and `specdef curvature` through the command line: the exported file
//! holds exactly the task's split, a batch read from a file measures the same Hessian as the
//! same rows taken from the task, and bad data files are refused naming what is wrong.

use specdef::data::file as data_file;
use specdef::scenario::{Scenario, TaskData};
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("specdef-curvature-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn specdef(args: &[&str]) -> Output {
    common::specdef_command(
        args,
        &[(
            "SPECDEF_CACHE_DIR",
            scratch().join("cache").to_str().unwrap(),
        )],
    )
}

use common::succeeded as ok;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn curvature_json(model: &Path, batch: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "curvature",
        "--model",
        path(model),
        "--engine",
        "cpu64",
        "--json",
    ];
    args.extend_from_slice(batch);
    serde_json::from_str(&ok(specdef(&args))).expect("--json prints one JSON report")
}

#[test]
fn a_batch_from_an_exported_file_measures_the_same_hessian_as_the_task_rows() {
    let dir = scratch();
    let model = dir.join("base.safetensors");
    ok(specdef(&[
        "train",
        "--quick",
        "--engine",
        "cpu",
        "--out",
        path(&model),
    ]));

    let exported = dir.join("harmful-train.safetensors");
    ok(specdef(&[
        "export-data",
        "--task",
        "harmful",
        "--split",
        "train",
        "--out",
        path(&exported),
    ]));
    let file = data_file::decode(&std::fs::read(&exported).unwrap()).unwrap();
    let task = TaskData::load(&Scenario::builtin(None).unwrap()).unwrap();
    assert_eq!(
        file, task.harmful_train,
        "the file is the split, row for row"
    );

    let rows = 48;
    let first: Vec<usize> = (0..rows).collect();
    let subset = dir.join("subset.safetensors");
    std::fs::write(
        &subset,
        data_file::encode(&task.harmful_train.select(&first)).unwrap(),
    )
    .unwrap();
    let from_file = curvature_json(&model, &["--data", path(&subset)]);
    let from_task = curvature_json(&model, &["--samples", &rows.to_string()]);
    assert_eq!(from_file["samples"], rows);
    for field in ["sigma_1", "top_eigenvalues", "trace", "block_lower_bound"] {
        assert_eq!(from_file[field], from_task[field], "{field}");
    }
    let sigma_1 = from_task["sigma_1"].as_f64().unwrap();
    assert!(sigma_1 > 0.0 && sigma_1.is_finite());
    let predicted = from_task["predicted_stable_sgd_lr"].as_f64().unwrap();
    assert!((predicted * sigma_1 - 2.0).abs() < 1e-12);
    // Adam's preconditioned sharpness after a short full-batch run, beside 38 / lr.
    let adam = curvature_json(
        &model,
        &["--samples", "16", "--adam-lr", "1e-3", "--adam-steps", "5"],
    );
    let adam = &adam["adam"];
    assert_eq!(adam["steps"], 5);
    let edge = adam["edge_of_stability"].as_f64().unwrap();
    assert!((edge - 38.0 / 1e-3).abs() < 1e-6 * edge, "{adam}");
    let sharpness = adam["preconditioned_sharpness"].as_f64().unwrap();
    assert!(sharpness.is_finite() && sharpness > 0.0, "{adam}");
    assert!(
        adam["loss_after"].as_f64() < adam["loss_before"].as_f64(),
        "{adam}"
    );
    // Freezing groups changes what the Hessian is over.
    let frozen = curvature_json(
        &model,
        &["--samples", &rows.to_string(), "--freeze", "biases"],
    );
    assert!(frozen["parameters"].as_u64() < from_task["parameters"].as_u64());
}

#[test]
fn bad_data_files_and_flags_are_refused_naming_what_is_wrong() {
    let dir = scratch();
    let model = dir.join("tiny.safetensors");
    ok(specdef(&[
        "train",
        "--quick",
        "--engine",
        "cpu",
        "--out",
        path(&model),
    ]));
    let task = TaskData::load(&Scenario::builtin(None).unwrap()).unwrap();
    let mut wrong_labels = task.harmful_test.select(&[0, 1, 2]);
    wrong_labels.labels[1] = 12;
    let mut wrong_width = task.harmful_test.select(&[0, 1]);
    wrong_width.features = 32;
    wrong_width.inputs.truncate(64);
    let not_safetensors = dir.join("junk.safetensors");
    std::fs::write(&not_safetensors, b"not a data file").unwrap();
    let files = [
        (
            "label past the classes",
            data_file::encode(&wrong_labels).unwrap(),
            &["label 12", "row 1"][..],
        ),
        (
            "too few features",
            data_file::encode(&wrong_width).unwrap(),
            &["32 input features", "64"][..],
        ),
    ];
    for (case, bytes, expected) in files {
        let file = dir.join(format!("{}.safetensors", case.replace(' ', "-")));
        std::fs::write(&file, bytes).unwrap();
        let output = specdef(&[
            "curvature",
            "--model",
            path(&model),
            "--engine",
            "cpu",
            "--data",
            path(&file),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{case}: {needle:?} not in {stderr}"
            );
        }
    }
    let refusals: [(&str, Vec<&str>, &[&str]); 5] = [
        (
            "not a safetensors file",
            vec!["--data", path(&not_safetensors)],
            &["junk.safetensors", "not a safetensors file"],
        ),
        (
            "unknown group",
            vec!["--freeze", "gates"],
            &["gates", "compensation"],
        ),
        ("zero tolerance", vec!["--tolerance", "0"], &["--tolerance"]),
        (
            "zero adam steps",
            vec!["--adam-lr", "1e-3", "--adam-steps", "0"],
            &["--adam-steps"],
        ),
        ("NaN adam lr", vec!["--adam-lr", "NaN"], &["--adam-lr"]),
    ];
    for (case, extra, expected) in refusals {
        let mut args = vec!["curvature", "--model", path(&model), "--engine", "cpu"];
        args.extend(extra);
        let output = specdef(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{case}: {needle:?} not in {stderr}"
            );
        }
    }
    // The other curvature commands refuse bad flags before any work, naming them.
    let model_arg = path(&model).to_string();
    for (args, needle) in [
        (vec!["curvature-alpha", "--k", "0"], "--k"),
        (vec!["curvature-alpha", "--alphas", "0.5"], "--alphas"),
        (vec!["stable-step", "--ratio", "1"], "--ratio"),
    ] {
        let mut full = args.clone();
        full.extend(["--model", model_arg.as_str(), "--engine", "cpu"]);
        let output = specdef(&full);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
    }
}

/// `--adaptive`: the Hessian of the rewritten model over what the attack trains. LoRA on the
/// compensation C of a defended model sees the alpha-scaled curvature; LoRA on W~ (C frozen)
/// does not (PAPER.md section 4's frozen-C regime).
#[test]
fn curvature_after_an_adaptive_rewrite_is_over_what_that_attack_trains() {
    let dir = scratch().join("adaptive");
    std::fs::create_dir_all(&dir).unwrap();
    let (base, defended) = (
        dir.join("base.safetensors"),
        dir.join("defended.safetensors"),
    );
    ok(specdef(&[
        "train",
        "--quick",
        "--engine",
        "cpu",
        "--out",
        path(&base),
    ]));
    ok(specdef(&[
        "defend",
        "--model",
        path(&base),
        "--alpha",
        "1e3",
        "--k",
        "8",
        "--out",
        path(&defended),
    ]));
    let measure =
        |attack: &str| curvature_json(&defended, &["--samples", "32", "--adaptive", attack]);
    let (on_weight, on_compensation) = (measure("lora-weight:2"), measure("lora-compensation:2"));
    // Rank-2 A and B beside each layer's W~ (64-64-64-10) or C (64x64, 64x64, 10x10).
    assert_eq!(on_weight["parameters"], 2 * (64 + 64) * 2 + 2 * (64 + 10));
    assert_eq!(
        on_compensation["parameters"],
        2 * (64 + 64) * 2 + 2 * (10 + 10)
    );
    let sigma = |report: &serde_json::Value| report["sigma_1"].as_f64().unwrap();
    assert!(
        sigma(&on_compensation) > 100.0 * sigma(&on_weight),
        "LoRA on C {:e} against LoRA on W~ {:e}",
        sigma(&on_compensation),
        sigma(&on_weight)
    );
    let refused = specdef(&[
        "curvature",
        "--model",
        path(&base),
        "--adaptive",
        "injection",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--adaptive injection") && err.contains("compensated layers"),
        "{err}"
    );
}
