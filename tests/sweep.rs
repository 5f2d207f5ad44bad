//! Sweeps: the run list is stable and shards split it exactly; the random search draws the same
//! trials everywhere; the shard comes from the scheduler's environment; statistics over seeds;
//! and through the command line: shards merged equal the whole sweep, merge refuses what does
//! not belong and lists what is missing, and a killed sweep resumes without redoing a run.

mod common;

use specdef::report::seeds::{bootstrap_mean, median, seed_rows};
use specdef::scenario::{RunRecord, Scenario};
use specdef::sweep::{self, RandomSearch, ScheduleKind, Shard, SweepConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn random_search(trials: usize) -> RandomSearch {
    RandomSearch {
        trials,
        lr: Some([1e-6, 1e-1]),
        steps: Some(vec![20, 40]),
        batch_sizes: Some(vec![16, 64]),
        schedules: Some(vec![
            ScheduleKind::Constant,
            ScheduleKind::Cosine,
            ScheduleKind::LinearWarmup,
        ]),
        warmup_steps: vec![5, 10],
        search_seed: 7,
    }
}

#[test]
fn shards_split_the_run_list_into_disjoint_slices_that_cover_it() {
    let mut scenario = Scenario::builtin(Some("quick")).unwrap();
    scenario.sweep.seeds = 3;
    let plan = sweep::plan(&scenario);
    assert_eq!(plan.len(), sweep::run_count(&scenario));
    assert_eq!(
        plan.len(),
        3 * 2 * 2 * 7,
        "seeds x targets x optimisers x rates"
    );
    assert_eq!(plan, sweep::plan(&scenario), "the order is stable");
    let ids: Vec<String> = plan.iter().map(|r| r.id()).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "ids are unique"
    );
    for count in 1..=7 {
        let mut seen = Vec::new();
        for index in 0..count {
            let slice = Shard::new(index, count).unwrap().slice(&ids);
            assert!(slice.len().abs_diff(ids.len() / count) <= 1);
            seen.extend_from_slice(slice);
        }
        assert_eq!(
            seen, ids,
            "{count} shards, in order, are the whole list once"
        );
    }
}

#[test]
fn random_trials_are_the_same_on_every_target_and_seed_and_follow_the_lists() {
    let mut scenario = Scenario::builtin(Some("quick")).unwrap();
    scenario.sweep = SweepConfig {
        seeds: 2,
        random: Some(random_search(30)),
    };
    scenario.validate().unwrap();
    let plan = sweep::plan(&scenario);
    assert_eq!(plan.len(), 2 * 2 * 30);
    let trials = |seed: u64, target: usize| -> Vec<_> {
        (plan.iter())
            .filter(|r| r.seed == seed && r.target == target)
            .map(|r| r.run)
            .collect()
    };
    let first = trials(0, 0);
    assert_eq!(first, trials(0, 1), "the same trials on each target");
    assert_eq!(first, trials(1, 0), "and in each seed");
    for run in &first {
        let budget = run.budget.unwrap();
        assert!((1e-6..=1e-1).contains(&run.lr), "lr {}", run.lr);
        assert!([20, 40].contains(&budget.steps));
        assert!([Some(16), Some(64)].contains(&budget.batch_size));
        assert!(scenario.attack.optimizers.contains(&run.optimizer));
    }
    let distinct = |f: &dyn Fn(&specdef::scenario::AttackRun) -> String| {
        first.iter().map(f).collect::<BTreeSet<_>>().len()
    };
    assert_eq!(distinct(&|r| r.optimizer.name().to_string()), 2);
    assert_eq!(
        distinct(&|r| format!("{:?}", r.budget.unwrap().schedule)),
        4
    );
    assert!(
        distinct(&|r| format!("{:e}", r.lr.log10().floor())) >= 4,
        "rates span decades"
    );
    let mut reseeded = scenario.clone();
    reseeded.sweep.random.as_mut().unwrap().search_seed = 8;
    assert_ne!(sweep::plan(&reseeded)[0].run, plan[0].run);
}

