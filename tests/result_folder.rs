//! A result folder is one consistent set: a run killed at any point leaves the old set or the new
//! one (never a mix, never a temporary file inside), a second run into a busy folder is refused,
//! and an output that cannot be written is refused before the work.

mod common;

use specdef::scenario::DEFAULT_SCENARIO;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scratch(case: &str) -> PathBuf {
    common::scratch("folder", case)
}

fn specdef(cache: &Path) -> Command {
    common::specdef_cli(cache)
}

fn run_into(cache: &Path, scenario: Option<&Path>, out: &Path) -> Command {
    let mut command = specdef(cache);
    command.arg("run");
    if let Some(scenario) = scenario {
        command.arg(scenario);
    }
    command
        .args(["--quick", "--engine", "cpu", "--out"])
        .arg(out);
    command
}

fn succeeded(output: Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The quick scenario with other optimisers and grid: every file of its set differs from the
/// quick scenario's, and its plots have other names, so a mix of the two is visible.
fn other_scenario(dir: &Path) -> PathBuf {
    let quick_attack = r#"attack = { optimizers = ["sgd", "adam"], lr_grid = { from = 1e-6"#;
    assert!(DEFAULT_SCENARIO.contains(quick_attack));
    let text = DEFAULT_SCENARIO
        .replacen(
            quick_attack,
            r#"attack = { optimizers = ["momentum"], lr_grid = { from = 1e-4"#,
            1,
        )
        .replacen("name = \"digits-main-table\"", "name = \"kill-test\"", 1);
    let path = dir.join("other.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The files of a folder by name (hidden ones included, so a stray temporary file shows).
fn files(folder: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

/// The records of a runs.jsonl without what legitimately varies between two runs of one
/// scenario (wall time, whether pretraining came from the cache).
fn comparable_records(jsonl: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(jsonl.to_vec())
        .unwrap()
        .lines()
        .map(|line| {
            let mut record: serde_json::Value =
                serde_json::from_str(line).expect("every line a whole record");
            let fields = record.as_object_mut().unwrap();
            fields.remove("wall_ms");
            fields.remove("pretrain_from_cache");
            record
        })
        .collect()
}

/// Whether `now` is a whole set of the scenario whose reference set is `reference`.
fn is_whole_set_like(
    now: &BTreeMap<String, Vec<u8>>,
    reference: &BTreeMap<String, Vec<u8>>,
) -> bool {
    now.keys().eq(reference.keys())
        && comparable_records(&now["runs.jsonl"]) == comparable_records(&reference["runs.jsonl"])
        && now["runs.csv"].iter().filter(|&&b| b == b'\n').count()
            == reference["runs.csv"]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        && now
            .iter()
            .filter(|(name, _)| name.ends_with(".svg") || *name == "tables.txt")
            .all(|(name, bytes)| reference[name] == *bytes)
}

fn write_set(folder: &Path, set: &BTreeMap<String, Vec<u8>>) {
    let _ = std::fs::remove_dir_all(folder);
    std::fs::create_dir_all(folder).unwrap();
    for (name, bytes) in set {
        std::fs::write(folder.join(name), bytes).unwrap();
    }
}

fn siblings_left(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!(".{name}.staging-"))
                || n.starts_with(&format!(".{name}.previous-"))
        })
        .collect()
}

#[test]
fn a_run_killed_at_any_point_leaves_the_old_set_or_the_new_one() {
    let dir = scratch("kill");
    let cache = dir.join("cache");
    let other = other_scenario(&dir);

    succeeded(run_into(&cache, None, &dir.join("old")).output().unwrap());
    let old = files(&dir.join("old"));
    let started = Instant::now();
    succeeded(
        run_into(&cache, Some(&other), &dir.join("new"))
            .output()
            .unwrap(),
    );
    let duration = started.elapsed();
    let new = files(&dir.join("new"));
    assert!(
        old.keys().ne(new.keys()) && old.iter().all(|(name, bytes)| new.get(name) != Some(bytes)),
        "the two sets must differ in every file for a mix to show"
    );

    let out = dir.join("results");
    // Kills spread over the run, densest near its end, where the set is written and switched.
    for fraction in [0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0, 1.02, 1.05, 1.1] {
        write_set(&out, &old);
        let mut child = run_into(&cache, Some(&other), &out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(duration.mul_f64(fraction));
        let _ = child.kill(); // SIGKILL on Unix
        child.wait().unwrap();
        let now = files(&out);
        assert!(
            now == old || is_whole_set_like(&now, &new),
            "killed at {fraction} of the run: the folder holds a mix: {:?}",
            now.keys().collect::<Vec<_>>()
        );
    }

    // The next run clears what the killed ones left beside the folder and writes the new set.
    succeeded(run_into(&cache, Some(&other), &out).output().unwrap());
    assert!(is_whole_set_like(&files(&out), &new));
    assert_eq!(siblings_left(&dir, "results"), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts the full built-in scenario (minutes in a debug build) into `out` and returns once it
/// has claimed the folder (it prints the scenario line after the claim).
fn start_long_run(cache: &Path, out: &Path) -> Child {
    let mut child = specdef(cache)
        .args(["run", "--engine", "cpu", "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("scenario"), "first line: {line:?}");
    child
}

#[test]
fn a_second_run_into_a_busy_folder_is_refused_and_a_killed_run_frees_it() {
    let dir = scratch("busy");
    let cache = dir.join("cache");
    let out = dir.join("results");
    let mut first = start_long_run(&cache, &out);

    let started = Instant::now();
    let second = run_into(&cache, None, &out).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    let first_still_running = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(first_still_running, "the first run ended before the check");
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("busy") && stderr.contains("results"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "refused only after the work"
    );
    assert!(!out.exists(), "the killed run published a set");

    // The lock died with the killed process.
    succeeded(run_into(&cache, None, &out).output().unwrap());
    assert!(files(&out).contains_key("runs.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outputs_that_cannot_be_written_or_folders_of_other_files_are_refused_before_the_work() {
    let dir = scratch("refused");
    let cache = dir.join("cache");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "not a folder").unwrap();

    let foreign = dir.join("my-project");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    std::fs::write(foreign.join("runs.jsonl"), "").unwrap();

    let path = |p: PathBuf| p.to_str().unwrap().to_string();
    let cases: [(&str, Vec<String>, &[&str]); 5] = [
        (
            "run under a file",
            vec!["run".into(), "--out".into(), path(blocker.join("results"))],
            &["a-file"],
        ),
        (
            "run into a folder of other files",
            vec!["run".into(), "--out".into(), path(foreign.clone())],
            &["my-project", "specdef-results.json", "not a result set"],
        ),
        (
            "run into the working folder",
            vec!["run".into(), "--out".into(), ".".into()],
            &["give a folder name"],
        ),
        (
            "bench under a file",
            vec![
                "bench".into(),
                "--out".into(),
                path(blocker.join("b.jsonl")),
            ],
            &["cannot write", "a-file"],
        ),
        (
            "train under a file",
            vec![
                "train".into(),
                "--quick".into(),
                "--out".into(),
                path(blocker.join("m.safetensors")),
            ],
            &["cannot write", "a-file"],
        ),
    ];
    for (case, args, expected) in cases {
        let started = Instant::now();
        let output = specdef(&cache).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{case}: {needle:?} not in {stderr}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{case}: refused only after the work"
        );
    }
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "mine"
    );
    let cached = std::fs::read_dir(&cache).map_or(0, |d| d.count());
    assert_eq!(cached, 0, "a model was pretrained before a refusal");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_creates_its_output_folder() {
    let dir = scratch("bench");
    let out = dir.join("new").join("folder").join("bench.jsonl");
    let output = specdef(&dir.join("cache"))
        .args(["bench", "--engine", "cpu", "--samples", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    succeeded(output);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.lines().count() > 0 && text.lines().all(|l| l.starts_with('{')));
    let _ = std::fs::remove_dir_all(&dir);
}
