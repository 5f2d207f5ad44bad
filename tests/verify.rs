//! `specdef verify`: the shipped f64 reference records are what the code computes now (this test
//! fails when a change moves the quick scenario's outcomes without the reference being
//! regenerated: `specdef run --quick --engine cpu64 --out reference/quick-cpu64`), and a device
//! whose outcomes differ is told so, with the run named and exit code 1.

use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("specdef-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn verify(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_specdef"))
        .args(["verify", "--engine", "cpu64"])
        .args(extra)
        .env("SPECDEF_CACHE_DIR", scratch().join("cache"))
        .output()
        .expect("running specdef verify")
}

const REFERENCE: &str = include_str!("../reference/quick-cpu64/runs.jsonl");

#[test]
fn the_f64_engine_reproduces_the_shipped_reference() {
    let output = verify(&[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the reference is stale; regenerate it with `specdef run --quick --engine cpu64 --out \
         reference/quick-cpu64`:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("reproduces the reference"), "{stdout}");
    assert!(stdout.contains("28 runs matched"), "{stdout}");
}

#[test]
fn a_device_with_other_outcomes_is_told_which_run_differs() {
    // The reference with one successful run made 50 steps slower (past the 10-step band), its
    // curves' last evaluation moved with it (records read back must agree with their curves).
    let mut changed = None;
    let lines: Vec<String> = REFERENCE
        .lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            if changed.is_none()
                && let Some(steps) = record["steps_to_target"].as_u64()
                && steps + 50 <= record["steps"].as_u64().unwrap()
            {
                record["steps_to_target"] = (steps + 50).into();
                record["steps_run"] = (steps + 50).into();
                for curve in ["loss_curve", "accuracy_curve"] {
                    let points = record[curve].as_array_mut().unwrap();
                    points.last_mut().unwrap()[0] = (steps + 50).into();
                }
                changed = Some(format!(
                    "{} lr={:.0e}",
                    record["optimizer"].as_str().unwrap(),
                    record["lr"].as_f64().unwrap()
                ));
            }
            record.to_string()
        })
        .collect();
    let changed = changed.expect("the reference has a run that reached the target");
    let file = scratch().join("changed.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let output = verify(&["--reference", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("does NOT reproduce"), "{stdout}");
    assert!(
        stdout.contains(&changed),
        "{changed:?} not named in {stdout}"
    );
}