#[test]
fn bad_sweep_settings_are_refused_with_the_field_named() {
    let base = Scenario::builtin(Some("quick")).unwrap();
    let refused = |change: &dyn Fn(&mut SweepConfig), expected: &str| {
        let mut scenario = base.clone();
        scenario.sweep.random = Some(random_search(4));
        change(&mut scenario.sweep);
        let error = scenario.validate().unwrap_err();
        assert!(error.contains(expected), "{error:?} should name {expected}");
    };
    refused(&|s| s.seeds = 0, "sweep.seeds");
    refused(
        &|s| s.random.as_mut().unwrap().trials = 0,
        "sweep.random.trials",
    );
    refused(
        &|s| s.random.as_mut().unwrap().lr = Some([0.0, 1.0]),
        "sweep.random.lr",
    );
    refused(
        &|s| s.random.as_mut().unwrap().lr = Some([1.0, f64::NAN]),
        "sweep.random.lr",
    );
    refused(
        &|s| s.random.as_mut().unwrap().steps = Some(vec![]),
        "sweep.random.steps",
    );
    refused(
        &|s| s.random.as_mut().unwrap().batch_sizes = Some(vec![0]),
        "sweep.random.batch_sizes",
    );
    refused(
        &|s| s.random.as_mut().unwrap().schedules = Some(vec![]),
        "sweep.random.schedules",
    );
    refused(
        &|s| s.random.as_mut().unwrap().warmup_steps = vec![0],
        "sweep.random.warmup_steps",
    );
    refused(&|s| s.seeds = 1_000_000, "at most");
    let text = specdef::scenario::DEFAULT_SCENARIO.replacen(
        "sweep = { seeds = 2 }",
        "sweep = { seed = 2 }",
        1,
    );
    let error = Scenario::parse(&text, Some("quick"), "test.toml").unwrap_err();
    assert!(error.contains("seed"), "{error}");
}

#[test]
fn the_shard_comes_from_slurm_or_an_indexed_job() {
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            (pairs.iter())
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }
    let shard = |i, n| Some(Shard::new(i, n).unwrap());
    assert_eq!(Shard::from_env(env(&[]), None), Ok(None));
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
    ];
    assert_eq!(Shard::from_env(env(&slurm), None), Ok(shard(2, 4)));
    assert!(
        Shard::from_env(env(&slurm), Some(3))
            .unwrap_err()
            .contains("disagrees")
    );
    let min_max = [
        ("SLURM_ARRAY_TASK_ID", "6"),
        ("SLURM_ARRAY_TASK_MIN", "5"),
        ("SLURM_ARRAY_TASK_MAX", "8"),
    ];
    assert_eq!(Shard::from_env(env(&min_max), None), Ok(shard(1, 4)));
    let no_count = [("SLURM_ARRAY_TASK_ID", "1")];
    assert!(
        Shard::from_env(env(&no_count), None)
            .unwrap_err()
            .contains("--shard")
    );
    let k8s = [("JOB_COMPLETION_INDEX", "3")];
    assert_eq!(Shard::from_env(env(&k8s), Some(4)), Ok(shard(3, 4)));
    assert!(
        Shard::from_env(env(&k8s), None)
            .unwrap_err()
            .contains("--shard-count")
    );
    assert!(Shard::from_env(env(&k8s), Some(3)).is_err(), "index 3 of 3");
    let garbage = [("SLURM_ARRAY_TASK_ID", "x")];
    assert!(
        Shard::from_env(env(&garbage), None)
            .unwrap_err()
            .contains("SLURM_ARRAY_TASK_ID")
    );
    assert_eq!("1/4".parse::<Shard>(), Ok(Shard::new(1, 4).unwrap()));
    for bad in ["4/4", "1", "a/4", "0/0"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
}

/// A record of `seed` at `lr` (trial `trial`) that reached the target in `steps`, or not.
fn record(seed: u64, trial: usize, lr: f64, steps: Option<usize>) -> RunRecord {
    let line =
        specdef::report::from_json_lines(include_str!("../reference/quick-cpu64/runs.jsonl"))
            .unwrap()
            .remove(0);
    RunRecord {
        seed,
        trial: Some(trial),
        lr,
        defense: "none".into(),
        alpha: None,
        adaptive: None,
        optimizer: "sgd".into(),
        task: "harmful".into(),
        reached_target: steps.is_some(),
        steps_to_target: steps,
        ..line
    }
}

