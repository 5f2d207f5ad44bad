//! The second round of hostile input (the first is `hostile_inputs.rs`): every case ends in a
//! clear error naming the field, flag, variable or file (exit code 1, before any work where the
//! input is known in advance), or, where the input was legitimate, in a correct result; nothing
//! outside the suite's own files is changed, and nothing hangs or panics.
//!
//! A tiny scenario keeps each run to a second or two in a debug build.

mod common;

use common::{scratch, specdef_cli};
use specdef::model::{ActivationChoice, HostModel, ModelSpec, file};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// widths [64, 16, 10], alpha 1e4, k 4, SGD, 10 steps, two learning rates.
const TINY: &str = r#"
name = "tiny"
seed = 0

[data]
utility_classes = [0, 1, 2, 3, 4]
harmful_classes = [5, 6, 7, 8, 9]
test_fraction = 0.3

[model]
widths = [64, 16, 10]
activation = "relu"

[pretrain]
optimizer = "adam"
lr = 1e-2
steps = 20
eval_every = 10
batch_size = 64

[defense]
alphas = [1e4]
k = 4
layers = "all"

[attack]
optimizers = ["sgd"]
lr_grid = { from = 1e-2, to = 1e-1, per_decade = 1 }
steps = 10
eval_every = 5
batch_size = 64
target_accuracy = 0.9
"#;

/// TINY with `from` replaced by `to` (which must be there).
fn tiny_with(from: &str, to: &str) -> String {
    assert!(TINY.contains(from), "no {from:?} in the tiny scenario");
    TINY.replacen(from, to, 1)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    specdef_cli(&dir.join("cache"))
        .args(args)
        .output()
        .expect("running specdef")
}

