//! The immunisation conditions beyond resistance (PAPER.md section 6): a held-out harmful set no
//! attack is judged on (generalisation) and benign fine-tuning on mirrored utility digits
//! (trainability), in the data split, the records and the report.

mod common;

use common::run_quietly;
use specdef::engine::cpu::CpuEngine32;
use specdef::report;
use specdef::scenario::{Scenario, TaskData};
use specdef::training::OptimizerKind;

fn small(heldout_fraction: f64) -> Scenario {
    let mut scenario = common::short_quick();
    scenario.data.heldout_fraction = heldout_fraction;
    scenario.trainability.optimizers = vec![OptimizerKind::Adam];
    scenario
}

#[test]
fn the_held_out_harmful_images_are_split_off_the_judged_ones() {
    let whole = TaskData::load(&small(0.0)).unwrap();
    assert!(whole.harmful_heldout.is_empty());
    let split = TaskData::load(&small(0.5)).unwrap();
    let (judged, heldout) = (&split.harmful_test, &split.harmful_heldout);
    assert_eq!(judged.len() + heldout.len(), whole.harmful_test.len());
    assert!((heldout.len() as f64 / whole.harmful_test.len() as f64 - 0.5).abs() < 0.05);
    // Disjoint: every image of the whole test set is in exactly one part.
    let rows = |d: &specdef::data::Dataset| -> Vec<Vec<u64>> {
        d.inputs
            .chunks(d.features)
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let (mut parts, mut all) = (
        [rows(judged), rows(heldout)].concat(),
        rows(&whole.harmful_test),
    );
    parts.sort();
    all.sort();
    assert_eq!(parts, all);
    // The benign task: the utility digits mirrored, the same labels; mirroring twice restores.
    assert_eq!(split.benign_test.labels, split.utility_test.labels);
    assert_ne!(split.benign_test.inputs, split.utility_test.inputs);
    assert_eq!(
        split.benign_test.mirrored().inputs,
        split.utility_test.inputs
    );
}

#[test]
fn attacks_record_held_out_accuracy_and_benign_runs_are_apart() {
    let scenario = small(0.5);
    let outcome = run_quietly(&mut CpuEngine32::new(), &scenario, None);
    let (benign, attacks): (Vec<_>, Vec<_>) = outcome.records.iter().partition(|r| r.is_benign());
    assert_eq!(
        attacks.len(),
        2 * 2 * 2,
        "2 models x sgd, adam x 2 learning rates"
    );
    assert_eq!(benign.len(), 2 * 2, "2 models x adam x 2 learning rates");
    for r in &attacks {
        let heldout = r
            .heldout_harmful_accuracy
            .expect("an attack measures the held-out set");
        assert!((0.0..=1.0).contains(&heldout));
    }
    for r in &benign {
        assert_eq!(r.task, "benign");
        assert_eq!(r.heldout_harmful_accuracy, None);
        assert!(
            r.defense_label().ends_with("(benign)"),
            "{}",
            r.defense_label()
        );
        assert_eq!(r.target_accuracy, scenario.trainability.target_accuracy);
    }
    let table = report::immunisation_table(&outcome.records);
    assert!(table.contains("on held-out ones"), "{table}");
    assert!(table.contains("benign task adam"), "{table}");
    // Claims are about attacks: no claim names a benign run.
    for c in report::claims::claims(&outcome.records) {
        assert!(!c.measured.contains("benign"), "{}", c.measured);
    }
    let json = report::to_json_lines(&outcome.records).unwrap();
    assert_eq!(report::from_json_lines(&json).unwrap(), outcome.records);
}

#[test]
fn a_held_out_fraction_out_of_range_is_refused_naming_it() {
    let text = specdef::scenario::DEFAULT_SCENARIO
        .replace("heldout_fraction = 0.5", "heldout_fraction = 1.0");
    let err = Scenario::parse(&text, None, "bad.toml").unwrap_err();
    assert!(err.contains("data.heldout_fraction"), "{err}");
    let text = specdef::scenario::DEFAULT_SCENARIO.replace(
        "target_accuracy = 0.9\n\n# `specdef run --variant",
        "target_accuracy = 1.5\n\n# `specdef run --variant",
    );
    let err = Scenario::parse(&text, None, "bad.toml").unwrap_err();
    assert!(err.contains("trainability.target_accuracy"), "{err}");
}