#[test]
fn statistics_over_seeds_count_successes_and_windows_per_seed() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    let interval = bootstrap_mean(&[10.0, 20.0, 30.0, 40.0], 1).unwrap();
    assert_eq!(interval.mean, 25.0);
    assert!(
        10.0 <= interval.low
            && interval.low < 25.0
            && 25.0 < interval.high
            && interval.high <= 40.0
    );
    let constant = bootstrap_mean(&[5.0; 6], 1).unwrap();
    assert_eq!((constant.low, constant.high), (5.0, 5.0));

    // Three seeds: lr 1e-2 works in all, 1e-1 in one, 1e-3 in none; seed 2's best is 1e-1's.
    let records = vec![
        record(0, 0, 1e-3, None),
        record(0, 1, 1e-2, Some(40)),
        record(0, 2, 1e-1, None),
        record(1, 0, 1e-3, None),
        record(1, 1, 1e-2, Some(60)),
        record(1, 2, 1e-1, None),
        record(2, 0, 1e-3, None),
        record(2, 1, 1e-2, Some(50)),
        record(2, 2, 1e-1, Some(20)),
    ];
    let rows = seed_rows(&records);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!((row.seeds, row.successes), (3, 3));
    assert_eq!(row.median_steps, Some(40.0), "best per seed: 40, 60, 20");
    assert_eq!(row.mean_steps.unwrap().mean, 40.0);
    assert_eq!(row.every_seed, vec![1e-2]);
    assert_eq!(row.some_seed, vec![1e-2, 1e-1]);
    // Take seed 1's success away: 2 of 3 seeds, and 1e-2 no longer works in every seed.
    let mut fewer = records.clone();
    fewer[4] = record(1, 1, 1e-2, None);
    let row = &seed_rows(&fewer)[0];
    assert_eq!(row.successes, 2);
    assert!((row.success_rate.mean - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(row.every_seed, Vec::<f64>::new());
    assert_eq!(row.some_seed, vec![1e-2, 1e-1]);
}

fn scratch(case: &str) -> PathBuf {
    common::scratch("sweep", case)
}

fn specdef(cache: &Path) -> Command {
    common::specdef_cli(cache)
}

fn succeeded(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The shortened quick scenario in 2 seeds, as a file.
fn short_sweep(dir: &Path, name: &str) -> PathBuf {
    let mut scenario = common::short_quick();
    scenario.name = name.to_string();
    scenario.sweep.seeds = 2;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&scenario).unwrap()).unwrap();
    path
}

fn sweep_into(cache: &Path, scenario: &Path, out: &Path, shard: Option<&str>) -> Command {
    let mut command = specdef(cache);
    command
        .arg("sweep")
        .arg(scenario)
        .args(["--engine", "cpu", "--out"])
        .arg(out);
    if let Some(shard) = shard {
        command.args(["--shard", shard]);
    }
    command
}

fn compare(first: &Path, second: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_specdef"))
        .arg("compare")
        .arg(first)
        .arg(second)
        .output()
        .unwrap()
}