/// Asserts exit code 1 and every needle in stderr; returns stderr.
fn refused(case: &str, output: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{case}: {needle:?} not in {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    stderr
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn nothing_cached(dir: &Path, case: &str) {
    let cached = std::fs::read_dir(dir.join("cache")).map_or(0, |d| d.count());
    assert_eq!(
        cached, 0,
        "{case}: a model was pretrained before the refusal"
    );
}

#[test]
fn scenario_fields_are_refused_before_any_work_naming_the_field() {
    let dir = scratch("round2", "fields");
    let grid = "lr_grid = { from = 1e-2, to = 1e-1, per_decade = 1 }";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "huge learning rates",
            tiny_with(
                grid,
                "lr_grid = { from = 1e307, to = 1e308, per_decade = 1 }",
            ),
            vec!["attack.lr_grid", "1e6"],
        ),
        (
            "unbounded steps",
            tiny_with("steps = 10\n", "steps = 1000000000000000\n"),
            vec!["attack.steps", "10000000"],
        ),
        (
            "steps times runs",
            tiny_with("steps = 10\n", "steps = 9000000\n")
                .replace("per_decade = 1 }", "per_decade = 100 }"),
            vec!["attack.steps", "optimisation steps"],
        ),
        (
            "a type error",
            tiny_with("seed = 0", "seed = \"0\""),
            vec!["seed", "invalid type"],
        ),
        (
            "a nested type error",
            tiny_with("k = 4", "k = \"four\""),
            vec!["defense.k", "invalid type"],
        ),
        (
            "a tiny test fraction",
            tiny_with("test_fraction = 0.3", "test_fraction = 0.0001"),
            vec!["data.test_fraction", "empty"],
        ),
        (
            "a huge test fraction",
            tiny_with("test_fraction = 0.3", "test_fraction = 0.9999"),
            vec!["data.test_fraction", "empty"],
        ),
        (
            "a huge held-out fraction",
            tiny_with(
                "test_fraction = 0.3",
                "test_fraction = 0.3\nheldout_fraction = 0.9999",
            ),
            vec!["data.heldout_fraction", "empty"],
        ),
        (
            "a vanishing alpha",
            tiny_with("alphas = [1e4]", "alphas = [1e-300]"),
            vec!["defense.alphas", "1e-300"],
        ),
        (
            "an alpha f64 cannot compensate",
            tiny_with("alphas = [1e4]", "alphas = [1e38]"),
            vec!["defense.alphas", "1e38"],
        ),
        (
            "a repeated alpha",
            tiny_with("alphas = [1e4]", "alphas = [1e4, 1e4]"),
            vec!["defense.alphas", "twice"],
        ),
        (
            "a repeated optimiser",
            tiny_with(
                "optimizers = [\"sgd\"]",
                "optimizers = [\"sgd\", \"adam\", \"sgd\"]",
            ),
            vec!["attack.optimizers", "twice"],
        ),
        (
            "a repeated adaptive attack",
            format!("{TINY}\n[adaptive]\nattacks = [\"fusion\", \"fusion\"]\n"),
            vec!["adaptive.attacks", "twice"],
        ),
        (
            "an extra defence repeating the grid",
            tiny_with(
                "layers = \"all\"\n",
                "layers = \"all\"\nextra = [{ alpha = 1e4, k = 4, layers = \"all\" }]\n",
            ),
            vec!["defense.extra", "twice"],
        ),
        (
            "a terminal escape in the name",
            tiny_with("name = \"tiny\"", "name = \"tiny\\u001b[2J\\u001b[31mred\""),
            vec!["name", "control characters"],
        ),
        (
            "nothing trainable",
            tiny_with(
                "target_accuracy = 0.9\n",
                "target_accuracy = 0.9\ntrainable = { weights = false, biases = false, \
                 compensation = false, factors = false, injected = false, lora = false }\n",
            ),
            vec!["attack.trainable"],
        ),
        (
            "settings for a frozen group",
            tiny_with(
                "target_accuracy = 0.9\n",
                "target_accuracy = 0.9\ntrainable = { weights = true, biases = false, \
                 compensation = true }\n[attack.groups.biases]\noptimizer = \"adam\"\n",
            ),
            vec!["attack.groups.biases", "does not train"],
        ),
        (
            "one factor",
            format!("{TINY}\n[adaptive]\nattacks = [\"factorisation:1\"]\n"),
            vec!["factorisation:1", "2..=64"],
        ),
        (
            "a huge batch",
            tiny_with(
                "batch_size = 64\ntarget",
                "batch_size = 100000000000\ntarget",
            ),
            vec!["attack.batch_size"],
        ),
        (
            "a huge pretraining rate",
            tiny_with("lr = 1e-2", "lr = 1e300"),
            vec!["pretrain.lr"],
        ),
        (
            "random trials to i64::MAX",
            format!("{TINY}\n[sweep]\nrandom = {{ trials = 9223372036854775807 }}\n"),
            vec!["sweep.random.trials"],
        ),
        (
            "random steps times trials",
            format!("{TINY}\n[sweep]\nrandom = {{ trials = 1000, steps = [9000000] }}\n"),
            vec!["sweep.random.steps", "optimisation steps"],
        ),
        (
            "grid rates that round to the same value",
            tiny_with("per_decade = 1 }", "per_decade = 1000 }"),
            vec!["attack.lr_grid", "round"],
        ),
        (
            // At alpha 1e4 `factorisation` chooses p = 4.
            "factorisation and factorisation:p that coincide",
            format!("{TINY}\n[adaptive]\nattacks = [\"factorisation\", \"factorisation:4\"]\n"),
            vec!["adaptive.attacks at alpha 10000", "twice"],
        ),
        (
            "an extra defence equal to the grid's once its layers are resolved",
            tiny_with(
                "layers = \"all\"\n",
                "layers = \"all\"\nextra = [{ alpha = 1e4, k = 4, layers = \"1,0\" }]\n",
            ),
            vec!["defense.extra", "twice"],
        ),
        (
            "a layer named twice",
            tiny_with("layers = \"all\"", "layers = \"0,0\""),
            vec!["defense.layers", "layer 0 is named twice"],
        ),
        (
            "a group scale past the largest learning rate",
            tiny_with(
                "target_accuracy = 0.9\n",
                "target_accuracy = 0.9\n[attack.groups.biases]\noptimizer = \"adam\"\nlr_scale = 1e10\n",
            ),
            vec!["attack.groups.biases.lr_scale", "1e6"],
        ),
        (
            "a variant name with a terminal escape",
            format!("{TINY}\n[variants.\"q\\u001b[2J\"]\nseed = 1\n"),
            vec!["variant name"],
        ),
        (
            "a variant that is not a table",
            format!("{TINY}\n[variants]\nquick = 5\n"),
            vec!["variants.quick", "table"],
        ),
        (
            "a direction override in the name",
            tiny_with("name = \"tiny\"", "name = \"tiny\\u202egnp.exe\""),
            vec!["name", "direction-changing"],
        ),
        (
            "a huge eps",
            tiny_with(
                "target_accuracy = 0.9\n",
                "target_accuracy = 0.9\nhyper = { eps = 1e300 }\n",
            ),
            vec!["attack.hyper", "eps"],
        ),
        (
            "a vanishing divergence threshold",
            tiny_with(
                "target_accuracy = 0.9\n",
                "target_accuracy = 0.9\ndivergence_loss = 1e-300\n",
            ),
            vec!["attack.divergence_loss"],
        ),
    ];
    for (case, text, needles) in cases {
        let file = write(&dir, "scenario.toml", &text);
        let out = dir.join("out");
        let started = Instant::now();
        let output = run(
            &dir,
            &["run", path(&file), "--engine", "cpu", "--out", path(&out)],
        );
        refused(case, &output, &needles);
        assert!(!out.exists(), "{case}: {} was written", out.display());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{case}: refused late"
        );
        nothing_cached(&dir, case);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn k_above_a_layers_rank_is_recorded_as_applied() {
    let dir = scratch("round2", "rank");
    let file = write(&dir, "scenario.toml", &tiny_with("k = 4", "k = 12"));
    let out = dir.join("out");
    common::succeeded(run(
        &dir,
        &["run", path(&file), "--engine", "cpu", "--out", path(&out)],
    ));
    let text = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let records = specdef::report::from_json_lines(&text).unwrap();
    let defended: Vec<_> = records.iter().filter(|r| r.alpha.is_some()).collect();
    assert!(!defended.is_empty());
    for record in defended {
        // 64 -> 16 keeps 12 directions; 16 -> 10 has rank 10.
        assert_eq!(record.k, Some(12));
        assert_eq!(record.k_per_layer.as_deref(), Some("0:12 1:10"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unbounded_reads_and_shards_end_in_errors_not_hangs_or_panics() {
    let dir = scratch("round2", "unbounded");
    let started = Instant::now();
    let output = run(&dir, &["compare", "/dev/zero", "/dev/zero"]);
    refused(
        "compare /dev/zero",
        &output,
        &["/dev/zero", "not a regular file"],
    );
    let output = run(&dir, &["report", "/dev/zero"]);
    refused("report /dev/zero", &output, &["/dev/zero"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "reading /dev/zero took long"
    );

    let scenario = write(&dir, "scenario.toml", TINY);
    let out = dir.join("sweep");
    let huge = "2305843009213693951/4611686018427387904";
    let output = run(
        &dir,
        &[
            "sweep",
            path(&scenario),
            "--engine",
            "cpu",
            "--out",
            path(&out),
            "--shard",
            huge,
        ],
    );
    refused("a huge shard", &output, &["shard", "at most"]);
    let output = specdef_cli(&dir.join("cache"))
        .args([
            "sweep",
            path(&scenario),
            "--engine",
            "cpu",
            "--out",
            path(&out),
        ])
        .env("SLURM_ARRAY_TASK_ID", "2305843009213693951")
        .env("SLURM_ARRAY_TASK_COUNT", "4611686018427387904")
        .output()
        .unwrap();
    refused("a huge Slurm array", &output, &["shard", "at most"]);
    let output = specdef_cli(&dir.join("cache"))
        .args([
            "sweep",
            path(&scenario),
            "--engine",
            "cpu",
            "--out",
            path(&out),
        ])
        .env("SLURM_ARRAY_TASK_ID", "3")
        .env("SLURM_ARRAY_TASK_MIN", "0")
        .env("SLURM_ARRAY_TASK_MAX", usize::MAX.to_string())
        .output()
        .unwrap();
    refused("an array to usize::MAX", &output, &["SLURM_ARRAY_TASK"]);
    nothing_cached(&dir, "shards");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A FIFO and links (to a file of the user's and to /dev/null) where an output goes: each
/// refused, and each left as it was.
#[cfg(unix)]
#[test]
fn outputs_never_replace_links_devices_or_fifos() {
    use std::os::unix::fs::symlink;
    let dir = scratch("round2", "outputs");
    let scenario = write(&dir, "scenario.toml", TINY);
    let mine = write(&dir, "mine.txt", "the user's");
    let to_mine = dir.join("to-mine");
    symlink(&mine, &to_mine).unwrap();
    let to_null = dir.join("to-null");
    symlink("/dev/null", &to_null).unwrap();
    let fifo = dir.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    // A released model to defend (written by the suite into a plain path).
    let model = dir.join("base.safetensors");
    common::succeeded(run(
        &dir,
        &[
            "train",
            path(&scenario),
            "--engine",
            "cpu",
            "--out",
            path(&model),
        ],
    ));
    for target in [&to_mine, &to_null, &fifo] {
        let out = path(target);
        let commands: [Vec<&str>; 4] = [
            vec!["train", path(&scenario), "--engine", "cpu", "--out", out],
            vec![
                "export-data",
                "--task",
                "harmful",
                "--split",
                "test",
                "--out",
                out,
            ],
            vec![
                "defend",
                "--model",
                path(&model),
                "--alpha",
                "1e4",
                "--k",
                "4",
                "--out",
                out,
            ],
            vec![
                "stable-step",
                "--model",
                path(&model),
                "--scenario",
                path(&scenario),
                "--engine",
                "cpu",
                "--json",
                out,
            ],
        ];
        for args in commands {
            let case = format!("{} --out {out}", args[0]);
            let output = run(&dir, &args);
            refused(&case, &output, &[out, "not a regular file"]);
        }
    }
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "the user's");
    for link in [&to_mine, &to_null] {
        assert!(
            std::fs::symlink_metadata(link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    assert!(
        std::fs::symlink_metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device_like()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `is_char_device` under a name that reads as the check it is.
#[cfg(unix)]
trait CharDevice {
    fn is_char_device_like(&self) -> bool;
}

#[cfg(unix)]
impl CharDevice for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_char_device(self)
    }
}

/// Result folders: only a set the suite wrote (its marker lists every file) is ever replaced; a
/// folder of the user's with result-set names, and a link to a folder, are refused; `out/sub/.`
/// is the folder `out/sub`; the report's files are part of the set.
#[cfg(unix)]
#[test]
fn only_result_sets_the_suite_wrote_are_replaced() {
    let dir = scratch("round2", "folders");
    let scenario = write(&dir, "scenario.toml", TINY);
    let run_into = |out: &Path| {
        run(
            &dir,
            &[
                "run",
                path(&scenario),
                "--engine",
                "cpu",
                "--out",
                path(out),
            ],
        )
    };

    let users = dir.join("users");
    std::fs::create_dir_all(&users).unwrap();
    std::fs::write(users.join("tables.txt"), "my tables").unwrap();
    std::fs::write(users.join("runs.jsonl"), "my runs").unwrap();
    let output = run_into(&users);
    refused(
        "a user's folder",
        &output,
        &["users", "specdef-results.json"],
    );
    assert_eq!(
        std::fs::read_to_string(users.join("runs.jsonl")).unwrap(),
        "my runs"
    );

    let real = dir.join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let output = run_into(&link);
    refused("a link to a folder", &output, &["link", "symbolic link"]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    nothing_cached(&dir, "folders");

    // A legitimate path with a trailing `.`: the results land in `op/sub`.
    let dotted = dir.join("op/sub/.");
    common::succeeded(run_into(&dotted));
    let sub = dir.join("op/sub");
    assert!(sub.join("runs.jsonl").is_file());
    assert!(sub.join("specdef-results.json").is_file());

    // The report's page is part of the set: the next run replaces the folder.
    common::succeeded(run(&dir, &["report", path(&sub)]));
    assert!(sub.join("report.html").is_file());
    common::succeeded(run_into(&sub));
    assert!(
        !sub.join("report.html").exists(),
        "the old set's report lingered"
    );

    // A file of the user's added to a set makes it the user's folder again.
    std::fs::write(sub.join("notes.txt"), "mine").unwrap();
    let output = run_into(&sub);
    refused("a set with a user's file", &output, &["notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(sub.join("notes.txt")).unwrap(),
        "mine"
    );

    // A report beside a records file of the user's never replaces their files.
    let theirs = dir.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::copy(sub.join("runs.jsonl"), theirs.join("records.jsonl")).unwrap();
    std::fs::write(theirs.join("report.md"), "my report").unwrap();
    let output = run(&dir, &["report", path(&theirs.join("records.jsonl"))]);
    refused(
        "a report over the user's report.md",
        &output,
        &["report.md"],
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("report.md")).unwrap(),
        "my report"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The released records of a tiny run, as JSON values to edit.
fn tiny_records(dir: &Path) -> Vec<serde_json::Value> {
    let scenario = write(dir, "scenario.toml", TINY);
    let out = dir.join("records");
    common::succeeded(run(
        dir,
        &[
            "run",
            path(&scenario),
            "--engine",
            "cpu",
            "--out",
            path(&out),
        ],
    ));
    std::fs::read_to_string(out.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn jsonl(records: &[serde_json::Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

#[test]
fn records_read_back_are_checked_against_their_own_invariants() {
    let dir = scratch("round2", "records");
    let records = tiny_records(&dir);
    let edits: [(&str, &str, serde_json::Value, &[&str]); 11] = [
        (
            "a negative learning rate",
            "lr",
            serde_json::json!(-0.1),
            &["lr"],
        ),
        (
            "an enormous learning rate",
            "lr",
            serde_json::json!(1e308),
            &["lr"],
        ),
        (
            "a negative alpha",
            "alpha",
            serde_json::json!(-1e4),
            &["alpha"],
        ),
        (
            "an accuracy of 7.5",
            "final_harmful_accuracy",
            serde_json::json!(7.5),
            &["final_harmful_accuracy", "[0, 1]"],
        ),
        (
            "an outcome against its curve",
            "steps_to_target",
            serde_json::json!(3),
            &["steps_to_target"],
        ),
        (
            "steps past the budget",
            "steps_run",
            serde_json::json!(1000),
            &["steps_run"],
        ),
        (
            "an escape in the scenario name",
            "scenario",
            serde_json::json!("tiny\u{1b}[2J"),
            &["scenario", "control characters"],
        ),
        (
            "a collapse flag dropped beside its utility losses",
            "collapsed",
            serde_json::Value::Null,
            &["collapsed", "utility_loss_before_defense"],
        ),
        (
            "a negative utility loss",
            "utility_loss_before_defense",
            serde_json::json!(-1.0),
            &["utility_loss_before_defense"],
        ),
        (
            "a defence of no known kind",
            "defense_params",
            serde_json::json!({"kind": "mystery"}),
            &["defense_params", "mystery"],
        ),
        (
            "defence parameters of another alpha than the alpha column's 1e4",
            "defense_params",
            serde_json::json!({"kind": "specdef", "alpha": 1e3, "k": 4, "layers": "all"}),
            &["defense_params", "specdef a=1e3"],
        ),
    ];
    for (case, field, value, needles) in edits {
        let mut edited = records.clone();
        // The defended model's first run: alpha is set there.
        let record = edited
            .iter_mut()
            .find(|r| !r["alpha"].is_null())
            .expect("a defended run");
        record[field] = value;
        let file = write(&dir, "edited.jsonl", &jsonl(&edited));
        let output = run(
            &dir,
            &["report", path(&file), "--out", path(&dir.join("report"))],
        );
        let stderr = refused(case, &output, needles);
        assert!(stderr.contains("line "), "{case}: {stderr}");
        assert!(!dir.join("report").exists(), "{case}: a report was written");
        let output = run(&dir, &["compare", path(&file), path(&file)]);
        refused(case, &output, needles);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sweep_folders_refuse_edited_records_and_orphaned_records() {
    let dir = scratch("round2", "sweep");
    let scenario = write(&dir, "scenario.toml", TINY);
    let out = dir.join("sweep");
    let sweep = |scenario: &Path| {
        run(
            &dir,
            &[
                "sweep",
                path(scenario),
                "--engine",
                "cpu",
                "--out",
                path(&out),
            ],
        )
    };
    common::succeeded(sweep(&scenario));
    let records = out.join("records");
    let first = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a record");
    let original = std::fs::read_to_string(&first).unwrap();

    // An outcome that contradicts its curve.
    let mut record: serde_json::Value = serde_json::from_str(&original).unwrap();
    let reached = record["reached_target"].as_bool().unwrap();
    record["reached_target"] = serde_json::json!(!reached);
    std::fs::write(&first, record.to_string()).unwrap();
    let merged = dir.join("merged");
    let output = run(&dir, &["merge", path(&out), "--out", path(&merged)]);
    let name = first.file_name().unwrap().to_str().unwrap();
    refused("an edited record", &output, &[name, "reached_target"]);
    assert!(!merged.exists());
    std::fs::write(&first, &original).unwrap();

    // Records whose manifest was deleted are no sweep's: another scenario refuses them.
    std::fs::remove_file(out.join("sweep.json")).unwrap();
    let other = write(
        &dir,
        "other.toml",
        &tiny_with("name = \"tiny\"", "name = \"other\""),
    );
    let output = sweep(&other);
    refused("orphaned records", &output, &["sweep.json", "records"]);
    assert_eq!(std::fs::read_to_string(&first).unwrap(), original);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model file whose bias is infinite, and a rewrite that would lose a factor.
#[test]
fn non_finite_models_and_broken_rewrites_are_refused() {
    let dir = scratch("round2", "models");
    let spec = ModelSpec {
        widths: vec![64, 16, 10],
        activation: ActivationChoice::Relu,
    };
    let mut model = HostModel::init(&spec, 3);
    model.layers[1].bias.values[2] = f64::INFINITY;
    let broken = dir.join("broken.safetensors");
    file::save(&broken, &model, "none").unwrap();
    for args in [
        vec![
            "defend",
            "--model",
            path(&broken),
            "--alpha",
            "1e4",
            "--k",
            "4",
            "--out",
        ],
        vec![
            "curvature",
            "--model",
            path(&broken),
            "--engine",
            "cpu",
            "--json",
        ],
    ] {
        let mut args = args;
        let out = dir.join("defended.safetensors");
        if args[0] == "defend" {
            args.push(path(&out));
        }
        let output = run(&dir, &args);
        refused(args[0], &output, &["layers.1.bias", "inf"]);
        assert!(!out.exists());
    }

    let healthy = HostModel::init(&spec, 3);
    let base = dir.join("base.safetensors");
    file::save(&base, &healthy, "none").unwrap();

    // Inputs of 1e308 overflow the loss: no sigma_1 is reported, and the exit code says so.
    let huge = specdef::data::Dataset {
        inputs: vec![1e308; 4 * 64],
        labels: vec![5, 6, 7, 8],
        features: 64,
    };
    let data = dir.join("huge.safetensors");
    std::fs::write(&data, specdef::data::file::encode(&huge).unwrap()).unwrap();
    let output = run(
        &dir,
        &[
            "curvature",
            "--model",
            path(&base),
            "--engine",
            "cpu64",
            "--data",
            path(&data),
        ],
    );
    refused("inputs of 1e308", &output, &["sigma_1", "overflowed"]);

    let defended = dir.join("defended.safetensors");
    common::succeeded(run(
        &dir,
        &[
            "defend",
            "--model",
            path(&base),
            "--alpha",
            "1e4",
            "--k",
            "4",
            "--out",
            path(&defended),
        ],
    ));
    let output = run(
        &dir,
        &[
            "curvature",
            "--model",
            path(&defended),
            "--engine",
            "cpu",
            "--adaptive",
            "factorisation:1",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("factorisation:1") && stderr.contains("2..=64"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Plots never loop: a figure whose log axis cannot be drawn (an lr whose margin overflows) is
/// skipped with a note, and the others are drawn.
#[test]
fn a_figure_that_cannot_be_drawn_is_skipped_with_a_note() {
    let dir = scratch("round2", "figures");
    let records = tiny_records(&dir);
    let mut parsed =
        specdef::report::from_json_lines(&jsonl(&records)).expect("the run's own records");
    for record in &mut parsed {
        record.lr = 1e308;
    }
    let started = Instant::now();
    let figures = specdef::report::plots::render_all(&parsed);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        figures
            .skipped
            .iter()
            .any(|note| note.contains("steps_to_target.svg")),
        "{:?}",
        figures.skipped
    );
    assert!(
        figures
            .drawn
            .iter()
            .any(|(name, _)| name.starts_with("loss_"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flags that set the amount of work are bounded, and flags whose values make no measurement
/// are refused naming the flag: no hang, no NaN printed as a result.
#[test]
fn work_flags_are_bounded_and_named() {
    let dir = scratch("round2", "flags");
    let spec = ModelSpec {
        widths: vec![64, 16, 10],
        activation: ActivationChoice::Relu,
    };
    let model = dir.join("model.safetensors");
    file::save(&model, &HostModel::init(&spec, 3), "none").unwrap();
    let model = path(&model);
    let curvature = ["curvature", "--model", model, "--engine", "cpu", "--json"];
    let alpha = [
        "curvature-alpha",
        "--model",
        model,
        "--engine",
        "cpu",
        "--k",
        "4",
    ];
    let empty = write(&dir, "empty.jsonl", "");
    let bench_out = dir.join("bench.jsonl");
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "a billion bench samples",
            vec![
                "bench",
                "--engine",
                "cpu",
                "--samples",
                "1000000000",
                "--out",
                path(&bench_out),
            ],
            vec!["--samples", "1000"],
        ),
        (
            "a billion Adam steps",
            [
                &curvature[..],
                &["--adam-lr", "1e-3", "--adam-steps", "1000000000"],
            ]
            .concat(),
            vec!["--adam-steps", "100000"],
        ),
        (
            "an Adam rate that overflows",
            [&curvature[..], &["--adam-lr", "1e300"]].concat(),
            vec!["--adam-lr"],
        ),
        (
            "a repeated alpha",
            [&alpha[..], &["--alphas", "10", "--alphas", "10"]].concat(),
            vec!["--alphas", "twice"],
        ),
        (
            "one alpha, no slope",
            [&alpha[..], &["--alphas", "10"]].concat(),
            vec!["--alphas", "at least two"],
        ),
        (
            "an alpha f64 cannot compensate",
            [&alpha[..], &["--alphas", "10,1e13"]].concat(),
            vec!["--alphas", "1e13"],
        ),
        (
            "empty record files",
            vec!["compare", path(&empty), path(&empty)],
            vec!["empty.jsonl", "no run records"],
        ),
    ];
    for (case, args, needles) in cases {
        let started = Instant::now();
        refused(case, &run(&dir, &args), &needles);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{case}: refused late"
        );
    }
    assert!(!bench_out.exists());
    assert!(
        !dir.join("out").exists(),
        "curvature-alpha wrote its folder"
    );

    // Bench records read back: a control character or another schema is named.
    let good = serde_json::json!({
        "schema": "specdef.bench/1", "crate_version": "0.1.0", "engine": "cpu", "backend": "cpu",
        "adapter": "host", "driver": "", "device_type": "cpu", "platform": "native",
        "timer": "std::time::Instant", "workload": "matmul 64x64x64", "unit": "GFLOP/s",
        "runs_per_sample": 1, "warmup_samples": 2, "samples": [1.0, 2.0, 3.0],
        "median": 2.0, "min": 1.0, "max": 3.0, "kernel_ms_per_run": null
    });
    let plot = dir.join("plot.svg");
    for (case, field, value, needle) in [
        (
            "an escape in the adapter",
            "adapter",
            serde_json::json!("gpu\u{1b}[2J"),
            "adapter",
        ),
        (
            "another schema",
            "schema",
            serde_json::json!("specdef.bench/9"),
            "schema",
        ),
        (
            "a median outside the samples",
            "median",
            serde_json::json!(7.0),
            "median",
        ),
    ] {
        let mut record = good.clone();
        record[field] = value;
        let file = write(&dir, "bench-in.jsonl", &format!("{record}\n"));
        let output = run(&dir, &["bench-plot", path(&file), "--out", path(&plot)]);
        refused(case, &output, &["bench-in.jsonl line 1", needle]);
        assert!(!plot.exists(), "{case}: the plot was written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sweep writes only into a new or empty folder or its own: a folder of the user's is not
/// adopted (nothing is created in it), a link where its records or results go is refused before
/// any work, and of the files in its records folder it removes only its own temporary files.
#[cfg(unix)]
#[test]
fn sweeps_touch_only_their_own_files() {
    let dir = scratch("round2", "sweep-owned");
    let scenario = write(&dir, "scenario.toml", TINY);
    let sweep = |out: &Path| {
        run(
            &dir,
            &[
                "sweep",
                path(&scenario),
                "--engine",
                "cpu",
                "--out",
                path(out),
            ],
        )
    };
    let listing = |folder: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    let users = dir.join("users");
    std::fs::create_dir_all(&users).unwrap();
    write(&users, "notes.txt", "mine");
    refused(
        "a folder of the user's",
        &sweep(&users),
        &["notes.txt", "sweep.json"],
    );
    assert_eq!(listing(&users), ["notes.txt"]);

    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let linked = dir.join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&elsewhere, linked.join("records")).unwrap();
    refused(
        "records as a link",
        &sweep(&linked),
        &["records", "not a folder"],
    );
    assert!(listing(&elsewhere).is_empty());

    let results_linked = dir.join("results-linked");
    std::fs::create_dir_all(&results_linked).unwrap();
    std::os::unix::fs::symlink(&elsewhere, results_linked.join("results")).unwrap();
    let started = Instant::now();
    refused(
        "results as a link",
        &sweep(&results_linked),
        &["results", "symbolic link"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused after the work"
    );
    nothing_cached(&dir, "results as a link");

    let under_a_file = dir.join("notes.txt");
    std::fs::write(&under_a_file, "mine").unwrap();
    refused(
        "a folder under a file",
        &sweep(&under_a_file.join("sweep")),
        &["notes.txt", "not a folder"],
    );
    assert_eq!(std::fs::read_to_string(&under_a_file).unwrap(), "mine");

    // A finished sweep run again: the user's file in records/ that merely ends in .tmp stays.
    let out = dir.join("sweep");
    common::succeeded(sweep(&out));
    write(&out.join("records"), "keep.tmp", "mine");
    common::succeeded(sweep(&out));
    assert_eq!(
        std::fs::read_to_string(out.join("records/keep.tmp")).unwrap(),
        "mine"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refused result folder leaves no lock file beside it, and a link where the lock goes is
/// named as that.
#[cfg(unix)]
#[test]
fn refused_result_folders_leave_no_lock_and_name_a_lock_in_the_way() {
    let dir = scratch("round2", "locks");
    let scenario = write(&dir, "scenario.toml", TINY);
    let users = dir.join("users");
    std::fs::create_dir_all(&users).unwrap();
    write(&users, "notes.txt", "mine");
    let output = run(
        &dir,
        &[
            "run",
            path(&scenario),
            "--engine",
            "cpu",
            "--out",
            path(&users),
        ],
    );
    refused("a folder of the user's", &output, &["notes.txt"]);
    assert!(
        !dir.join(".users.lock").exists(),
        "a lock was left beside it"
    );

    let target = dir.join("results");
    std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join(".results.lock")).unwrap();
    let output = run(
        &dir,
        &[
            "run",
            path(&scenario),
            "--engine",
            "cpu",
            "--out",
            path(&target),
        ],
    );
    refused(
        "a link as the lock",
        &output,
        &[".results.lock", "in the way"],
    );
    assert!(
        !dir.join("elsewhere").exists(),
        "the lock was written through the link"
    );
    nothing_cached(&dir, "locks");
    let _ = std::fs::remove_dir_all(&dir);
}
