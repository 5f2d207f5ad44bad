//! `specdef compare`: runs matched by what was run, each metric within its tolerance, and the
//! exit code of the command line.

mod common;

use common::run_quietly;

use specdef::engine::cpu::CpuEngine32;
use specdef::report::{self, CompareSettings, OUTCOME_METRICS, compare};
use specdef::scenario::{RunRecord, Scenario};
use std::process::Command;
use std::sync::OnceLock;

fn quick_records() -> &'static [RunRecord] {
    static RECORDS: OnceLock<Vec<RunRecord>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let scenario = Scenario::builtin(Some("quick")).unwrap();
        run_quietly(&mut CpuEngine32::new(), &scenario, Some("quick")).records
    })
}

fn metric<'a>(c: &'a report::Comparison, name: &str) -> &'a report::MetricSummary {
    c.metrics.iter().find(|m| m.metric == name).unwrap()
}

#[test]
fn identical_results_agree_whatever_computed_them() {
    let a = quick_records().to_vec();
    let mut b = a.clone();
    // Another machine: matching ignores the engine fields.
    for r in &mut b {
        r.engine = "gpu".to_string();
        r.adapter = "some browser".to_string();
    }
    let c = compare(&a, &b, &CompareSettings::default());
    assert_eq!(c.matched, a.len());
    assert!(c.all_agree(), "{}", c.report());
}

#[test]
fn each_metric_disagrees_beyond_its_tolerance_only() {
    let a = quick_records().to_vec();
    let reached = a.iter().position(|r| r.steps_to_target.is_some()).unwrap();
    let finite = a.iter().position(|r| r.final_loss.is_some()).unwrap();
    let mut b = a.clone();
    b[reached].steps_to_target = b[reached].steps_to_target.map(|s| s + 10);
    let loss = b[finite].final_loss.unwrap();
    b[finite].final_loss = Some(loss * 1.001);
    let strict = CompareSettings::default();
    let c = compare(&a, &b, &strict);
    assert_eq!(
        metric(&c, "steps_to_target").agreed,
        a.len() - 1,
        "{}",
        c.report()
    );
    assert_eq!(
        metric(&c, "final_loss").agreed,
        a.len(),
        "0.1% is within 1%"
    );
    assert!(!c.all_agree());
    let banded = CompareSettings {
        steps_band: 10,
        ..strict
    };
    assert!(compare(&a, &b, &banded).all_agree());

    b[finite].final_loss = Some(loss * 1.5 + 1.0);
    b[0].diverged = !b[0].diverged;
    let c = compare(&a, &b, &banded);
    assert_eq!(metric(&c, "final_loss").agreed, a.len() - 1);
    assert_eq!(metric(&c, "diverged").agreed, a.len() - 1);

    // Judging outcomes only, the same loss and divergence differences are reported, not judged;
    // an outcome difference still fails.
    let outcomes = CompareSettings {
        outcomes_only: true,
        ..banded
    };
    let c = compare(&a, &b, &outcomes);
    assert!(c.all_agree(), "{}", c.report());
    assert!(!metric(&c, "final_loss").judged);
    assert!(c.report().contains("info final_loss"), "{}", c.report());
    for name in OUTCOME_METRICS {
        assert!(metric(&c, name).judged);
    }
    b[0].reached_target = !b[0].reached_target;
    assert!(!compare(&a, &b, &outcomes).all_agree());
}

/// A file of an older version lacks the later key fields: runs match on the fields both files
/// carry, the report names the others, and a field both carry still tells runs apart.
#[test]
fn files_of_two_versions_match_on_the_fields_both_carry() {
    let new = quick_records().to_vec();
    let mut old = new.clone();
    for r in &mut old {
        (r.k_per_layer, r.beta1, r.beta2, r.eps) = (None, None, None, None);
        (r.momentum, r.weight_decay) = (None, None);
        r.trainable.clear();
        r.optimizer_groups.clear();
    }
    let c = compare(&new, &old, &CompareSettings::default());
    assert_eq!(c.matched, new.len(), "{}", c.report());
    assert!(c.all_agree(), "{}", c.report());
    for field in ["k_per_layer", "beta1", "trainable", "optimizer_groups"] {
        assert!(c.unused_key_fields.contains(&field), "{}", c.report());
    }
    assert!(c.report().contains("matched without"), "{}", c.report());
    // Both carry the learning rate: a changed one is another run.
    old[0].lr *= 2.0;
    let c = compare(&new, &old, &CompareSettings::default());
    assert_eq!(c.matched, new.len() - 1);
    assert_eq!(c.only_in_first.len(), 1);
}

#[test]
fn unmatched_and_duplicated_runs_are_reported() {
    let a = quick_records().to_vec();
    let mut b = a.clone();
    b.pop();
    b.push(a[0].clone());
    let c = compare(&a, &b, &CompareSettings::default());
    assert_eq!(c.only_in_first.len(), 1);
    assert_eq!(c.duplicates.len(), 1);
    assert!(!c.all_agree());
    assert!(
        c.report().contains("only in the first file"),
        "{}",
        c.report()
    );
}

#[test]
fn the_command_exits_zero_only_when_the_files_agree() {
    let dir = std::env::temp_dir().join(format!("specdef-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = quick_records().to_vec();
    let mut b = a.clone();
    // A run that stopped below the target, changed as its own curve says (records read back
    // are checked against their curves): its last evaluation 0.05 higher.
    let changed = (b.iter_mut())
        .find(|r| !r.reached_target && !r.diverged && r.final_harmful_accuracy < 0.8)
        .expect("a run that ended below the target");
    changed.final_harmful_accuracy += 0.05;
    changed.accuracy_curve.last_mut().unwrap().1 += 0.05;
    let write = |name: &str, records: &[RunRecord]| {
        let path = dir.join(name);
        std::fs::write(&path, report::to_json_lines(records).unwrap()).unwrap();
        path
    };
    let (pa, pb) = (write("a.jsonl", &a), write("b.jsonl", &b));
    let run = |x: &std::path::Path, y: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_specdef"))
            .arg("compare")
            .args([x, y])
            .output()
            .unwrap()
    };
    let same = run(&pa, &pa);
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("all runs agree"));
    let different = run(&pa, &pb);
    assert_eq!(different.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&different.stdout).contains("DIFF final_harmful_accuracy"));
    // Tolerances that would make every run agree (NaN) or equal runs differ (negative) are
    // refused before any file is read.
    for (flag, value) in [
        ("--loss-rel", "NaN"),
        ("--loss-abs", "-1e-3"),
        ("--accuracy-abs", "inf"),
    ] {
        let refused = Command::new(env!("CARGO_BIN_EXE_specdef"))
            .args(["compare".as_ref(), pa.as_os_str(), pb.as_os_str()])
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{flag}={value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("finite number >= 0"),
            "{stderr}"
        );
    }
    std::fs::write(dir.join("bad.jsonl"), "{ not json").unwrap();
    let bad = run(&pa, &dir.join("bad.jsonl"));
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.jsonl: line 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}