#[test]
fn shards_merged_equal_the_whole_sweep_and_merge_refuses_what_does_not_belong() {
    let dir = scratch("merge");
    let cache = dir.join("cache");
    let scenario = short_sweep(&dir, "short-sweep");
    let whole = dir.join("whole");
    succeeded(
        sweep_into(&cache, &scenario, &whole, None)
            .output()
            .unwrap(),
    );
    let whole_runs = whole.join("results/runs.jsonl");
    let count = std::fs::read_to_string(&whole_runs)
        .unwrap()
        .lines()
        .count();
    assert_eq!(count, 2 * 2 * 2 * 2, "seeds x targets x optimisers x rates");

    let shards = dir.join("shards");
    for i in 0..3 {
        succeeded(
            sweep_into(&cache, &scenario, &shards, Some(&format!("{i}/3")))
                .output()
                .unwrap(),
        );
    }
    let merged = dir.join("merged");
    succeeded(
        specdef(&cache)
            .arg("merge")
            .arg(&shards)
            .arg("--out")
            .arg(&merged)
            .output()
            .unwrap(),
    );
    let agreed = compare(&whole_runs, &merged.join("runs.jsonl"));
    assert!(
        agreed.status.success(),
        "{}",
        String::from_utf8_lossy(&agreed.stdout)
    );
    let tables = std::fs::read_to_string(merged.join("tables.txt")).unwrap();
    assert!(tables.contains("over 2 seeds"), "{tables}");

    // A missing shard: listed, refused, and written only with --partial.
    let partial = dir.join("partial");
    let only_two = [shards.join("shard-0-of-3"), shards.join("shard-2-of-3")];
    let output = specdef(&cache)
        .arg("merge")
        .args(&only_two)
        .arg("--out")
        .arg(&partial)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("missing"),
        "{stderr}"
    );
    let first_missing = sweep::plan(
        &Scenario::parse(&std::fs::read_to_string(&scenario).unwrap(), None, "x").unwrap(),
    )[count / 3]
        .id();
    assert!(
        stderr.contains(&first_missing),
        "{stderr} should list {first_missing}"
    );
    assert!(!partial.join("runs.jsonl").exists());
    succeeded(
        specdef(&cache)
            .arg("merge")
            .args(&only_two)
            .arg("--out")
            .arg(&partial)
            .arg("--partial")
            .output()
            .unwrap(),
    );
    let kept = std::fs::read_to_string(partial.join("runs.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(
        kept,
        count - Shard::new(1, 3).unwrap().slice(&vec![(); count]).len()
    );

    // The same shard twice: reported as duplicated, merged once.
    let twice = dir.join("twice");
    let output = specdef(&cache)
        .arg("merge")
        .arg(&shards)
        .arg(shards.join("shard-1-of-3"))
        .arg("--out")
        .arg(&twice)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("more than one folder"));
    succeeded(output);
    assert_eq!(
        std::fs::read_to_string(twice.join("runs.jsonl"))
            .unwrap()
            .lines()
            .count(),
        count
    );

    // Another scenario's shard is refused, naming both.
    let other = short_sweep(&dir, "other-sweep");
    let elsewhere = dir.join("elsewhere");
    succeeded(
        sweep_into(&cache, &other, &elsewhere, Some("0/3"))
            .output()
            .unwrap(),
    );
    let output = specdef(&cache)
        .arg("merge")
        .arg(&shards)
        .arg(elsewhere.join("shard-0-of-3"))
        .arg("--out")
        .arg(dir.join("mixed"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("refusing to merge"),
        "{stderr}"
    );
    assert!(
        stderr.contains("short-sweep") && stderr.contains("other-sweep"),
        "{stderr}"
    );

    // A record of another crate version inside a shard is refused, naming the file.
    let record_file = std::fs::read_dir(shards.join("shard-1-of-3/records"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&record_file).unwrap();
    let version = format!("\"crate_version\":\"{}\"", env!("CARGO_PKG_VERSION"));
    std::fs::write(
        &record_file,
        text.replacen(&version, "\"crate_version\":\"0.0.0\"", 1),
    )
    .unwrap();
    let output = specdef(&cache)
        .arg("merge")
        .arg(&shards)
        .arg("--out")
        .arg(dir.join("old"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("0.0.0"),
        "{stderr}"
    );

    // A sweep folder holding another sweep is not resumed into.
    let output = sweep_into(&cache, &other, &shards, Some("0/3"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("holds another sweep"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The files in `records`, by name. A temporary file can be renamed between
/// listing the folder and reading it while the sweep runs: such a file is
/// skipped, as it was never there.
fn record_files(records: &Path) -> BTreeMap<String, (SystemTime, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(records) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let modified = entry.metadata().ok()?.modified().unwrap();
            let bytes = std::fs::read(entry.path()).ok()?;
            Some((
                entry.file_name().to_string_lossy().into_owned(),
                (modified, bytes),
            ))
        })
        .collect()
}

#[test]
fn a_killed_sweep_resumes_without_redoing_or_half_writing_a_run() {
    let dir = scratch("kill");
    let cache = dir.join("cache");
    let mut scenario = Scenario::builtin(Some("quick")).unwrap();
    scenario.name = "kill-sweep".into();
    let total = sweep::run_count(&scenario);
    let path = dir.join("kill.toml");
    std::fs::write(&path, toml::to_string(&scenario).unwrap()).unwrap();
    let out = dir.join("sweep");
    let records = out.join("records");

    let mut child = sweep_into(&cache, &path, &out, None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while record_files(&records).len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no records after 10 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill(); // SIGKILL on Unix
    child.wait().unwrap();
    let before = record_files(&records);
    assert!(
        before.len() < total,
        "killed mid-sweep: {} of {total} runs",
        before.len()
    );
    for (name, (_, bytes)) in &before {
        if name.ends_with(".json") {
            serde_json::from_slice::<RunRecord>(bytes)
                .unwrap_or_else(|e| panic!("{name} is not a whole record: {e}"));
        }
    }

    let stdout = succeeded(sweep_into(&cache, &path, &out, None).output().unwrap());
    let finished = before.keys().filter(|n| n.ends_with(".json")).count();
    assert!(
        stdout.contains(&format!(
            "({finished} before this process, {} by it)",
            total - finished
        )),
        "{stdout}"
    );
    let after = record_files(&records);
    assert_eq!(
        after.len(),
        total,
        "one record per run, no temporary file left"
    );
    for (name, (modified, bytes)) in before.iter().filter(|(n, _)| n.ends_with(".json")) {
        assert_eq!(
            after[name],
            (*modified, bytes.clone()),
            "{name} was run again"
        );
    }
    // A finished sweep run again runs nothing.
    let stdout = succeeded(sweep_into(&cache, &path, &out, None).output().unwrap());
    assert!(
        stdout.contains(&format!("({total} before this process, 0 by it)")),
        "{stdout}"
    );

    // The resumed sweep equals one run without a kill.
    let clean = dir.join("clean");
    succeeded(sweep_into(&cache, &path, &clean, None).output().unwrap());
    let agreed = compare(
        &clean.join("results/runs.jsonl"),
        &out.join("results/runs.jsonl"),
    );
    assert!(
        agreed.status.success(),
        "{}",
        String::from_utf8_lossy(&agreed.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
